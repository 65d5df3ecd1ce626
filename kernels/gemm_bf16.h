/* bf16 matrix products with fp32 sums (--precision bf16).
 *
 * C[m][n] = sum_k bf16(A[m][k]) * bf16(B[n][k]) (+ bias[n]) (+ C when accumulate), where bf16()
 * rounds a float to bfloat16 to nearest even (denormals to zero, as vcvtne2ps2bf16 does). Every
 * product of two bf16 values is exact in fp32; the sums are fp32, taken a pair of k at a time in
 * the order vdpbf16ps uses (k+1 then k). B is a weight, packed ONCE (gemm_bf16_pack_b_nt) as
 * bf16, 2 bytes a value: panels of GEMM_BF16_NR columns holding, for each pair of k, the pair of
 * every column side by side, the layout vdpbf16ps multiplies against a broadcast pair of A. A
 * (activations) is rounded to bf16 while it is copied into the engine's tile.
 *
 * The fast path needs avx512_bf16 (kern_bf16_active, cpu.h); elsewhere the same arithmetic runs
 * in portable C (correct, slow: callers should use fp32 there). Results do not depend on the
 * number of threads. They differ from the _ref loop only by the order of fp32 sums (the engine
 * sums blocks of k and adds C and bias after the first block). */
#ifndef SD_GEMM_BF16_H
#define SD_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

enum { GEMM_BF16_NR = 32 };

/* Round to nearest even; NaN stays NaN; fp32 denormals become signed zeros. */
static inline uint16_t bf16_from_f32(float x) {
    union {
        float f;
        uint32_t u;
    } v = {x};
    if ((v.u & 0x7f800000u) == 0) return (uint16_t)((v.u >> 16) & 0x8000u);
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t b) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)b << 16};
    return v.f;
}

/* uint16_t values in a packed [n][k] weight (64-byte aligned storage recommended). */
size_t gemm_bf16_packed_size(int n, int k);
void gemm_bf16_pack_b_nt(int n, int k, const float *b, int ldb, uint16_t *packed);
void gemm_bf16_nt_packed(int m, int n, int k, const float *a, int lda, const uint16_t *packed,
                         float *c, int ldc, const float *bias, int accumulate);

/* The definition: plain loops over A and B (B as a [n][k] Linear weight, unpacked). */
void gemm_bf16_nt_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                      float *c, int ldc, const float *bias, int accumulate);

#endif
