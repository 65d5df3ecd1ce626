/* ggml's reference quantizers (gguf_quantize.h), one block at a time, writing the blocks' bytes
 * by offset (little-endian fp16 scales) as gguf_quant.c reads them. Expressions keep ggml's
 * operand order: a reordered sum would round differently and choose other scales. */
#include "gguf_quantize.h"

#include <math.h>
#include <string.h>

#include "gguf_quant.h"
#include "safetensors.h"

enum { QK = 32, QK_K = 256 };

/* ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it quantizes to zeros. */
#define GROUP_MAX_EPS 1e-15f

/* ggml's nearest_int (the 1.5 * 2^23 trick): round half to even, as lrintf in the default
 * rounding mode, for the |x| < 2^22 the quantizers pass it. */
static int nearest(float x) { return (int)lrintf(x); }

static void put_half(uint8_t *b, float x) {
    const uint16_t h = st_f32_to_f16(x);
    b[0] = (uint8_t)h;
    b[1] = (uint8_t)(h >> 8);
}
static float get_half(const uint8_t *b) { return st_f16_to_f32((uint16_t)(b[0] | b[1] << 8)); }
static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* Q8_0: d = max|x| / 127, q = round(x / d) (roundf: half away from zero, as ggml). */
static void q8_0(const float *x, uint8_t *b) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < QK; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* Q4_0: d = (the value of largest magnitude) / -8, q = min(15, (int8)(x / d + 8.5)); value j in
 * the low nibble of byte j, value j + 16 in its high nibble. */
static void q4_0(const float *x, uint8_t *b) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -8, id = d ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[QK / 2 + j] * id;
        const int q0 = imin(15, (int8_t)(x0 + 8.5f)), q1 = imin(15, (int8_t)(x1 + 8.5f));
        b[2 + j] = (uint8_t)(q0 | q1 << 4);
    }
}

/* ggml's make_qkx2_quants (use_mad false): a scale and a min for n values as l in [0, nmax],
 * min <= 0, starting from the range and refined over nstep + 1 trial scales by weighted least
 * squares; returns the scale, *the_min = -min. */
static float make_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L,
                       float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)imax(0, imin(nmax, nearest(iscale * (x[i] - min))));
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(0, imin(nmax, nearest(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K / Q5_K (nmax 15 / 31): eight sub-blocks of 32 get a scale and a min (make_qkx2 with
 * ggml's parameters for each type), both quantized to 6 bits against the block's fp16 d and
 * dmin; then every value is quantized again against the rounded scales. Writes d, dmin and the
 * 12 packed scale bytes, and leaves the values in L. */
static void k_scales(const float *x, uint8_t *b, uint8_t *L, int nmax) {
    uint8_t Laux[32];
    float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    const bool five = nmax == 31;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = five ? make_qkx2(32, 31, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -0.5f,
                                     0.1f, 15)
                         : make_qkx2(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -1.0f,
                                     0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t *sc = b + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        const int ls = imin(63, nearest(inv_scale * scales[j]));
        const int lm = imin(63, nearest(inv_min * mins[j]));
        if (j < 4) {
            sc[j] = (uint8_t)ls;
            sc[j + 4] = (uint8_t)lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_half(b, max_scale / 63.0f);
    put_half(b + 2, max_min / 63.0f);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        gguf_scale_min_k4(j, sc, &s, &m);
        const float d = get_half(b) * s;
        if (!d) continue;
        const float dm = get_half(b + 2) * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)imax(0, imin(nmax, nearest((x[32 * j + l] + dm) / d)));
    }
}

/* Q4_K: d, dmin, 12 scale bytes, 128 bytes of nibbles (values 64i + l low, 64i + 32 + l high). */
static void q4_k(const float *x, uint8_t *b) {
    uint8_t L[QK_K];
    k_scales(x, b, L, 15);
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * j + l] = (uint8_t)(L[64 * j + l] | L[64 * j + 32 + l] << 4);
}

/* Q5_K: d, dmin, 12 scale bytes, 32 bytes of fifth bits (bit 2i of qh[l] for value 64i + l,
 * bit 2i + 1 for 64i + 32 + l), 128 bytes of nibbles as Q4_K. */
static void q5_k(const float *x, uint8_t *b) {
    uint8_t L[QK_K];
    k_scales(x, b, L, 31);
    uint8_t *qh = b + 16, *ql = b + 48;
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) l1 -= 16, qh[j] |= m1;
            if (l2 > 15) l2 -= 16, qh[j] |= m2;
            ql[j] = (uint8_t)(l1 | l2 << 4);
        }
}

/* ggml's make_qx_quants with rmse_type 1 and no importance weights (w = x^2): a signed scale
 * for n values as l + nmax, l in [-nmax, nmax - 1], the range's scale refined over 18 trial
 * scales. Q6_K requantizes against the rounded scales; only a sub-block whose rounded scale is
 * 0 keeps these L (they then stand for zeros, but ggml's bytes hold them). */
static float make_qx(int n, int nmax, const float *x, uint8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imax(-nmax, imin(nmax - 1, nearest(iscale * x[i])));
        L[i] = (uint8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(-nmax, imin(nmax - 1, nearest(iscale * x[i])));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (uint8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q6_K: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8 scales, fp16 d; sixteen
 * sub-blocks of 16, values in [-32, 31] stored offset by 32. */
static void q6_k(const float *x, uint8_t *b) {
    uint8_t L[QK_K];
    float scales[QK_K / 16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
        scales[ib] = make_qx(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    memset(b, 0, 210);
    if (max_abs < GROUP_MAX_EPS) return; /* all zeros, d = 0 */
    const float iscale = -128.0f / max_scale;
    put_half(b + 208, 1 / iscale);
    int8_t *sc = (int8_t *)(b + 192);
    for (int ib = 0; ib < QK_K / 16; ib++) sc[ib] = (int8_t)imin(127, nearest(iscale * scales[ib]));
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = get_half(b + 208) * sc[j];
        if (!d) continue; /* make_qx's L stay, as in ggml */
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (uint8_t)(imax(-32, imin(31, nearest(x[16 * j + i] / d))) + 32);
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                          q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | q3 << 4);
            ql[l + 32] = (uint8_t)(q2 | q4 << 4);
            qh[l] = (uint8_t)(L[j + l] >> 4 | (L[j + l + 32] >> 4) << 2 |
                              (L[j + l + 64] >> 4) << 4 | (L[j + l + 96] >> 4) << 6);
        }
}

bool gguf_quantize_supported(uint32_t type) {
    return type == GGUF_TYPE_Q8_0 || type == GGUF_TYPE_Q4_0 || type == GGUF_TYPE_Q4_K ||
           type == GGUF_TYPE_Q5_K || type == GGUF_TYPE_Q6_K;
}

void gguf_quantize_row(uint32_t type, const float *x, void *out, int64_t n) {
    int elems, bytes;
    if (!gguf_quantize_supported(type) || !gguf_type_block(type, &elems, &bytes)) return;
    uint8_t *b = out;
    for (int64_t i = 0; i < n; i += elems, x += elems, b += bytes) switch (type) {
        case GGUF_TYPE_Q8_0: q8_0(x, b); break;
        case GGUF_TYPE_Q4_0: q4_0(x, b); break;
        case GGUF_TYPE_Q4_K: q4_k(x, b); break;
        case GGUF_TYPE_Q5_K: q5_k(x, b); break;
        default: q6_k(x, b); break;
        }
}
