/* Matrix products, row-major float32.
 *
 * gemm_nt is the workhorse: C[m][n] = sum_k A[m][k] * B[n][k] (+ bias[n]) (+ C when accumulate),
 * B being stored as a PyTorch Linear weight [out][in], so no transposed copy is ever made.
 * gemm_nn multiplies by a [k][n] matrix (attention's P x V). The _ref versions are plain loops kept
 * as the definition the fast ones are tested against.
 *
 * The fast versions run on the best microkernel the CPU has (AVX-512, AVX2 + FMA, or portable C;
 * see cpu.h) and on OpenMP threads when called outside a parallel region; their results do not
 * depend on the number of threads. B is packed per call into a buffer the calling thread keeps
 * (grown on first use, up to 16 MB, freed when the thread ends), so repeated products of the
 * same sizes allocate nothing. */
#ifndef SD_GEMM_H
#define SD_GEMM_H

#include <stddef.h>

void gemm_nt(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate);
void gemm_nn(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc,
             const float *bias, int accumulate);

/* A B operand packed once for repeated products (weights): gemm_packed_size floats, 64-byte
 * aligned storage recommended; the packing depends only on n and k, not on the CPU.
 * gemm_nt_packed gives exactly the numbers gemm_nt gives. */
size_t gemm_packed_size(int n, int k);
void gemm_pack_b_nt(int n, int k, const float *b, int ldb, float *packed);
void gemm_nt_packed(int m, int n, int k, const float *a, int lda, const float *packed, float *c,
                    int ldc, const float *bias, int accumulate);

void gemm_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate);
void gemm_nn_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate);

#endif
