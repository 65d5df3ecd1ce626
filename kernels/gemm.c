#include "gemm.h"

#include <cblas.h>

/* Initialises C with the bias (or zero) unless accumulating, so BLAS can always run with beta=1. */
static void init_output(int m, int n, float *c, int ldc, const float *bias, int accumulate) {
    if (accumulate && !bias) return;
    for (int i = 0; i < m; i++) {
        float *row = c + (long)i * ldc;
        for (int j = 0; j < n; j++) row[j] = (accumulate ? row[j] : 0.0f) + (bias ? bias[j] : 0.0f);
    }
}

void gemm_nt(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate) {
    if (m <= 0 || n <= 0) return;
    init_output(m, n, c, ldc, bias, accumulate);
    if (k <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
}

void gemm_nn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate) {
    if (m <= 0 || n <= 0) return;
    init_output(m, n, c, ldc, bias, accumulate);
    if (k <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 1.0f, c, ldc);
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
