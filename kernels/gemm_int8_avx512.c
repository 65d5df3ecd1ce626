/* int8 GEMM microkernel for AVX-512 with AVX512-VNNI: a 14 x 32 tile of C in 28 zmm int32
 * accumulators. Per group of 4 k: two 64-byte loads of B (16 columns x 4 k each), fourteen
 * broadcast groups of A and 28 vpdpbusd, each 64 byte products into 16 int32 sums: four times the
 * multiply-adds of an fp32 FMA per instruction. Integer sums are exact, so the result equals the
 * portable kernel's bit for bit. Only called when the CPU has AVX512-VNNI (gemm_int8.c). */
#include "gemm_int8_internal.h"
#include "target.h"

#if KERN_X86
#include <immintrin.h>

#define VNNI_FN KERN_INLINE KERN_TARGET_AVX512_VNNI

enum { MR = 14 };

/* acc += the 4-byte dot products of u8 a and s8 b per int32 lane. As inline assembly: gcc 12's
 * _mm512_dpbusd_epi32 leaves the 28 accumulators to its register allocator, which copies and
 * spills them to the stack around every instruction (about half the speed). */
KERN_INLINE KERN_TARGET_AVX512_VNNI __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
#if defined(__clang__)
    return _mm512_dpbusd_epi32(acc, a, b);
#else
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
#endif
}

/* A compile-time row count per instantiation, so the tile stays in registers. */
VNNI_FN void tile(const int rows, int kc4, const uint32_t *a, const int8_t *b, const int32_t *corr,
                  const float *sa, const float *sw, float *c, long ldc, int nr, const float *bias,
                  int load_c) {
    /* Zeroed, the correction added after the loop: started from one shared value, gcc copies and
     * spills the 28 accumulators around every vpdpbusd. */
    __m512i c0[MR], c1[MR];
    KERN_UNROLL
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm512_setzero_si512();
    for (int g = 0; g < kc4; g++) {
        const __m512i b0 = _mm512_loadu_si512(b + g * 4 * GEMM_INT8_NR);
        const __m512i b1 = _mm512_loadu_si512(b + g * 4 * GEMM_INT8_NR + 64);
    KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            const __m512i av = _mm512_set1_epi32((int)a[r * INT8_APITCH + g]);
            c0[r] = dpbusd(c0[r], av, b0);
            c1[r] = dpbusd(c1[r], av, b1);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    const __m512 sw0 = _mm512_loadu_ps(sw), sw1 = _mm512_loadu_ps(sw + 16);
    const __m512i k0 = _mm512_loadu_si512(corr), k1 = _mm512_loadu_si512(corr + 16);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    KERN_UNROLL
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        const __m512 s = _mm512_set1_ps(sa[r]);
        __m512 v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(c0[r], k0)), _mm512_mul_ps(s, sw0));
        __m512 v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(c1[r], k1)), _mm512_mul_ps(s, sw1));
        if (load_c) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        if (bias) v0 = _mm512_add_ps(v0, bias0), v1 = _mm512_add_ps(v1, bias1);
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

KERN_TARGET_AVX512_VNNI static void ukernel(int kc4, const uint32_t *a, const int8_t *b,
                                            const int32_t *corr, const float *sa, const float *sw,
                                            float *c, long ldc, int mr, int nr, const float *bias,
                                            int load_c) {
    switch (mr) {
#define CASE(R)                                                                                    \
    case R:                                                                                        \
        tile(R, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c);                                \
        break;
        CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8)
        CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
    default: break;
    }
}

/* gemm_int8_quantize 16 floats at a time: the largest |x| bits by unsigned max (any order finds
 * the same), then x * inv rounded by vcvtps2dq (nearest even), clamped, + 128, narrowed to bytes.
 * Masked loads give zeros past kc, which become the 128 padding of the last group. */
KERN_TARGET_AVX512_VNNI static void quant(const float *src, int rows, int kc, uint32_t *dst,
                                          float *sa) {
    const int padded = (kc + 3) & ~3;
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    for (int r = 0; r < rows; r++) {
        const float *s = src + r * GEMM_APITCH;
        uint8_t *d = (uint8_t *)(dst + r * INT8_APITCH);
        __m512i mx = _mm512_setzero_si512();
        for (int q = 0; q < kc; q += 16) {
            const int left = kc - q;
            const __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
            mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, s + q), absmask));
        }
        float inv;
        sa[r] = int8_scale((uint32_t)_mm512_reduce_max_epu32(mx), &inv);
        if (inv == 0.0f) {
            memset(d, 128, (size_t)padded);
            continue;
        }
        const __m512 vinv = _mm512_set1_ps(inv);
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        const __m512i off = _mm512_set1_epi32(128);
        for (int q = 0; q < padded; q += 16) {
            const int left = kc - q, out = padded - q;
            const __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
            const __mmask16 mo = out >= 16 ? 0xFFFF : (__mmask16)((1u << out) - 1);
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + q), vinv));
            v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
            _mm512_mask_cvtepi32_storeu_epi8(d + q, mo, v);
        }
    }
}

const gemm_int8_kernel *gemm_int8_kernel_avx512(void) {
    static const gemm_int8_kernel k = {MR, ukernel, quant};
    return &k;
}

#else

const gemm_int8_kernel *gemm_int8_kernel_avx512(void) { return gemm_int8_kernel_generic(); }

#endif
