/* bf16 GEMM microkernel for AVX-512 with avx512_bf16: a 14 x 32 tile of C in 28 zmm registers.
 * Per pair of k: two 64-byte loads of B (16 columns x 2 k each), fourteen broadcast pairs of A
 * and 28 vdpbf16ps, each 32 products into 16 fp32 sums: twice the multiply-adds of an fp32 FMA
 * per instruction. Compiled for avx512_bf16 whatever the build flags; only called when the CPU
 * has it (kern_bf16_active). */
#include "gemm_bf16_internal.h"
#include "target.h"

#if KERN_X86
#include <immintrin.h>

#define BF16_FN KERN_INLINE KERN_TARGET_AVX512_BF16

enum { MR = 14 };

/* A compile-time row count per instantiation (the switch below), so edge tiles run the same chain
 * of vdpbf16ps per element as full ones: results do not depend on tiling. */
BF16_FN void tile(const int rows, int kc2, const uint32_t *a, const uint16_t *b, float *c, long ldc,
                  int nr, const float *bias, int load_c) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int t = 0; t < kc2; t++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + t * 2 * GEMM_BF16_NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + t * 2 * GEMM_BF16_NR + 32);
#pragma GCC unroll 14
        for (int r = 0; r < rows; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * BF16_APITCH + t]);
            c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = c0[r], v1 = c1[r];
        if (load_c) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        if (bias) v0 = _mm512_add_ps(v0, bias0), v1 = _mm512_add_ps(v1, bias1);
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

KERN_TARGET_AVX512_BF16 static void ukernel(int kc2, const uint32_t *a, const uint16_t *b, float *c,
                                            long ldc, int mr, int nr, const float *bias,
                                            int load_c) {
    switch (mr) {
#define CASE(R)                                                                                    \
    case R:                                                                                        \
        tile(R, kc2, a, b, c, ldc, nr, bias, load_c);                                              \
        break;
        CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8)
        CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
    default: break;
    }
}

/* 32 floats at a time to 32 bf16 (vcvtne2ps2bf16: round to nearest even, denormals to zero);
 * masked loads zero the tail, which pads an odd kc. */
KERN_TARGET_AVX512_BF16 static void convert(const float *src, int rows, int kc, uint32_t *dst) {
    for (int r = 0; r < rows; r++) {
        const float *s = src + r * GEMM_APITCH;
        uint16_t *d = (uint16_t *)(dst + r * BF16_APITCH);
        const int padded = (kc + 1) & ~1;
        for (int q = 0; q < padded; q += 32) {
            const int left = kc - q;
            const __mmask16 mlo = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
            const __mmask16 mhi = left >= 32 ? 0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, s + q + 16),
                                                   _mm512_maskz_loadu_ps(mlo, s + q));
            const int out = padded - q < 32 ? padded - q : 32;
            const __mmask32 mo = out == 32 ? 0xFFFFFFFFu : (__mmask32)((1u << out) - 1);
            _mm512_mask_storeu_epi16(d + q, mo, (__m512i)v);
        }
    }
}

const gemm_bf16_kernel *gemm_bf16_kernel_avx512(void) {
    static const gemm_bf16_kernel k = {MR, ukernel, convert};
    return &k;
}

#else

const gemm_bf16_kernel *gemm_bf16_kernel_avx512(void) { return gemm_bf16_kernel_generic(); }

#endif
