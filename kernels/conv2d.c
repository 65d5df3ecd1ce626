#include "conv2d.h"

#include <string.h>

#include "gemm.h"

void conv2d_weight_from_oihw(const float *oihw, int cout, int cin, int kh, int kw, float *ohwi) {
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < cin; i++)
            for (int y = 0; y < kh; y++)
                for (int x = 0; x < kw; x++)
                    ohwi[(((long)o * kh + y) * kw + x) * cin + i] = oihw[(((long)o * cin + i) * kh + y) * kw + x];
}

/* Patch rows for output pixels [row0, row0 + rows) of image `img`: each row is the kh*kw*cin
 * input values under the kernel, zeros where the kernel hangs over the padding. */
static void im2col_rows(const conv2d_shape *s, const float *img, int h, int w, int ow, int row0,
                        int rows, float *cols) {
    const int cin = s->cin;
    const long k = (long)s->kh * s->kw * cin;
    for (int oy = row0; oy < row0 + rows; oy++)
        for (int ox = 0; ox < ow; ox++) {
            float *dst = cols + ((long)(oy - row0) * ow + ox) * k;
            for (int ky = 0; ky < s->kh; ky++) {
                int iy = oy * s->stride - s->pad_t + ky;
                for (int kx = 0; kx < s->kw; kx++, dst += cin) {
                    int ix = ox * s->stride - s->pad_l + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) memset(dst, 0, cin * sizeof *dst);
                    else memcpy(dst, img + ((long)iy * w + ix) * cin, cin * sizeof *dst);
                }
            }
        }
}

void conv2d_nhwc(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                 const float *bias, float *y, sd_arena *scratch) {
    const int oh = conv2d_out_h(s, h), ow = conv2d_out_w(s, w);
    const int k = s->kh * s->kw * s->cin;
    const int pointwise = s->kh == 1 && s->kw == 1 && s->stride == 1 && !s->pad_t && !s->pad_l &&
                          !s->pad_b && !s->pad_r;
    if (pointwise) { /* a 1x1 convolution is a plain matrix product over all pixels */
        gemm_nt(n * h * w, s->cout, s->cin, x, s->cin, weight, s->cin, y, s->cout, bias, 0);
        return;
    }
    /* Tile over output rows so the patch buffer stays around 8 MB whatever the image size. */
    long row_bytes = (long)ow * k * (long)sizeof(float);
    int tile = (int)((8L << 20) / (row_bytes ? row_bytes : 1));
    if (tile < 1) tile = 1;
    if (tile > oh) tile = oh;
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *cols = sd_arena_floats(scratch, (size_t)tile * ow * k);
    for (int b = 0; b < n; b++) {
        const float *img = x + (long)b * h * w * s->cin;
        float *out = y + (long)b * oh * ow * s->cout;
        for (int r = 0; r < oh; r += tile) {
            int rows = oh - r < tile ? oh - r : tile;
            im2col_rows(s, img, h, w, ow, r, rows, cols);
            gemm_nt(rows * ow, s->cout, k, cols, k, weight, k, out + (long)r * ow * s->cout, s->cout,
                    bias, 0);
        }
    }
    sd_arena_release(scratch, mark);
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
