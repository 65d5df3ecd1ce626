#include "gemm.h"

#include <string.h>

#include "gemm_internal.h"

void gemm_load_rows(const void *ctx, int row0, int rows, int p0, int kc, float *buf) {
    const gemm_rows_src *s = ctx;
    for (int r = 0; r < rows; r++)
        memcpy(buf + r * GEMM_APITCH, s->a + (row0 + r) * s->lda + p0, (size_t)kc * sizeof *buf);
}

typedef struct {
    const float *b;
    long ldb;
    int n;
} b_src;

static void pack_nt(const void *ctx, int j0, int p0, int kc, float *dst) {
    const b_src *s = ctx;
    gemm_pack_nt_panel(s->b, s->ldb, s->n, j0, p0, kc, dst);
}

/* B stored [k][n]: each row of a panel is a contiguous run of b. */
static void pack_nn(const void *ctx, int j0, int p0, int kc, float *dst) {
    const b_src *s = ctx;
    const int cols = s->n - j0 < GEMM_NR ? s->n - j0 : GEMM_NR;
    for (int q = 0; q < kc; q++) {
        memcpy(dst + q * GEMM_NR, s->b + (p0 + q) * s->ldb + j0, (size_t)cols * sizeof *dst);
        memset(dst + q * GEMM_NR + cols, 0, (size_t)(GEMM_NR - cols) * sizeof *dst);
    }
}

static void run(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                int ldc, const float *bias, int accumulate, gemm_pack_b_fn pack) {
    const gemm_rows_src as = {a, lda};
    const b_src bs = {b, ldb, n};
    const gemm_problem p = {m, n, k, gemm_load_rows, &as, NULL, pack, &bs, c, ldc, bias, accumulate};
    gemm_run(&p);
}

void gemm_nt(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate) {
    run(m, n, k, a, lda, b, ldb, c, ldc, bias, accumulate, pack_nt);
}

void gemm_nn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate) {
    run(m, n, k, a, lda, b, ldb, c, ldc, bias, accumulate, pack_nn);
}

size_t gemm_packed_size(int n, int k) { return gemm_packed_floats(n, k); }

void gemm_pack_b_nt(int n, int k, const float *b, int ldb, float *packed) {
    gemm_pack_nt(n, k, b, ldb, packed);
}

void gemm_nt_packed(int m, int n, int k, const float *a, int lda, const float *packed, float *c,
                    int ldc, const float *bias, int accumulate) {
    const gemm_rows_src as = {a, lda};
    const gemm_problem p = {m, n, k, gemm_load_rows, &as, packed, NULL, NULL, c, ldc, bias, accumulate};
    gemm_run(&p);
}

void gemm_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int p = 0; p < k; p++) s += a[(long)i * lda + p] * b[(long)j * ldb + p];
            float *out = &c[(long)i * ldc + j];
            *out = (accumulate ? *out : 0.0f) + s + (bias ? bias[j] : 0.0f);
        }
}

void gemm_nn_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int p = 0; p < k; p++) s += a[(long)i * lda + p] * b[(long)p * ldb + j];
            float *out = &c[(long)i * ldc + j];
            *out = (accumulate ? *out : 0.0f) + s + (bias ? bias[j] : 0.0f);
        }
}
