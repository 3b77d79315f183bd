/* Membership of (user, item) pairs in a CSR training matrix, for whyrec.train.sampling.
 *
 *   out[q] = 1 if items[q] is among the sorted columns of row users[q], else 0
 *
 * (a user outside [0, n_users) has no items). One search inside the user's own row per query -- a few cache
 * lines, where a search of all sorted keys u * n_items + i walks ~log2(nnz) random ones: a branch-free count of
 * the row's items below the query for rows of up to SCAN items, a branch-free binary search beyond. The row
 * starts of the query AHEAD places on, and the first line of the row of the query AHEAD / 2 places on, are
 * prefetched (the searches' loads then overlap). The queries are shared among `threads` OpenMP threads
 * (Torch's: whyrec.native). Compiled with the rest of whyrec's C by whyrec.native.
 */
#include <stdint.h>

#define AHEAD 16
#define SCAN 64

static inline int64_t user_of(const int64_t *users, int64_t q, int64_t n_users) {
    const int64_t u = users[q];
    return u < 0 || u >= n_users ? -1 : u;
}

void whyrec_is_positive(const int64_t *indptr, const int64_t *indices, int64_t n_users, const int64_t *users,
                        const int64_t *items, int64_t n, uint8_t *out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads < 1 ? 1 : threads)
    for (int64_t q = 0; q < n; q++) {
        if (q + AHEAD < n) {
            const int64_t a = user_of(users, q + AHEAD, n_users);
            if (a >= 0) __builtin_prefetch(indptr + a, 0, 3);
            const int64_t b = user_of(users, q + AHEAD / 2, n_users);
            if (b >= 0) __builtin_prefetch(indices + indptr[b], 0, 3);
        }
        const int64_t u = user_of(users, q, n_users);
        if (u < 0) {
            out[q] = 0;
            continue;
        }
        const int64_t v = items[q], lo = indptr[u], len = indptr[u + 1] - lo;
        const int64_t *row = indices + lo;
        int64_t below;
        if (len <= SCAN) {
            below = 0;
            for (int64_t k = 0; k < len; k++) below += row[k] < v;
        } else {
            const int64_t *base = row;
            int64_t m = len;
            while (m > 1) {
                const int64_t half = m / 2;
                base = base[half - 1] < v ? base + half : base;
                m -= half;
            }
            below = (base - row) + (*base < v);
        }
        out[q] = (uint8_t)(below < len && row[below] == v);
    }
}
