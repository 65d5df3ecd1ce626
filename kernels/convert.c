#include "convert.h"

#include <stdint.h>
#include <string.h>

#include "../core/gguf_quant.h"
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

#if KERN_ARM64
#include <arm_neon.h>

/* fcvtl: every f16 number, subnormals and infinities included, widens exactly, as in the
 * definition (st_f16_to_f32). Loads are byte loads reinterpreted (little-endian), since the source
 * may be unaligned. */
static void f16_neon(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(s + 2 * i));
        vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(dst + i + 4, vcvt_high_f32_f16(h));
    }
    kern_f16_to_f32_ref(s + 2 * i, dst + i, n - i);
}

/* bf16 is the top half of an f32: widen each 16-bit value shifted left by 16 (ushll). */
static void bf16_neon(const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(s + 2 * i));
        vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
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
#elif KERN_ARM64
    if (kern_isa_active() == KERN_ISA_NEON) {
        f16_neon(src, dst, n);
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
#elif KERN_ARM64
    if (kern_isa_active() == KERN_ISA_NEON) {
        bf16_neon(src, dst, n);
        return;
    }
#endif
    kern_bf16_to_f32_ref(src, dst, n);
}

unsigned kern_ggml_type(kern_dtype t) {
    static const uint32_t types[] = {
        GGUF_TYPE_Q4_0, GGUF_TYPE_Q4_1, GGUF_TYPE_Q5_0, GGUF_TYPE_Q5_1, GGUF_TYPE_Q8_0,
        GGUF_TYPE_Q2_K, GGUF_TYPE_Q3_K, GGUF_TYPE_Q4_K, GGUF_TYPE_Q5_K, GGUF_TYPE_Q6_K,
    };
    _Static_assert(sizeof types / sizeof *types == KERN_Q6_K - KERN_Q4_0 + 1, "a type per block");
    return t >= KERN_Q4_0 && t <= KERN_Q6_K ? types[t - KERN_Q4_0] : GGUF_TYPE_F32;
}

/* Values and bytes per block, in kern_dtype's order: the packers ask per row, so a table here
 * rather than gguf_type_block's search (checked against it by tests/test_gguf_gemm.c). */
static const struct {
    int elems, bytes;
} blocks[] = {{1, 4},   {1, 2},   {1, 2},   {32, 18},  {32, 20},  {32, 22},  {32, 24},
              {32, 34}, {256, 84}, {256, 110}, {256, 144}, {256, 176}, {256, 210}};
_Static_assert(sizeof blocks / sizeof *blocks == KERN_Q6_K + 1, "a size per kern_dtype");

int kern_dtype_block(kern_dtype t) { return blocks[t].elems; }

size_t kern_dtype_bytes(kern_dtype t, size_t n) {
    return n / (size_t)blocks[t].elems * (size_t)blocks[t].bytes;
}

void kern_to_f32(kern_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case KERN_F32: memcpy(dst, src, n * sizeof *dst); break;
    case KERN_F16: kern_f16_to_f32(src, dst, n); break;
    case KERN_BF16: kern_bf16_to_f32(src, dst, n); break;
    default: kern_dequantize(t, src, dst, n); break;
    }
}
