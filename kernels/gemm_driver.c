/* Blocking, packing and threading for the GEMM engine (see gemm_internal.h). */
#include <omp.h>
#include <string.h>

#include "gemm_internal.h"

const gemm_kernel *gemm_kernel_for(kern_isa isa) {
    switch (isa) {
    case KERN_ISA_AVX512: return gemm_kernel_avx512();
    case KERN_ISA_AVX2: return gemm_kernel_avx2();
    default: return gemm_kernel_generic();
    }
}

/* One packed block of B per calling thread (the team shares its caller's). Static storage, so a
 * product never allocates and cannot fail. */
static _Thread_local float b_block[GEMM_KC * GEMM_NC] __attribute__((aligned(64)));

size_t gemm_packed_floats(int n, int k) {
    return (size_t)((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR * (size_t)(k > 0 ? k : 0);
}

/* C = bias (+ C) for an empty k. */
static void init_only(const gemm_problem *p) {
    for (int i = 0; i < p->m; i++) {
        float *row = p->c + i * p->ldc;
        for (int j = 0; j < p->n; j++)
            row[j] = (p->accumulate ? row[j] : 0.0f) + (p->bias ? p->bias[j] : 0.0f);
    }
}

/* Problems below this many multiply-adds run on the calling thread: waking a team costs more. */
enum { PARALLEL_MIN_WORK = 1 << 17 };

void gemm_run(const gemm_problem *p) {
    if (p->m <= 0 || p->n <= 0) return;
    if (p->k <= 0) {
        init_only(p);
        return;
    }
    const gemm_kernel *kern = gemm_kernel_for(kern_isa_active());
    const int mr = kern->mr, m = p->m, n = p->n, k = p->k;
    /* k blocks of near-equal size; they depend on k only, which keeps the sums' order fixed. */
    const int nkb = (k + GEMM_KC - 1) / GEMM_KC;
    const int panels = (n + GEMM_NR - 1) / GEMM_NR, max_block_panels = GEMM_NC / GEMM_NR;
    const int njb = (panels + max_block_panels - 1) / max_block_panels;
    const int block_panels = (panels + njb - 1) / njb;
    const int tiles = (m + mr - 1) / mr;
    float *shared = p->packed ? NULL : b_block;

    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if ((double)m * n * k < PARALLEL_MIN_WORK) threads = 1;
    /* Few row tiles: split the panels of a block into groups too, so every thread has work. */
    int groups = 1;
    if (threads > 1 && tiles < 4 * threads) {
        groups = (4 * threads + tiles - 1) / tiles;
        if (groups > block_panels) groups = block_panels;
    }

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float abuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        for (int jb = 0; jb < njb; jb++) {
            const int j0 = jb * block_panels;
            const int np = panels - j0 < block_panels ? panels - j0 : block_panels;
            for (int kb = 0; kb < nkb; kb++) {
                const int p0 = (int)((long)k * kb / nkb), kc = (int)((long)k * (kb + 1) / nkb) - p0;
                if (shared) {
#pragma omp for schedule(static)
                    for (int q = 0; q < np; q++)
                        p->pack_b(p->b_ctx, (j0 + q) * GEMM_NR, p0, kc, shared + (long)q * kc * GEMM_NR);
                }
                const int per_group = (np + groups - 1) / groups;
#pragma omp for schedule(dynamic, 1)
                for (int item = 0; item < tiles * groups; item++) {
                    const int t = item / groups, g = item % groups;
                    const int q0 = g * per_group, q1 = q0 + per_group < np ? q0 + per_group : np;
                    if (q0 >= q1) continue;
                    const int r0 = t * mr, rows = m - r0 < mr ? m - r0 : mr;
                    p->load_a(p->a_ctx, r0, rows, p0, kc, abuf);
                    for (int q = q0; q < q1; q++) {
                        const int col = (j0 + q) * GEMM_NR, cols = n - col < GEMM_NR ? n - col : GEMM_NR;
                        const float *bp = shared ? shared + (long)q * kc * GEMM_NR
                                                 : p->packed + ((long)(j0 + q) * k + p0) * GEMM_NR;
                        kern->kernel(kc, abuf, bp, p->c + r0 * p->ldc + col, p->ldc, rows, cols,
                                     kb == 0 && p->bias ? p->bias + col : NULL,
                                     kb == 0 ? p->accumulate : 1);
                    }
                }
            }
        }
    }
}

/* B stored [n][k] (a Linear weight): panel columns are rows of b. */
void gemm_pack_nt_panel(const float *b, long ldb, int n, int j0, int p0, int kc, float *dst) {
    const gemm_kernel *kern = gemm_kernel_for(kern_isa_active());
    if (kern->pack_nt) {
        kern->pack_nt(b, ldb, n, j0, p0, kc, dst);
        return;
    }
    const int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
    for (int jj = 0; jj < cols; jj++) {
        const float *src = b + (j0 + jj) * ldb + p0;
        for (int q = 0; q < kc; q++) dst[q * GEMM_NR + jj] = src[q];
    }
    for (int jj = cols; jj < GEMM_NR; jj++)
        for (int q = 0; q < kc; q++) dst[q * GEMM_NR + jj] = 0.0f;
}

void gemm_pack_nt(int n, int k, const float *b, int ldb, float *packed) {
    const int panels = (n + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((long)n * k > (1 << 16))
    for (int q = 0; q < panels; q++) gemm_pack_nt_panel(b, ldb, n, q * GEMM_NR, 0, k, packed + (long)q * k * GEMM_NR);
}
