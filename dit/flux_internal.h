/* What a flux_model holds, and the pieces the files of dit/flux*.c share. */
#ifndef SD_FLUX_INTERNAL_H
#define SD_FLUX_INTERNAL_H

#include "../core/arena.h"
#include "../core/weights.h"
#include "../nn/layers.h"
#include "flux.h"

/* FluxTransformerBlock: AdaLN-Zero on both streams, joint attention, a gelu-tanh MLP per stream.
 * D = inner_dim, d = attention_head_dim. */
typedef struct {
    nn_linear norm1, norm1_context;         /* [6D][D]: shift, scale, gate (attn), same (MLP) */
    nn_linear to_q, to_k, to_v, to_out;     /* image stream, [D][D] */
    nn_linear add_q, add_k, add_v, add_out; /* text stream, [D][D] */
    float *norm_q, *norm_k;                 /* [d] RMS norm weights, image stream */
    float *norm_added_q, *norm_added_k;     /* [d] text stream */
    nn_linear ff1, ff2;                     /* image MLP: [4D][D], [D][4D] */
    nn_linear ff_context1, ff_context2;     /* text MLP */
} flux_double_block;

/* FluxSingleTransformerBlock: one stream over [text; image], attention and MLP in parallel from
 * the same AdaLN-Zero input, one projection of their concatenation. */
typedef struct {
    nn_linear norm;             /* [3D][D]: shift, scale, gate */
    nn_linear to_q, to_k, to_v; /* [D][D] */
    float *norm_q, *norm_k;     /* [d] */
    nn_linear proj_mlp;         /* [4D][D] */
    nn_linear proj_out;         /* [D][D + 4D] */
} flux_single_block;

struct flux_model {
    flux_config cfg;
    /* Open as long as the model (keep_stored): layers may point into its mapping. */
    sd_weights w;
    nn_linear x_embedder;             /* [D][in_channels] */
    nn_linear context_embedder;       /* [D][joint_attention_dim] */
    nn_linear time_1, time_2;         /* time_text_embed.timestep_embedder: [D][256], [D][D] */
    nn_linear guidance_1, guidance_2; /* guidance_embedder (guidance_embeds only) */
    nn_linear text_1, text_2;         /* text_embedder: [D][pooled], [D][D] */
    flux_double_block *blocks;        /* [num_layers] */
    flux_single_block *single_blocks; /* [num_single_layers] */
    nn_linear norm_out;               /* [2D][D]: scale, shift (in that order) */
    nn_linear proj_out;               /* [out_channels][D] */
    sd_arena scratch;
};

/* Buffers of one forward pass, carved from the model's scratch. B batch, T text and I image
 * tokens, N = T + I, D = inner_dim. */
typedef struct {
    int batch, txt, img, tokens;
    float *h;                   /* [B][N][D] the residual stream: text rows, then image rows */
    float *silu_temb;           /* [B][D] silu(conditioning), the input of every modulation */
    float *cond;                /* [B][256 + 2D] the conditioning embedders' intermediates */
    float *mod;                 /* [B][6D] modulation of one stream */
    float *mod_c;               /* [B][6D] modulation of the text stream (double blocks) */
    float *norm;                /* [B][N][D] modulated layer-norm output */
    float *q, *k, *v;           /* [B][N][D] */
    float *attn;                /* [B][N][D] attention output (double blocks) */
    float *tmp;                 /* [B][N][D] a projection before its gate */
    float *wide;                /* [B][N][5D] MLP hidden, or the single block's [attention | MLP] */
    float *rope_cos, *rope_sin; /* [N][d] */
} flux_acts;

/* dit/flux_load.c */
sd_status flux_read_config(const char *dir, flux_config *cfg);
sd_status flux_load_blocks(flux_model *m);
void flux_free_blocks(flux_model *m);

/* dit/flux_blocks.c */
void flux_double_block_forward(flux_model *m, const flux_double_block *blk, flux_acts *a);
void flux_single_block_forward(flux_model *m, const flux_single_block *blk, flux_acts *a);
/* y = LN(x) * (1 + scale) + shift over rows of D (LayerNorm without affine, eps 1e-6). */
void flux_modulate(const float *x, float *y, int rows, int dim, const float *shift,
                   const float *scale);

/* dit/flux_rope.c */
/* cos/sin [n][d] for positions ids [n][3] over the three axes (FluxPosEmbed). */
void flux_rope_table(const int axes[3], const float *ids, int n, float *cos_out, float *sin_out);
/* Rotates every head of x [batch][n][heads*d] in place (apply_rotary_emb, interleaved pairs). */
void flux_rope_apply(float *x, int batch, int n, int heads, int d, const float *cos_t,
                     const float *sin_t);

#endif
