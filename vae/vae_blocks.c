/* Building blocks shared by the VAE encoder and decoder: ResnetBlock2D (no time embedding), the
 * mid-block single-head attention, the mid block, and the nearest-neighbour upsampler. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/attention.h"
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

int vae_resnet_forward(const vae_resnet *r, vae_bufs *b, int cur, int h, int w) {
    const int hw = h * w;
    float *x = b->buf[cur], *t1 = b->buf[(cur + 1) % 3], *t2 = b->buf[(cur + 2) % 3];
    nn_group_norm_forward(&r->norm1, x, t1, 1, hw, true);
    nn_conv2d_forward(&r->conv1, t1, 1, h, w, t2, b->scratch);
    nn_group_norm_forward(&r->norm2, t2, t2, 1, hw, true);
    nn_conv2d_forward(&r->conv2, t2, 1, h, w, t1, b->scratch);
    if (r->has_shortcut) {
        /* The 1x1 shortcut is a plain product over pixels; accumulating it straight into the conv2
         * output saves a buffer of cout channels. */
        const nn_conv2d *s = &r->shortcut;
        gemm_nt(hw, r->cout, r->cin, x, r->cin, s->w, r->cin, t1, r->cout, s->b, 1);
        return (cur + 1) % 3;
    }
    vae_add(x, t1, (size_t)hw * r->cout);
    return cur;
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

/* In place on b->buf[cur]: x += to_out(attention(group_norm(x))). */
static void attention_forward(const vae_attention *a, vae_bufs *b, int cur, int hw) {
    const int c = a->c;
    /* The buffer plan reserves 3 * c * hw floats for the fused QKV rows. */
    float *x = b->buf[cur], *normed = b->buf[(cur + 1) % 3], *qkv = b->buf[(cur + 2) % 3];
    nn_group_norm_forward(&a->norm, x, normed, 1, hw, false);
    gemm_nt(hw, 3 * c, c, normed, c, a->w_qkv, c, qkv, 3 * c, a->b_qkv, 0);
    const attn_shape s = {
        .batch = 1, .heads = 1, .nq = hw, .nk = hw, .d = c,
        .q_stride = 3 * c, .k_stride = 3 * c, .v_stride = 3 * c, .out_stride = c,
        .scale = 1.0f / sqrtf((float)c), .causal = 0,
    };
    attention(&s, qkv, qkv + c, qkv + 2 * c, normed, b->scratch);
    /* residual_connection: the projection is accumulated onto the input; rescale_output_factor is
     * 1 in the VAE. */
    gemm_nt(hw, c, c, normed, c, a->w_out, c, x, c, a->b_out, 1);
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

int vae_mid_block_forward(const vae_mid_block *m, vae_bufs *b, int cur, int h, int w) {
    cur = vae_resnet_forward(&m->res[0], b, cur, h, w);
    if (m->has_attn) attention_forward(&m->attn, b, cur, h * w);
    return vae_resnet_forward(&m->res[1], b, cur, h, w);
}

int vae_upsample_forward(const nn_conv2d *conv, vae_bufs *b, int cur, int h, int w) {
    const int c = conv->s.cin, w2 = 2 * w;
    const float *x = b->buf[cur];
    float *up = b->buf[(cur + 1) % 3], *y = b->buf[(cur + 2) % 3];
#pragma omp parallel for schedule(static) if ((size_t)4 * h * w * c >= PARALLEL_MIN)
    for (int oy = 0; oy < 2 * h; oy++)
        for (int ox = 0; ox < w2; ox++)
            memcpy(up + ((size_t)oy * w2 + ox) * c, x + ((size_t)(oy / 2) * w + ox / 2) * c,
                   (size_t)c * sizeof *x);
    nn_conv2d_forward(conv, up, 1, 2 * h, w2, y, b->scratch);
    return (cur + 2) % 3;
}

void vae_level_free(vae_level *l) {
    for (int i = 0; i < l->n_res; i++) vae_resnet_free(&l->res[i]);
    free(l->res);
    nn_conv2d_free(&l->sample);
    memset(l, 0, sizeof *l);
}
