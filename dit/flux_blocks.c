/* FluxTransformerBlock (double stream) and FluxSingleTransformerBlock forward passes.
 *
 * The residual stream of every batch item is one [N][D] matrix, text rows first, then image rows
 * (diffusers' order in the joint attention and in the single blocks' concatenation), so the double
 * blocks work on row slices of it and the single blocks on all of it, with no copies in between. */
#include <math.h>

#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/norm.h"
#include "dit_common.h"
#include "flux_internal.h"

/* Every Flux norm (AdaLN layer norms, RMS qk norms) uses this eps. */
#define FLUX_EPS 1e-6f

void flux_modulate(const float *x, float *y, int rows, int dim, const float *shift,
                   const float *scale) {
    layer_norm(x, y, rows, dim, FLUX_EPS, NULL, NULL);
    dit_modulate(y, y, 1, rows, dim, shift, scale, 0);
}

/* h += gate * y over rows of dim (AdaLN-Zero's gated residual). A stream's rows are a slice of
 * each batch item's joint sequence, so one item at a time. */
static void gate_add(float *h, const float *y, int rows, int dim, const float *gate) {
    dit_gated_add(h, y, 1, rows, dim, gate, 0);
}

/* Per-head RMS norm of `rows` tokens of x [rows][heads*d], in place. */
static void qk_norm(float *x, int rows, int heads, int d, const float *weight) {
    rms_norm(x, x, rows * heads, d, FLUX_EPS, weight);
}

static void attend(flux_model *m, const flux_acts *a, float *out, int out_stride) {
    const flux_config *c = &m->cfg;
    const int dim = c->inner_dim, d = c->attention_head_dim, n = a->tokens;
    flux_rope_apply(a->q, a->batch, n, c->num_attention_heads, d, a->rope_cos, a->rope_sin);
    flux_rope_apply(a->k, a->batch, n, c->num_attention_heads, d, a->rope_cos, a->rope_sin);
    const attn_shape s = {
        .batch = a->batch,
        .heads = c->num_attention_heads,
        .nq = n,
        .nk = n,
        .d = d,
        .q_stride = dim,
        .k_stride = dim,
        .v_stride = dim,
        .out_stride = out_stride,
        .scale = (float)(1.0 / sqrt((double)d)),
        .causal = 0,
    };
    attention(&s, a->q, a->k, a->v, out, &m->scratch);
}

/* One stream's gated MLP after attention: h += gate * ff2(gelu_tanh(ff1(modulate(h)))).
 * `off` is the stream's first row in each batch item, `rows` its length; mod is the stream's
 * [B][6D] modulation (chunks 3, 4, 5: shift, scale, gate of the MLP). */
static void stream_mlp(const flux_acts *a, const nn_linear *ff1, const nn_linear *ff2,
                       const float *mod, int dim, int off, int rows) {
    const long bs = (long)a->tokens * dim, wide_bs = (long)rows * 4 * dim;
    for (int b = 0; b < a->batch; b++) {
        const float *mb = mod + (long)b * 6 * dim;
        flux_modulate(a->h + b * bs + (long)off * dim, a->norm + b * bs + (long)off * dim, rows,
                      dim, mb + 3 * dim, mb + 4 * dim);
    }
    nn_linear_run(ff1, a->norm + (long)off * dim, dim, bs, a->wide, 4 * dim, wide_bs, rows,
                  a->batch, false);
    act_gelu_tanh(a->wide, (size_t)a->batch * wide_bs);
    nn_linear_run(ff2, a->wide, 4 * dim, wide_bs, a->tmp + (long)off * dim, dim, bs, rows,
                  a->batch, false);
    for (int b = 0; b < a->batch; b++)
        gate_add(a->h + b * bs + (long)off * dim, a->tmp + b * bs + (long)off * dim, rows, dim,
                 mod + (long)b * 6 * dim + 5 * dim);
}

void flux_double_block_forward(flux_model *m, const flux_double_block *blk, flux_acts *a) {
    const flux_config *c = &m->cfg;
    const int dim = c->inner_dim, heads = c->num_attention_heads, d = c->attention_head_dim;
    const int nb = a->batch, nt = a->txt, ni = a->img;
    const long bs = (long)a->tokens * dim, io = (long)nt * dim; /* batch stride, image offset */

    /* AdaLN-Zero: chunks 0, 1, 2 are shift, scale, gate of the attention. */
    nn_linear_forward(&blk->norm1, a->silu_temb, a->mod, nb);
    nn_linear_forward(&blk->norm1_context, a->silu_temb, a->mod_c, nb);
    for (int b = 0; b < nb; b++) {
        const float *mi = a->mod + (long)b * 6 * dim, *mc = a->mod_c + (long)b * 6 * dim;
        flux_modulate(a->h + b * bs, a->norm + b * bs, nt, dim, mc, mc + dim);
        flux_modulate(a->h + b * bs + io, a->norm + b * bs + io, ni, dim, mi, mi + dim);
    }

    /* Separate projections per stream, written into one joint [text; image] sequence. */
    nn_linear_run(&blk->add_q, a->norm, dim, bs, a->q, dim, bs, nt, nb, false);
    nn_linear_run(&blk->add_k, a->norm, dim, bs, a->k, dim, bs, nt, nb, false);
    nn_linear_run(&blk->add_v, a->norm, dim, bs, a->v, dim, bs, nt, nb, false);
    nn_linear_run(&blk->to_q, a->norm + io, dim, bs, a->q + io, dim, bs, ni, nb, false);
    nn_linear_run(&blk->to_k, a->norm + io, dim, bs, a->k + io, dim, bs, ni, nb, false);
    nn_linear_run(&blk->to_v, a->norm + io, dim, bs, a->v + io, dim, bs, ni, nb, false);
    for (int b = 0; b < nb; b++) {
        qk_norm(a->q + b * bs, nt, heads, d, blk->norm_added_q);
        qk_norm(a->k + b * bs, nt, heads, d, blk->norm_added_k);
        qk_norm(a->q + b * bs + io, ni, heads, d, blk->norm_q);
        qk_norm(a->k + b * bs + io, ni, heads, d, blk->norm_k);
    }
    attend(m, a, a->attn, dim);

    nn_linear_run(&blk->add_out, a->attn, dim, bs, a->tmp, dim, bs, nt, nb, false);
    nn_linear_run(&blk->to_out, a->attn + io, dim, bs, a->tmp + io, dim, bs, ni, nb, false);
    for (int b = 0; b < nb; b++) {
        gate_add(a->h + b * bs, a->tmp + b * bs, nt, dim, a->mod_c + (long)b * 6 * dim + 2 * dim);
        gate_add(a->h + b * bs + io, a->tmp + b * bs + io, ni, dim,
                 a->mod + (long)b * 6 * dim + 2 * dim);
    }

    stream_mlp(a, &blk->ff1, &blk->ff2, a->mod, dim, nt, ni);
    stream_mlp(a, &blk->ff_context1, &blk->ff_context2, a->mod_c, dim, 0, nt);
}

void flux_single_block_forward(flux_model *m, const flux_single_block *blk, flux_acts *a) {
    const flux_config *c = &m->cfg;
    const int dim = c->inner_dim, heads = c->num_attention_heads, d = c->attention_head_dim;
    const int nb = a->batch, n = a->tokens;
    const long bs = (long)n * dim, wide_bs = (long)n * 5 * dim;

    /* AdaLayerNormZeroSingle: shift, scale, gate. */
    nn_linear_forward(&blk->norm, a->silu_temb, a->mod, nb);
    for (int b = 0; b < nb; b++) {
        const float *mb = a->mod + (long)b * 3 * dim;
        flux_modulate(a->h + b * bs, a->norm + b * bs, n, dim, mb, mb + dim);
    }

    /* wide holds the concatenation [attention (D) | gelu_tanh(proj_mlp) (4D)] that proj_out
     * reads; each half is written in place through a row stride of 5D. */
    nn_linear_run(&blk->proj_mlp, a->norm, dim, bs, a->wide + dim, 5 * dim, wide_bs, n, nb, false);
    for (long r = 0; r < (long)nb * n; r++) act_gelu_tanh(a->wide + r * 5 * dim + dim, 4 * dim);

    nn_linear_forward(&blk->to_q, a->norm, a->q, nb * n);
    nn_linear_forward(&blk->to_k, a->norm, a->k, nb * n);
    nn_linear_forward(&blk->to_v, a->norm, a->v, nb * n);
    qk_norm(a->q, nb * n, heads, d, blk->norm_q);
    qk_norm(a->k, nb * n, heads, d, blk->norm_k);
    attend(m, a, a->wide, 5 * dim);

    nn_linear_run(&blk->proj_out, a->wide, 5 * dim, wide_bs, a->tmp, dim, bs, n, nb, false);
    for (int b = 0; b < nb; b++)
        gate_add(a->h + b * bs, a->tmp + b * bs, n, dim, a->mod + (long)b * 3 * dim + 2 * dim);
}
