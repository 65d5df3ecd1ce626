/* Group norm pieces for AVX-512 (see norm_internal.h). */
#include <stddef.h>

#include "norm_internal.h"

/* x86 only; elsewhere the stub below keeps the link whole (never called: cpu.c reports no
 * AVX there). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
#include "simd_avx512.h"

static void sums(const float *x, long pixels, int c, double *sum, double *sq) {
    for (long p = 0; p < pixels; p++, x += c)
        for (int ch = 0; ch < c; ch += 16) {
            const __mmask16 m = c - ch >= 16 ? 0xFFFF : (__mmask16)((1u << (c - ch)) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(m, x + ch);
            const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            const __mmask8 mlo = (__mmask8)m, mhi = (__mmask8)(m >> 8);
            _mm512_mask_storeu_pd(sum + ch, mlo, _mm512_add_pd(_mm512_maskz_loadu_pd(mlo, sum + ch), lo));
            _mm512_mask_storeu_pd(sq + ch, mlo, _mm512_fmadd_pd(lo, lo, _mm512_maskz_loadu_pd(mlo, sq + ch)));
            if (mhi) {
                _mm512_mask_storeu_pd(sum + ch + 8, mhi,
                                      _mm512_add_pd(_mm512_maskz_loadu_pd(mhi, sum + ch + 8), hi));
                _mm512_mask_storeu_pd(sq + ch + 8, mhi,
                                      _mm512_fmadd_pd(hi, hi, _mm512_maskz_loadu_pd(mhi, sq + ch + 8)));
            }
        }
}

static void apply(const float *x, float *y, long pixels, int c, const float *mean,
                  const float *scale, const float *beta, int silu) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (long p = 0; p < pixels; p++, x += c, y += c)
        for (int ch = 0; ch < c; ch += 16) {
            const __mmask16 m = c - ch >= 16 ? 0xFFFF : (__mmask16)((1u << (c - ch)) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(m, x + ch);
            __m512 r = _mm512_fmadd_ps(_mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, mean + ch)),
                                       _mm512_maskz_loadu_ps(m, scale + ch),
                                       _mm512_maskz_loadu_ps(m, beta + ch));
            if (silu) /* x / (1 + e^-x) */
                r = _mm512_div_ps(r, _mm512_add_ps(one, simd_exp(_mm512_sub_ps(_mm512_setzero_ps(), r))));
            _mm512_mask_storeu_ps(y + ch, m, r);
        }
}

static void row_sums(const float *x, int c, double *sum, double *sq) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    for (int ch = 0; ch < c; ch += 16) {
        const __mmask16 m = c - ch >= 16 ? 0xFFFF : (__mmask16)((1u << (c - ch)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + ch);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_add_pd(s0, lo), s1 = _mm512_add_pd(s1, hi);
        q0 = _mm512_fmadd_pd(lo, lo, q0), q1 = _mm512_fmadd_pd(hi, hi, q1);
    }
    *sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    *sq = _mm512_reduce_add_pd(_mm512_add_pd(q0, q1));
}

static void row_apply(const float *x, float *y, int c, float mean, float rstd, const float *gamma,
                      const float *beta) {
    const __m512 mu = _mm512_set1_ps(mean), rs = _mm512_set1_ps(rstd);
    for (int ch = 0; ch < c; ch += 16) {
        const __mmask16 m = c - ch >= 16 ? 0xFFFF : (__mmask16)((1u << (c - ch)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + ch), mu), rs);
        if (gamma) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, gamma + ch));
        if (beta) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, beta + ch));
        _mm512_mask_storeu_ps(y + ch, m, v);
    }
}

#pragma GCC pop_options

const norm_kernels *norm_kernels_avx512(void) {
    static const norm_kernels k = {sums, apply, row_sums, row_apply};
    return &k;
}

#else

const norm_kernels *norm_kernels_avx512(void) { return NULL; }

#endif
