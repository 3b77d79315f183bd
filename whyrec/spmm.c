/* CSR (int32 indices, float32 values) x dense float32 rows, for whyrec.spmm (compiled by whyrec.native).
 *
 *   out[m(r)] = beta * y[r] + zs[r] * z[r] + alpha * sum_{p in row r} val[p] * x[col[p]]
 *
 * (y == NULL: beta ignored; z == NULL: no z term; rows == NULL: m(r) = r, else m(r) = rows[r], a
 * permutation; x float32, or bfloat16 where x16 -- half the bytes each gather moves --; the result written as
 * float32 to out and/or rounded to bfloat16, to nearest even, to out16) for the rows lo .. hi-1, on `threads` OpenMP threads, each a contiguous range of rows with
 * an equal share of the stored entries. Each row's sum is taken in storage order, one float accumulator
 * per column (the order MKL's CSR product uses: the same bits). While row r is summed, the x rows of the
 * entries AHEAD places further on (across row boundaries, up to the range's end) are prefetched: a product
 * of a sparse graph is bound by the latency of those gathers, not by arithmetic. y may be out itself where
 * rows is NULL (its row is read before it is written); x and z must not overlap out.
 *
 * Where the result is large (STREAM_BYTES or more: it cannot stay in the caches anyway), its rows are written
 * with non-temporal stores (x86 with AVX: straight to memory, no read of the line first, no eviction of the x
 * rows the gathers reuse) and the y and z rows a few rows ahead are prefetched with the non-temporal hint (read
 * once: kept out of the outer caches). The gathered x rows are what a product of a sparse graph reuses; the
 * other streams of a fused product (y, z, the result: up to three tables more) otherwise push them out of the
 * last-level cache. The values written are the same either way.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef AHEAD
#define AHEAD 16
#endif
#ifndef STREAM_BYTES
#define STREAM_BYTES (8 << 20)
#endif
/* rows of y and z prefetched ahead of the row being summed, where the result is streamed */
#define AHEAD_ROWS 4

/* what is added to alpha * (A x)[r], and where the row goes */
typedef struct {
    const float *y, *z, *zs;
    const int64_t *rows;
    float beta, alpha;
    float *out;
    uint16_t *out16;
    int stream; /* non-temporal stores and prefetches (see above) */
} tail_t;

static inline float f32(float v) { return v; }

static inline float bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u); /* NaN stays NaN */
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static inline __attribute__((always_inline)) void finish(float *acc, int64_t r, int64_t d, int64_t c0, int64_t w,
                                                         const tail_t *t) {
    const int64_t row = (t->rows ? t->rows[r] : r) * d + c0;
    const float alpha = t->alpha;
    for (int64_t k = 0; k < w; k++) acc[k] *= alpha;
    if (t->y) {
        const float *yr = t->y + r * d + c0;
        const float beta = t->beta;
        for (int64_t k = 0; k < w; k++) acc[k] += beta * yr[k];
    }
    if (t->z) {
        const float *zr = t->z + r * d + c0;
        const float s = t->zs[r];
        for (int64_t k = 0; k < w; k++) acc[k] += s * zr[k];
    }
    if (t->out) {
        float *o = t->out + row;
#if defined(__AVX__)
        if (t->stream && w % 8 == 0 && ((uintptr_t)o & 31) == 0) {
            for (int64_t k = 0; k < w; k += 8) _mm256_stream_ps(o + k, _mm256_loadu_ps(acc + k));
        } else
#endif
            for (int64_t k = 0; k < w; k++) o[k] = acc[k];
    }
    if (t->out16) {
        uint16_t *o = t->out16 + row;
#if defined(__AVX__)
        if (t->stream && w % 8 == 0 && ((uintptr_t)o & 15) == 0) {
            uint16_t h[16];
            for (int64_t k0 = 0; k0 < w; k0 += 16) {
                const int64_t m = w - k0 < 16 ? w - k0 : 16;
                for (int64_t k = 0; k < m; k++) h[k] = to_bf16(acc[k0 + k]);
                for (int64_t k = 0; k < m; k += 8)
                    _mm_stream_si128((__m128i *)(o + k0 + k), _mm_loadu_si128((const __m128i *)(h + k)));
            }
        } else
#endif
            for (int64_t k = 0; k < w; k++) o[k] = to_bf16(acc[k]);
    }
}

/* the y and z rows of row r, for a streamed result: asked for with the non-temporal hint */
static inline __attribute__((always_inline)) void prefetch_tail(int64_t r, int64_t hi, int64_t d, const tail_t *t) {
    if (!t->stream || r >= hi) return;
    for (int64_t c = 0; c < d * (int64_t)sizeof(float); c += 64) {
        if (t->y) __builtin_prefetch((const char *)(t->y + r * d) + c, 0, 0);
        if (t->z) __builtin_prefetch((const char *)(t->z + r * d) + c, 0, 0);
    }
}

#define ROWS(NAME, D, TX, CVT)                                                                           \
    static void NAME(int64_t lo, int64_t hi, const int32_t *crow, const int32_t *col, const float *val,  \
                     const TX *x, const tail_t *t) {                                                     \
        const int32_t end = crow[hi];                                                                    \
        for (int64_t r = lo; r < hi; r++) {                                                              \
            prefetch_tail(r + AHEAD_ROWS, hi, D, t);                                                     \
            float acc[D];                                                                                \
            for (int k = 0; k < D; k++) acc[k] = 0.0f;                                                   \
            const int32_t e = crow[r + 1];                                                               \
            for (int32_t p = crow[r]; p < e; p++) {                                                      \
                if (p + AHEAD < end) {                                                                   \
                    const char *q = (const char *)(x + (int64_t)col[p + AHEAD] * D);                     \
                    for (int c = 0; c < D * (int)sizeof(TX); c += 64) __builtin_prefetch(q + c, 0, 3);   \
                }                                                                                        \
                const float v = val[p];                                                                  \
                const TX *xr = x + (int64_t)col[p] * D;                                                  \
                for (int k = 0; k < D; k++) acc[k] += v * CVT(xr[k]);                                    \
            }                                                                                            \
            finish(acc, r, D, 0, D, t);                                                                  \
        }                                                                                                \
    }

ROWS(rows16, 16, float, f32)
ROWS(rows32, 32, float, f32)
ROWS(rows64, 64, float, f32)
ROWS(rows128, 128, float, f32)
ROWS(rows64_bf16, 64, uint16_t, bf16)

/* any width d: blocks of 16 columns (the row's entries read once per block), then the rest */
#define ROWS_ANY(NAME, TX, CVT)                                                                          \
    static void NAME(int64_t lo, int64_t hi, const int32_t *crow, const int32_t *col, const float *val,  \
                     const TX *x, int64_t d, const tail_t *t) {                                          \
        for (int64_t r = lo; r < hi; r++) {                                                              \
            prefetch_tail(r + AHEAD_ROWS, hi, d, t);                                                     \
            const int32_t s = crow[r], e = crow[r + 1];                                                  \
            for (int64_t c0 = 0; c0 < d; c0 += 16) {                                                     \
                const int64_t w = d - c0 < 16 ? d - c0 : 16;                                             \
                float acc[16] = {0.0f};                                                                  \
                for (int32_t p = s; p < e; p++) {                                                        \
                    const float v = val[p];                                                              \
                    const TX *xr = x + (int64_t)col[p] * d + c0;                                         \
                    for (int64_t k = 0; k < w; k++) acc[k] += v * CVT(xr[k]);                            \
                }                                                                                        \
                finish(acc, r, d, c0, w, t);                                                             \
            }                                                                                            \
        }                                                                                                \
    }

ROWS_ANY(rows_any, float, f32)
ROWS_ANY(rows_any_bf16, uint16_t, bf16)

static void rows_of(int64_t lo, int64_t hi, const int32_t *crow, const int32_t *col, const float *val,
                    const void *x, int x16, int64_t d, const tail_t *t) {
    if (x16) {
        if (d == 64) rows64_bf16(lo, hi, crow, col, val, (const uint16_t *)x, t);
        else rows_any_bf16(lo, hi, crow, col, val, (const uint16_t *)x, d, t);
        return;
    }
    const float *xf = (const float *)x;
    switch (d) {
    case 16: rows16(lo, hi, crow, col, val, xf, t); break;
    case 32: rows32(lo, hi, crow, col, val, xf, t); break;
    case 64: rows64(lo, hi, crow, col, val, xf, t); break;
    case 128: rows128(lo, hi, crow, col, val, xf, t); break;
    default: rows_any(lo, hi, crow, col, val, xf, d, t);
    }
}

/* rows lo .. hi-1, their non-temporal stores made visible before the thread goes on */
static void rows(int64_t lo, int64_t hi, const int32_t *crow, const int32_t *col, const float *val,
                 const void *x, int x16, int64_t d, const tail_t *t) {
    rows_of(lo, hi, crow, col, val, x, x16, d, t);
#if defined(__AVX__)
    if (t->stream) _mm_sfence();
#endif
}

/* the first row whose start is at or past `target` stored entries (binary search of crow) */
static int64_t row_at(const int32_t *crow, int64_t n, int64_t target) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (crow[mid] < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* rows lo .. hi-1 of the product on `threads` threads (OpenMP; its runtime is the process's, Torch's own
 * libgomp where Torch loaded it first), each a contiguous share of equal stored entries */
void whyrec_csr_addmm_f32(int64_t lo, int64_t hi, const int32_t *crow, const int32_t *col, const float *val,
                          const void *x, int x16, int64_t d, const float *y, float beta, float alpha, const float *z,
                          const float *zs, const int64_t *out_rows, float *out, uint16_t *out16, int threads) {
    const int64_t out_bytes = (hi - lo) * d * (out ? 4 : 0) + (hi - lo) * d * (out16 ? 2 : 0);
    const tail_t t = {y, z, zs, out_rows, beta, alpha, out, out16, out_bytes >= STREAM_BYTES};
    if (threads <= 1 || hi - lo < 2) {
        rows(lo, hi, crow, col, val, x, x16, d, &t);
        return;
    }
    const int64_t first = crow[lo], nnz = crow[hi] - first;
#pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int s = 0; s < threads; s++) {
        int64_t a = s == 0 ? lo : row_at(crow, hi, first + nnz * s / threads);
        int64_t b = s == threads - 1 ? hi : row_at(crow, hi, first + nnz * (s + 1) / threads);
        if (a < lo) a = lo;
        rows(a, b, crow, col, val, x, x16, d, &t);
    }
}

/* The layer-0 table in a node order that numbers the users first, and its weighted squared norm:
 *
 *   out[r] = users[order[r]] for order[r] < n_users, else items[order[r] - n_users]     (rows of d floats)
 *   returns sum_r count[r] * |out[r]|^2   (each thread's share summed in double, the shares in order)
 *
 * with a bfloat16 copy in out16 where it is given (rounded to nearest even, as to_bf16). The source rows of
 * row r + AHEAD_ROWS are prefetched. One pass where a gather, a norm pass and a conversion pass were three. */
double whyrec_gather_rows_f32(const float *users, const float *items, int64_t n_users, const int64_t *order,
                              int64_t n, int64_t d, const float *count, float *out, uint16_t *out16, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    double partial[256] = {0.0};
#pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int s = 0; s < threads; s++) {
        const int64_t lo = n * s / threads, hi = n * (s + 1) / threads;
        double total = 0.0;
        for (int64_t r = lo; r < hi; r++) {
            if (r + AHEAD_ROWS < hi) {
                const int64_t o = order[r + AHEAD_ROWS];
                const char *q = (const char *)(o < n_users ? users + o * d : items + (o - n_users) * d);
                for (int64_t c = 0; c < d * (int64_t)sizeof(float); c += 64) __builtin_prefetch(q + c, 0, 3);
            }
            const int64_t o = order[r];
            const float *src = o < n_users ? users + o * d : items + (o - n_users) * d;
            float *dst = out + r * d;
            float sq = 0.0f;
            for (int64_t k = 0; k < d; k++) {
                dst[k] = src[k];
                sq += src[k] * src[k];
            }
            if (out16) {
                uint16_t *h = out16 + r * d;
                for (int64_t k = 0; k < d; k++) h[k] = to_bf16(src[k]);
            }
            total += (double)count[r] * (double)sq;
        }
        partial[s] = total;
    }
    double total = 0.0;
    for (int s = 0; s < threads; s++) total += partial[s];
    return total;
}
