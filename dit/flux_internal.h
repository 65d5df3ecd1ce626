/* What a flux_model holds, and the pieces the files of dit/flux*.c share. */
#ifndef SD_FLUX_INTERNAL_H
#define SD_FLUX_INTERNAL_H

#include "../core/arena.h"
#include "../core/weights.h"
#include "flux.h"
#include "flux_linear.h"

/* FluxTransformerBlock: AdaLN-Zero on both streams, joint attention, a gelu-tanh MLP per stream.
 * D = inner_dim, d = attention_head_dim. */
typedef struct {
    flux_linear norm1, norm1_context;         /* [6D][D]: shift, scale, gate (attn), same (MLP) */
    flux_linear to_q, to_k, to_v, to_out;     /* image stream, [D][D] */
    flux_linear add_q, add_k, add_v, add_out; /* text stream, [D][D] */
    float *norm_q, *norm_k;                   /* [d] RMS norm weights, image stream */
    float *norm_added_q, *norm_added_k;       /* [d] text stream */
    flux_linear ff1, ff2;                     /* image MLP: [4D][D], [D][4D] */
    flux_linear ff_context1, ff_context2;     /* text MLP */
} flux_double_block;

/* FluxSingleTransformerBlock: one stream over [text; image], attention and MLP in parallel from
 * the same AdaLN-Zero input, one projection of their concatenation. */
typedef struct {
    flux_linear norm;             /* [3D][D]: shift, scale, gate */
    flux_linear to_q, to_k, to_v; /* [D][D] */
    float *norm_q, *norm_k;       /* [d] */
    flux_linear proj_mlp;         /* [4D][D] */
    flux_linear proj_out;         /* [D][D + 4D] */
} flux_single_block;

struct flux_model {
    flux_config cfg;
    bool streamed;
    size_t stream_tile;                 /* streamed: floats converted per tile; 0 when resident */
    sd_weights w;                       /* kept open while weights are streamed from it */
    flux_linear x_embedder;             /* [D][in_channels] */
    flux_linear context_embedder;       /* [D][joint_attention_dim] */
    flux_linear time_1, time_2;         /* time_text_embed.timestep_embedder: [D][256], [D][D] */
    flux_linear guidance_1, guidance_2; /* guidance_embedder (guidance_embeds only) */
    flux_linear text_1, text_2;         /* text_embedder: [D][pooled], [D][D] */
    flux_double_block *blocks;          /* [num_layers] */
    flux_single_block *single_blocks;   /* [num_single_layers] */
    flux_linear norm_out;               /* [2D][D]: scale, shift (in that order) */
    flux_linear proj_out;               /* [out_channels][D] */
    size_t tile_floats;                 /* the largest streamed conversion tile */
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
    float *tile;                /* streamed weight tile, or NULL */
} flux_acts;

/* flux_load_mode with the streamed tile size chosen (tests use small tiles to run the tile loop
 * on tiny models); 0 takes FLUX_TILE_FLOATS. */
sd_status flux_load_tiled(flux_model **out, const char *dir, flux_weights_mode mode,
                          size_t tile_floats);

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

/* dit/flux_embed.c */
/* Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) for value t: [cos | sin]. */
void flux_timestep_proj(float t, float *out256);

#endif
