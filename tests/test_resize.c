/* core/resize against Pillow. No Pillow here, so three kinds of reference:
 * - pixel values Pillow itself computed, published in its test suite (Tests/test_image_resample.py:
 *   test_reduce_lanczos, test_enlarge_lanczos, the constant-colour consistency case);
 * - a plain double-precision implementation of Pillow's algorithm written here (weights summed
 *   over every source pixel, normalised, each pass rounded to 8 bits): the fixed-point result may
 *   differ from it by one level where a value sits on a rounding boundary, never more;
 * - for NEAREST and torch's nearest, the index formulas in exact integer arithmetic.
 * The fixture images already have the pipelines' sizes, so the fixture runs do not resize. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/resize.h"
#include "test.h"

/* Pillow's make_case: top-left and bottom-right quarters `color`, the others 255 - color. */
static uint8_t *make_case(int w, int h, int ch, int color) {
    uint8_t *im = malloc((size_t)w * h * ch);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int v = (x < w / 2) == (y < h / 2) ? color : 255 - color;
            for (int c = 0; c < ch; c++) im[((size_t)y * w + x) * ch + c] = (uint8_t)v;
        }
    return im;
}

/* Pillow's make_sample: the top-left quarter given, mirrored into the other three. */
static void make_sample(const int *quarter, int w, int h, uint8_t *out) {
    const int qw = w / 2, qh = h / 2;
    for (int y = 0; y < qh; y++)
        for (int x = 0; x < qw; x++) {
            int v = quarter[y * qw + x];
            out[y * w + x] = (uint8_t)v;
            out[(h - y - 1) * w + (w - x - 1)] = (uint8_t)v;
            out[(h - y - 1) * w + x] = (uint8_t)(255 - v);
            out[y * w + (w - x - 1)] = (uint8_t)(255 - v);
        }
}

static void pillow_case(const char *what, int sw, int dw, const int *quarter) {
    uint8_t *want = malloc((size_t)dw * dw);
    make_sample(quarter, dw, dw, want);
    for (int ch = 1; ch <= 4; ch++) {
        uint8_t *src = make_case(sw, sw, ch, 0xe1), *dst = malloc((size_t)dw * dw * ch);
        CHECK_OK(resize_u8(src, sw, sw, ch, dst, dw, dw, RESIZE_LANCZOS));
        int bad = 0;
        for (int i = 0; i < dw * dw; i++)
            for (int c = 0; c < ch; c++) bad += dst[i * ch + c] != want[i];
        printf("%s Pillow's %s (%d channel%s): %d of %d values differ\n", bad ? "FAIL" : "ok  ",
               what, ch, ch > 1 ? "s" : "", bad, dw * dw * ch);
        CHECK(bad == 0, "%s, %d channels", what, ch);
        free(src), free(dst);
    }
    free(want);
}

static void pillow_references(void) {
    /* test_reduce_lanczos: 16x16 -> 8x8 */
    const int reduce[] = {0xe1, 0xe0, 0xe4, 0xd7, 0xe0, 0xdf, 0xe3, 0xd6,
                          0xe4, 0xe3, 0xe7, 0xda, 0xd7, 0xd6, 0xd9, 0xce};
    pillow_case("reduce_lanczos 16->8", 16, 8, reduce);
    /* test_enlarge_lanczos: 6x6 -> 12x12 */
    const int enlarge[] = {0xe1, 0xe0, 0xdb, 0xed, 0xf5, 0xb8, 0xe0, 0xdf, 0xda, 0xec, 0xf3, 0xb7,
                           0xdb, 0xdb, 0xd6, 0xe7, 0xee, 0xb5, 0xed, 0xec, 0xe6, 0xfb, 0xff, 0xbf,
                           0xf5, 0xf4, 0xee, 0xff, 0xff, 0xc4, 0xb8, 0xb7, 0xb4, 0xbf, 0xc4, 0xa0};
    pillow_case("enlarge_lanczos 6->12", 6, 12, enlarge);
    /* TestCoreResampleConsistency.test_8u: a constant 512x9 RGB image resized to 9x512 stays
     * exactly (0, 64, 255). */
    uint8_t *src = malloc(512 * 9 * 3), *dst = malloc(9 * 512 * 3);
    for (int i = 0; i < 512 * 9; i++) src[3 * i] = 0, src[3 * i + 1] = 64, src[3 * i + 2] = 255;
    CHECK_OK(resize_u8(src, 512, 9, 3, dst, 9, 512, RESIZE_LANCZOS));
    int bad = 0;
    for (int i = 0; i < 9 * 512; i++) bad += dst[3 * i] != 0 || dst[3 * i + 1] != 64 || dst[3 * i + 2] != 255;
    CHECK(bad == 0, "constant colour 512x9 -> 9x512: %d pixels changed", bad);
    free(src), free(dst);
}

/* ---- the plain double-precision version of Pillow's LANCZOS -------------------------------- */

static double ref_lanczos(double x) {
    if (x <= -3.0 || x >= 3.0) return 0.0;
    if (x == 0.0) return 1.0;
    return 3.0 * sin(M_PI * x) * sin(M_PI * x / 3.0) / (M_PI * M_PI * x * x);
}

/* One axis: out[i] = sum_j w(j) in[j] / sum_j w(j), w(j) = lanczos((j + 0.5 - centre) / scale),
 * centre = (i + 0.5) * in/out, scale = max(in/out, 1); rounded half up and clamped to 8 bits. */
static void ref_axis(const uint8_t *in, int n_in, size_t in_stride, uint8_t *out, int n_out,
                     size_t out_stride) {
    double scale = (double)n_in / n_out, fs = scale > 1 ? scale : 1;
    for (int i = 0; i < n_out; i++) {
        double centre = (i + 0.5) * scale, sw = 0, sv = 0;
        for (int j = 0; j < n_in; j++) {
            double w = ref_lanczos((j + 0.5 - centre) / fs);
            sw += w;
            sv += w * in[j * in_stride];
        }
        double v = floor(sv / sw + 0.5);
        out[i * out_stride] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

static void ref_resize(const uint8_t *src, int sw, int sh, int ch, uint8_t *dst, int dw, int dh) {
    uint8_t *tmp = malloc((size_t)dw * sh * ch);
    for (int y = 0; y < sh; y++)
        for (int c = 0; c < ch; c++)
            if (dw == sw) for (int x = 0; x < sw; x++) tmp[((size_t)y * dw + x) * ch + c] = src[((size_t)y * sw + x) * ch + c];
            else ref_axis(src + (size_t)y * sw * ch + c, sw, ch, tmp + (size_t)y * dw * ch + c, dw, ch);
    for (int x = 0; x < dw; x++)
        for (int c = 0; c < ch; c++)
            if (dh == sh) for (int y = 0; y < sh; y++) dst[((size_t)y * dw + x) * ch + c] = tmp[((size_t)y * dw + x) * ch + c];
            else ref_axis(tmp + (size_t)x * ch + c, sh, (size_t)dw * ch, dst + (size_t)x * ch + c, dh, (size_t)dw * ch);
    free(tmp);
}

static void against_plain(void) {
    const struct {
        int sw, sh, dw, dh;
    } cases[] = {{37, 23, 16, 40}, {100, 80, 64, 64}, {64, 64, 64, 37}, {50, 30, 77, 30},
                 {192, 128, 128, 128}, {9, 7, 130, 5}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int sw = cases[k].sw, sh = cases[k].sh, dw = cases[k].dw, dh = cases[k].dh;
        size_t ns = (size_t)sw * sh * 3, nd = (size_t)dw * dh * 3;
        uint8_t *src = malloc(ns), *got = malloc(nd), *want = malloc(nd);
        /* smooth gradients plus noise plus hard edges: every lobe of the filter matters */
        for (int y = 0; y < sh; y++)
            for (int x = 0; x < sw; x++)
                for (int c = 0; c < 3; c++) {
                    unsigned h = (unsigned)(x * 7919 + y * 104729 + c * 1299709) * 2654435761u;
                    int v = (x * 255 / sw + y * 97 / sh + c * 60) % 256;
                    v = ((x / 5 + y / 3) % 3 == 0) ? 255 - v : v;
                    src[((size_t)y * sw + x) * 3 + c] = (uint8_t)((v + (int)(h >> 28)) & 255);
                }
        CHECK_OK(resize_u8(src, sw, sh, 3, got, dw, dh, RESIZE_LANCZOS));
        ref_resize(src, sw, sh, 3, want, dw, dh);
        size_t differ = 0;
        int maxd = 0;
        for (size_t i = 0; i < nd; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            differ += d != 0;
            if (d > maxd) maxd = d;
        }
        printf("%s lanczos %dx%d -> %dx%d against the plain double version: %zu of %zu values "
               "differ, max %d\n", maxd <= 1 && differ * 100 <= nd ? "ok  " : "FAIL", sw, sh, dw,
               dh, differ, nd, maxd);
        CHECK(maxd <= 1 && differ * 100 <= nd, "lanczos %dx%d -> %dx%d: %zu values differ, max %d",
              sw, sh, dw, dh, differ, maxd);
        free(src), free(got), free(want);
    }
}

/* ---- nearest ------------------------------------------------------------------------------- */

static void nearest(void) {
    /* Pillow: source index floor((k + 0.5) * in / out), exactly (2k + 1) * in / (2 out) in
     * integers; where that quotient is whole, Pillow's running sum may land just below it. */
    const int sizes[][2] = {{4, 2}, {3, 5}, {100, 64}, {64, 100}, {2048, 1536}, {7, 7}, {1, 9}};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int in = sizes[k][0], out = sizes[k][1], bad = 0;
        uint8_t *src = malloc((size_t)in), *dst = malloc((size_t)out);
        for (int i = 0; i < in; i++) src[i] = (uint8_t)(i % 251);
        CHECK_OK(resize_u8(src, in, 1, 1, dst, out, 1, RESIZE_NEAREST));
        for (int i = 0; i < out; i++) {
            long num = (2L * i + 1) * in, den = 2L * out, j = num / den;
            bool whole = num % den == 0;
            bool ok = dst[i] == src[j] || (whole && j > 0 && dst[i] == src[j - 1]);
            bad += !ok;
        }
        CHECK(bad == 0, "nearest %d -> %d: %d indices off Pillow's formula", in, out, bad);
        free(src), free(dst);
    }
    uint8_t four[4] = {10, 20, 30, 40}, two[2];
    CHECK_OK(resize_u8(four, 4, 1, 1, two, 2, 1, RESIZE_NEAREST));
    CHECK(two[0] == 20 && two[1] == 40, "nearest 4 -> 2 picks pixels 1 and 3 (got %d %d)", two[0], two[1]);

    /* torch: min(floor(k * (float)in / out), in - 1); 2x enlargements k >> 1; same size k. */
    const int tsizes[][2] = {{16, 2}, {3, 5}, {128, 16}, {5, 10}, {7, 3}};
    for (size_t k = 0; k < sizeof tsizes / sizeof *tsizes; k++) {
        int in = tsizes[k][0], out = tsizes[k][1], bad = 0;
        float *src = malloc((size_t)in * 2 * sizeof *src), *dst = malloc((size_t)out * 2 * sizeof *dst);
        for (int i = 0; i < in; i++) src[2 * i] = (float)i, src[2 * i + 1] = -(float)i;
        resize_torch_nearest(src, 1, in, 2, dst, 1, out);
        for (int i = 0; i < out; i++) {
            long j = (long)i * in / out; /* exact floor; float rounding cannot cross here */
            if (j > in - 1) j = in - 1;
            bad += dst[2 * i] != (float)j || dst[2 * i + 1] != -(float)j;
        }
        CHECK(bad == 0, "torch nearest %d -> %d: %d indices wrong", in, out, bad);
        free(src), free(dst);
    }
    float m[4] = {1, 2, 3, 4}, o[16];
    resize_torch_nearest(m, 2, 2, 1, o, 4, 4); /* 2x: each pixel becomes a 2x2 block */
    CHECK(o[0] == 1 && o[1] == 1 && o[2] == 2 && o[5] == 1 && o[10] == 4 && o[15] == 4,
          "torch nearest 2x2 -> 4x4");
}

static void misc(void) {
    /* Pillow's convert("L"): pure red, green, blue give 76, 150, 29; grey stays itself. */
    const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 77, 77, 77, 255, 255, 255, 0, 0, 0};
    uint8_t grey[6];
    resize_rgb_to_gray(rgb, 6, 1, grey);
    CHECK(grey[0] == 76 && grey[1] == 150 && grey[2] == 29 && grey[3] == 77 && grey[4] == 255 &&
          grey[5] == 0, "grey: %d %d %d %d %d %d", grey[0], grey[1], grey[2], grey[3], grey[4], grey[5]);
    /* An unchanged size is a copy, as Pillow's resize returns self.copy(). */
    uint8_t a[12], b[12];
    for (int i = 0; i < 12; i++) a[i] = (uint8_t)(i * 21);
    CHECK_OK(resize_u8(a, 2, 2, 3, b, 2, 2, RESIZE_LANCZOS));
    CHECK(!memcmp(a, b, 12), "same-size resize is a copy");
    CHECK(resize_u8(a, 2, 2, 5, b, 1, 1, RESIZE_LANCZOS) == SD_ERR_ARG, "5 channels refused");
    CHECK(resize_u8(a, 2, 2, 3, b, 0, 1, RESIZE_LANCZOS) == SD_ERR_ARG, "width 0 refused");
    sd_image src, out;
    if (image_alloc(&src, 40, 30) == SD_OK) {
        CHECK_OK(resize_image(&src, 24, 16, RESIZE_LANCZOS, &out));
        CHECK(out.width == 24 && out.height == 16 && out.rgb, "resize_image size");
        image_free(&out);
        image_free(&src);
    }
}

int main(void) {
    pillow_references();
    against_plain();
    nearest();
    misc();
    return test_summary();
}
