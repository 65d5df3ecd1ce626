/* Vector primitives on aarch64 NEON (Advanced SIMD): 4 float lanes (not a public header; see
 * vec_generic.h for the contract every vec_*.h fulfils). NEON and its fused multiply-add are part
 * of the aarch64 baseline, so these need no target attribute.
 *
 * Where NEON's own instruction differs from the contract, these spell the contract out: fmax and
 * fmin return NaN for a NaN operand and order -0 below +0, whereas v_max(a, b) is exactly
 * a > b ? a : b (x86's maxps), so max and min are a compare and a select. */
#ifndef SD_VEC_NEON_H
#define SD_VEC_NEON_H

#include <arm_neon.h>

#include "target.h"

#define VEC_W 4
#define VEC_FN KERN_INLINE
#define VEC_TARGET

typedef float32x4_t vf;
typedef uint32x4_t vm; /* all-ones lanes where true */

VEC_FN vf v_zero(void) { return vdupq_n_f32(0.0f); }
VEC_FN vf v_set1(float x) { return vdupq_n_f32(x); }
VEC_FN vf v_load(const float *p) { return vld1q_f32(p); }
VEC_FN void v_store(float *p, vf v) { vst1q_f32(p, v); }
VEC_FN vf v_iota(void) {
    static const float iota[4] = {0, 1, 2, 3};
    return vld1q_f32(iota);
}
/* Partial vectors go through a small buffer: nothing past the first n lanes is read or written. */
VEC_FN vf v_load_n(const float *p, int n) {
    if (n >= 4) return vld1q_f32(p);
    float t[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return vld1q_f32(t);
}
VEC_FN void v_store_n(float *p, vf v, int n) {
    if (n >= 4) {
        vst1q_f32(p, v);
        return;
    }
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}
VEC_FN vf v_add(vf a, vf b) { return vaddq_f32(a, b); }
VEC_FN vf v_sub(vf a, vf b) { return vsubq_f32(a, b); }
VEC_FN vf v_mul(vf a, vf b) { return vmulq_f32(a, b); }
VEC_FN vf v_div(vf a, vf b) { return vdivq_f32(a, b); }
/* vfmaq_f32(c, a, b) = c + a * b and vfmsq_f32(c, a, b) = c - a * b, each rounded once. */
VEC_FN vf v_fmadd(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
VEC_FN vf v_fnmadd(vf a, vf b, vf c) { return vfmsq_f32(c, a, b); }
VEC_FN vm v_lt(vf a, vf b) { return vcltq_f32(a, b); }
VEC_FN vm v_ge(vf a, vf b) { return vcgeq_f32(a, b); }
VEC_FN vf v_select(vm m, vf t, vf f) { return vbslq_f32(m, t, f); }
VEC_FN vf v_max(vf a, vf b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
VEC_FN vf v_min(vf a, vf b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
VEC_FN vf v_abs(vf a) { return vabsq_f32(a); }
/* frintn: to nearest, ties to even. */
VEC_FN vf v_round(vf a) { return vrndnq_f32(a); }
/* 2^e for integer lanes e in [-126, 127]. */
VEC_FN vf v_pow2i(int32x4_t e) {
    return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(e, vdupq_n_s32(127)), 23));
}
/* p * 2^n in two exact steps, as vec_avx2.h explains (n is integral, so the conversion is exact). */
VEC_FN vf v_scale2(vf p, vf n) {
    const int32x4_t ni = vcvtnq_s32_f32(n), h = vshrq_n_s32(ni, 1);
    return vmulq_f32(vmulq_f32(p, v_pow2i(vsubq_s32(ni, h))), v_pow2i(h));
}

/* The largest lane (exact in any order), with v_max's rule. */
VEC_FN float v_hmax(vf v) {
    const vf m = v_max(v, vextq_f32(v, v, 2));
    return vgetq_lane_f32(v_max(m, vextq_f32(m, m, 1)), 0);
}

/* Double lanes (sums in double): half h of a vf widened. */
#define VEC_WD 2
typedef float64x2_t vd;
VEC_FN vd vd_zero(void) { return vdupq_n_f64(0.0); }
VEC_FN vd v_widen(vf v, int h) {
    return h ? vcvt_high_f64_f32(v) : vcvt_f64_f32(vget_low_f32(v));
}
VEC_FN vd vd_load_n(const double *p, int n) {
    if (n >= 2) return vld1q_f64(p);
    return n == 1 ? vsetq_lane_f64(p[0], vdupq_n_f64(0.0), 0) : vdupq_n_f64(0.0);
}
VEC_FN void vd_store_n(double *p, vd v, int n) {
    if (n >= 2) vst1q_f64(p, v);
    else if (n == 1) p[0] = vgetq_lane_f64(v, 0);
}
VEC_FN void vd_store(double *p, vd v) { vst1q_f64(p, v); }
VEC_FN vd vd_add(vd a, vd b) { return vaddq_f64(a, b); }
VEC_FN vd vd_add_sq(vd acc, vd d) { return vfmaq_f64(acc, d, d); }

#define v_transpose v_transpose4

/* Transposes a 4 x 4 block held as 4 row vectors, in place. */
VEC_FN void v_transpose4(float32x4_t r[4]) {
    const float32x4x2_t t01 = vtrnq_f32(r[0], r[1]), t23 = vtrnq_f32(r[2], r[3]);
    /* t01 = {a0 b0 a2 b2}, {a1 b1 a3 b3}; t23 likewise for rows c, d. */
    const float64x2_t x0 = vreinterpretq_f64_f32(t01.val[0]), x1 = vreinterpretq_f64_f32(t01.val[1]);
    const float64x2_t y0 = vreinterpretq_f64_f32(t23.val[0]), y1 = vreinterpretq_f64_f32(t23.val[1]);
    r[0] = vreinterpretq_f32_f64(vzip1q_f64(x0, y0));
    r[1] = vreinterpretq_f32_f64(vzip1q_f64(x1, y1));
    r[2] = vreinterpretq_f32_f64(vzip2q_f64(x0, y0));
    r[3] = vreinterpretq_f32_f64(vzip2q_f64(x1, y1));
}

#endif
