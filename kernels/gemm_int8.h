/* int8 matrix products with int32 sums (--precision int8).
 *
 * C[m][n] = sum over k blocks of float(S_b[m][n]) * (sa[m][b] * sw[n]) (+ bias[n]) (+ C when
 * accumulate), where
 * - the weight B ([n][k], a Linear or convolution weight) is quantized ONCE, per output channel
 *   (row of B), symmetrically: sw[n] = max|B[n][.]| / 127, qb = round(B * (127 / max)) in
 *   [-127, 127] (gemm_int8_pack_b_nt);
 * - each row of A is quantized on the fly, per k block (the engine's blocks of at most
 *   GEMM_INT8_KC values, which depend on k only), the same way: sa = max / 127, qa in [-127, 127];
 * - S_b[m][n] = sum over the block of qa * qb, exact in int32 (|S| <= 256 * 127 * 127 < 2^23).
 * Rounding is to nearest even (the CPU's default mode). A block whose largest magnitude is below
 * 2^-100 is taken as zeros; one holding an infinity or a NaN gives NaN for its row.
 *
 * Every instruction set computes the same integers (nothing saturates: qa is stored as the
 * unsigned byte qa + 128, and the 128 * sum(qb) this adds is taken out exactly with column sums
 * precomputed at packing) and then the same fp32 operations in the same order, so the result is
 * bit-identical on every level (the portable C kernel, AVX2, AVX-VNNI, AVX512-VNNI) and for
 * every thread count. gemm_int8_nt_ref is the definition in plain loops. */
#ifndef SD_GEMM_INT8_H
#define SD_GEMM_INT8_H

#include <stddef.h>
#include <stdint.h>

enum {
    GEMM_INT8_NR = 32,  /* columns per panel */
    GEMM_INT8_KC = 256, /* most of k per block (a multiple of 4) */
};

/* Bytes of a packed [n][k] weight (allocate 64-byte aligned): the int8 panels, the per-block
 * column sums and the per-channel scales in one buffer. */
size_t gemm_int8_packed_size(int n, int k);
void gemm_int8_pack_b_nt(int n, int k, const float *b, int ldb, void *packed);
void gemm_int8_nt_packed(int m, int n, int k, const float *a, int lda, const void *packed,
                         float *c, int ldc, const float *bias, int accumulate);

/* The k blocks: nkb blocks of near-equal numbers of 4-value groups; block kb covers values
 * [*p0, *p0 + *kc). */
int gemm_int8_blocks(int k);
void gemm_int8_block(int k, int nkb, int kb, int *p0, int *kc);

/* One row's quantization (the definition every kernel follows): q[0..kc) in [-127, 127] and the
 * scale. */
float gemm_int8_quantize(const float *x, int kc, long stride, int8_t *q);

/* The definition: plain loops over A and B (B as a [n][k] Linear weight, unpacked). */
void gemm_int8_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc, const float *bias, int accumulate);

#endif
