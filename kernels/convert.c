#include "convert.h"

#include <stdint.h>
#include <string.h>

#include "../core/safetensors.h"
#include "cpu.h"
#include "target.h"

void kern_f16_to_f32_ref(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = st_f16_to_f32(h);
    }
}

void kern_bf16_to_f32_ref(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = st_bf16_to_f32(h);
    }
}

#if KERN_X86
#include <immintrin.h>

KERN_TARGET_AVX512 static void f16_avx512(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + 2 * i))));
    kern_f16_to_f32_ref(s + 2 * i, dst + i, n - i);
}

KERN_TARGET_AVX512 static void bf16_avx512(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + 2 * i)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
    }
    kern_bf16_to_f32_ref(s + 2 * i, dst + i, n - i);
}
KERN_TARGET_AVX2_F16C static void f16_f16c(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    kern_f16_to_f32_ref(s + 2 * i, dst + i, n - i);
}

KERN_TARGET_AVX2 static void bf16_avx2(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + 2 * i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
    kern_bf16_to_f32_ref(s + 2 * i, dst + i, n - i);
}
#endif

void kern_f16_to_f32(const void *src, float *dst, size_t n) {
#if KERN_X86
    const kern_isa isa = kern_isa_active();
    if (isa == KERN_ISA_AVX512) {
        f16_avx512(src, dst, n);
        return;
    }
    if (isa == KERN_ISA_AVX2 && kern_f16c_supported()) {
        f16_f16c(src, dst, n);
        return;
    }
#endif
    kern_f16_to_f32_ref(src, dst, n);
}

void kern_bf16_to_f32(const void *src, float *dst, size_t n) {
#if KERN_X86
    const kern_isa isa = kern_isa_active();
    if (isa == KERN_ISA_AVX512) {
        bf16_avx512(src, dst, n);
        return;
    }
    if (isa == KERN_ISA_AVX2) {
        bf16_avx2(src, dst, n);
        return;
    }
#endif
    kern_bf16_to_f32_ref(src, dst, n);
}

void kern_to_f32(kern_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case KERN_F16: kern_f16_to_f32(src, dst, n); break;
    case KERN_BF16: kern_bf16_to_f32(src, dst, n); break;
    default: memcpy(dst, src, n * sizeof *dst); break;
    }
}
