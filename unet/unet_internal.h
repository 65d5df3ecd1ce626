/* The UNet's parts, shared by the files of unet/ (not part of the public API).
 *
 * Every forward function takes its output buffer from the caller and its temporaries from the
 * arena, which it releases before returning; a failed arena allocation returns SD_ERR_NOMEM. */
#ifndef SD_UNET_INTERNAL_H
#define SD_UNET_INTERNAL_H

#include "../core/arena.h"
#include "../core/weights.h"
#include "../nn/layers.h"
#include "unet.h"

sd_status unet_nomem(void);

/* Elementwise passes over at least this many floats run on all threads. */
#define UNET_PARALLEL_MIN ((size_t)1 << 16)

/* x[i] = y[i] + x[i] (torch's order for `y + x`), on all threads for large n. */
void unet_add(float *x, const float *y, size_t n);

/* ---- embeddings.c ---- */

/* diffusers' get_timestep_embedding for one timestep: out[dim] (dim even), in float32 and in
 * torch's order of operations so that fractional timesteps round the same way. */
void unet_timestep_embedding(float t, int dim, bool flip_sin_to_cos, int freq_shift, float *out);

/* TimestepEmbedding: linear_1, SiLU, linear_2. */
typedef struct {
    nn_linear linear_1, linear_2;
} unet_time_mlp;

sd_status unet_time_mlp_load(unet_time_mlp *e, const sd_weights *w, int in, int out,
                             const char *prefix);
/* x [rows][in] -> y [rows][out]. */
sd_status unet_time_mlp_forward(const unet_time_mlp *e, const float *x, float *y, int rows,
                                sd_arena *a);
void unet_time_mlp_free(unet_time_mlp *e);

/* ---- resnet.c: ResnetBlock2D ("default" time embedding norm, SiLU) ---- */

typedef struct {
    int cin, cout;
    nn_norm norm1, norm2; /* GroupNorm over cin / cout */
    nn_conv2d conv1, conv2;
    nn_linear time_emb_proj; /* temb_dim -> cout */
    bool has_shortcut;       /* 1x1 conv_shortcut when cin != cout */
    nn_conv2d conv_shortcut;
    float output_scale_factor;
} unet_resnet;

sd_status unet_resnet_load(unet_resnet *r, const sd_weights *w, const unet_config *c, int cin,
                           int cout, float output_scale_factor, const char *prefix);
/* x [n][hw][cin], temb_act = SiLU(temb) [n][temb_dim] -> out [n][hw][cout] (out != x). */
sd_status unet_resnet_forward(const unet_resnet *r, const float *x, int n, int h, int w,
                              const float *temb_act, float *out, sd_arena *a);
void unet_resnet_free(unet_resnet *r);

/* ---- transformer.c: Transformer2DModel with BasicTransformerBlocks ---- */

typedef struct {
    nn_norm norm1, norm2, norm3; /* LayerNorm(dim), eps 1e-5 */
    nn_linear qkv;               /* attn1 to_q | to_k | to_v stacked: [3 dim][dim], no bias */
    nn_linear out1;              /* attn1.to_out.0 */
    nn_linear q2;                /* attn2.to_q [dim][dim] */
    nn_linear kv2;               /* attn2 to_k | to_v stacked: [2 dim][cross_dim] */
    nn_linear out2;              /* attn2.to_out.0 */
    nn_linear ff_in;             /* ff.net.0.proj: [2 ff_dim][dim] (GEGLU value | gate) */
    nn_linear ff_out;            /* ff.net.2: [dim][ff_dim] */
} unet_tblock;

typedef struct {
    int dim, heads, head_dim, cross_dim, ff_dim, n_layers;
    nn_norm norm;                /* GroupNorm, eps 1e-6 */
    nn_conv2d proj_in, proj_out; /* 1x1 conv or Linear (use_linear_projection): same numbers */
    unet_tblock *layers;
} unet_transformer;

sd_status unet_transformer_load(unet_transformer *t, const sd_weights *w, const unet_config *c,
                                int dim, int heads, int n_layers, const char *prefix);
/* x [n][hw][dim] in place: x += proj_out(blocks(proj_in(norm(x)))), attending over
 * context [n][ctx_len][cross_dim]. */
sd_status unet_transformer_forward(const unet_transformer *t, float *x, int n, int hw,
                                   const float *context, int ctx_len, sd_arena *a);
void unet_transformer_free(unet_transformer *t);

/* ---- unet.c: blocks and the model ---- */

typedef struct {
    int n_layers, cout;
    unet_resnet *resnets;
    unet_transformer *attns; /* NULL for DownBlock2D / UpBlock2D */
    bool has_sampler;        /* Downsample2D / Upsample2D (conv) */
    nn_conv2d sampler;
} unet_block;

/* A skip connection kept from the down path for the up path; `mark` is the arena position just
 * before its buffer, where the up path puts its result once the skip is consumed (the skips are
 * consumed last-in first-out, so the arena stays a stack). */
typedef struct {
    float *data;
    int ch, h, w;
    sd_arena_mark mark;
} unet_skip;

struct unet {
    unet_config cfg;
    sd_weights w; /* kept open: layers may hold their weights in the mapping (nn/layers.h) */
    nn_conv2d conv_in, conv_out;
    nn_norm norm_out;
    unet_time_mlp time_embedding;
    unet_time_mlp add_embedding; /* SDXL text_time */
    unet_block down[UNET_MAX_BLOCKS], up[UNET_MAX_BLOCKS];
    unet_resnet mid_resnets[2];
    unet_transformer mid_attn;
    int max_skips;    /* skip connections held between the down and up paths */
    unet_skip *skips; /* [max_skips] */
    sd_arena arena;
    size_t last_spills; /* arena growths during the last forward (read before its reset) */
};

#endif
