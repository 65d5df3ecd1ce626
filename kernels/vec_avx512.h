/* Vector primitives on AVX-512: 16 float lanes (not a public header; see vec_generic.h for the
 * contract every vec_*.h fulfils). Include once per file, in files whose every function using
 * them is compiled for AVX-512. */
#ifndef SD_VEC_AVX512_H
#define SD_VEC_AVX512_H

#include <immintrin.h>

#include "target.h"

#define VEC_W 16
#define VEC_FN KERN_INLINE KERN_TARGET_AVX512
/* Exported kernels of a file built on these primitives carry this target. */
#define VEC_TARGET KERN_TARGET_AVX512

typedef __m512 vf;
typedef __mmask16 vm;

VEC_FN vf v_zero(void) { return _mm512_setzero_ps(); }
VEC_FN vf v_set1(float x) { return _mm512_set1_ps(x); }
VEC_FN vf v_load(const float *p) { return _mm512_loadu_ps(p); }
VEC_FN void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
VEC_FN vm v_first(int n) { return n >= 16 ? (vm)0xFFFF : (vm)((1u << n) - 1); }
VEC_FN vf v_load_n(const float *p, int n) { return _mm512_maskz_loadu_ps(v_first(n), p); }
VEC_FN void v_store_n(float *p, vf v, int n) { _mm512_mask_storeu_ps(p, v_first(n), v); }
VEC_FN vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
VEC_FN vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
VEC_FN vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
VEC_FN vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
VEC_FN vf v_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
VEC_FN vf v_fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
VEC_FN vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
VEC_FN vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
VEC_FN vf v_abs(vf a) { return _mm512_abs_ps(a); }
VEC_FN vm v_lt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
VEC_FN vm v_ge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
VEC_FN vf v_select(vm m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }
VEC_FN vf v_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* One instruction: p * 2^n rounded once, as the contract asks. */
VEC_FN vf v_scale2(vf p, vf n) { return _mm512_scalef_ps(p, n); }
VEC_FN vf v_iota(void) {
    return _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

/* The largest lane (exact in any order). */
VEC_FN float v_hmax(vf v) { return _mm512_reduce_max_ps(v); }

/* Double lanes (sums in double): half h of a vf widened. */
#define VEC_WD 8
typedef __m512d vd;
VEC_FN vd vd_zero(void) { return _mm512_setzero_pd(); }
VEC_FN vd v_widen(vf v, int h) {
    return _mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                             : _mm512_castps512_ps256(v));
}
VEC_FN __mmask8 vd_first(int n) { return n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << n) - 1); }
VEC_FN vd vd_load_n(const double *p, int n) { return _mm512_maskz_loadu_pd(vd_first(n), p); }
VEC_FN void vd_store_n(double *p, vd v, int n) { _mm512_mask_storeu_pd(p, vd_first(n), v); }
VEC_FN void vd_store(double *p, vd v) { _mm512_storeu_pd(p, v); }
VEC_FN vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
VEC_FN vd vd_add_sq(vd acc, vd d) { return _mm512_fmadd_pd(d, d, acc); }

/* A VEC_W x VEC_W block held as VEC_W row vectors, transposed in place. */
#define v_transpose v_transpose16

/* Transposes a 16 x 16 block held as 16 row vectors, in place. */
VEC_FN void v_transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* Each r[i] now holds 4-float pieces of four columns; gather the 128-bit lanes. */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

#endif
