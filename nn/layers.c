#include "layers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/bigalloc.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_bf16.h"
#include "../kernels/gemm_int8.h"
#include "../kernels/norm.h"

enum { NAME_MAX_LEN = 256 };

static bool packs_int8(const sd_weights *w) {
    return w->policy.precision == WEIGHTS_PRECISION_INT8;
}

static bool packs_bf16(const sd_weights *w) {
    return w->policy.precision == WEIGHTS_PRECISION_BF16;
}

static void *alloc64(size_t bytes) { return sd_big_alloc(bytes); }

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

/* How a layer holds its weight tensor (see layers.h). */
typedef struct {
    bool stored;      /* false: a float32 copy, packed at load */
    const void *data; /* the weight as the layer will read it */
    kern_dtype type;
    void *own;        /* data, when converted at load */
    size_t own_map;   /* > 0: own is a weights_spill mapping of this many bytes */
    bool release;
} weight_source;

/* Frees a buffer a layer converted its weight into: malloc'd, or a weights_spill mapping. */
static void own_free(void *p, size_t map_bytes) {
    if (map_bytes) weights_spill_free(p, map_bytes);
    else free(p);
}

/* The kernels' name for a dtype the stored path takes; false for the others. */
static bool kern_type_of(st_dtype d, kern_dtype *out) {
    static const struct {
        st_dtype st;
        kern_dtype kern;
    } map[] = {
        {ST_F32, KERN_F32},   {ST_F16, KERN_F16},   {ST_BF16, KERN_BF16}, {ST_Q4_0, KERN_Q4_0},
        {ST_Q4_1, KERN_Q4_1}, {ST_Q5_0, KERN_Q5_0}, {ST_Q5_1, KERN_Q5_1}, {ST_Q8_0, KERN_Q8_0},
        {ST_Q2_K, KERN_Q2_K}, {ST_Q3_K, KERN_Q3_K}, {ST_Q4_K, KERN_Q4_K}, {ST_Q5_K, KERN_Q5_K},
        {ST_Q6_K, KERN_Q6_K},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (map[i].st == d) {
            *out = map[i].kern;
            return true;
        }
    return false;
}

/* packed_at_load: the layer packs its weight at load whatever it is stored as (a convolution
 * under bf16 packing): the float32 read path feeds that packing. blocks_ok: the layer's kernel
 * takes GGUF blocks (gemm_nt_stored does, the convolutions do not: a quantized convolution
 * weight is dequantized at load into a float32 copy, as is a weight whose rows are not whole
 * blocks, city96's reshaped tensors). */
static sd_status choose_source(const sd_weights *w, const char *name, int ndim,
                               const int64_t *shape, bool packed_at_load, bool blocks_ok,
                               weight_source *ws) {
    memset(ws, 0, sizeof *ws);
    if (packed_at_load) return SD_OK;
    /* A weight with LoRA deltas is held as a merged float32 copy (read through the float path). */
    if (lora_set_has(w->policy.lora, w->policy.lora_component, name)) return SD_OK;
    const st_tensor *t = w->keep_stored ? weights_find(w, name) : NULL;
    kern_dtype kt;
    if (!t || !kern_type_of(t->dtype, &kt) ||
        (st_is_quantized(t->dtype) && (!blocks_ok || !st_rows_whole_blocks(t))))
        return SD_OK; /* the float32 path reports absence and bad dtypes */
    SD_TRY(st_check_shape(t, weights_file_of(w, name), ndim, shape));
    const bool quant = weights_dtype_quantizes(w->policy.dtype);
    if (quant && blocks_ok && !st_is_quantized(t->dtype)) {
        /* --weights-dtype q*: a Linear weight in blocks unless it is one of those kept. */
        const st_dtype q = weights_quant_st_dtype(w->policy.dtype);
        if (!weights_quant_kept(name, shape[ndim - 1], q)) {
            void *blocks = NULL;
            SD_TRY(weights_quantize(t, q, name, &blocks));
            weights_release_tensor(w, t); /* the blocks replace them */
            ws->stored = true;
            ws->data = ws->own = blocks;
            kern_type_of(q, &ws->type);
            /* Paging: the blocks go to a file mapping, paged like the file weights. */
            const size_t bytes = st_dtype_bytes(q, st_numel(t));
            void *map = w->policy.low_memory ? weights_spill(blocks, bytes) : NULL;
            if (map) {
                free(blocks);
                ws->data = ws->own = map;
                ws->own_map = bytes;
                ws->release = true;
            }
            return SD_OK;
        }
    }
    /* Under a Q policy the rest is held at 16 bits: an F32 weight as F16, others as stored. */
    const st_dtype want = w->policy.dtype == WEIGHTS_TO_F16    ? ST_F16
                          : w->policy.dtype == WEIGHTS_TO_BF16 ? ST_BF16
                          : quant && t->dtype == ST_F32        ? ST_F16
                                                               : t->dtype;
    if (want == t->dtype) {
        /* A float32 weight is fastest packed once at load, unless memory says otherwise. */
        if (t->dtype == ST_F32 && !w->policy.low_memory) return SD_OK;
        ws->stored = true;
        ws->data = t->data;
        ws->type = kt;
        ws->release = w->policy.low_memory && weights_releasable(w, t);
        return SD_OK;
    }
    uint16_t *conv = NULL;
    SD_TRY(weights_convert_16(t, want, name, &conv));
    weights_release_tensor(w, t); /* the converted copy replaces them */
    ws->stored = true;
    ws->data = ws->own = conv;
    ws->type = want == ST_F16 ? KERN_F16 : KERN_BF16;
    return SD_OK;
}

sd_status nn_linear_load(nn_linear *l, const sd_weights *w, int in, int out, bool bias,
                         const char *fmt, ...) {
    char prefix[NAME_MAX_LEN], name[NAME_MAX_LEN + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    /* Whether nn_linear_pack will be called is the model's choice: until then the weight is held
     * as the policy says, so that a layer left unpacked never needs a float32 copy. */
    l->pack_bf16 = packs_bf16(w);
    l->pack_int8 = packs_int8(w);
    const int64_t ws[2] = {out, in}, bs[1] = {out};
    snprintf(name, sizeof name, "%s.weight", prefix);
    weight_source src;
    sd_status st = choose_source(w, name, 2, ws, false, true, &src);
    if (st == SD_OK && src.stored) {
        l->src = (gemm_b_stored){src.type, 1, {src.data}, {out}};
        l->own[0] = src.own;
        l->own_map[0] = src.own_map;
        l->release = src.release;
    } else if (st == SD_OK) {
        st = read_named(w, prefix, ".weight", 2, ws, &l->w);
    }
    if (st == SD_OK && bias) st = read_named(w, prefix, ".bias", 1, bs, &l->b);
    if (st != SD_OK) nn_linear_free(l);
    return st;
}

sd_status nn_linear_stack(nn_linear *dst, nn_linear *parts, int n) {
    memset(dst, 0, sizeof *dst);
    sd_status st = SD_OK;
    int out = 0, with_bias = 0, stored = 0, plain = 0;
    for (int i = 0; i < n; i++) {
        out += parts[i].out;
        with_bias += parts[i].b != NULL;
        stored += parts[i].src.n_parts > 0;
        plain += parts[i].w != NULL;
    }
    const int in = n > 0 ? parts[0].in : 0;
    for (int i = 0; i < n && st == SD_OK; i++)
        if (parts[i].in != in)
            st = sd_set_error(SD_ERR_ARG, "stacking Linear layers of %d and %d inputs", in,
                              parts[i].in);
    if (st == SD_OK && (n <= 0 || (with_bias && with_bias != n)))
        st = sd_set_error(SD_ERR_TENSOR, "stacking %d Linear layers of which %d have a bias", n,
                          with_bias);
    bool same_type = stored == n && n <= GEMM_B_MAX_PARTS;
    for (int i = 1; i < n && same_type; i++)
        same_type = parts[i].src.type == parts[0].src.type && parts[i].src.n_parts == 1;
    if (st == SD_OK && plain != n && !same_type) {
        /* Parts held differently (a file mixing dtypes in one projection): widen the stored ones
         * to float32 copies, the way every part is held when nothing is kept stored. */
        for (int i = 0; i < n && st == SD_OK; i++) {
            nn_linear *q = &parts[i];
            if (!q->src.n_parts) continue;
            q->w = malloc((size_t)q->out * q->in * sizeof *q->w);
            if (!q->w) {
                st = sd_set_error(SD_ERR_NOMEM, "out of memory stacking %d Linear layers", n);
                break;
            }
            kern_to_f32(q->src.type, q->src.part[0], q->w, (size_t)q->out * q->in);
            own_free(q->own[0], q->own_map[0]);
            memset(&q->src, 0, sizeof q->src);
            memset(q->own, 0, sizeof q->own);
            memset(q->own_map, 0, sizeof q->own_map);
            plain++, stored--;
        }
    }
    if (st == SD_OK) {
        dst->in = in;
        dst->out = out;
        dst->pack_bf16 = parts[0].pack_bf16; /* parts of one set, one policy */
        dst->pack_int8 = parts[0].pack_int8;
        if (plain) dst->w = malloc((size_t)out * in * sizeof *dst->w);
        if (with_bias) dst->b = malloc((size_t)out * sizeof *dst->b);
        if ((plain && !dst->w) || (with_bias && !dst->b))
            st = sd_set_error(SD_ERR_NOMEM, "out of memory stacking %d Linear layers", n);
    }
    if (st == SD_OK) {
        size_t row = 0;
        for (int i = 0; i < n; i++) {
            nn_linear *p = &parts[i];
            if (plain) memcpy(dst->w + row * in, p->w, (size_t)p->out * in * sizeof *p->w);
            if (with_bias) memcpy(dst->b + row, p->b, (size_t)p->out * sizeof *p->b);
            if (stored) {
                dst->src.type = p->src.type;
                dst->src.part[i] = p->src.part[0];
                dst->src.rows[i] = p->out;
                dst->own[i] = p->own[0];
                dst->own_map[i] = p->own_map[0];
                dst->release = p->release;
                p->own[0] = NULL; /* moved */
                p->own_map[0] = 0;
            }
            row += (size_t)p->out;
        }
        dst->src.n_parts = stored ? n : 0;
    }
    for (int i = 0; i < n; i++) nn_linear_free(&parts[i]);
    if (st != SD_OK) nn_linear_free(dst);
    return st;
}

/* A stored weight widened into a float32 copy (exact), its own buffers freed and its mapped pages
 * given back: the layer is then held as if read through the float32 path. */
static sd_status widen_stored(nn_linear *l) {
    float *w = malloc((size_t)l->out * l->in * sizeof *w);
    if (!w)
        return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight", l->out,
                            l->in);
    size_t row = 0;
    for (int i = 0; i < l->src.n_parts; i++) {
        const size_t n = (size_t)l->src.rows[i] * l->in;
        kern_to_f32(l->src.type, l->src.part[i], w + row * l->in, n);
        if (l->own[i]) own_free(l->own[i], l->own_map[i]);
        else st_release_pages(l->src.part[i], kern_dtype_bytes(l->src.type, n));
        row += (size_t)l->src.rows[i];
    }
    memset(&l->src, 0, sizeof l->src);
    memset(l->own, 0, sizeof l->own);
    memset(l->own_map, 0, sizeof l->own_map);
    l->release = false;
    l->w = w;
    return SD_OK;
}

sd_status nn_linear_pack(nn_linear *l) {
    if (l->packed || l->packed_bf16 || l->packed_int8) return SD_OK;
    /* stored weights are packed per call */
    if (l->src.n_parts && !l->pack_bf16 && !l->pack_int8) return SD_OK;
    /* bf16 / int8 packing reads float32 values: 2 / 1 bytes a weight resident either way. */
    if (l->src.n_parts) SD_TRY(widen_stored(l));
    if (!l->w) return SD_OK;
    if (l->pack_bf16) {
        l->packed_bf16 = alloc64(gemm_bf16_packed_size(l->out, l->in) * sizeof *l->packed_bf16);
        if (!l->packed_bf16)
            return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight",
                                l->out, l->in);
        gemm_bf16_pack_b_nt(l->out, l->in, l->w, l->in, l->packed_bf16);
        free(l->w);
        l->w = NULL;
        return SD_OK;
    }
    if (l->pack_int8) {
        l->packed_int8 = alloc64(gemm_int8_packed_size(l->out, l->in));
        if (!l->packed_int8)
            return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight",
                                l->out, l->in);
        gemm_int8_pack_b_nt(l->out, l->in, l->w, l->in, l->packed_int8);
        free(l->w);
        l->w = NULL;
        return SD_OK;
    }
    const size_t bytes = (gemm_packed_size(l->out, l->in) * sizeof *l->packed + 63) / 64 * 64;
    l->packed = alloc64(bytes);
    if (!l->packed)
        return sd_set_error(SD_ERR_NOMEM, "out of memory packing a %d x %d Linear weight", l->out,
                            l->in);
    gemm_pack_b_nt(l->out, l->in, l->w, l->in, l->packed);
    free(l->w);
    l->w = NULL;
    return SD_OK;
}

void nn_linear_run(const nn_linear *l, const float *x, int lda, long x_bs, float *y, int ldy,
                   long y_bs, int rows, int batch, bool accumulate) {
    const int acc = accumulate;
    for (int b = 0; b < batch; b++) {
        const float *xb = x + b * x_bs;
        float *yb = y + b * y_bs;
        if (l->packed_int8)
            gemm_int8_nt_packed(rows, l->out, l->in, xb, lda, l->packed_int8, yb, ldy, l->b, acc);
        else if (l->packed_bf16)
            gemm_bf16_nt_packed(rows, l->out, l->in, xb, lda, l->packed_bf16, yb, ldy, l->b, acc);
        else if (l->packed)
            gemm_nt_packed(rows, l->out, l->in, xb, lda, l->packed, yb, ldy, l->b, acc);
        else if (l->src.n_parts)
            gemm_nt_stored(rows, l->out, l->in, xb, lda, &l->src, yb, ldy, l->b, acc);
        else
            gemm_nt(rows, l->out, l->in, xb, lda, l->w, l->in, yb, ldy, l->b, acc);
    }
    if (l->src.n_parts && l->release)
        for (int i = 0; i < l->src.n_parts; i++)
            if (!l->own[i] || l->own_map[i]) /* the mapping's or a spill file's pages */
                st_release_pages(l->src.part[i],
                                 kern_dtype_bytes(l->src.type, (size_t)l->src.rows[i] * l->in));
}

void nn_linear_forward(const nn_linear *l, const float *x, float *y, int m) {
    nn_linear_run(l, x, l->in, 0, y, l->out, 0, m, 1, false);
}

void nn_linear_forward_add(const nn_linear *l, const float *x, float *y, int m) {
    nn_linear_run(l, x, l->in, 0, y, l->out, 0, m, 1, true);
}

void nn_linear_free(nn_linear *l) {
    free(l->w);
    free(l->b);
    free(l->packed);
    free(l->packed_bf16);
    free(l->packed_int8);
    for (int i = 0; i < GEMM_B_MAX_PARTS; i++) own_free(l->own[i], l->own_map[i]);
    memset(l, 0, sizeof *l);
}

static sd_status conv2d_load(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k,
                             int stride, int pad, bool bias, const char *fmt, va_list ap) {
    char prefix[NAME_MAX_LEN], name[NAME_MAX_LEN + 8];
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    memset(c, 0, sizeof *c);
    c->s = (conv2d_shape){cin, cout, k, k, stride, pad, pad, pad, pad};
    snprintf(name, sizeof name, "%s.weight", prefix);
    const st_tensor *t = weights_find(w, name);
    /* A 1x1 convolution may be stored as a Linear weight [cout][cin]: same numbers, same order. */
    int64_t shape4[4] = {cout, cin, k, k}, shape2[2] = {cout, cin};
    int as_linear = t && k == 1 && t->ndim == 2;
    float *oihw = NULL;
    weight_source src;
    sd_status st = choose_source(w, name, as_linear ? 2 : 4, as_linear ? shape2 : shape4,
                                 packs_bf16(w) || packs_int8(w), false, &src);
    if (st == SD_OK && src.stored) {
        /* [cout][cin] and [cout][cin][1][1] are the same bytes. */
        c->src = src.data;
        c->src_type = src.type;
        c->own = src.own;
        c->release = src.release;
    } else if (st == SD_OK) {
        st = read_named(w, prefix, ".weight", as_linear ? 2 : 4, as_linear ? shape2 : shape4, &oihw);
    }
    if (st == SD_OK && !src.stored && packs_int8(w)) {
        c->w_int8 = alloc64(conv2d_int8_packed_size(&c->s));
        if (!c->w_int8)
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", name);
        else
            conv2d_pack_weights_oihw_int8(&c->s, oihw, c->w_int8);
    } else if (st == SD_OK && !src.stored && packs_bf16(w)) {
        c->w_bf16 = alloc64(conv2d_bf16_packed_size(&c->s) * sizeof *c->w_bf16);
        if (!c->w_bf16)
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", name);
        else
            conv2d_pack_weights_oihw_bf16(&c->s, oihw, c->w_bf16);
    } else if (st == SD_OK && !src.stored) {
        /* Packed once here, straight from PyTorch's layout, into the one the kernel streams. */
        const size_t bytes = (conv2d_packed_size(&c->s) * sizeof *c->w + 63) / 64 * 64;
        c->w = alloc64(bytes);
        if (!c->w)
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", name);
        else
            conv2d_pack_weights_oihw(&c->s, oihw, c->w);
    }
    free(oihw);
    const int64_t bs[1] = {cout};
    if (st == SD_OK && bias) st = read_named(w, prefix, ".bias", 1, bs, &c->b);
    if (st != SD_OK) nn_conv2d_free(c);
    return st;
}

sd_status nn_conv2d_load(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k, int stride,
                         int pad, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const sd_status st = conv2d_load(c, w, cin, cout, k, stride, pad, true, fmt, ap);
    va_end(ap);
    return st;
}

sd_status nn_conv2d_load_nobias(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k,
                                int stride, int pad, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const sd_status st = conv2d_load(c, w, cin, cout, k, stride, pad, false, fmt, ap);
    va_end(ap);
    return st;
}

void nn_conv2d_forward_shape(const nn_conv2d *c, const conv2d_shape *s, const float *x, int n,
                             int h, int wd, float *y, sd_arena *scratch) {
    if (c->w_int8) {
        conv2d_nhwc_packed_int8(s, x, n, h, wd, c->w_int8, c->b, y);
        return;
    }
    if (c->w_bf16) {
        conv2d_nhwc_packed_bf16(s, x, n, h, wd, c->w_bf16, c->b, y, scratch);
        return;
    }
    if (!c->src) {
        conv2d_nhwc_packed(s, x, n, h, wd, c->w, c->b, y, scratch);
        return;
    }
    conv2d_nhwc_stored(s, x, n, h, wd, c->src, c->src_type, c->b, y);
    if (c->release && !c->own)
        st_release_pages(c->src, (size_t)s->cout * s->cin * s->kh * s->kw * kern_dtype_size(c->src_type));
}

void nn_conv2d_forward(const nn_conv2d *c, const float *x, int n, int h, int wd, float *y,
                       sd_arena *scratch) {
    nn_conv2d_forward_shape(c, &c->s, x, n, h, wd, y, scratch);
}

void nn_conv2d_free(nn_conv2d *c) {
    free(c->w);
    free(c->w_bf16);
    free(c->w_int8);
    free(c->b);
    free(c->own);
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
