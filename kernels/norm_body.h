/* The norms' inner loops on the vec_*.h primitives: included by isa_*.c after a vec header,
 * vec_math.h and a KERN_NAME(name) definition, once per instruction set.
 *
 * Every loop runs whole vectors with plain loads and stores and then one masked tail, rather
 * than choosing per vector: a compiler may merge the two choices into the masked form, and masked
 * stores are microcoded on AMD cores. Register arrays are indexed only in loops unrolled whole. */
#include "norm_internal.h"

enum { KERN_NAME(norm_halves) = VEC_W / VEC_WD }; /* double vectors per float vector */

/* sum and sq over pixels for channels [ch, ch + NB VEC_W) of which `left` exist (all when
 * left >= NB VEC_W), the sums held in registers across the pixels. */
VEC_FN void KERN_NAME(norm_sums_block)(const float *x, long pixels, int c, int ch, int left,
                                       double *sum, double *sq) {
    enum { NB = 2, H = KERN_NAME(norm_halves) }; /* float vectors per block, doubles per vector */
    vd s[NB][H], q[NB][H];
    int lv[NB], ld[NB][H]; /* floats and doubles present per vector */
    KERN_UNROLL
    for (int b = 0; b < NB; b++) {
        const int l = left - b * VEC_W;
        lv[b] = l < 0 ? 0 : l < VEC_W ? l : VEC_W;
        KERN_UNROLL
        for (int h = 0; h < H; h++) {
            const int m = lv[b] - h * VEC_WD, at = ch + b * VEC_W + h * VEC_WD;
            ld[b][h] = m < 0 ? 0 : m < VEC_WD ? m : VEC_WD;
            s[b][h] = vd_load_n(sum + at, ld[b][h]);
            q[b][h] = vd_load_n(sq + at, ld[b][h]);
        }
    }
    const int whole = left >= NB * VEC_W;
    for (long p = 0; p < pixels; p++) {
        const float *xp = x + p * c + ch;
        KERN_UNROLL
        for (int b = 0; b < NB; b++) {
            /* A missing vector reads as zeros, which leave the sums as they are. */
            const vf v = whole ? v_load(xp + b * VEC_W) : v_load_n(xp + b * VEC_W, lv[b]);
            KERN_UNROLL
            for (int h = 0; h < H; h++) {
                const vd d = v_widen(v, h);
                s[b][h] = vd_add(s[b][h], d);
                q[b][h] = vd_add_sq(q[b][h], d);
            }
        }
    }
    KERN_UNROLL
    for (int b = 0; b < NB; b++)
        KERN_UNROLL
        for (int h = 0; h < H; h++) {
            const int at = ch + b * VEC_W + h * VEC_WD;
            vd_store_n(sum + at, s[b][h], ld[b][h]);
            vd_store_n(sq + at, q[b][h], ld[b][h]);
        }
}

/* A block of channels at a time (each channel's sum still adds its pixels in order, as the
 * contract says). */
VEC_TARGET static void KERN_NAME(norm_sums)(const float *x, long pixels, int c, double *sum,
                                            double *sq) {
    for (int ch = 0; ch < c; ch += 2 * VEC_W)
        KERN_NAME(norm_sums_block)(x, pixels, c, ch, c - ch, sum, sq);
}

VEC_FN vf KERN_NAME(gn_one)(vf x, vf mean, vf scale, vf beta, int silu) {
    const vf r = v_fmadd(v_sub(x, mean), scale, beta);
    return silu ? v_silu(r) : r;
}

VEC_TARGET static void KERN_NAME(norm_apply)(const float *x, float *y, long pixels, int c,
                                             const float *mean, const float *scale,
                                             const float *beta, int silu) {
    for (long p = 0; p < pixels; p++, x += c, y += c) {
        int ch = 0;
        for (; ch + VEC_W <= c; ch += VEC_W)
            v_store(y + ch, KERN_NAME(gn_one)(v_load(x + ch), v_load(mean + ch), v_load(scale + ch),
                                              v_load(beta + ch), silu));
        if (ch < c) {
            const int n = c - ch;
            v_store_n(y + ch,
                      KERN_NAME(gn_one)(v_load_n(x + ch, n), v_load_n(mean + ch, n),
                                        v_load_n(scale + ch, n), v_load_n(beta + ch, n), silu),
                      n);
        }
    }
}

/* Adds 16 values (from x, `left` of them present; all when left >= NORM_LANES) to the lanes,
 * optionally their squares. */
VEC_FN void KERN_NAME(norm_lanes_add)(const float *x, int left, vd *s, vd *q) {
    enum { VF = NORM_LANES / VEC_W, H = KERN_NAME(norm_halves) };
    KERN_UNROLL
    for (int g = 0; g < VF; g++) {
        const int l = left - g * VEC_W;
        /* Lanes past the row's end add zeros, which leave a sum unchanged. */
        const vf v = left >= NORM_LANES ? v_load(x + g * VEC_W) : v_load_n(x + g * VEC_W, l < 0 ? 0 : l);
        KERN_UNROLL
        for (int h = 0; h < H; h++) {
            const vd d = v_widen(v, h);
            if (s) s[g * H + h] = vd_add(s[g * H + h], d);
            if (q) q[g * H + h] = vd_add_sq(q[g * H + h], d);
        }
    }
}

/* Element i goes to lane i % NORM_LANES, so every width adds the same numbers in the same order
 * per lane. */
VEC_TARGET static void KERN_NAME(norm_row_sums)(const float *x, int c, double *sum, double *sq) {
    enum { VD = NORM_LANES / VEC_WD };
    vd s[VD], q[VD];
    KERN_UNROLL
    for (int i = 0; i < VD; i++) s[i] = q[i] = vd_zero();
    int i0 = 0;
    if (sum) {
        for (; i0 + NORM_LANES <= c; i0 += NORM_LANES) KERN_NAME(norm_lanes_add)(x + i0, NORM_LANES, s, q);
        if (i0 < c) KERN_NAME(norm_lanes_add)(x + i0, c - i0, s, q);
    } else {
        for (; i0 + NORM_LANES <= c; i0 += NORM_LANES) KERN_NAME(norm_lanes_add)(x + i0, NORM_LANES, NULL, q);
        if (i0 < c) KERN_NAME(norm_lanes_add)(x + i0, c - i0, NULL, q);
    }
    double ls[NORM_LANES], lq[NORM_LANES];
    KERN_UNROLL
    for (int i = 0; i < VD; i++) vd_store(ls + i * VEC_WD, s[i]), vd_store(lq + i * VEC_WD, q[i]);
    if (sum) *sum = norm_lanes_total(ls);
    *sq = norm_lanes_total(lq);
}

VEC_FN vf KERN_NAME(ln_one)(vf x, vf mu, vf rs, const float *gamma, const float *beta, int n) {
    vf v = v_mul(v_sub(x, mu), rs);
    if (gamma) v = v_mul(v, n == VEC_W ? v_load(gamma) : v_load_n(gamma, n));
    if (beta) v = v_add(v, n == VEC_W ? v_load(beta) : v_load_n(beta, n));
    return v;
}

VEC_TARGET static void KERN_NAME(norm_row_apply)(const float *x, float *y, int c, float mean,
                                                 float rstd, const float *gamma,
                                                 const float *beta) {
    const vf mu = v_set1(mean), rs = v_set1(rstd);
    int i = 0;
    for (; i + VEC_W <= c; i += VEC_W)
        v_store(y + i, KERN_NAME(ln_one)(v_load(x + i), mu, rs, gamma ? gamma + i : NULL,
                                         beta ? beta + i : NULL, VEC_W));
    if (i < c)
        v_store_n(y + i,
                  KERN_NAME(ln_one)(v_load_n(x + i, c - i), mu, rs, gamma ? gamma + i : NULL,
                                    beta ? beta + i : NULL, c - i),
                  c - i);
}

VEC_TARGET static void KERN_NAME(norm_row_scale)(const float *x, float *y, int c, float rs_f,
                                                 const float *gamma) {
    const vf rs = v_set1(rs_f);
    int i = 0;
    for (; i + VEC_W <= c; i += VEC_W) {
        const vf v = v_mul(v_load(x + i), rs);
        v_store(y + i, gamma ? v_mul(v, v_load(gamma + i)) : v);
    }
    if (i < c) {
        const int n = c - i;
        const vf v = v_mul(v_load_n(x + i, n), rs);
        v_store_n(y + i, gamma ? v_mul(v, v_load_n(gamma + i, n)) : v, n);
    }
}

/* x = softmax(x) over one row: the maximum (exact in any order), e = exp(x - max), their sum
 * through the NORM_LANES double lanes, then x = e * (float)(1 / sum). */
VEC_TARGET static void KERN_NAME(norm_row_softmax)(float *x, int c) {
    enum { VD = NORM_LANES / VEC_WD };
    vf mv = v_set1(-INFINITY);
    int i = 0;
    for (; i + VEC_W <= c; i += VEC_W) mv = v_max(mv, v_load(x + i));
    if (i < c) /* lanes past the end keep the maximum so far */
        mv = v_max(mv, v_select(v_lt(v_iota(), v_set1((float)(c - i))), v_load_n(x + i, c - i), mv));
    const vf mx = v_set1(v_hmax(mv));
    /* e in place; past the end zeros, which add nothing */
    for (i = 0; i + VEC_W <= c; i += VEC_W) v_store(x + i, v_exp(v_sub(v_load(x + i), mx)));
    if (i < c) v_store_n(x + i, v_exp(v_sub(v_load_n(x + i, c - i), mx)), c - i);
    vd s[VD];
    KERN_UNROLL
    for (int k = 0; k < VD; k++) s[k] = vd_zero();
    int i0 = 0;
    for (; i0 + NORM_LANES <= c; i0 += NORM_LANES) KERN_NAME(norm_lanes_add)(x + i0, NORM_LANES, s, NULL);
    if (i0 < c) KERN_NAME(norm_lanes_add)(x + i0, c - i0, s, NULL);
    double ls[NORM_LANES];
    KERN_UNROLL
    for (int k = 0; k < VD; k++) vd_store(ls + k * VEC_WD, s[k]);
    const vf inv = v_set1((float)(1.0 / norm_lanes_total(ls)));
    for (i = 0; i + VEC_W <= c; i += VEC_W) v_store(x + i, v_mul(v_load(x + i), inv));
    if (i < c) v_store_n(x + i, v_mul(v_load_n(x + i, c - i), inv), c - i);
}

const norm_kernels *KERN_NAME(norm_kernels)(void) {
    static const norm_kernels k = {KERN_NAME(norm_sums), KERN_NAME(norm_apply),
                                   KERN_NAME(norm_row_sums), KERN_NAME(norm_row_apply),
                                   KERN_NAME(norm_row_scale), KERN_NAME(norm_row_softmax)};
    return &k;
}
