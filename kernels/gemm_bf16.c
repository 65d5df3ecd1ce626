/* The bf16 GEMM engine: blocking and threading (as gemm_driver.c's pre-packed path), packing, the
 * portable microkernel and the reference loops. */
#include <omp.h>
#include <string.h>

#include "gemm_bf16_internal.h"

/* Problems below this many multiply-adds run on the calling thread: waking a team costs more. */
enum { PARALLEL_MIN_WORK = 1 << 20 };

static int pairs_of(int k) { return (k + 1) / 2; }

size_t gemm_bf16_packed_size(int n, int k) {
    if (n <= 0 || k <= 0) return 0;
    return (size_t)((n + GEMM_BF16_NR - 1) / GEMM_BF16_NR) * GEMM_BF16_NR * 2 * (size_t)pairs_of(k);
}

void gemm_bf16_pack_panel(int n, int k, int j0, const float *b, long ldb, int taps, uint16_t *dst) {
    const int k2 = pairs_of(k), cin = k / taps;
    for (int jj = 0; jj < GEMM_BF16_NR; jj++) {
        const int col = j0 + jj;
        const float *src = col < n ? b + col * ldb : NULL;
        for (int t = 0; t < k2; t++)
            for (int e = 0; e < 2; e++) {
                const int kk = 2 * t + e;
                float v = 0.0f;
                if (src && kk < k) v = taps == 1 ? src[kk] : src[(kk % cin) * taps + kk / cin];
                dst[((long)t * GEMM_BF16_NR + jj) * 2 + e] = bf16_from_f32(v);
            }
    }
}

void gemm_bf16_pack_b_nt(int n, int k, const float *b, int ldb, uint16_t *packed) {
    const int panels = (n + GEMM_BF16_NR - 1) / GEMM_BF16_NR;
    const long stride = (long)pairs_of(k) * GEMM_BF16_NR * 2;
#pragma omp parallel for schedule(static) if ((long)n * k > (1 << 16))
    for (int q = 0; q < panels; q++)
        gemm_bf16_pack_panel(n, k, q * GEMM_BF16_NR, b, ldb, 1, packed + q * stride);
}

/* ---- portable microkernel: the arithmetic of vdpbf16ps in C ---- */

static void generic_convert(const float *src, int rows, int kc, uint32_t *dst) {
    for (int r = 0; r < rows; r++) {
        uint16_t *d = (uint16_t *)(dst + r * BF16_APITCH);
        for (int q = 0; q < kc; q++) d[q] = bf16_from_f32(src[r * GEMM_APITCH + q]);
        if (kc & 1) d[kc] = 0;
    }
}

static void generic_kernel(int kc2, const uint32_t *a, const uint16_t *b, float *c, long ldc,
                           int mr, int nr, const float *bias, int load_c) {
    for (int r = 0; r < mr; r++) {
        const uint16_t *ar = (const uint16_t *)(a + r * BF16_APITCH);
        for (int j = 0; j < nr; j++) {
            float s = 0.0f;
            for (int t = 0; t < kc2; t++) {
                /* Both products are exact in fp32, so fused or not the sums round the same. */
                s += bf16_to_f32(ar[2 * t + 1]) * bf16_to_f32(b[(t * GEMM_BF16_NR + j) * 2 + 1]);
                s += bf16_to_f32(ar[2 * t]) * bf16_to_f32(b[(t * GEMM_BF16_NR + j) * 2]);
            }
            float *out = c + r * ldc + j;
            float v = load_c ? *out + s : s;
            *out = bias ? v + bias[j] : v;
        }
    }
}

const gemm_bf16_kernel *gemm_bf16_kernel_generic(void) {
    static const gemm_bf16_kernel k = {4, generic_kernel, generic_convert};
    return &k;
}

/* ---- the engine ---- */

typedef struct {
    const gemm_bf16_problem *p;
    const gemm_bf16_kernel *kern;
    int k2;    /* pairs of k */
    int nkb;   /* k blocks */
    int tiles; /* row tiles of kern->mr rows */
} plan;

/* k block kb is floats [*p0, *p0 + *kc) = pairs [*p0 / 2, ...): near-equal blocks of pairs that
 * depend on k only. */
static inline void k_block(const plan *pl, int kb, int *p0, int *kc) {
    const long k2 = pl->k2;
    const int t0 = (int)(k2 * kb / pl->nkb), t1 = (int)(k2 * (kb + 1) / pl->nkb);
    *p0 = 2 * t0;
    *kc = (2 * t1 < pl->p->k ? 2 * t1 : pl->p->k) - *p0;
}

static void multiply(const plan *pl, int t0, int t1, int q0, int q1, int kb, float *fbuf,
                     uint32_t *abuf) {
    const gemm_bf16_problem *p = pl->p;
    const int mr = pl->kern->mr;
    int p0, kc;
    k_block(pl, kb, &p0, &kc);
    const int kc2 = pairs_of(kc);
    const long pstride = (long)pl->k2 * GEMM_BF16_NR * 2;
    const uint16_t *bbase = p->packed + (long)(p0 / 2) * GEMM_BF16_NR * 2;
    for (int t = t0; t < t1; t++) {
        const int r0 = t * mr, rows = p->m - r0 < mr ? p->m - r0 : mr;
        p->load_a(p->a_ctx, r0, rows, p0, kc, fbuf);
        pl->kern->convert(fbuf, rows, kc, abuf);
        for (int q = q0; q < q1; q++) {
            const int col = q * GEMM_BF16_NR, cols = p->n - col < GEMM_BF16_NR ? p->n - col : GEMM_BF16_NR;
            pl->kern->kernel(kc2, abuf, bbase + q * pstride, p->c + r0 * p->ldc + col, p->ldc, rows,
                             cols, kb == 0 && p->bias ? p->bias + col : NULL,
                             kb == 0 ? p->accumulate : 1);
        }
    }
}

static void init_only(const gemm_bf16_problem *p) {
    for (int i = 0; i < p->m; i++) {
        float *row = p->c + i * p->ldc;
        for (int j = 0; j < p->n; j++)
            row[j] = (p->accumulate ? row[j] : 0.0f) + (p->bias ? p->bias[j] : 0.0f);
    }
}

void gemm_bf16_run(const gemm_bf16_problem *p) {
    if (p->m <= 0 || p->n <= 0) return;
    if (p->k <= 0) {
        init_only(p);
        return;
    }
    const gemm_bf16_kernel *kern = kern_bf16_active() ? gemm_bf16_kernel_avx512() : gemm_bf16_kernel_generic();
    plan pl = {p, kern, pairs_of(p->k), 0, 0};
    pl.nkb = (pl.k2 + BF16_KC / 2 - 1) / (BF16_KC / 2);
    pl.tiles = (p->m + kern->mr - 1) / kern->mr;
    const int panels = (p->n + GEMM_BF16_NR - 1) / GEMM_BF16_NR, mr = kern->mr;
    const int threads = omp_in_parallel() || (double)p->m * p->n * p->k < PARALLEL_MIN_WORK
                            ? 1 : omp_get_max_threads();
    /* Work items cut as the fp32 engine cuts them (gemm_split_items). */
    const gemm_split sp = gemm_split_items(pl.tiles, panels, mr, GEMM_BF16_NR, threads);
    const int per_rg = sp.per_rg, per_pg = sp.per_pg, rgroups = sp.rgroups, pgroups = sp.pgroups;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float fbuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        uint32_t abuf[BF16_MR_MAX * BF16_APITCH] __attribute__((aligned(64)));
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rgroups * pgroups; item++) {
            const int rg = item / pgroups, pg = item % pgroups;
            const int t0 = rg * per_rg, t1 = t0 + per_rg < pl.tiles ? t0 + per_rg : pl.tiles;
            const int q0 = pg * per_pg, q1 = q0 + per_pg < panels ? q0 + per_pg : panels;
            for (int kb = 0; kb < pl.nkb; kb++) multiply(&pl, t0, t1, q0, q1, kb, fbuf, abuf);
        }
    }
}

void gemm_bf16_nt_packed(int m, int n, int k, const float *a, int lda, const uint16_t *packed,
                         float *c, int ldc, const float *bias, int accumulate) {
    const gemm_rows_src as = {a, lda};
    const gemm_bf16_problem p = {m, n, k, gemm_load_rows, &as, packed, c, ldc, bias, accumulate};
    gemm_bf16_run(&p);
}

void gemm_bf16_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc, const float *bias, int accumulate) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int q = 0; q < k; q += 2) {
                if (q + 1 < k)
                    s += bf16_to_f32(bf16_from_f32(a[(long)i * lda + q + 1])) *
                         bf16_to_f32(bf16_from_f32(b[(long)j * ldb + q + 1]));
                s += bf16_to_f32(bf16_from_f32(a[(long)i * lda + q])) *
                     bf16_to_f32(bf16_from_f32(b[(long)j * ldb + q]));
            }
            float *out = &c[(long)i * ldc + j];
            *out = (accumulate ? *out : 0.0f) + s + (bias ? bias[j] : 0.0f);
        }
}
