/* Activations for AVX-512, from the vector exp; GELU through erfc (Numerical Recipes' Chebyshev
 * fit, fractional error below 1.2e-7 everywhere) so that both tails keep their relative precision:
 * gelu(x) = x (1 - erfc(x / sqrt 2) / 2) for x >= 0 and x erfc(-x / sqrt 2) / 2 below. */
#include "act_internal.h"

/* x86 only; elsewhere the stub below keeps the link whole (never called: cpu.c reports no
 * AVX there). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
#include "simd_avx512.h"

/* x / (1 + e^(-k x)): SiLU with k = 1, quick GELU with k = 1.702. */
static inline __m512 sigmoid_times(__m512 x, __m512 k) {
    const __m512 e = simd_exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), k), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline __m512 gelu(__m512 x) {
    const __m512 u = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    const __m512 z = _mm512_abs_ps(u);
    const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    p = _mm512_fnmadd_ps(z, z, p); /* -z^2 + ... */
    const __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(t, simd_exp(p)), _mm512_set1_ps(0.5f));
    const __mmask16 neg = _mm512_cmplt_ps_mask(u, _mm512_setzero_ps());
    const __m512 f = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(1.0f), half_erfc), half_erfc);
    return _mm512_mul_ps(x, f);
}

/* x / (1 + e^(-2y)), y = sqrt(2/pi) (x + 0.044715 x^3): 0.5 x (1 + tanh y) without cancellation. */
static inline __m512 gelu_tanh(__m512 x) {
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 y = _mm512_mul_ps(_mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x),
                                   _mm512_set1_ps(0.7978845608028654f));
    const __m512 e = simd_exp(_mm512_mul_ps(y, _mm512_set1_ps(-2.0f)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline __m512 apply1(act_kind kind, __m512 v) {
    switch (kind) {
    case ACT_SILU: return sigmoid_times(v, _mm512_set1_ps(1.0f));
    case ACT_QUICK_GELU: return sigmoid_times(v, _mm512_set1_ps(1.702f));
    case ACT_GELU: return gelu(v);
    default: return gelu_tanh(v);
    }
}

void act_avx512_apply(act_kind kind, float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, apply1(kind, _mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, apply1(kind, _mm512_maskz_loadu_ps(m, x + i)));
    }
}

void act_avx512_geglu_row(const float *in, float *out, int d) {
    for (int i = 0; i < d; i += 16) {
        const __mmask16 m = d - i >= 16 ? 0xFFFF : (__mmask16)((1u << (d - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, in + i), g = _mm512_maskz_loadu_ps(m, in + d + i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, gelu(g)));
    }
}

#pragma GCC pop_options

#else

void act_avx512_apply(act_kind kind, float *x, size_t n) { (void)kind, (void)x, (void)n; }
void act_avx512_geglu_row(const float *in, float *out, int d) { (void)in, (void)out, (void)d; }

#endif
