/* Vector primitives on AVX2 + FMA: 8 float lanes (not a public header; see vec_generic.h for the
 * contract every vec_*.h fulfils). Include once per file, in files whose every function using
 * them is compiled for AVX2. */
#ifndef SD_VEC_AVX2_H
#define SD_VEC_AVX2_H

#include <immintrin.h>

#include "target.h"

#define VEC_W 8
#define VEC_FN KERN_INLINE KERN_TARGET_AVX2
#define VEC_TARGET KERN_TARGET_AVX2

typedef __m256 vf;
typedef __m256 vm; /* all-ones lanes where true */

VEC_FN vf v_zero(void) { return _mm256_setzero_ps(); }
VEC_FN vf v_set1(float x) { return _mm256_set1_ps(x); }
VEC_FN vf v_load(const float *p) { return _mm256_loadu_ps(p); }
VEC_FN void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
VEC_FN vf v_iota(void) { return _mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0); }
VEC_FN __m256i v_first(int n) {
    return _mm256_castps_si256(_mm256_cmp_ps(v_iota(), _mm256_set1_ps((float)n), _CMP_LT_OQ));
}
/* Masked loads neither read nor fault past the first n lanes. Whole vectors take the plain load
 * and store: masked stores are microcoded and slow on AMD cores. */
VEC_FN vf v_load_n(const float *p, int n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, v_first(n));
}
VEC_FN void v_store_n(float *p, vf v, int n) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, v_first(n), v);
}
VEC_FN vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
VEC_FN vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
VEC_FN vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
VEC_FN vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
VEC_FN vf v_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
VEC_FN vf v_fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
VEC_FN vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
VEC_FN vf v_min(vf a, vf b) { return _mm256_min_ps(a, b); }
VEC_FN vf v_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
VEC_FN vm v_lt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
VEC_FN vm v_ge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
VEC_FN vf v_select(vm m, vf t, vf f) { return _mm256_blendv_ps(f, t, m); }
VEC_FN vf v_round(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* 2^e for integer lanes e in [-126, 127]. */
VEC_FN vf v_pow2i(__m256i e) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
}
/* p * 2^n in two exact steps: p * 2^(n - h) keeps p's 24 bits (both factors normal), and the
 * second product rounds once, as AVX-512's scalef does. */
VEC_FN vf v_scale2(vf p, vf n) {
    const __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1);
    return _mm256_mul_ps(_mm256_mul_ps(p, v_pow2i(_mm256_sub_epi32(ni, h))), v_pow2i(h));
}

/* The largest lane (exact in any order). */
VEC_FN float v_hmax(vf v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Double lanes (sums in double): half h of a vf widened. */
#define VEC_WD 4
typedef __m256d vd;
VEC_FN vd vd_zero(void) { return _mm256_setzero_pd(); }
VEC_FN vd v_widen(vf v, int h) {
    return _mm256_cvtps_pd(h ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v));
}
VEC_FN __m256i vd_first(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_set_epi64x(3, 2, 1, 0));
}
VEC_FN vd vd_load_n(const double *p, int n) {
    return n >= 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, vd_first(n));
}
VEC_FN void vd_store_n(double *p, vd v, int n) {
    if (n >= 4) _mm256_storeu_pd(p, v);
    else _mm256_maskstore_pd(p, vd_first(n), v);
}
VEC_FN void vd_store(double *p, vd v) { _mm256_storeu_pd(p, v); }
VEC_FN vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
VEC_FN vd vd_add_sq(vd acc, vd d) { return _mm256_fmadd_pd(d, d, acc); }

#define v_transpose v_transpose8

/* Transposes an 8 x 8 block held as 8 row vectors, in place. */
VEC_FN void v_transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++) r[i] = t[i];
}

#endif
