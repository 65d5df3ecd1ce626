/* Transformer2DModel (continuous input) with diffusers' BasicTransformerBlock: layer-norm,
 * self-attention, layer-norm, cross-attention over the text context, layer-norm, GEGLU
 * feed-forward, each added back to the tokens. Tokens are the NHWC pixels, so [n][hw][dim] rows
 * need no permute; proj_in/proj_out are the same product whether stored as 1x1 conv or Linear. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "unet_internal.h"

/* Rows of the feed-forward computed at a time: bounds the GEGLU buffer (8 x dim per row). */
enum { FF_CHUNK_ROWS = 1024 };

static sd_status load_stacked(nn_linear *dst, const sd_weights *w, int in, int dim,
                              const char *prefix, const char *const *names, int n_names) {
    nn_linear parts[3];
    memset(parts, 0, sizeof parts);
    sd_status st = SD_OK;
    for (int i = 0; i < n_names && st == SD_OK; i++)
        st = nn_linear_load(&parts[i], w, in, dim, false, "%s.%s", prefix, names[i]);
    /* Q, K and V (or K and V) come out of a single product. */
    if (st == SD_OK) return nn_linear_stack(dst, parts, n_names);
    for (int i = 0; i < n_names; i++) nn_linear_free(&parts[i]);
    return st;
}

static void tblock_free(unet_tblock *b) {
    nn_norm_free(&b->norm1);
    nn_norm_free(&b->norm2);
    nn_norm_free(&b->norm3);
    nn_linear_free(&b->qkv);
    nn_linear_free(&b->out1);
    nn_linear_free(&b->q2);
    nn_linear_free(&b->kv2);
    nn_linear_free(&b->out2);
    nn_linear_free(&b->ff_in);
    nn_linear_free(&b->ff_out);
}

static sd_status tblock_load(unet_tblock *b, const sd_weights *w, const unet_transformer *t,
                             const char *prefix) {
    static const char *const qkv[3] = {"attn1.to_q", "attn1.to_k", "attn1.to_v"};
    static const char *const kv[2] = {"attn2.to_k", "attn2.to_v"};
    const int dim = t->dim;
    memset(b, 0, sizeof *b);
    /* BasicTransformerBlock's LayerNorms use their own default eps, not the config's norm_eps. */
    sd_status st = nn_layer_norm_load(&b->norm1, w, dim, true, 1e-5f, "%s.norm1", prefix);
    if (st == SD_OK) st = load_stacked(&b->qkv, w, dim, dim, prefix, qkv, 3);
    if (st == SD_OK) st = nn_linear_load(&b->out1, w, dim, dim, true, "%s.attn1.to_out.0", prefix);
    if (st == SD_OK) st = nn_layer_norm_load(&b->norm2, w, dim, true, 1e-5f, "%s.norm2", prefix);
    if (st == SD_OK) st = nn_linear_load(&b->q2, w, dim, dim, false, "%s.attn2.to_q", prefix);
    if (st == SD_OK) st = load_stacked(&b->kv2, w, t->cross_dim, dim, prefix, kv, 2);
    if (st == SD_OK) st = nn_linear_load(&b->out2, w, dim, dim, true, "%s.attn2.to_out.0", prefix);
    if (st == SD_OK) st = nn_layer_norm_load(&b->norm3, w, dim, true, 1e-5f, "%s.norm3", prefix);
    if (st == SD_OK)
        st = nn_linear_load(&b->ff_in, w, dim, 2 * t->ff_dim, true, "%s.ff.net.0.proj", prefix);
    if (st == SD_OK)
        st = nn_linear_load(&b->ff_out, w, t->ff_dim, dim, true, "%s.ff.net.2", prefix);
    /* Packed once here (after the stacking, which reads the plain weights) rather than on every
     * call: about 3% of a step at SD 1.5 sizes. */
    nn_linear *const all[] = {&b->qkv, &b->out1, &b->q2, &b->kv2, &b->out2, &b->ff_in, &b->ff_out};
    for (size_t i = 0; i < sizeof all / sizeof *all && st == SD_OK; i++) st = nn_linear_pack(all[i]);
    if (st != SD_OK) tblock_free(b);
    return st;
}

sd_status unet_transformer_load(unet_transformer *t, const sd_weights *w, const unet_config *c,
                                int dim, int heads, int n_layers, const char *prefix) {
    memset(t, 0, sizeof *t);
    t->dim = dim;
    t->heads = heads;
    t->head_dim = dim / heads;
    t->cross_dim = c->cross_attention_dim;
    t->ff_dim = 4 * dim; /* FeedForward's mult = 4 */
    /* Transformer2DModel's GroupNorm has eps 1e-6 whatever the config says. */
    sd_status st =
        nn_group_norm_load(&t->norm, w, dim, c->norm_num_groups, 1e-6f, "%s.norm", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&t->proj_in, w, dim, dim, 1, 1, 0, "%s.proj_in", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&t->proj_out, w, dim, dim, 1, 1, 0, "%s.proj_out", prefix);
    if (st == SD_OK && !(t->layers = calloc((size_t)n_layers, sizeof *t->layers)))
        st = sd_set_error(SD_ERR_NOMEM, "unet: out of memory");
    for (int i = 0; i < n_layers && st == SD_OK; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s.transformer_blocks.%d", prefix, i);
        st = tblock_load(&t->layers[i], w, t, name);
        if (st == SD_OK) t->n_layers = i + 1;
    }
    if (st != SD_OK) unet_transformer_free(t);
    return st;
}

/* One BasicTransformerBlock on x [n][hw][dim], in place. */
static sd_status tblock_forward(const unet_transformer *t, const unet_tblock *b, float *x, int n,
                                int hw, const float *context, int ctx_len, sd_arena *a) {
    const int dim = t->dim;
    const long m = (long)n * hw;
    const size_t md = (size_t)m * dim;
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *nrm = sd_arena_floats(a, md);
    float *qkv = sd_arena_floats(a, 3 * md);
    float *att = sd_arena_floats(a, md);
    float *kv = sd_arena_floats(a, (size_t)n * ctx_len * 2 * dim);
    int chunk = m < FF_CHUNK_ROWS ? (int)m : FF_CHUNK_ROWS;
    float *ff = sd_arena_floats(a, (size_t)chunk * 2 * t->ff_dim);
    if (!nrm || !qkv || !att || !kv || !ff) return unet_nomem();
    const float scale = (float)(1.0 / sqrt((double)t->head_dim));

    /* self-attention: Q, K and V interleaved in one [m][3 dim] product */
    nn_layer_norm_forward(&b->norm1, x, nrm, (int)m);
    nn_linear_forward(&b->qkv, nrm, qkv, (int)m);
    attn_shape self = {.batch = n,
                       .heads = t->heads,
                       .nq = hw,
                       .nk = hw,
                       .d = t->head_dim,
                       .q_stride = 3 * dim,
                       .k_stride = 3 * dim,
                       .v_stride = 3 * dim,
                       .out_stride = dim,
                       .scale = scale};
    attention(&self, qkv, qkv + dim, qkv + 2 * dim, att, a);
    nn_linear_forward(&b->out1, att, nrm, (int)m);
    unet_add(x, nrm, md);

    /* cross-attention: queries from the pixels, keys and values from the context */
    nn_layer_norm_forward(&b->norm2, x, nrm, (int)m);
    nn_linear_forward(&b->q2, nrm, qkv, (int)m);
    nn_linear_forward(&b->kv2, context, kv, n * ctx_len);
    attn_shape cross = {.batch = n,
                        .heads = t->heads,
                        .nq = hw,
                        .nk = ctx_len,
                        .d = t->head_dim,
                        .q_stride = dim,
                        .k_stride = 2 * dim,
                        .v_stride = 2 * dim,
                        .out_stride = dim,
                        .scale = scale};
    attention(&cross, qkv, kv, kv + dim, att, a);
    nn_linear_forward(&b->out2, att, nrm, (int)m);
    unet_add(x, nrm, md);

    /* GEGLU feed-forward, row chunks at a time (rows are independent) */
    nn_layer_norm_forward(&b->norm3, x, nrm, (int)m);
    for (long r0 = 0; r0 < m; r0 += chunk) {
        int rows = m - r0 < chunk ? (int)(m - r0) : chunk;
        nn_linear_forward(&b->ff_in, nrm + r0 * dim, ff, rows);
        act_geglu(ff, ff, rows, t->ff_dim);
        nn_linear_forward(&b->ff_out, ff, att + r0 * dim, rows);
    }
    unet_add(x, att, md);
    sd_arena_release(a, mark);
    return SD_OK;
}

sd_status unet_transformer_forward(const unet_transformer *t, float *x, int n, int hw,
                                   const float *context, int ctx_len, sd_arena *a) {
    const size_t md = (size_t)n * hw * t->dim;
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *tokens = sd_arena_floats(a, md);
    float *tmp = sd_arena_floats(a, md);
    if (!tokens || !tmp) return unet_nomem();
    /* A 1x1 convolution over n images of hw x 1 pixels is the per-token Linear. */
    nn_group_norm_forward(&t->norm, x, tmp, n, hw, false);
    nn_conv2d_forward(&t->proj_in, tmp, n, hw, 1, tokens, a);
    for (int i = 0; i < t->n_layers; i++)
        SD_TRY(tblock_forward(t, &t->layers[i], tokens, n, hw, context, ctx_len, a));
    nn_conv2d_forward(&t->proj_out, tokens, n, hw, 1, tmp, a);
    unet_add(x, tmp, md);
    sd_arena_release(a, mark);
    return SD_OK;
}

void unet_transformer_free(unet_transformer *t) {
    nn_norm_free(&t->norm);
    nn_conv2d_free(&t->proj_in);
    nn_conv2d_free(&t->proj_out);
    for (int i = 0; i < t->n_layers; i++) tblock_free(&t->layers[i]);
    free(t->layers);
    memset(t, 0, sizeof *t);
}
