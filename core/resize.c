/* Pillow-compatible resizing (see resize.h). The arithmetic follows Pillow's libImaging
 * (Resample.c, Geometry.c) operation by operation, because a different but "equally good" filter
 * moves pixels by a level here and there, and the VAE sees every level. */
#include "resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Pillow's 8-bit fixed point: 32 bits minus 8 for the value minus 2 for the overshoot that
 * negative lobes allow. */
#define PRECISION_BITS 22
#define LANCZOS_SUPPORT 3.0

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos(double x) {
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

/* Filter taps for one axis: out pixel i reads in[bounds[2i] .. bounds[2i] + bounds[2i+1]) with
 * the fixed-point weights k[i * ksize ..]. */
typedef struct {
    int ksize;
    int *bounds;
    int32_t *k;
} taps;

static void taps_free(taps *t) {
    free(t->bounds);
    free(t->k);
}

static sd_status taps_make(taps *t, int in_size, int out_size) {
    /* Pillow passes the box edges as floats; whole sides below 2^24 convert exactly. */
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = LANCZOS_SUPPORT * filterscale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->bounds = malloc((size_t)out_size * 2 * sizeof *t->bounds);
    t->k = malloc((size_t)out_size * t->ksize * sizeof *t->k);
    double *w = malloc((size_t)t->ksize * sizeof *w);
    if (!t->bounds || !t->k || !w) {
        free(w);
        taps_free(t);
        return sd_set_error(SD_ERR_NOMEM, "out of memory for resize coefficients");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* truncation, as Pillow's cast */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = lanczos(((double)(x + xmin) - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = t->k + (size_t)xx * t->ksize;
        for (int x = 0; x < t->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        t->bounds[2 * xx] = xmin;
        t->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return SD_OK;
}

/* Pillow's clip8: the accumulator (with its half-unit start) floored to 8 bits, clamped. */
static uint8_t clip8(int64_t ss) {
    int64_t v = ss >> PRECISION_BITS; /* arithmetic shift: floor, like Pillow's lookup index */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Rows [row0, row0 + rows) of src (width sw) filtered along x into dst (width dw). */
static void pass_horizontal(const uint8_t *src, int sw, int row0, int rows, int ch, const taps *t,
                            uint8_t *dst, int dw) {
#pragma omp parallel for schedule(static) if ((size_t)rows * dw > 65536)
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(row0 + y) * sw * ch;
        uint8_t *out = dst + (size_t)y * dw * ch;
        for (int xx = 0; xx < dw; xx++) {
            const int32_t *k = t->k + (size_t)xx * t->ksize;
            int xmin = t->bounds[2 * xx], n = t->bounds[2 * xx + 1];
            for (int c = 0; c < ch; c++) {
                int64_t ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < n; x++) ss += (int64_t)in[(size_t)(x + xmin) * ch + c] * k[x];
                out[(size_t)xx * ch + c] = clip8(ss);
            }
        }
    }
}

/* src (width w) filtered along y into dst [dh][w]; the taps' first rows are relative to src. */
static void pass_vertical(const uint8_t *src, int w, int ch, const taps *t, int row_shift,
                          uint8_t *dst, int dh) {
    const size_t stride = (size_t)w * ch;
#pragma omp parallel for schedule(static) if ((size_t)dh * w > 65536)
    for (int yy = 0; yy < dh; yy++) {
        const int32_t *k = t->k + (size_t)yy * t->ksize;
        int ymin = t->bounds[2 * yy] - row_shift, n = t->bounds[2 * yy + 1];
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < n; y++) ss += (int64_t)src[(size_t)(y + ymin) * stride + i] * k[y];
            out[i] = clip8(ss);
        }
    }
}

static sd_status resize_lanczos(const uint8_t *src, int sw, int sh, int ch, uint8_t *dst, int dw,
                                int dh) {
    taps tv = {0}, th = {0};
    SD_TRY(taps_make(&tv, sh, dh));
    /* Only the source rows the vertical taps reach go through the horizontal pass. */
    int first = tv.bounds[0], last = tv.bounds[2 * dh - 2] + tv.bounds[2 * dh - 1];
    sd_status st = SD_OK;
    if (dw != sw) {
        st = taps_make(&th, sw, dw);
        uint8_t *tmp = st == SD_OK ? malloc((size_t)(last - first) * dw * ch) : NULL;
        if (st == SD_OK && !tmp) st = sd_set_error(SD_ERR_NOMEM, "out of memory for a resize");
        if (st == SD_OK) {
            pass_horizontal(src, sw, first, last - first, ch, &th, tmp, dw);
            if (dh != sh) pass_vertical(tmp, dw, ch, &tv, first, dst, dh);
            else memcpy(dst, tmp, (size_t)dh * dw * ch); /* all rows were used */
        }
        free(tmp);
    } else {
        pass_vertical(src, sw, ch, &tv, 0, dst, dh);
    }
    taps_free(&tv);
    taps_free(&th);
    return st;
}

/* Pillow's ImagingScaleAffine: the source position advances by a running double sum, which can
 * truncate one pixel lower than (k + 0.5) * step would where that product is a whole number. */
static void nearest_index(int in_size, int out_size, int *idx) {
    double step = (double)in_size / out_size, pos = step * 0.5;
    for (int k = 0; k < out_size; k++, pos += step) {
        int i = pos < 0.0 ? -1 : (int)pos;
        idx[k] = i < 0 ? 0 : i >= in_size ? in_size - 1 : i; /* never outside for these steps */
    }
}

static sd_status resize_nearest(const uint8_t *src, int sw, int sh, int ch, uint8_t *dst, int dw,
                                int dh) {
    int *xi = malloc((size_t)dw * sizeof *xi), *yi = malloc((size_t)dh * sizeof *yi);
    if (!xi || !yi) {
        free(xi), free(yi);
        return sd_set_error(SD_ERR_NOMEM, "out of memory for a resize");
    }
    nearest_index(sw, dw, xi);
    nearest_index(sh, dh, yi);
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++)
            memcpy(dst + ((size_t)y * dw + x) * ch, src + ((size_t)yi[y] * sw + xi[x]) * ch, ch);
    free(xi), free(yi);
    return SD_OK;
}

sd_status resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                    resize_filter filter) {
    if (channels < 1 || channels > 4)
        return sd_set_error(SD_ERR_ARG, "resize: %d channels (1 to 4 supported)", channels);
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > IMAGE_MAX_SIDE || sh > IMAGE_MAX_SIDE ||
        dw > IMAGE_MAX_SIDE || dh > IMAGE_MAX_SIDE)
        return sd_set_error(SD_ERR_ARG, "resize from %dx%d to %dx%d: sides must be 1..%d", sw, sh,
                            dw, dh, IMAGE_MAX_SIDE);
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * channels);
        return SD_OK;
    }
    if (filter == RESIZE_NEAREST) return resize_nearest(src, sw, sh, channels, dst, dw, dh);
    return resize_lanczos(src, sw, sh, channels, dst, dw, dh);
}

sd_status resize_image(const sd_image *src, int width, int height, resize_filter filter,
                       sd_image *out) {
    memset(out, 0, sizeof *out);
    SD_TRY(image_alloc(out, width, height));
    sd_status st = resize_u8(src->rgb, src->width, src->height, 3, out->rgb, width, height, filter);
    if (st != SD_OK) image_free(out);
    return st;
}

void resize_rgb_to_gray(const uint8_t *rgb, int width, int height, uint8_t *gray) {
    size_t n = (size_t)width * height;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = rgb + 3 * i;
        gray[i] = (uint8_t)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
    }
}

static int torch_nearest_index(int o, int in_size, int out_size) {
    if (out_size == in_size) return o;
    if (out_size == 2 * in_size) return o >> 1;
    float scale = (float)in_size / (float)out_size;
    int i = (int)floorf((float)o * scale);
    return i < in_size - 1 ? i : in_size - 1;
}

void resize_torch_nearest(const float *src, int sh, int sw, int c, float *dst, int dh, int dw) {
    for (int y = 0; y < dh; y++) {
        int iy = torch_nearest_index(y, sh, dh);
        for (int x = 0; x < dw; x++) {
            int ix = torch_nearest_index(x, sw, dw);
            memcpy(dst + ((size_t)y * dw + x) * c, src + ((size_t)iy * sw + ix) * c,
                   (size_t)c * sizeof *dst);
        }
    }
}
