/* Vector primitives in portable C: one float lane (not a public header).
 *
 * Every vec_*.h (this one, vec_avx2.h, vec_avx512.h) gives the same operations on VEC_W float
 * lanes, each lane rounded exactly as IEEE single precision rounds it, so a kernel written once
 * on top of them (act_body.h, norm_body.h, attention_body.h) performs the same sequence of
 * rounded operations on every instruction set and gives the same bits:
 *
 *   v_fmadd(a, b, c)   a * b + c, rounded once (fused)      v_fnmadd(a, b, c)  c - a * b, once
 *   v_max(a, b)        a > b ? a : b (x86's maxps, NaN -> b) v_min(a, b)        a < b ? a : b
 *   v_round(a)         nearest integer, ties to even, for |a| < 2^22 (only exp uses it)
 *   v_scale2(p, n)     p * 2^n rounded once, for p in [0.5, 2) and integral n in [-126, 128]
 *   v_lt, v_ge         ordered comparisons (false with a NaN)
 *   v_select(m, t, f)  m ? t : f per lane
 *   v_load_n, v_store_n  the first n lanes (others read as 0, left alone when writing)
 *   v_iota()           lane indices 0, 1, ... as floats      v_hmax(v)  the largest lane
 *   v_transpose(r)     a VEC_W x VEC_W block in VEC_W vectors, transposed
 *   vd (VEC_WD doubles): v_widen(v, h) lanes [h VEC_WD, (h + 1) VEC_WD) of v as doubles,
 *                      vd_add, vd_add_sq(acc, d) = acc + d * d (exact product), vd_load_n...
 *
 * The file including this may define VEC_GENERIC_TARGET (x86: KERN_TARGET_FMA) to compile the
 * same C for CPUs with FMA instructions, where fmaf is one instruction instead of a call into
 * libm: the results are the same, since fmaf is exact either way. */
#ifndef SD_VEC_GENERIC_H
#define SD_VEC_GENERIC_H

#include <math.h>
#include <string.h>

#include "target.h"

#ifndef VEC_GENERIC_TARGET
#define VEC_GENERIC_TARGET
#endif

#define VEC_W 1
#define VEC_FN KERN_INLINE VEC_GENERIC_TARGET
#define VEC_TARGET VEC_GENERIC_TARGET

typedef float vf;
typedef int vm;

VEC_FN vf v_zero(void) { return 0.0f; }
VEC_FN vf v_set1(float x) { return x; }
VEC_FN vf v_load(const float *p) { return *p; }
VEC_FN void v_store(float *p, vf v) { *p = v; }
VEC_FN vf v_load_n(const float *p, int n) { return n > 0 ? *p : 0.0f; }
VEC_FN void v_store_n(float *p, vf v, int n) {
    if (n > 0) *p = v;
}
VEC_FN vf v_add(vf a, vf b) { return a + b; }
VEC_FN vf v_sub(vf a, vf b) { return a - b; }
VEC_FN vf v_mul(vf a, vf b) { return a * b; }
VEC_FN vf v_div(vf a, vf b) { return a / b; }
VEC_FN vf v_fmadd(vf a, vf b, vf c) { return fmaf(a, b, c); }
VEC_FN vf v_fnmadd(vf a, vf b, vf c) { return fmaf(-a, b, c); }
VEC_FN vf v_max(vf a, vf b) { return a > b ? a : b; }
VEC_FN vf v_min(vf a, vf b) { return a < b ? a : b; }
VEC_FN vf v_abs(vf a) { return fabsf(a); }
VEC_FN vm v_lt(vf a, vf b) { return a < b; }
VEC_FN vm v_ge(vf a, vf b) { return a >= b; }
VEC_FN vf v_select(vm m, vf t, vf f) { return m ? t : f; }
VEC_FN vf v_iota(void) { return 0.0f; }
/* Adding and removing 1.5 * 2^23 leaves no fraction bits, so the sum rounds to an integer, ties
 * to even, in the default rounding mode. (A -0 comes out +0: only exp uses this, where the sign
 * of a zero exponent changes nothing.) */
VEC_FN vf v_round(vf a) {
    const float big = 12582912.0f;
    return (a + big) - big;
}
VEC_FN float v_pow2i(int e) {
    const unsigned bits = (unsigned)(e + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
/* In two exact steps, as vec_avx2.h explains. */
VEC_FN vf v_scale2(vf p, vf n) {
    const int ni = (int)n, h = ni / 2;
    return p * v_pow2i(ni - h) * v_pow2i(h);
}

/* The largest lane (exact in any order). */
VEC_FN float v_hmax(vf v) { return v; }

/* Double lanes (sums in double): the one lane widened. */
#define VEC_WD 1
typedef double vd;
VEC_FN vd vd_zero(void) { return 0.0; }
VEC_FN vd v_widen(vf v, int h) { return (void)h, (double)v; }
VEC_FN vd vd_load_n(const double *p, int n) { return n > 0 ? *p : 0.0; }
VEC_FN void vd_store_n(double *p, vd v, int n) {
    if (n > 0) *p = v;
}
VEC_FN void vd_store(double *p, vd v) { *p = v; }
VEC_FN vd vd_add(vd a, vd b) { return a + b; }
/* acc + d * d for d a widened float: the product is exact (48 bits), so this equals the fused
 * form the SIMD versions use. */
VEC_FN vd vd_add_sq(vd acc, vd d) { return acc + d * d; }

/* A 1 x 1 block is its own transpose. */
VEC_FN void v_transpose(vf r[1]) { (void)r; }

#endif
