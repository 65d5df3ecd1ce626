/* Matrix products, row-major float32.
 *
 * gemm_nt is the workhorse: C[m][n] = sum_k A[m][k] * B[n][k] (+ bias[n]) (+ C when accumulate),
 * B being stored as a PyTorch Linear weight [out][in], so no transposed copy is ever made.
 * gemm_nn multiplies by a [k][n] matrix (attention's P x V). The _ref versions are plain loops kept
 * as the definition the fast ones are tested against.
 *
 * The fast versions run on the best microkernel the CPU has (AVX-512, AVX2 + FMA, or portable C
 * with fmaf; see cpu.h) and on OpenMP threads when called outside a parallel region; each element
 * is one chain of fused multiply-adds per block of k, the blocks fixed by k, so the results depend
 * on neither the number of threads nor the microkernel. B is packed per call into a buffer the calling thread keeps
 * (grown on first use, up to 16 MB, freed when the thread ends), so repeated products of the
 * same sizes allocate nothing. */
#ifndef SD_GEMM_H
#define SD_GEMM_H

#include <stddef.h>

#include "convert.h"

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

/* B kept in the dtype it is stored in (f32, f16, bf16 or a GGUF block type), as [n][k] rows in
 * up to GEMM_B_MAX_PARTS separate arrays stacked along n (a fused Q/K/V projection whose parts
 * stay where the file has them): part i holds rows[i] rows of k contiguous values, possibly
 * unaligned (for a block type, k is a whole number of blocks: each row is its own blocks).
 * gemm_nt_stored converts while packing, per call, into the engine's per-thread packing buffer
 * (grown once to the largest B it sees, at most 16 MB, then reused: no allocation in later calls)
 * and gives exactly the numbers gemm_nt gives with the same weights widened (dequantized) to
 * float32. */
enum { GEMM_B_MAX_PARTS = 4 };
typedef struct {
    kern_dtype type;
    int n_parts;
    const void *part[GEMM_B_MAX_PARTS];
    int rows[GEMM_B_MAX_PARTS];
} gemm_b_stored;
void gemm_nt_stored(int m, int n, int k, const float *a, int lda, const gemm_b_stored *b, float *c,
                    int ldc, const float *bias, int accumulate);
/* gemm_pack_b_nt from 16-bit storage (rows of ldb elements, possibly unaligned): the same packed
 * floats gemm_pack_b_nt writes for the widened weights. */
void gemm_pack_b_nt_f16(int n, int k, const void *b, int ldb, float *packed);
void gemm_pack_b_nt_bf16(int n, int k, const void *b, int ldb, float *packed);
/* The whole packing (gemm_packed_size floats) of a stored B, as plain loops: the definition the
 * fast packers are tested against. */
void gemm_pack_b_nt_stored_ref(const gemm_b_stored *b, int n, int k, float *packed);

void gemm_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate);
void gemm_nn_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, const float *bias, int accumulate);

#endif
