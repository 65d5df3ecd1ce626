/* The norms' inner loops on the vec_*.h primitives: included by isa_*.c after a vec header,
 * vec_math.h and a KERN_NAME(name) definition, once per instruction set. */
#include "norm_internal.h"

enum { KERN_NAME(norm_halves) = VEC_W / VEC_WD }; /* double vectors per float vector */

/* A block of channels at a time, its sums held in registers across the pixels (each channel's
 * sum still adds its pixels in order, as the contract says). */
VEC_TARGET static void KERN_NAME(norm_sums)(const float *x, long pixels, int c, double *sum,
                                            double *sq) {
    enum { NB = 2, H = KERN_NAME(norm_halves) }; /* float vectors per block, doubles per float vector */
    for (int ch0 = 0; ch0 < c; ch0 += NB * VEC_W) {
        vd s[NB][H], q[NB][H];
        int left[NB], n[NB][H];
        for (int b = 0; b < NB; b++) {
            const int l = c - ch0 - b * VEC_W;
            left[b] = l < 0 ? 0 : l < VEC_W ? l : VEC_W;
            for (int h = 0; h < H; h++) {
                const int m = left[b] - h * VEC_WD, at = ch0 + b * VEC_W + h * VEC_WD;
                n[b][h] = m < 0 ? 0 : m < VEC_WD ? m : VEC_WD;
                s[b][h] = vd_load_n(sum + at, n[b][h]);
                q[b][h] = vd_load_n(sq + at, n[b][h]);
            }
        }
        for (long p = 0; p < pixels; p++)
            for (int b = 0; b < NB; b++) {
                if (left[b] <= 0) break;
                const vf v = v_load_n(x + p * c + ch0 + b * VEC_W, left[b]);
                for (int h = 0; h < H; h++) {
                    const vd d = v_widen(v, h);
                    s[b][h] = vd_add(s[b][h], d);
                    q[b][h] = vd_add_sq(q[b][h], d);
                }
            }
        for (int b = 0; b < NB; b++)
            for (int h = 0; h < H; h++) {
                const int at = ch0 + b * VEC_W + h * VEC_WD;
                vd_store_n(sum + at, s[b][h], n[b][h]);
                vd_store_n(sq + at, q[b][h], n[b][h]);
            }
    }
}

VEC_TARGET static void KERN_NAME(norm_apply)(const float *x, float *y, long pixels, int c,
                                             const float *mean, const float *scale,
                                             const float *beta, int silu) {
    for (long p = 0; p < pixels; p++, x += c, y += c)
        for (int ch = 0; ch < c; ch += VEC_W) {
            const int left = c - ch < VEC_W ? c - ch : VEC_W;
            vf r = v_fmadd(v_sub(v_load_n(x + ch, left), v_load_n(mean + ch, left)),
                           v_load_n(scale + ch, left), v_load_n(beta + ch, left));
            if (silu) r = v_silu(r);
            v_store_n(y + ch, r, left);
        }
}

/* Element i goes to lane i % NORM_LANES; lanes past the row's end add zeros, which leave a sum
 * unchanged, so every width adds the same numbers in the same order per lane. */
VEC_TARGET static void KERN_NAME(norm_row_sums)(const float *x, int c, double *sum, double *sq) {
    enum { VD = NORM_LANES / VEC_WD, VF = NORM_LANES / VEC_W };
    vd s[VD], q[VD];
    for (int i = 0; i < VD; i++) s[i] = q[i] = vd_zero();
    for (int i0 = 0; i0 < c; i0 += NORM_LANES)
        for (int g = 0; g < VF; g++) {
            const int at = i0 + g * VEC_W, left = c - at < VEC_W ? c - at : VEC_W;
            if (left <= 0) break;
            const vf v = v_load_n(x + at, left);
            for (int h = 0; h < KERN_NAME(norm_halves); h++) {
                const vd d = v_widen(v, h);
                s[g * KERN_NAME(norm_halves) + h] = vd_add(s[g * KERN_NAME(norm_halves) + h], d);
                q[g * KERN_NAME(norm_halves) + h] = vd_add_sq(q[g * KERN_NAME(norm_halves) + h], d);
            }
        }
    double ls[NORM_LANES], lq[NORM_LANES];
    for (int i = 0; i < VD; i++) vd_store(ls + i * VEC_WD, s[i]), vd_store(lq + i * VEC_WD, q[i]);
    if (sum) *sum = norm_lanes_total(ls);
    *sq = norm_lanes_total(lq);
}

VEC_TARGET static void KERN_NAME(norm_row_apply)(const float *x, float *y, int c, float mean,
                                                 float rstd, const float *gamma,
                                                 const float *beta) {
    const vf mu = v_set1(mean), rs = v_set1(rstd);
    for (int i = 0; i < c; i += VEC_W) {
        const int left = c - i < VEC_W ? c - i : VEC_W;
        vf v = v_mul(v_sub(v_load_n(x + i, left), mu), rs);
        if (gamma) v = v_mul(v, v_load_n(gamma + i, left));
        if (beta) v = v_add(v, v_load_n(beta + i, left));
        v_store_n(y + i, v, left);
    }
}

VEC_TARGET static void KERN_NAME(norm_row_scale)(const float *x, float *y, int c, float rs_f,
                                                 const float *gamma) {
    const vf rs = v_set1(rs_f);
    for (int i = 0; i < c; i += VEC_W) {
        const int left = c - i < VEC_W ? c - i : VEC_W;
        vf v = v_mul(v_load_n(x + i, left), rs);
        if (gamma) v = v_mul(v, v_load_n(gamma + i, left));
        v_store_n(y + i, v, left);
    }
}

/* x = softmax(x) over one row: the maximum (exact in any order), e = exp(x - max), their sum
 * through the NORM_LANES double lanes, then x = e * (float)(1 / sum). */
VEC_TARGET static void KERN_NAME(norm_row_softmax)(float *x, int c) {
    enum { VD = NORM_LANES / VEC_WD, VF = NORM_LANES / VEC_W };
    vf mv = v_set1(-INFINITY);
    for (int i = 0; i < c; i += VEC_W) {
        const int left = c - i < VEC_W ? c - i : VEC_W;
        const vf v = v_load_n(x + i, left);
        mv = v_max(mv, left == VEC_W ? v : v_select(v_lt(v_iota(), v_set1((float)left)), v, mv));
    }
    const vf mx = v_set1(v_hmax(mv));
    vd s[VD];
    for (int i = 0; i < VD; i++) s[i] = vd_zero();
    for (int i0 = 0; i0 < c; i0 += NORM_LANES)
        for (int g = 0; g < VF; g++) {
            const int at = i0 + g * VEC_W, left = c - at < VEC_W ? c - at : VEC_W;
            if (left <= 0) break;
            vf e = v_exp(v_sub(v_load_n(x + at, left), mx));
            if (left < VEC_W) e = v_select(v_lt(v_iota(), v_set1((float)left)), e, v_zero());
            v_store_n(x + at, e, left);
            for (int h = 0; h < KERN_NAME(norm_halves); h++)
                s[g * KERN_NAME(norm_halves) + h] = vd_add(s[g * KERN_NAME(norm_halves) + h], v_widen(e, h));
        }
    double ls[NORM_LANES];
    for (int i = 0; i < VD; i++) vd_store(ls + i * VEC_WD, s[i]);
    const vf inv = v_set1((float)(1.0 / norm_lanes_total(ls)));
    for (int i = 0; i < c; i += VEC_W) {
        const int left = c - i < VEC_W ? c - i : VEC_W;
        v_store_n(x + i, v_mul(v_load_n(x + i, left), inv), left);
    }
}

const norm_kernels *KERN_NAME(norm_kernels)(void) {
    static const norm_kernels k = {KERN_NAME(norm_sums), KERN_NAME(norm_apply),
                                   KERN_NAME(norm_row_sums), KERN_NAME(norm_row_apply),
                                   KERN_NAME(norm_row_scale), KERN_NAME(norm_row_softmax)};
    return &k;
}
