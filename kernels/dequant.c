/* Dequantization of GGUF blocks for the stored-weight GEMM (kern_dequantize, convert.h): the
 * definition is core/gguf_quant.c's gguf_dequantize (ggml's dequantize_row_*), which every path
 * here equals value for value.
 *
 * Q8_0 and Q4_K (the common FLUX / SD file types) have AVX2 and AVX-512 paths: the same
 * per-value arithmetic as the scalar code, one product (and for Q4_K one difference) rounded
 * per value, in vectors: integer to float conversions are exact, and the build's
 * -ffp-contract=off keeps a multiply and a subtract from fusing, here as in the definition. The
 * other types run the definition itself. */
#include "convert.h"

#include <stdint.h>

#include "../core/gguf_quant.h"
#include "../core/safetensors.h"
#include "cpu.h"
#include "target.h"

enum { Q8_0_BYTES = 34, Q4_K_BYTES = 144 };

static inline float half_at(const uint8_t *b) { return st_f16_to_f32((uint16_t)(b[0] | b[1] << 8)); }

/* A Q4_K block's 8 sub-block scales and mins as the definition computes them (d * scale,
 * dmin * min), once per block. */
static inline void q4_k_scales(const uint8_t *b, float dl[8], float ml[8]) {
    const float d = half_at(b), min = half_at(b + 2);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        gguf_scale_min_k4(j, b + 4, &sc, &m);
        dl[j] = d * sc, ml[j] = min * m;
    }
}

#if KERN_X86
#include <immintrin.h>

KERN_TARGET_AVX2 static void q8_0_avx2(const uint8_t *b, float *y, size_t blocks) {
    for (size_t i = 0; i < blocks; i++, b += Q8_0_BYTES, y += 32) {
        const __m256 d = _mm256_set1_ps(half_at(b));
        for (int j = 0; j < 32; j += 8) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + j)));
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

KERN_TARGET_AVX2 static void q4_k_avx2(const uint8_t *b, float *y, size_t blocks) {
    const __m256i low = _mm256_set1_epi32(0x0F);
    for (size_t i = 0; i < blocks; i++, b += Q4_K_BYTES) {
        const uint8_t *ql = b + 16;
        float dl[8], ml[8];
        q4_k_scales(b, dl, ml);
        for (int j = 0; j < 4; j++, ql += 32, y += 64) {
            const __m256 vd1 = _mm256_set1_ps(dl[2 * j]), vm1 = _mm256_set1_ps(ml[2 * j]);
            const __m256 vd2 = _mm256_set1_ps(dl[2 * j + 1]), vm2 = _mm256_set1_ps(ml[2 * j + 1]);
            for (int l = 0; l < 32; l += 8) {
                const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l)));
                const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, low));
                const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
                _mm256_storeu_ps(y + l, _mm256_sub_ps(_mm256_mul_ps(vd1, lo), vm1));
                _mm256_storeu_ps(y + 32 + l, _mm256_sub_ps(_mm256_mul_ps(vd2, hi), vm2));
            }
        }
    }
}

KERN_TARGET_AVX512 static void q8_0_avx512(const uint8_t *b, float *y, size_t blocks) {
    for (size_t i = 0; i < blocks; i++, b += Q8_0_BYTES, y += 32) {
        const __m512 d = _mm512_set1_ps(half_at(b));
        for (int j = 0; j < 32; j += 16) {
            const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + j)));
            _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
        }
    }
}

KERN_TARGET_AVX512 static void q4_k_avx512(const uint8_t *b, float *y, size_t blocks) {
    const __m512i low = _mm512_set1_epi32(0x0F);
    for (size_t i = 0; i < blocks; i++, b += Q4_K_BYTES) {
        const uint8_t *ql = b + 16;
        float dl[8], ml[8];
        q4_k_scales(b, dl, ml);
        for (int j = 0; j < 4; j++, ql += 32, y += 64) {
            const __m512 vd1 = _mm512_set1_ps(dl[2 * j]), vm1 = _mm512_set1_ps(ml[2 * j]);
            const __m512 vd2 = _mm512_set1_ps(dl[2 * j + 1]), vm2 = _mm512_set1_ps(ml[2 * j + 1]);
            for (int l = 0; l < 32; l += 16) {
                const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + l)));
                const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, low));
                const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
                _mm512_storeu_ps(y + l, _mm512_sub_ps(_mm512_mul_ps(vd1, lo), vm1));
                _mm512_storeu_ps(y + 32 + l, _mm512_sub_ps(_mm512_mul_ps(vd2, hi), vm2));
            }
        }
    }
}
#endif

void kern_dequantize(kern_dtype t, const void *blocks, float *dst, size_t n) {
#if KERN_X86
    const kern_isa isa = kern_isa_active();
    if (isa >= KERN_ISA_AVX2 && (t == KERN_Q8_0 || t == KERN_Q4_K)) {
        const int avx512 = isa == KERN_ISA_AVX512;
        if (t == KERN_Q8_0) (avx512 ? q8_0_avx512 : q8_0_avx2)(blocks, dst, n / 32);
        else (avx512 ? q4_k_avx512 : q4_k_avx2)(blocks, dst, n / 256);
        return;
    }
#endif
    gguf_dequantize(kern_ggml_type(t), blocks, dst, (int64_t)n);
}
