/* The BPR loss of a final table, and its gradient as a sparse matrix over the table's rows
 * (whyrec.train.bpr_kernel).
 *
 * For triple t = (u, i, j), margin x_t = e_u . (e_i - e_j) and w_t = -sigma(-x_t) * scale (both from one
 * exponential, in the table's precision):
 *
 *     L = sum_t softplus(-x_t)      (returned; the caller divides by b)
 *     grad[u] += w_t (e_i - e_j),   grad[i] += w_t e_u,   grad[j] -= w_t e_u
 *
 * The margins are one parallel pass over the triples (each of `threads` OpenMP threads a contiguous share;
 * the rows of the triple AHEAD places on prefetched), which only reads the table. The gradient is not
 * scattered: it is grad = M table with M the (n, n) CSR matrix of the four entries of every triple,
 * (u, i, +w_t), (u, j, -w_t), (i, u, +w_t), (j, u, -w_t), written here (a counting sort by row; in each row
 * the entries in triple order) for a row-parallel sparse product that writes every row of the gradient once:
 * no (n, d) buffer per thread to zero and sum, and the same bits on any number of threads. Compiled with the
 * rest of whyrec's C by whyrec.native.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define AHEAD 4

#define KERNEL(NAME, T, EXP, LOG1P)                                                                             \
    /* the loss of triples lo .. hi-1, and w_t of each into w (NULL: not wanted) */                            \
    static inline __attribute__((always_inline)) double NAME##_body(                                          \
        const T *table, int64_t d, const int64_t *u, const int64_t *i, const int64_t *j, int64_t lo, int64_t hi, \
        T *w, double scale) {                                                                                   \
        double total = 0.0;                                                                                     \
        for (int64_t t = lo; t < hi; t++) {                                                                     \
            if (t + AHEAD < hi) {                                                                               \
                const char *pu = (const char *)(table + u[t + AHEAD] * d);                                      \
                const char *pi = (const char *)(table + i[t + AHEAD] * d);                                      \
                const char *pj = (const char *)(table + j[t + AHEAD] * d);                                      \
                for (int64_t c = 0; c < d * (int64_t)sizeof(T); c += 64) {                                      \
                    __builtin_prefetch(pu + c, 0, 3);                                                           \
                    __builtin_prefetch(pi + c, 0, 3);                                                           \
                    __builtin_prefetch(pj + c, 0, 3);                                                           \
                }                                                                                               \
            }                                                                                                   \
            const T *eu = table + u[t] * d, *ei = table + i[t] * d, *ej = table + j[t] * d;                     \
            T x = 0;                                                                                            \
            _Pragma("omp simd reduction(+ : x)")                                                               \
            for (int64_t k = 0; k < d; k++) x += eu[k] * (ei[k] - ej[k]);                                       \
            /* e = exp(-|x|) once: softplus(-x) = max(-x, 0) + log1p(e), sigma(-x) = (x < 0 ? 1 : e) / (1 + e) */  \
            const T e = EXP(-(x < 0 ? -x : x));                                                                 \
            if (w) w[t] = (T)(-scale) * (x < 0 ? (T)1 : e) / ((T)1 + e);                                        \
            total += (double)((x < 0 ? -x : (T)0) + LOG1P(e));                                                  \
        }                                                                                                       \
        return total;                                                                                           \
    }                                                                                                           \
    /* the body with d = 64 a constant (its row loops unrolled into four vectors), else any d */                \
    static double NAME##_share(const T *table, int64_t d, const int64_t *u, const int64_t *i, const int64_t *j, \
                               int64_t lo, int64_t hi, T *w, double scale) {                                    \
        return d == 64 ? NAME##_body(table, 64, u, i, j, lo, hi, w, scale)                                      \
                       : NAME##_body(table, d, u, i, j, lo, hi, w, scale);                                      \
    }                                                                                                           \
                                                                                                                \
    /* The loss sum (-1 where memory fails). With crow (n + 1), col and val (4 b each) given, the gradient's     \
     * matrix M is written there (col/val row by row; crow[n] = 4 b). Each thread takes a contiguous share of   \
     * the triples: their margins and weights, and its count of M's entries in every row; after a barrier one  \
     * thread turns the counts into crow and each share's first place in every row (shares in order, so each   \
     * row's entries are in triple order whatever the thread count); then each thread places its entries. */   \
    double whyrec_bpr_##T(const T *table, int64_t n, int64_t d, const int64_t *u, const int64_t *i,            \
                          const int64_t *j, int64_t b, int32_t *crow, int32_t *col, T *val, double scale,      \
                          int threads) {                                                                        \
        if (threads < 1) threads = 1;                                                                           \
        if (threads > 256) threads = 256;                                                                       \
        T *w = crow ? malloc((size_t)b * sizeof(T)) : NULL;                                                     \
        int32_t *next = crow ? calloc((size_t)threads * (size_t)n, sizeof(int32_t)) : NULL;                     \
        if (crow && (!w || !next)) { free(w); free(next); return -1.0; }                                        \
        double partial[256] = {0.0};                                                                            \
        _Pragma("omp parallel num_threads(threads)")                                                           \
        {                                                                                                       \
            int s = 0, m = 1;                                                                                   \
            PARALLEL_IDS(s, m);                                                                                 \
            const int64_t lo = b * s / m, hi = b * (s + 1) / m;                                                 \
            partial[s] = NAME##_share(table, d, u, i, j, lo, hi, w, scale);                                     \
            if (crow) {                                                                                         \
                int32_t *cnt = next + (int64_t)s * n;                                                           \
                for (int64_t t = lo; t < hi; t++) cnt[u[t]] += 2, cnt[i[t]]++, cnt[j[t]]++;                     \
                _Pragma("omp barrier")                                                                          \
                _Pragma("omp single")                                                                           \
                {                                                                                               \
                    int32_t place = 0;                                                                          \
                    for (int64_t r = 0; r < n; r++) {                                                           \
                        crow[r] = place;                                                                        \
                        for (int q = 0; q < m; q++) {                                                           \
                            const int32_t c = next[(int64_t)q * n + r];                                         \
                            next[(int64_t)q * n + r] = place;                                                   \
                            place += c;                                                                         \
                        }                                                                                       \
                    }                                                                                           \
                    crow[n] = place;                                                                            \
                } /* (its implied barrier) */                                                                   \
                for (int64_t t = lo; t < hi; t++) {                                                             \
                    const int32_t p = cnt[u[t]]++, q = cnt[u[t]]++, a = cnt[i[t]]++, c = cnt[j[t]]++;           \
                    col[p] = (int32_t)i[t], val[p] = w[t];                                                      \
                    col[q] = (int32_t)j[t], val[q] = -w[t];                                                     \
                    col[a] = (int32_t)u[t], val[a] = w[t];                                                      \
                    col[c] = (int32_t)u[t], val[c] = -w[t];                                                     \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        free(w);                                                                                                \
        free(next);                                                                                             \
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
