#include "conv2d.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16_internal.h"
#include "gemm_int8_internal.h"
#include "gemm_internal.h"

void conv2d_weight_from_oihw(const float *oihw, int cout, int cin, int kh, int kw, float *ohwi) {
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < cin; i++)
            for (int y = 0; y < kh; y++)
                for (int x = 0; x < kw; x++)
                    ohwi[(((long)o * kh + y) * kw + x) * cin + i] = oihw[(((long)o * cin + i) * kh + y) * kw + x];
}

/* The convolution is a GEMM: rows are output pixels, k runs over (ky, kx, cin) and B is the
 * weight matrix [cout][kh * kw * cin]. The engine asks for rows of A a few at a time; they are
 * gathered here straight from the NHWC input (zeros over the padding), so no im2col buffer
 * exists beyond the engine's few-kilobyte tile. */
typedef struct {
    const conv2d_shape *s;
    const float *x;
    int h, w, oh, ow;
} patch_src;

static void load_patches(const void *ctx, int row0, int rows, int p0, int kc, float *buf) {
    const patch_src *ps = ctx;
    const conv2d_shape *s = ps->s;
    const int cin = s->cin, pixels = ps->oh * ps->ow;
    for (int r = 0; r < rows; r++) {
        const int q = row0 + r, b = q / pixels, oy = q % pixels / ps->ow, ox = q % ps->ow;
        const int iy0 = oy * s->stride - s->pad_t, ix0 = ox * s->stride - s->pad_l;
        const float *img = ps->x + (long)b * ps->h * ps->w * cin;
        float *dst = buf + r * GEMM_APITCH;
        int tap = p0 / cin, ci = p0 % cin;
        for (int left = kc; left > 0; tap++, ci = 0) {
            const int run = cin - ci < left ? cin - ci : left;
            const int iy = iy0 + tap / s->kw, ix = ix0 + tap % s->kw;
            if (iy >= 0 && iy < ps->h && ix >= 0 && ix < ps->w)
                memcpy(dst, img + ((long)iy * ps->w + ix) * cin + ci, (size_t)run * sizeof *dst);
            else
                memset(dst, 0, (size_t)run * sizeof *dst);
            dst += run;
            left -= run;
        }
    }
}

/* A 1x1, stride-1, unpadded convolution reads its rows straight from the input. */
typedef struct {
    const float *x;
    int cin;
} pixel_src;

static void load_pixels(const void *ctx, int row0, int rows, int p0, int kc, float *buf) {
    const pixel_src *ps = ctx;
    for (int r = 0; r < rows; r++)
        memcpy(buf + r * GEMM_APITCH, ps->x + (long)(row0 + r) * ps->cin + p0, (size_t)kc * sizeof *buf);
}

typedef struct {
    const float *w;
    int cout, k;
} weight_src;

static void pack_weights(const void *ctx, int j0, int p0, int kc, float *dst) {
    const weight_src *ws = ctx;
    gemm_pack_nt_panel(ws->w, ws->k, ws->cout, j0, p0, kc, dst);
}

static void run_with(const conv2d_shape *s, const float *x, int n, int h, int w,
                     const float *packed, gemm_pack_b_fn pack, const void *pack_ctx,
                     const float *bias, float *y) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), k = s->kh * s->kw * s->cin;
    const int pointwise = s->kh == 1 && s->kw == 1 && s->stride == 1 && !s->pad_t && !s->pad_l &&
                          !s->pad_b && !s->pad_r;
    const patch_src patches = {s, x, h, w, oh, ow};
    const pixel_src pixels = {x, s->cin};
    gemm_problem p = {n * oh * ow, s->cout, k, NULL, NULL, packed, packed ? NULL : pack,
                      pack_ctx, y, s->cout, bias, 0};
    if (pointwise) p.load_a = load_pixels, p.a_ctx = &pixels;
    else p.load_a = load_patches, p.a_ctx = &patches;
    /* Weights widened per call: with few output pixels, pack them block by block in cache. */
    if (!packed && pack != pack_weights && p.m < GEMM_ITEM_PACK_ROWS) gemm_run_item_packed(&p);
    else gemm_run(&p);
}

static void run(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                const float *packed, const float *bias, float *y) {
    const weight_src ws = {weight, s->cout, s->kh * s->kw * s->cin};
    run_with(s, x, n, h, w, packed, pack_weights, &ws, bias, y);
}

void conv2d_nhwc(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                 const float *bias, float *y, sd_arena *scratch) {
    /* Packing the weights whole lets the engine carry each block of output through all of k in
     * cache; without room for that it packs block by block (same numbers either way). */
    if (!scratch) {
        run(s, x, n, h, w, weight, NULL, bias, y);
        return;
    }
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *packed = sd_arena_floats(scratch, conv2d_packed_size(s));
    if (packed) conv2d_pack_weights(s, weight, packed);
    run(s, x, n, h, w, weight, packed, bias, y);
    sd_arena_release(scratch, mark);
}

size_t conv2d_packed_size(const conv2d_shape *s) {
    return gemm_packed_floats(s->cout, s->kh * s->kw * s->cin);
}

void conv2d_pack_weights(const conv2d_shape *s, const float *ohwi, float *packed) {
    const int k = s->kh * s->kw * s->cin;
    gemm_pack_nt(s->cout, k, ohwi, k, packed);
}

/* Defined with the stored-dtype packers below: float32 is one of the dtypes they widen from. */
static void pack_oihw_whole(const conv2d_shape *s, const void *oihw, kern_dtype t, float *packed);

void conv2d_pack_weights_oihw(const conv2d_shape *s, const float *oihw, float *packed) {
    /* Panel q is [k][GEMM_NR]: column jj holds output channel q * GEMM_NR + jj with k running over
     * (tap, input channel), the order load_patches gathers; zeros past cout. Written a packed row
     * at a time from blocks that stay in L1 (a per-column scatter was 20x slower at load). */
    pack_oihw_whole(s, oihw, KERN_F32, packed);
}

void conv2d_nhwc_packed(const conv2d_shape *s, const float *x, int n, int h, int w,
                        const float *packed, const float *bias, float *y, sd_arena *scratch) {
    (void)scratch;
    run(s, x, n, h, w, NULL, packed, bias, y);
}

void conv2d_nhwc_ref(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                     const float *bias, float *y) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), cin = s->cin;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < s->cout; o++) {
                    float acc = bias ? bias[o] : 0.0f;
                    for (int ky = 0; ky < s->kh; ky++)
                        for (int kx = 0; kx < s->kw; kx++) {
                            int iy = oy * s->stride - s->pad_t + ky, ix = ox * s->stride - s->pad_l + kx;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                            const float *px = x + (((long)b * h + iy) * w + ix) * cin;
                            const float *wt = weight + (((long)o * s->kh + ky) * s->kw + kx) * cin;
                            for (int i = 0; i < cin; i++) acc += px[i] * wt[i];
                        }
                    y[(((long)b * oh + oy) * ow + ox) * s->cout + o] = acc;
                }
}

/* ---- bf16 ---- */

size_t conv2d_bf16_packed_size(const conv2d_shape *s) {
    return gemm_bf16_packed_size(s->cout, s->kh * s->kw * s->cin);
}

static void pack_bf16(const conv2d_shape *s, const float *w, int taps, uint16_t *packed) {
    const int k = s->kh * s->kw * s->cin, n = s->cout, panels = (n + GEMM_BF16_NR - 1) / GEMM_BF16_NR;
    const long stride = (long)((k + 1) / 2) * GEMM_BF16_NR * 2;
#pragma omp parallel for schedule(static) if ((long)n * k > (1 << 16))
    for (int q = 0; q < panels; q++) gemm_bf16_pack_panel(n, k, q * GEMM_BF16_NR, w, k, taps, packed + q * stride);
}

void conv2d_pack_weights_oihw_bf16(const conv2d_shape *s, const float *oihw, uint16_t *packed) {
    pack_bf16(s, oihw, s->kh * s->kw, packed);
}

void conv2d_pack_weights_bf16(const conv2d_shape *s, const float *ohwi, uint16_t *packed) {
    pack_bf16(s, ohwi, 1, packed);
}

void conv2d_nhwc_packed_bf16(const conv2d_shape *s, const float *x, int n, int h, int w,
                             const uint16_t *packed, const float *bias, float *y, sd_arena *scratch) {
    (void)scratch;
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), k = s->kh * s->kw * s->cin;
    const int pointwise = s->kh == 1 && s->kw == 1 && s->stride == 1 && !s->pad_t && !s->pad_l &&
                          !s->pad_b && !s->pad_r;
    const patch_src patches = {s, x, h, w, oh, ow};
    const pixel_src pixels = {x, s->cin};
    gemm_bf16_problem p = {n * oh * ow, s->cout, k, NULL, NULL, packed, y, s->cout, bias, 0};
    if (pointwise) p.load_a = load_pixels, p.a_ctx = &pixels;
    else p.load_a = load_patches, p.a_ctx = &patches;
    gemm_bf16_run(&p);
}

void conv2d_nhwc_bf16_ref(const conv2d_shape *s, const float *x, int n, int h, int w,
                          const float *weight, const float *bias, float *y) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), cin = s->cin;
    const int k = s->kh * s->kw * cin;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < s->cout; o++) {
                    float acc = 0.0f, pair[2] = {0.0f, 0.0f};
                    for (int kk = 0; kk < k; kk++) {
                        const int tap = kk / cin, i = kk % cin;
                        const int iy = oy * s->stride - s->pad_t + tap / s->kw;
                        const int ix = ox * s->stride - s->pad_l + tap % s->kw;
                        float v = 0.0f;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                            v = x[(((long)b * h + iy) * w + ix) * cin + i];
                        pair[kk & 1] = bf16_to_f32(bf16_from_f32(v)) *
                                       bf16_to_f32(bf16_from_f32(weight[(long)o * k + kk]));
                        if ((kk & 1) || kk == k - 1) {
                            acc += pair[1];
                            acc += pair[0];
                            pair[0] = pair[1] = 0.0f;
                        }
                    }
                    y[(((long)b * oh + oy) * ow + ox) * s->cout + o] = acc + (bias ? bias[o] : 0.0f);
                }
}

/* ---- int8 ---- */

size_t conv2d_int8_packed_size(const conv2d_shape *s) {
    return gemm_int8_packed_size(s->cout, s->kh * s->kw * s->cin);
}

void conv2d_pack_weights_oihw_int8(const conv2d_shape *s, const float *oihw, void *packed) {
    const int k = s->kh * s->kw * s->cin;
    gemm_int8_pack(s->cout, k, oihw, k, s->kh * s->kw, packed);
}

void conv2d_nhwc_packed_int8(const conv2d_shape *s, const float *x, int n, int h, int w,
                             const void *packed, const float *bias, float *y) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), k = s->kh * s->kw * s->cin;
    const int pointwise = s->kh == 1 && s->kw == 1 && s->stride == 1 && !s->pad_t && !s->pad_l &&
                          !s->pad_b && !s->pad_r;
    const patch_src patches = {s, x, h, w, oh, ow};
    const pixel_src pixels = {x, s->cin};
    gemm_int8_problem p = {n * oh * ow, s->cout, k, NULL, NULL, packed, y, s->cout, bias, 0};
    if (pointwise) p.load_a = load_pixels, p.a_ctx = &pixels;
    else p.load_a = load_patches, p.a_ctx = &patches;
    gemm_int8_run(&p);
}

void conv2d_nhwc_int8_ref(const conv2d_shape *s, const float *x, int n, int h, int w,
                          const float *weight, const float *bias, float *y) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w), k = s->kh * s->kw * s->cin;
    const long rows = (long)n * oh * ow;
    float *a = malloc((size_t)(rows > 0 ? rows : 1) * (size_t)(k > 0 ? k : 1) * sizeof *a);
    if (!a) abort();
    const int cin = s->cin;
    for (int b = 0; b < n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int kk = 0; kk < k; kk++) {
                    const int tap = kk / cin, i = kk % cin;
                    const int iy = oy * s->stride - s->pad_t + tap / s->kw;
                    const int ix = ox * s->stride - s->pad_l + tap % s->kw;
                    a[(((long)b * oh + oy) * ow + ox) * k + kk] =
                        iy >= 0 && iy < h && ix >= 0 && ix < w ? x[(((long)b * h + iy) * w + ix) * cin + i] : 0.0f;
                }
    gemm_int8_nt_ref((int)rows, s->cout, k, a, k, weight, k, y, s->cout, bias, 0);
    free(a);
}

/* ---- weights in their stored dtype, PyTorch layout [cout][cin][kh][kw] ---- */

typedef struct {
    const conv2d_shape *s;
    const void *w;
    kern_dtype t;
} oihw_src;

/* Input channels widened per block: the block's weights for the panel's 32 output channels,
 * 32 x OIHW_BLOCK floats, stay in L1 while they are scattered into place. */
enum { OIHW_BLOCK = 288 };

/* Columns [j0, j0 + GEMM_NR) of rows [p0, p0 + kc) of the weight matrix, whose k runs over
 * (tap, input channel) as load_patches gathers. A block of input channels is widened for all 32
 * output channels at once (contiguous in OIHW: all taps of each channel), then written out a
 * whole packed row (32 output channels of one (tap, channel)) at a time, so the panel is written
 * in order rather than one float per cache line 32 times over. */
static void pack_oihw(const void *ctx, int j0, int p0, int kc, float *dst) {
    const oihw_src *src = ctx;
    const conv2d_shape *s = src->s;
    const int taps = s->kh * s->kw, cin = s->cin, k = taps * cin;
    const int cols = s->cout - j0 < GEMM_NR ? s->cout - j0 : GEMM_NR;
    const int cb = OIHW_BLOCK / taps > 0 ? OIHW_BLOCK / taps : 1, span = cb * taps;
    const size_t esize = kern_dtype_size(src->t);
    /* More taps than the block holds (kernels above 16x16) take a heap buffer; none here do. */
    float stack_tmp[GEMM_NR * OIHW_BLOCK] __attribute__((aligned(64)));
    float *tmp = span <= OIHW_BLOCK ? stack_tmp : malloc((size_t)GEMM_NR * span * sizeof *tmp);
    if (!tmp) return; /* unreachable in practice; leaves the panel unwritten */
    for (int ci0 = 0; ci0 < cin; ci0 += cb) {
        const int ci1 = ci0 + cb < cin ? ci0 + cb : cin, n = (ci1 - ci0) * taps;
        int used = 0; /* does any tap of this block fall in [p0, p0 + kc)? */
        for (int t = 0; t < taps && !used; t++)
            used = t * cin + ci1 > p0 && t * cin + ci0 < p0 + kc;
        if (!used) continue;
        for (int jj = 0; jj < cols; jj++)
            kern_to_f32(src->t, (const uint8_t *)src->w + ((size_t)(j0 + jj) * k + (size_t)ci0 * taps) * esize,
                        tmp + (size_t)jj * span, (size_t)n);
        for (int t = 0; t < taps; t++) {
            const int lo = t * cin + ci0 > p0 ? ci0 : p0 - t * cin;
            const int hi = t * cin + ci1 < p0 + kc ? ci1 : p0 + kc - t * cin;
            for (int ci = lo; ci < hi; ci++) {
                float *row = dst + (long)(t * cin + ci - p0) * GEMM_NR;
                const float *from = tmp + (ci - ci0) * taps + t;
                for (int jj = 0; jj < cols; jj++) row[jj] = from[(size_t)jj * span];
                for (int jj = cols; jj < GEMM_NR; jj++) row[jj] = 0.0f;
            }
        }
    }
    if (tmp != stack_tmp) free(tmp);
}

void conv2d_nhwc_stored(const conv2d_shape *s, const float *x, int n, int h, int w,
                        const void *oihw, kern_dtype t, const float *bias, float *y) {
    const oihw_src src = {s, oihw, t};
    run_with(s, x, n, h, w, NULL, pack_oihw, &src, bias, y);
}

static void pack_oihw_whole(const conv2d_shape *s, const void *oihw, kern_dtype t, float *packed) {
    const oihw_src src = {s, oihw, t};
    const int k = s->kh * s->kw * s->cin, panels = (s->cout + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((long)s->cout * k > (1 << 16))
    for (int q = 0; q < panels; q++) pack_oihw(&src, q * GEMM_NR, 0, k, packed + (long)q * k * GEMM_NR);
}

void conv2d_pack_weights_oihw_widen_f16(const conv2d_shape *s, const void *oihw, float *packed) {
    pack_oihw_whole(s, oihw, KERN_F16, packed);
}

void conv2d_pack_weights_oihw_widen_bf16(const conv2d_shape *s, const void *oihw, float *packed) {
    pack_oihw_whole(s, oihw, KERN_BF16, packed);
}
