/* Building blocks shared by the VAE encoder and decoder: ResnetBlock2D (no time embedding), the
 * mid-block single-head attention, the mid block, and the nearest-neighbour upsampler. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/attention.h"
#include "../kernels/conv2d.h"
#include "../kernels/gemm.h"
#include "vae_internal.h"

/* Below this many floats a parallel region costs more than the copy it splits (and leaves OpenMP
 * threads spinning against OpenBLAS's own threads). */
enum { PARALLEL_MIN = 1 << 20 };

void vae_add(float *x, const float *y, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

sd_status vae_resnet_load(vae_resnet *r, const sd_weights *w, int cin, int cout, int groups,
                          const char *prefix) {
    memset(r, 0, sizeof *r);
    r->cin = cin;
    r->cout = cout;
    r->has_shortcut = cin != cout;
    sd_status st = nn_group_norm_load(&r->norm1, w, cin, groups, VAE_NORM_EPS, "%s.norm1", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&r->conv1, w, cin, cout, 3, 1, 1, "%s.conv1", prefix);
    if (st == SD_OK)
        st = nn_group_norm_load(&r->norm2, w, cout, groups, VAE_NORM_EPS, "%s.norm2", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&r->conv2, w, cout, cout, 3, 1, 1, "%s.conv2", prefix);
    if (st == SD_OK && r->has_shortcut)
        st = nn_conv2d_load(&r->shortcut, w, cin, cout, 1, 1, 0, "%s.conv_shortcut", prefix);
    if (st != SD_OK) vae_resnet_free(r);
    return st;
}

void vae_resnet_free(vae_resnet *r) {
    nn_norm_free(&r->norm1);
    nn_norm_free(&r->norm2);
    nn_conv2d_free(&r->conv1);
    nn_conv2d_free(&r->conv2);
    nn_conv2d_free(&r->shortcut);
}

size_t vae_resnet_floats(int cin, int cout, size_t hw) {
    const size_t in = vae_round((size_t)cin * hw), out = vae_round((size_t)cout * hw);
    if (cin == cout) return 3 * in;
    return in + 2 * out + (out > in ? out : 0);
}

void vae_resnet_forward(const vae_resnet *r, vae_act *a, int h, int w) {
    const size_t hw = (size_t)h * w, in_n = vae_round(hw * r->cin), out_n = vae_round(hw * r->cout);
    float *x = a->x;
    if (!r->has_shortcut) {
        /* In place: x += conv2(silu(norm2(conv1(silu(norm1(x)))))), two temporaries in the gap. */
        float *t1 = vae_act_gap(a, 0, 0, out_n), *t2 = vae_act_gap(a, 0, out_n, out_n);
        nn_group_norm_forward(&r->norm1, x, t1, 1, (int)hw, true);
        nn_conv2d_forward(&r->conv1, t1, 1, h, w, t2, a->scratch);
        nn_group_norm_forward(&r->norm2, t2, t2, 1, (int)hw, true);
        nn_conv2d_forward(&r->conv2, t2, 1, h, w, t1, a->scratch);
        vae_add(x, t1, hw * r->cout);
        return;
    }
    /* The shortcut is taken first, so the input is dead after norm1 and can be normalised in
     * place: that saves a full-size buffer in the widest layer of the decoder. */
    float *out = vae_act_far(a, out_n), *t = vae_act_gap(a, out_n, 0, out_n);
    nn_conv2d_forward(&r->shortcut, x, 1, h, w, out, a->scratch);
    nn_group_norm_forward(&r->norm1, x, x, 1, (int)hw, true);
    nn_conv2d_forward(&r->conv1, x, 1, h, w, t, a->scratch);
    nn_group_norm_forward(&r->norm2, t, t, 1, (int)hw, true);
    float *y = out_n <= in_n ? x : vae_act_gap(a, out_n, out_n, out_n);
    nn_conv2d_forward(&r->conv2, t, 1, h, w, y, a->scratch);
    vae_add(out, y, hw * r->cout);
    vae_act_set(a, out, hw * r->cout);
}

void vae_conv_forward(const nn_conv2d *conv, vae_act *a, int h, int w) {
    const size_t out_n = (size_t)conv2d_out_h(&conv->s, h) * conv2d_out_w(&conv->s, w) * conv->s.cout;
    float *out = vae_act_far(a, out_n);
    nn_conv2d_forward(conv, a->x, 1, h, w, out, a->scratch);
    vae_act_set(a, out, out_n);
}

/* Reads one attention projection into rows of a fused weight. Accepts a Linear [c][c] weight, the
 * [c][c][1][1] conv weight of older conversions, and the pre-0.14 names (query, key, value,
 * proj_attn) that diffusers itself still renames on load. */
static sd_status attn_proj_load(float *wdst, float *bdst, const sd_weights *w, int c,
                                const char *prefix, const char *name, const char *legacy) {
    char wname[320], bname[320];
    snprintf(wname, sizeof wname, "%s.%s.weight", prefix, name);
    if (!weights_find(w, wname)) {
        char old[320];
        snprintf(old, sizeof old, "%s.%s.weight", prefix, legacy);
        if (weights_find(w, old)) name = legacy;
    }
    snprintf(wname, sizeof wname, "%s.%s.weight", prefix, name);
    snprintf(bname, sizeof bname, "%s.%s.bias", prefix, name);
    const st_tensor *t = weights_find(w, wname);
    const int64_t s4[4] = {c, c, 1, 1}, s2[2] = {c, c}, sb[1] = {c};
    const bool as_conv = t && t->ndim == 4;
    float *wt = NULL, *bt = NULL;
    sd_status st = weights_read_f32(w, wname, as_conv ? 4 : 2, as_conv ? s4 : s2, &wt);
    if (st == SD_OK) st = weights_read_f32(w, bname, 1, sb, &bt);
    if (st == SD_OK) {
        memcpy(wdst, wt, (size_t)c * c * sizeof *wt);
        memcpy(bdst, bt, (size_t)c * sizeof *bt);
    }
    free(wt);
    free(bt);
    return st;
}

static void attention_free(vae_attention *a) {
    nn_norm_free(&a->norm);
    free(a->w_qkv);
    free(a->b_qkv);
    free(a->w_out);
    free(a->b_out);
    memset(a, 0, sizeof *a);
}

static sd_status attention_load(vae_attention *a, const sd_weights *w, int c, int groups,
                                const char *prefix) {
    memset(a, 0, sizeof *a);
    a->c = c;
    sd_status st = nn_group_norm_load(&a->norm, w, c, groups, VAE_NORM_EPS, "%s.group_norm", prefix);
    if (st != SD_OK) return st;
    a->w_qkv = malloc((size_t)3 * c * c * sizeof *a->w_qkv);
    a->b_qkv = malloc((size_t)3 * c * sizeof *a->b_qkv);
    a->w_out = malloc((size_t)c * c * sizeof *a->w_out);
    a->b_out = malloc((size_t)c * sizeof *a->b_out);
    if (!a->w_qkv || !a->b_qkv || !a->w_out || !a->b_out) {
        attention_free(a);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for %s", w->dir, prefix);
    }
    static const char *names[3][2] = {{"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}};
    for (int i = 0; i < 3 && st == SD_OK; i++)
        st = attn_proj_load(a->w_qkv + (size_t)i * c * c, a->b_qkv + (size_t)i * c, w, c, prefix,
                            names[i][0], names[i][1]);
    if (st == SD_OK) st = attn_proj_load(a->w_out, a->b_out, w, c, prefix, "to_out.0", "proj_attn");
    if (st != SD_OK) attention_free(a);
    return st;
}

/* In place on the current activation: x += to_out(attention(group_norm(x))). */
static void attention_forward(const vae_attention *at, vae_act *a, int hw) {
    const int c = at->c;
    const size_t n = vae_round((size_t)hw * c);
    float *x = a->x, *normed = vae_act_gap(a, 0, 0, n), *qkv = vae_act_gap(a, 0, n, 3 * n);
    nn_group_norm_forward(&at->norm, x, normed, 1, hw, false);
    gemm_nt(hw, 3 * c, c, normed, c, at->w_qkv, c, qkv, 3 * c, at->b_qkv, 0);
    const attn_shape s = {
        .batch = 1, .heads = 1, .nq = hw, .nk = hw, .d = c,
        .q_stride = 3 * c, .k_stride = 3 * c, .v_stride = 3 * c, .out_stride = c,
        .scale = 1.0f / sqrtf((float)c), .causal = 0,
    };
    attention(&s, qkv, qkv + c, qkv + 2 * c, normed, a->scratch);
    /* residual_connection: the projection is accumulated onto the input; rescale_output_factor is
     * 1 in the VAE. */
    gemm_nt(hw, c, c, normed, c, at->w_out, c, x, c, at->b_out, 1);
}

sd_status vae_mid_block_load(vae_mid_block *m, const sd_weights *w, int c, int groups, bool attn,
                             const char *prefix) {
    memset(m, 0, sizeof *m);
    char name[256];
    sd_status st = SD_OK;
    for (int i = 0; i < 2 && st == SD_OK; i++) {
        snprintf(name, sizeof name, "%s.resnets.%d", prefix, i);
        st = vae_resnet_load(&m->res[i], w, c, c, groups, name);
    }
    if (st == SD_OK && attn) {
        snprintf(name, sizeof name, "%s.attentions.0", prefix);
        st = attention_load(&m->attn, w, c, groups, name);
        m->has_attn = st == SD_OK;
    }
    if (st != SD_OK) vae_mid_block_free(m);
    return st;
}

void vae_mid_block_free(vae_mid_block *m) {
    vae_resnet_free(&m->res[0]);
    vae_resnet_free(&m->res[1]);
    attention_free(&m->attn);
    m->has_attn = false;
}

size_t vae_mid_block_floats(const vae_mid_block *m, int c, size_t hw) {
    const size_t n = vae_round((size_t)c * hw), res = vae_resnet_floats(c, c, hw);
    return m->has_attn && 5 * n > res ? 5 * n : res; /* attention: x, normed, QKV */
}

void vae_mid_block_forward(const vae_mid_block *m, vae_act *a, int h, int w) {
    vae_resnet_forward(&m->res[0], a, h, w);
    if (m->has_attn) attention_forward(&m->attn, a, h * w);
    vae_resnet_forward(&m->res[1], a, h, w);
}

/* Output rows per band of the upsampler: about 8 MB of upsampled input per band. */
static int band_rows(int c, int w2, int h2) {
    long rows = (2L << 20) / ((long)w2 * c);
    return rows < 1 ? 1 : rows > h2 ? h2 : (int)rows;
}

size_t vae_upsample_floats(int c, int h, int w) {
    const size_t band = (size_t)(band_rows(c, 2 * w, 2 * h) + 2) * 2 * w * c;
    return vae_round((size_t)c * h * w) + vae_round((size_t)4 * c * h * w) + vae_round(band);
}

void vae_upsample_forward(const nn_conv2d *conv, vae_act *a, int h, int w) {
    vae_upsample_bands(conv, a, h, w, band_rows(conv->s.cin, 2 * w, 2 * h));
}

void vae_upsample_bands(const nn_conv2d *conv, vae_act *a, int h, int w, int rows) {
    const int c = conv->s.cin, co = conv->s.cout, h2 = 2 * h, w2 = 2 * w;
    rows = rows < 1 ? 1 : rows > h2 ? h2 : rows;
    const size_t out_n = (size_t)h2 * w2 * co;
    const float *x = a->x;
    float *out = vae_act_far(a, out_n);
    float *band = vae_act_gap(a, out_n, 0, (size_t)(rows + 2) * w2 * c);
    for (int r0 = 0; r0 < h2; r0 += rows) {
        const int r1 = r0 + rows < h2 ? r0 + rows : h2;
        /* Upsampled rows r0 - 1 .. r1 (the 3x3 kernel's reach), clipped to the image; the conv
         * pads only where the band meets the image's top or bottom edge. */
        const int lo = r0 > 0 ? r0 - 1 : 0, hi = r1 < h2 ? r1 + 1 : h2;
#pragma omp parallel for schedule(static) if ((size_t)(hi - lo) * w2 * c >= PARALLEL_MIN)
        for (int y = lo; y < hi; y++)
            for (int xo = 0; xo < w2; xo++)
                memcpy(band + ((size_t)(y - lo) * w2 + xo) * c, x + ((size_t)(y / 2) * w + xo / 2) * c,
                       (size_t)c * sizeof *x);
        conv2d_shape s = conv->s;
        s.pad_t = r0 == 0 ? s.pad_t : 0;
        s.pad_b = r1 == h2 ? s.pad_b : 0;
        nn_conv2d_forward_shape(conv, &s, band, 1, hi - lo, w2, out + (size_t)r0 * w2 * co,
                                a->scratch); /* padding is not in the packed weights */
    }
    vae_act_set(a, out, out_n);
}

void vae_level_free(vae_level *l) {
    for (int i = 0; i < l->n_res; i++) vae_resnet_free(&l->res[i]);
    free(l->res);
    nn_conv2d_free(&l->sample);
    memset(l, 0, sizeof *l);
}
