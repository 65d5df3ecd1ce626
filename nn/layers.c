#include "layers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/gemm.h"
#include "../kernels/gemm_bf16.h"
#include "../kernels/norm.h"

enum { NAME_MAX_LEN = 256 };

/* Per thread, so that loads on different threads can choose differently. */
static _Thread_local nn_precision load_precision = NN_FP32;

nn_precision nn_set_load_precision(nn_precision precision) {
    const nn_precision old = load_precision;
    load_precision = precision;
    return old;
}

static void *alloc64(size_t bytes) { return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64); }

static sd_status read_named(const sd_weights *w, const char *prefix, const char *suffix, int ndim,
                            const int64_t *shape, float **out) {
    char name[NAME_MAX_LEN + 16];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    return weights_read_f32(w, name, ndim, shape, out);
}

sd_status nn_read_tensor(const sd_weights *w, float **out, int ndim, const int64_t *shape,
                         const char *fmt, ...) {
    char name[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return weights_read_f32(w, name, ndim, shape, out);
}

sd_status nn_linear_load(nn_linear *l, const sd_weights *w, int in, int out, bool bias,
                         const char *fmt, ...) {
    char prefix[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    const int64_t ws[2] = {out, in}, bs[1] = {out};
    sd_status st = read_named(w, prefix, ".weight", 2, ws, &l->w);
    if (st == SD_OK && bias) st = read_named(w, prefix, ".bias", 1, bs, &l->b);
    if (st != SD_OK) nn_linear_free(l);
    return st;
}

sd_status nn_linear_pack(nn_linear *l) {
    if (l->packed || l->packed_bf16 || !l->w) return SD_OK;
    if (load_precision == NN_BF16) {
        l->packed_bf16 = alloc64(gemm_bf16_packed_size(l->out, l->in) * sizeof *l->packed_bf16);
        if (!l->packed_bf16)
            return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight",
                                l->out, l->in);
        gemm_bf16_pack_b_nt(l->out, l->in, l->w, l->in, l->packed_bf16);
        free(l->w);
        l->w = NULL;
        return SD_OK;
    }
    const size_t bytes = (gemm_packed_size(l->out, l->in) * sizeof *l->packed + 63) / 64 * 64;
    l->packed = aligned_alloc(64, bytes ? bytes : 64);
    if (!l->packed)
        return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight", l->out,
                            l->in);
    gemm_pack_b_nt(l->out, l->in, l->w, l->in, l->packed);
    free(l->w);
    l->w = NULL;
    return SD_OK;
}

void nn_linear_forward(const nn_linear *l, const float *x, float *y, int m) {
    if (l->packed_bf16)
        gemm_bf16_nt_packed(m, l->out, l->in, x, l->in, l->packed_bf16, y, l->out, l->b, 0);
    else if (l->packed)
        gemm_nt_packed(m, l->out, l->in, x, l->in, l->packed, y, l->out, l->b, 0);
    else
        gemm_nt(m, l->out, l->in, x, l->in, l->w, l->in, y, l->out, l->b, 0);
}

void nn_linear_free(nn_linear *l) {
    free(l->w);
    free(l->b);
    free(l->packed);
    free(l->packed_bf16);
    memset(l, 0, sizeof *l);
}

sd_status nn_conv2d_load(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k, int stride,
                         int pad, const char *fmt, ...) {
    char prefix[NAME_MAX_LEN], name[NAME_MAX_LEN + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memset(c, 0, sizeof *c);
    c->s = (conv2d_shape){cin, cout, k, k, stride, pad, pad, pad, pad};
    snprintf(name, sizeof name, "%s.weight", prefix);
    const st_tensor *t = weights_find(w, name);
    /* A 1x1 convolution may be stored as a Linear weight [cout][cin]: same numbers, same order. */
    int64_t shape4[4] = {cout, cin, k, k}, shape2[2] = {cout, cin};
    int as_linear = t && k == 1 && t->ndim == 2;
    float *oihw = NULL;
    sd_status st = read_named(w, prefix, ".weight", as_linear ? 2 : 4, as_linear ? shape2 : shape4, &oihw);
    if (st == SD_OK && load_precision == NN_BF16) {
        c->w_bf16 = alloc64(conv2d_bf16_packed_size(&c->s) * sizeof *c->w_bf16);
        if (!c->w_bf16)
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", name);
        else
            conv2d_pack_weights_oihw_bf16(&c->s, oihw, c->w_bf16);
    } else if (st == SD_OK) {
        /* Packed once here, straight from PyTorch's layout, into the one the kernel streams. */
        const size_t bytes = (conv2d_packed_size(&c->s) * sizeof *c->w + 63) / 64 * 64;
        c->w = aligned_alloc(64, bytes ? bytes : 64);
        if (!c->w)
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", name);
        else
            conv2d_pack_weights_oihw(&c->s, oihw, c->w);
    }
    free(oihw);
    const int64_t bs[1] = {cout};
    if (st == SD_OK) st = read_named(w, prefix, ".bias", 1, bs, &c->b);
    if (st != SD_OK) nn_conv2d_free(c);
    return st;
}

void nn_conv2d_forward(const nn_conv2d *c, const float *x, int n, int h, int wd, float *y,
                       sd_arena *scratch) {
    nn_conv2d_forward_padded(c, &c->s, x, n, h, wd, y, scratch);
}

void nn_conv2d_forward_padded(const nn_conv2d *c, const conv2d_shape *s, const float *x, int n,
                              int h, int wd, float *y, sd_arena *scratch) {
    if (c->w_bf16)
        conv2d_nhwc_packed_bf16(s, x, n, h, wd, c->w_bf16, c->b, y, scratch);
    else
        conv2d_nhwc_packed(s, x, n, h, wd, c->w, c->b, y, scratch);
}

void nn_conv2d_free(nn_conv2d *c) {
    free(c->w);
    free(c->w_bf16);
    free(c->b);
    memset(c, 0, sizeof *c);
}

static sd_status norm_load(nn_norm *g, const sd_weights *w, int c, int groups, bool affine,
                           float eps, const char *prefix) {
    memset(g, 0, sizeof *g);
    g->c = c;
    g->groups = groups;
    g->eps = eps;
    if (groups <= 0 || c % groups)
        return sd_set_error(SD_ERR_CONFIG, "%s: %s: %d channels do not split into %d groups", w->dir,
                            prefix, c, groups);
    if (!affine) return SD_OK;
    const int64_t shape[1] = {c};
    sd_status st = read_named(w, prefix, ".weight", 1, shape, &g->gamma);
    if (st == SD_OK) st = read_named(w, prefix, ".bias", 1, shape, &g->beta);
    if (st != SD_OK) nn_norm_free(g);
    return st;
}

sd_status nn_group_norm_load(nn_norm *g, const sd_weights *w, int c, int groups, float eps,
                             const char *fmt, ...) {
    char prefix[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return norm_load(g, w, c, groups, true, eps, prefix);
}

void nn_group_norm_forward(const nn_norm *g, const float *x, float *y, int n, int hw, bool silu) {
    group_norm_nhwc(x, y, n, hw, g->c, g->groups, g->eps, g->gamma, g->beta, silu);
}

sd_status nn_layer_norm_load(nn_norm *g, const sd_weights *w, int c, bool affine, float eps,
                             const char *fmt, ...) {
    char prefix[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return norm_load(g, w, c, 1, affine, eps, prefix);
}

void nn_layer_norm_forward(const nn_norm *g, const float *x, float *y, int rows) {
    layer_norm(x, y, rows, g->c, g->eps, g->gamma, g->beta);
}

void nn_norm_free(nn_norm *g) {
    free(g->gamma);
    free(g->beta);
    memset(g, 0, sizeof *g);
}
