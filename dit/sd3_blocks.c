/* diffusers' JointTransformerBlock as SD3Transformer2DModel builds it: AdaLN-Zero modulation of
 * the image and text streams, joint attention over [image tokens; text tokens] (diffusers' order)
 * with separate projections per stream and optional per-head RMS q/k norms, gated residuals and
 * gelu-tanh feed-forwards. The last block (context_pre_only) modulates the text with
 * AdaLayerNormContinuous and drops the text outputs; SD3.5's dual-attention blocks add a second
 * image self-attention driven by three more modulation chunks (SD35AdaLayerNormZeroX). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/gemm.h"
#include "../kernels/norm.h"
#include "dit_common.h"
#include "sd3_internal.h"

/* nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) everywhere in the block; also the RMS q/k
 * norms' eps (Attention(..., eps=1e-6)). */
static const float norm_eps = 1e-6f;

/* Modulation chunk indices: AdaLayerNormZero's six, then SD35AdaLayerNormZeroX's extra three. */
enum {
    SHIFT_MSA,
    SCALE_MSA,
    GATE_MSA,
    SHIFT_MLP,
    SCALE_MLP,
    GATE_MLP,
    SHIFT_MSA2,
    SCALE_MSA2,
    GATE_MSA2
};

static sd_status load_qkv(nn_linear *qkv, const sd_weights *w, int dim, const char *prefix,
                          const char *const names[3]) {
    nn_linear parts[3];
    memset(qkv, 0, sizeof *qkv);
    memset(parts, 0, sizeof parts);
    sd_status st = SD_OK;
    for (int p = 0; p < 3 && st == SD_OK; p++)
        st = nn_linear_load(&parts[p], w, dim, dim, true, "%s.%s", prefix, names[p]);
    if (st == SD_OK) return nn_linear_stack(qkv, parts, 3); /* one product for q|k|v */
    for (int p = 0; p < 3; p++) nn_linear_free(&parts[p]);
    return st;
}

/* names: q, k, v, out, norm_q, norm_k under `prefix`; out NULL when the stream has none. */
static sd_status load_proj(sd3_attn_proj *p, const sd_weights *w, const sd3_config *c,
                           const char *prefix, const char *const names[6]) {
    const int dim = c->inner_dim;
    SD_TRY(load_qkv(&p->qkv, w, dim, prefix, names));
    if (names[3]) SD_TRY(nn_linear_load(&p->out, w, dim, dim, true, "%s.%s", prefix, names[3]));
    if (c->qk_rms_norm) {
        const int64_t shape[1] = {c->attention_head_dim};
        SD_TRY(nn_read_tensor(w, &p->norm_q, 1, shape, "%s.%s.weight", prefix, names[4]));
        SD_TRY(nn_read_tensor(w, &p->norm_k, 1, shape, "%s.%s.weight", prefix, names[5]));
    }
    return SD_OK;
}

static void free_proj(sd3_attn_proj *p) {
    nn_linear_free(&p->qkv);
    nn_linear_free(&p->out);
    free(p->norm_q);
    free(p->norm_k);
    memset(p, 0, sizeof *p);
}

sd_status sd3_block_load(sd3_block *blk, const sd_weights *w, const sd3_config *c, int index) {
    static const char *const img_names[6] = {"to_q",     "to_k",   "to_v",
                                             "to_out.0", "norm_q", "norm_k"};
    static const char *const txt_names[6] = {"add_q_proj", "add_k_proj",   "add_v_proj",
                                             "to_add_out", "norm_added_q", "norm_added_k"};
    static const char *const txt_pre_names[6] = {"add_q_proj", "add_k_proj",   "add_v_proj",
                                                 NULL,         "norm_added_q", "norm_added_k"};
    const int dim = c->inner_dim;
    char prefix[64];
    memset(blk, 0, sizeof *blk);
    blk->context_pre_only = index == c->num_layers - 1;
    blk->dual = c->dual_attention[index];
    SD_TRY(nn_linear_load(&blk->norm1, w, dim, (blk->dual ? 9 : 6) * dim, true,
                          "transformer_blocks.%d.norm1.linear", index));
    SD_TRY(nn_linear_load(&blk->norm1_ctx, w, dim, (blk->context_pre_only ? 2 : 6) * dim, true,
                          "transformer_blocks.%d.norm1_context.linear", index));
    snprintf(prefix, sizeof prefix, "transformer_blocks.%d.attn", index);
    SD_TRY(load_proj(&blk->img, w, c, prefix, img_names));
    /* The last block still has add_q_proj (diffusers creates it whenever context_pre_only is
     * set); its text queries are computed but their outputs are dropped. */
    SD_TRY(load_proj(&blk->txt, w, c, prefix, blk->context_pre_only ? txt_pre_names : txt_names));
    if (blk->dual) {
        snprintf(prefix, sizeof prefix, "transformer_blocks.%d.attn2", index);
        SD_TRY(load_proj(&blk->img2, w, c, prefix, img_names));
    }
    SD_TRY(nn_linear_load(&blk->ff1, w, dim, 4 * dim, true, "transformer_blocks.%d.ff.net.0.proj",
                          index));
    SD_TRY(
        nn_linear_load(&blk->ff2, w, 4 * dim, dim, true, "transformer_blocks.%d.ff.net.2", index));
    if (!blk->context_pre_only) {
        SD_TRY(nn_linear_load(&blk->ffc1, w, dim, 4 * dim, true,
                              "transformer_blocks.%d.ff_context.net.0.proj", index));
        SD_TRY(nn_linear_load(&blk->ffc2, w, 4 * dim, dim, true,
                              "transformer_blocks.%d.ff_context.net.2", index));
    }
    return SD_OK;
}

void sd3_block_free(sd3_block *blk) {
    nn_linear_free(&blk->norm1);
    nn_linear_free(&blk->norm1_ctx);
    free_proj(&blk->img);
    free_proj(&blk->txt);
    free_proj(&blk->img2);
    nn_linear_free(&blk->ff1);
    nn_linear_free(&blk->ff2);
    nn_linear_free(&blk->ffc1);
    nn_linear_free(&blk->ffc2);
}

/* Projects `rows` tokens of x [rows][dim] into q|k|v rows of qkv (row stride 3 dim) and applies
 * the per-head q/k norms. */
static void project_qkv(const sd3_attn_proj *p, const sd3_dims *d, const float *x, int rows,
                        float *qkv) {
    const int dim = d->dim;
    nn_linear_forward(&p->qkv, x, qkv, rows);
    if (p->norm_q)
        dit_head_rms_norm(qkv, rows, 3 * dim, d->heads, d->head_dim, p->norm_q, norm_eps);
    if (p->norm_k)
        dit_head_rms_norm(qkv + dim, rows, 3 * dim, d->heads, d->head_dim, p->norm_k, norm_eps);
}

/* Per batch item, the first nq of n tokens attend to all n: qkv [batch][n][3 dim] ->
 * att [batch][n][dim] (rows past nq untouched). */
static void attend(const sd3_dims *d, const float *qkv, int n, int nq, float *att,
                   sd_arena *scratch) {
    const int dim = d->dim;
    const attn_shape s = {.batch = 1,
                          .heads = d->heads,
                          .nq = nq,
                          .nk = n,
                          .d = d->head_dim,
                          .q_stride = 3 * dim,
                          .k_stride = 3 * dim,
                          .v_stride = 3 * dim,
                          .out_stride = dim,
                          .scale = (float)(1.0 / sqrt((double)d->head_dim)),
                          .causal = 0};
    /* One item at a time: with nq < n the kernel's batch stride (nq rows) would be wrong. */
    for (int b = 0; b < d->batch; b++) {
        const float *base = qkv + (long)b * n * 3 * dim;
        attention(&s, base, base + dim, base + 2 * dim, att + (long)b * n * dim, scratch);
    }
}

static sd_status out_of_memory(const sd3_dims *d) {
    return sd_set_error(SD_ERR_NOMEM, "SD3 transformer: out of memory for %d x (%d + %d) tokens",
                        d->batch, d->n_img, d->n_txt);
}

/* x += gate * FF(LayerNorm(x) * (1 + scale) + shift) over [batch][rows][dim]. */
static sd_status feed_forward(const nn_linear *l1, const nn_linear *l2, const sd3_dims *d, float *x,
                              int rows, const float *emb, int emb_stride, sd_arena *scratch) {
    const int dim = d->dim, n = d->batch * rows;
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *xn = sd_arena_floats(scratch, (size_t)n * dim);
    float *hid = sd_arena_floats(scratch, (size_t)n * 4 * dim);
    if (!xn || !hid) return out_of_memory(d);
    layer_norm(x, xn, n, dim, norm_eps, NULL, NULL);
    dit_modulate(xn, xn, d->batch, rows, dim, emb + SHIFT_MLP * dim, emb + SCALE_MLP * dim,
                 emb_stride);
    nn_linear_forward(l1, xn, hid, n);
    act_gelu_tanh(hid, (size_t)n * 4 * dim);
    nn_linear_forward(l2, hid, xn, n);
    dit_gated_add(x, xn, d->batch, rows, dim, emb + GATE_MLP * dim, emb_stride);
    sd_arena_release(scratch, mark);
    return SD_OK;
}

/* Output projection of `rows` attention rows per batch item, found at att + (b * n + offset) *
 * dim, then the gated residual into x [batch][rows][dim]. */
static sd_status attn_out_residual(const nn_linear *out, const sd3_dims *d, const float *att, int n,
                                   int offset, int rows, float *x, const float *gate,
                                   int emb_stride, sd_arena *scratch) {
    const int dim = d->dim;
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *y = sd_arena_floats(scratch, (size_t)d->batch * rows * dim);
    if (!y) return out_of_memory(d);
    for (int b = 0; b < d->batch; b++)
        nn_linear_forward(out, att + ((long)b * n + offset) * dim, y + (long)b * rows * dim, rows);
    dit_gated_add(x, y, d->batch, rows, dim, gate, emb_stride);
    sd_arena_release(scratch, mark);
    return SD_OK;
}

sd_status sd3_block_forward(const sd3_block *blk, const sd3_dims *d, float *img, float *txt,
                            const float *silu_temb, sd_arena *scratch) {
    const int dim = d->dim, B = d->batch, ni = d->n_img, nt = d->n_txt, n = ni + nt;
    const int es = blk->norm1.out, ces = blk->norm1_ctx.out; /* modulation strides per item */
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *emb = sd_arena_floats(scratch, (size_t)B * es);
    float *cemb = sd_arena_floats(scratch, (size_t)B * ces);
    float *xn = sd_arena_floats(scratch, (size_t)B * ni * dim);
    float *xn2 = sd_arena_floats(scratch, blk->dual ? (size_t)B * ni * dim : 1);
    float *cn = sd_arena_floats(scratch, (size_t)B * nt * dim);
    float *qkv = sd_arena_floats(scratch, (size_t)B * n * 3 * dim);
    float *att = sd_arena_floats(scratch, (size_t)B * n * dim);
    if (!emb || !cemb || !xn || !xn2 || !cn || !qkv || !att) return out_of_memory(d);

    /* norm1 / norm1_context: LayerNorm then modulation. The dual block modulates the same
     * normalised image twice (msa for the joint attention, msa2 for attn2). */
    nn_linear_forward(&blk->norm1, silu_temb, emb, B);
    nn_linear_forward(&blk->norm1_ctx, silu_temb, cemb, B);
    layer_norm(img, xn, B * ni, dim, norm_eps, NULL, NULL);
    if (blk->dual)
        dit_modulate(xn, xn2, B, ni, dim, emb + SHIFT_MSA2 * dim, emb + SCALE_MSA2 * dim, es);
    dit_modulate(xn, xn, B, ni, dim, emb + SHIFT_MSA * dim, emb + SCALE_MSA * dim, es);
    layer_norm(txt, cn, B * nt, dim, norm_eps, NULL, NULL);
    if (blk->context_pre_only) /* AdaLayerNormContinuous: chunks are (scale, shift) */
        dit_modulate(cn, cn, B, nt, dim, cemb + dim, cemb, ces);
    else
        dit_modulate(cn, cn, B, nt, dim, cemb + SHIFT_MSA * dim, cemb + SCALE_MSA * dim, ces);

    /* Joint attention: per batch item, image rows then text rows of one [n][q|k|v] matrix. */
    for (int b = 0; b < B; b++) {
        project_qkv(&blk->img, d, xn + (long)b * ni * dim, ni, qkv + (long)b * n * 3 * dim);
        project_qkv(&blk->txt, d, cn + (long)b * nt * dim, nt, qkv + ((long)b * n + ni) * 3 * dim);
    }
    /* The last block's text outputs are dropped: only image queries need attending. */
    attend(d, qkv, n, blk->context_pre_only ? ni : n, att, scratch);
    SD_TRY(
        attn_out_residual(&blk->img.out, d, att, n, 0, ni, img, emb + GATE_MSA * dim, es, scratch));
    /* The two streams are independent from here on, so the text stream is finished first and
     * attn2 may reuse the attention buffers. */
    if (!blk->context_pre_only) {
        SD_TRY(attn_out_residual(&blk->txt.out, d, att, n, ni, nt, txt, cemb + GATE_MSA * dim, ces,
                                 scratch));
        SD_TRY(feed_forward(&blk->ffc1, &blk->ffc2, d, txt, nt, cemb, ces, scratch));
    }
    if (blk->dual) { /* attn2: image self-attention on the msa2-modulated tokens */
        for (int b = 0; b < B; b++)
            project_qkv(&blk->img2, d, xn2 + (long)b * ni * dim, ni, qkv + (long)b * ni * 3 * dim);
        attend(d, qkv, ni, ni, att, scratch);
        SD_TRY(attn_out_residual(&blk->img2.out, d, att, ni, 0, ni, img, emb + GATE_MSA2 * dim, es,
                                 scratch));
    }
    SD_TRY(feed_forward(&blk->ff1, &blk->ff2, d, img, ni, emb, es, scratch));
    sd_arena_release(scratch, mark);
    return SD_OK;
}
