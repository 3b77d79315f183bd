/* The BPR loss of a final table and its gradient in one pass over the triples (whyrec.train.bpr_kernel).
 *
 * For triple t = (u, i, j), margin x_t = e_u . (e_i - e_j) and w_t = -sigma(-x_t) * scale (both from one
 * exponential, in the table's precision):
 *
 *     L = sum_t softplus(-x_t)      (returned; the caller divides by b)
 *     grad[u] += w_t (e_i - e_j),   grad[i] += w_t e_u,   grad[j] -= w_t e_u
 *
 * The triples are first ordered by user (a stable counting sort), so that a user's triples follow one another
 * and its rows stay in cache; each of `threads` OpenMP threads takes one contiguous share of them and adds into
 * its own (n, d) buffer (the first thread into `grad`), zeroed by that thread; then every thread sums the
 * buffers over its share of the rows into `grad`. The same result for the same thread count, whatever the
 * scheduling. The item rows of the triple AHEAD places on are prefetched (table and gradient). Compiled with
 * the rest of whyrec's C by whyrec.native.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define AHEAD 4

#define KERNEL(NAME, T, EXP, LOG1P)                                                                                       \
    static inline __attribute__((always_inline)) double NAME##_body(                                          \
        const T *table, int64_t d, const int64_t *u, const int64_t *i, const int64_t *j, int64_t lo, int64_t hi, \
        T *g, double scale, int want_grad) {                                                                     \
        double total = 0.0;                                                                                     \
        for (int64_t t = lo; t < hi; t++) {                                                                     \
            if (t + AHEAD < hi) {                                                                               \
                const char *pi = (const char *)(table + i[t + AHEAD] * d);                                      \
                const char *pj = (const char *)(table + j[t + AHEAD] * d);                                      \
                const char *gi = want_grad ? (const char *)(g + i[t + AHEAD] * d) : 0;                          \
                const char *gj = want_grad ? (const char *)(g + j[t + AHEAD] * d) : 0;                          \
                for (int64_t c = 0; c < d * (int64_t)sizeof(T); c += 64) {                                      \
                    __builtin_prefetch(pi + c, 0, 3);                                                           \
                    __builtin_prefetch(pj + c, 0, 3);                                                           \
                    if (want_grad) {                                                                            \
                        __builtin_prefetch(gi + c, 1, 3);                                                       \
                        __builtin_prefetch(gj + c, 1, 3);                                                       \
                    }                                                                                           \
                }                                                                                               \
            }                                                                                                   \
            const T *eu = table + u[t] * d, *ei = table + i[t] * d, *ej = table + j[t] * d;                     \
            T x = 0;                                                                                            \
            _Pragma("omp simd reduction(+ : x)")                                                               \
            for (int64_t k = 0; k < d; k++) x += eu[k] * (ei[k] - ej[k]);                                       \
            /* e = exp(-|x|) once: softplus(-x) = max(-x, 0) + log1p(e), sigma(-x) = (x < 0 ? 1 : e) / (1 + e) */  \
            const T e = EXP(-(x < 0 ? -x : x));                                                                 \
            if (want_grad) {                                                                                    \
                const T w = (T)(-scale) * (x < 0 ? (T)1 : e) / ((T)1 + e);                                      \
                T *gu = g + u[t] * d, *gi = g + i[t] * d, *gj = g + j[t] * d;                                   \
                _Pragma("omp simd")                                                                             \
                for (int64_t k = 0; k < d; k++) gu[k] += w * (ei[k] - ej[k]);                                   \
                _Pragma("omp simd")                                                                             \
                for (int64_t k = 0; k < d; k++) gi[k] += w * eu[k];                                             \
                _Pragma("omp simd")                                                                             \
                for (int64_t k = 0; k < d; k++) gj[k] -= w * eu[k];                                             \
            }                                                                                                   \
            total += (double)((x < 0 ? -x : (T)0) + LOG1P(e));                                                  \
        }                                                                                                       \
        return total;                                                                                           \
    }                                                                                                           \
    /* the body with d = 64 a constant (its row loops unrolled into four vectors), else any d */                \
    static double NAME##_share(const T *table, int64_t d, const int64_t *u, const int64_t *i, const int64_t *j, \
                               int64_t lo, int64_t hi, T *g, double scale, int want_grad) {                     \
        return d == 64 ? NAME##_body(table, 64, u, i, j, lo, hi, g, scale, want_grad)                           \
                       : NAME##_body(table, d, u, i, j, lo, hi, g, scale, want_grad);                           \
    }                                                                                                           \
                                                                                                                \
    /* `extra`: (threads - 1) * n * d scratch; returns the loss sum, or -1 where memory for the sort fails */   \
    double whyrec_bpr_##T(const T *table, int64_t n, int64_t d, const int64_t *u0, const int64_t *i0,          \
                          const int64_t *j0, int64_t b, T *grad, T *extra, double scale, int want_grad,         \
                          int threads) {                                                                        \
        int64_t *start = calloc((size_t)n + 1, sizeof(int64_t)), *u = malloc(3 * (size_t)b * sizeof(int64_t));  \
        if (!start || !u) { free(start); free(u); return -1.0; }                                                 \
        int64_t *i = u + b, *j = i + b;                                                                         \
        for (int64_t t = 0; t < b; t++) start[u0[t] + 1]++;                                                     \
        for (int64_t r = 0; r < n; r++) start[r + 1] += start[r];                                               \
        for (int64_t t = 0; t < b; t++) {                                                                       \
            int64_t q = start[u0[t]]++;                                                                         \
            u[q] = u0[t], i[q] = i0[t], j[q] = j0[t];                                                           \
        }                                                                                                       \
        free(start);                                                                                            \
        if (!want_grad || threads < 1) threads = 1;                                                             \
        double partial[256] = {0.0};                                                                            \
        if (threads > 256) threads = 256;                                                                       \
        const int64_t size = n * d;                                                                             \
        _Pragma("omp parallel num_threads(threads)")                                                           \
        {                                                                                                       \
            int s = 0, m = 1;                                                                                   \
            PARALLEL_IDS(s, m);                                                                                 \
            T *g = s == 0 ? grad : extra + (int64_t)(s - 1) * size;                                             \
            if (want_grad) memset(g, 0, (size_t)size * sizeof(T));                                              \
            partial[s] = NAME##_share(table, d, u, i, j, b * s / m, b * (s + 1) / m, g, scale, want_grad);     \
            if (m > 1) {                                                                                        \
                _Pragma("omp barrier")                                                                          \
                const int64_t lo = n * s / m * d, hi = n * (s + 1) / m * d;                                     \
                for (int e = 0; e < m - 1; e++) {                                                               \
                    const T *src = extra + (int64_t)e * size;                                                   \
                    _Pragma("omp simd")                                                                         \
                    for (int64_t k = lo; k < hi; k++) grad[k] += src[k];                                        \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        free(u);                                                                                                \
        double total = 0.0;                                                                                     \
        for (int s = 0; s < threads; s++) total += partial[s];                                                  \
        return total;                                                                                           \
    }

#ifdef _OPENMP
#define PARALLEL_IDS(s, m) (s = omp_get_thread_num(), m = omp_get_num_threads())
#else
#define PARALLEL_IDS(s, m) ((void)0)
#endif

KERNEL(bpr_f32, float, expf, log1pf)
KERNEL(bpr_f64, double, exp, log1p)
