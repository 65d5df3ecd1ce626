/* The int8 GEMM engine: blocking and threading (as gemm_bf16.c), weight quantization and packing,
 * the portable microkernel and quantizer, and the reference loops. */
#include <omp.h>
#include <stdlib.h>

#include "gemm_int8_internal.h"

/* Problems below this many multiply-adds run on the calling thread: waking a team costs more. */
enum { PARALLEL_MIN_WORK = 1 << 20 };

int gemm_int8_blocks(int k) {
    const int g = int8_groups(k), per = GEMM_INT8_KC / 4;
    return k > 0 ? (g + per - 1) / per : 0;
}

void gemm_int8_block(int k, int nkb, int kb, int *p0, int *kc) {
    const long g = int8_groups(k);
    const int g0 = (int)(g * kb / nkb), g1 = (int)(g * (kb + 1) / nkb);
    *p0 = 4 * g0;
    *kc = (4 * g1 < k ? 4 * g1 : k) - *p0;
}

float gemm_int8_quantize(const float *x, int kc, long stride, int8_t *q) {
    uint32_t amax = 0;
    for (int i = 0; i < kc; i++) {
        const uint32_t u = int8_abs_bits(x[i * stride]);
        amax = u > amax ? u : amax;
    }
    float inv;
    const float scale = int8_scale(amax, &inv);
    for (int i = 0; i < kc; i++) q[i] = inv == 0.0f ? 0 : (int8_t)int8_round(x[i * stride], inv);
    return scale;
}

size_t gemm_int8_packed_size(int n, int k) {
    if (n <= 0 || k <= 0) return 0;
    return int8_scale_offset(n, k) + (size_t)int8_panels(n) * GEMM_INT8_NR * sizeof(float);
}

/* One output channel: quantized as a whole (one scale), its values laid into the panel, and the
 * block sums of the correction. */
static void pack_column(int n, int k, int col, const float *b, long ldb, int taps, int8_t *q,
                        void *packed) {
    const int k4 = int8_groups(k), nkb = gemm_int8_blocks(k), cin = k / taps;
    const int panel = col / GEMM_INT8_NR, jj = col % GEMM_INT8_NR;
    int8_t *dst = (int8_t *)packed + (size_t)panel * k4 * GEMM_INT8_NR * 4;
    int32_t *corr = (int32_t *)((char *)packed + int8_corr_offset(n, k)) +
                    (size_t)panel * nkb * GEMM_INT8_NR;
    float *sw = (float *)((char *)packed + int8_scale_offset(n, k));
    float scale = 0.0f;
    memset(q, 0, (size_t)k4 * 4);
    if (col < n) {
        const float *src = b + col * ldb;
        if (taps == 1) {
            scale = gemm_int8_quantize(src, k, 1, q);
        } else {
            /* Gather the (tap, cin) order first: the scale is over the whole row either way. */
            float *row = malloc((size_t)k * sizeof *row);
            if (row) {
                for (int kk = 0; kk < k; kk++) row[kk] = src[(kk % cin) * taps + kk / cin];
                scale = gemm_int8_quantize(row, k, 1, q);
                free(row);
            } else {
                scale = NAN; /* cannot happen in practice; a NaN output rather than a wrong one */
            }
        }
    }
    sw[col] = scale;
    for (int g = 0; g < k4; g++)
        for (int e = 0; e < 4; e++) dst[((long)g * GEMM_INT8_NR + jj) * 4 + e] = q[4 * g + e];
    for (int kb = 0; kb < nkb; kb++) {
        int p0, kc;
        gemm_int8_block(k, nkb, kb, &p0, &kc);
        int32_t s = 0;
        for (int kk = p0; kk < p0 + kc; kk++) s += q[kk];
        corr[(long)kb * GEMM_INT8_NR + jj] = -128 * s;
    }
}

void gemm_int8_pack(int n, int k, const float *b, long ldb, int taps, void *packed) {
    const int cols = int8_panels(n) * GEMM_INT8_NR;
#pragma omp parallel if ((long)n * k > (1 << 16))
    {
        int8_t *q = malloc((size_t)int8_groups(k) * 4);
#pragma omp for schedule(static)
        for (int col = 0; col < cols; col++)
            if (q) pack_column(n, k, col, b, ldb, taps, q, packed);
        free(q);
    }
}

void gemm_int8_pack_b_nt(int n, int k, const float *b, int ldb, void *packed) {
    gemm_int8_pack(n, k, b, ldb, 1, packed);
}

/* ---- the portable quantizer and microkernel: the arithmetic every kernel follows ---- */

static void generic_quant(const float *src, int rows, int kc, uint32_t *dst, float *sa) {
    for (int r = 0; r < rows; r++) {
        int8_t q[GEMM_INT8_KC];
        sa[r] = gemm_int8_quantize(src + r * GEMM_APITCH, kc, 1, q);
        uint8_t *d = (uint8_t *)(dst + r * INT8_APITCH);
        for (int i = 0; i < kc; i++) d[i] = (uint8_t)(q[i] + 128);
        for (int i = kc; i % 4; i++) d[i] = 128;
    }
}

static void generic_kernel(int kc4, const uint32_t *a, const int8_t *b, const int32_t *corr,
                           const float *sa, const float *sw, float *c, long ldc, int mr, int nr,
                           const float *bias, int load_c) {
    for (int r = 0; r < mr; r++) {
        const uint8_t *ar = (const uint8_t *)(a + r * INT8_APITCH);
        for (int j = 0; j < nr; j++) {
            int32_t s = corr[j];
            for (int g = 0; g < kc4; g++)
                for (int e = 0; e < 4; e++)
                    s += (int32_t)ar[4 * g + e] * b[((long)g * GEMM_INT8_NR + j) * 4 + e];
            const float v = (float)s * (sa[r] * sw[j]);
            float *out = c + r * ldc + j;
            const float t = load_c ? *out + v : v;
            *out = bias ? t + bias[j] : t;
        }
    }
}

const gemm_int8_kernel *gemm_int8_kernel_generic(void) {
    static const gemm_int8_kernel k = {4, generic_kernel, generic_quant};
    return &k;
}

const gemm_int8_kernel *gemm_int8_kernel_active(void) {
    const kern_isa isa = kern_isa_active();
    if (isa == KERN_ISA_AVX512 && kern_int8_vnni512_supported()) return gemm_int8_kernel_avx512();
    if (isa >= KERN_ISA_AVX2 && kern_int8_avxvnni_supported()) return gemm_int8_kernel_avxvnni();
    if (isa >= KERN_ISA_AVX2) return gemm_int8_kernel_avx2();
    return gemm_int8_kernel_generic();
}

/* ---- the engine ---- */

typedef struct {
    const gemm_int8_problem *p;
    const gemm_int8_kernel *kern;
    int k4;    /* groups of 4 of k */
    int nkb;   /* k blocks */
    int tiles; /* row tiles of kern->mr rows */
    const int32_t *corr;
    const float *sw;
} plan;

static void multiply(const plan *pl, int t0, int t1, int q0, int q1, int kb, float *fbuf,
                     uint32_t *abuf) {
    const gemm_int8_problem *p = pl->p;
    const int mr = pl->kern->mr;
    int p0, kc;
    gemm_int8_block(p->k, pl->nkb, kb, &p0, &kc);
    const int kc4 = int8_groups(kc);
    const long pstride = (long)pl->k4 * GEMM_INT8_NR * 4;
    const int8_t *bbase = (const int8_t *)p->packed + (long)(p0 / 4) * GEMM_INT8_NR * 4;
    float sa[INT8_MR_MAX];
    for (int t = t0; t < t1; t++) {
        const int r0 = t * mr, rows = p->m - r0 < mr ? p->m - r0 : mr;
        p->load_a(p->a_ctx, r0, rows, p0, kc, fbuf);
        pl->kern->quant(fbuf, rows, kc, abuf, sa);
        for (int q = q0; q < q1; q++) {
            const int col = q * GEMM_INT8_NR;
            const int cols = p->n - col < GEMM_INT8_NR ? p->n - col : GEMM_INT8_NR;
            pl->kern->kernel(kc4, abuf, bbase + q * pstride,
                             pl->corr + ((long)q * pl->nkb + kb) * GEMM_INT8_NR, sa, pl->sw + col,
                             p->c + r0 * p->ldc + col, p->ldc, rows, cols,
                             kb == 0 && p->bias ? p->bias + col : NULL, kb == 0 ? p->accumulate : 1);
        }
    }
}

static void init_only(const gemm_int8_problem *p) {
    for (int i = 0; i < p->m; i++) {
        float *row = p->c + i * p->ldc;
        for (int j = 0; j < p->n; j++)
            row[j] = (p->accumulate ? row[j] : 0.0f) + (p->bias ? p->bias[j] : 0.0f);
    }
}

void gemm_int8_run(const gemm_int8_problem *p) {
    if (p->m <= 0 || p->n <= 0) return;
    if (p->k <= 0) {
        init_only(p);
        return;
    }
    const gemm_int8_kernel *kern = gemm_int8_kernel_active();
    plan pl = {p, kern, int8_groups(p->k), gemm_int8_blocks(p->k), 0,
               (const int32_t *)((const char *)p->packed + int8_corr_offset(p->n, p->k)),
               (const float *)((const char *)p->packed + int8_scale_offset(p->n, p->k))};
    pl.tiles = (p->m + kern->mr - 1) / kern->mr;
    const int panels = int8_panels(p->n), mr = kern->mr;
    const int threads = omp_in_parallel() || (double)p->m * p->n * p->k < PARALLEL_MIN_WORK
                            ? 1 : omp_get_max_threads();
    /* Work items cut as the fp32 engine cuts them (gemm_split_items). */
    const gemm_split sp = gemm_split_items(pl.tiles, panels, mr, GEMM_INT8_NR, threads);
    const int per_rg = sp.per_rg, per_pg = sp.per_pg, rgroups = sp.rgroups, pgroups = sp.pgroups;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float fbuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        uint32_t abuf[INT8_MR_MAX * INT8_APITCH] __attribute__((aligned(64)));
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rgroups * pgroups; item++) {
            const int rg = item / pgroups, pg = item % pgroups;
            const int t0 = rg * per_rg, t1 = t0 + per_rg < pl.tiles ? t0 + per_rg : pl.tiles;
            const int q0 = pg * per_pg, q1 = q0 + per_pg < panels ? q0 + per_pg : panels;
            for (int kb = 0; kb < pl.nkb; kb++) multiply(&pl, t0, t1, q0, q1, kb, fbuf, abuf);
        }
    }
}

void gemm_int8_nt_packed(int m, int n, int k, const float *a, int lda, const void *packed,
                         float *c, int ldc, const float *bias, int accumulate) {
    const gemm_rows_src as = {a, lda};
    const gemm_int8_problem p = {m, n, k, gemm_load_rows, &as, packed, c, ldc, bias, accumulate};
    gemm_int8_run(&p);
}

void gemm_int8_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc, const float *bias, int accumulate) {
    int8_t *qa = malloc((size_t)(k > 0 ? k : 1)), *qb = malloc((size_t)(k > 0 ? k : 1));
    float *sw = malloc((size_t)(n > 0 ? n : 1) * sizeof *sw);
    if (!qa || !qb || !sw) abort();
    const int nkb = gemm_int8_blocks(k);
    for (int j = 0; j < n; j++) sw[j] = gemm_int8_quantize(b + (long)j * ldb, k, 1, qb);
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float *out = &c[(long)i * ldc + j];
            float t = accumulate ? *out : 0.0f;
            if (k <= 0) t = t + (bias ? bias[j] : 0.0f);
            gemm_int8_quantize(b + (long)j * ldb, k, 1, qb); /* the row's values again */
            for (int kb = 0; kb < nkb; kb++) {
                int p0, kc;
                gemm_int8_block(k, nkb, kb, &p0, &kc);
                const float s = gemm_int8_quantize(a + (long)i * lda + p0, kc, 1, qa);
                int32_t sum = 0;
                for (int kk = 0; kk < kc; kk++) sum += (int32_t)qa[kk] * qb[p0 + kk];
                const float v = (float)sum * (s * sw[j]);
                t = kb == 0 && !accumulate ? v : t + v;
                if (kb == 0 && bias) t = t + bias[j];
            }
            *out = t;
        }
    }
    free(qa);
    free(qb);
    free(sw);
}
