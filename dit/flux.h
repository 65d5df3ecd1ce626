/* FluxTransformer2DModel (diffusers) in float32, from a transformer folder: config.json (diffusers'
 * defaults for absent keys) and diffusion_pytorch_model.safetensors (F32/F16/BF16, sharded or not).
 *
 * Activations are row-major token matrices [batch][tokens][dim]. The model works on packed
 * latents: each token is one 2x2 patch of the 16-channel latent (in_channels 64); the helpers at
 * the end convert between NHWC latents and that layout exactly as FluxPipeline's _pack_latents /
 * _unpack_latents do on NCHW tensors. */
#ifndef SD_FLUX_H
#define SD_FLUX_H

#include <stdbool.h>

#include "../core/error.h"
#include "../core/weights.h"

typedef struct {
    int patch_size;            /* only 1 (every FLUX.1 release) */
    int in_channels;           /* 64 = 16 latent channels x 2 x 2 */
    int out_channels;          /* config's out_channels, or in_channels when null */
    int num_layers;            /* double-stream blocks */
    int num_single_layers;     /* single-stream blocks */
    int attention_head_dim;    /* 128 */
    int num_attention_heads;   /* 24 */
    int joint_attention_dim;   /* T5 hidden size, 4096 */
    int pooled_projection_dim; /* CLIP pooled size, 768 */
    bool guidance_embeds;      /* FLUX.1-dev: guidance enters as an embedding */
    int axes_dims_rope[3];     /* (16, 56, 56): sums to attention_head_dim */
    int inner_dim;             /* num_attention_heads * attention_head_dim */
} flux_config;

typedef struct flux_model flux_model;

/* Config and weights of a transformer folder. The Linear layers are nn/ layers held as `policy`
 * says (NULL: the default; core/weights.h), as SD3's: a BF16 release (every FLUX.1 one) stays in
 * the file mapping and is widened while being packed, per call, so the 12B-parameter model runs in
 * little more than its mapped file; a float32 release is copied once (the mapped pages given
 * back); low_memory keeps every weight in the mapping and gives its pages back after each layer.
 * The Linear layers are never packed once, so bf16 packing changes nothing here (the numbers are
 * those of the fp32 GEMM with the widened weights in every case). */
sd_status flux_load(flux_model **out, const char *dir, const weights_policy *policy);
void flux_free(flux_model *m);
/* Low-memory mode after denoising: frees the scratch arena and gives back the mapped weight
 * pages (both come back on the next forward; results are unchanged). */
void flux_release(flux_model *m);
const flux_config *flux_get_config(const flux_model *m);

/* One transformer call, as FluxPipeline makes it:
 *   x        [batch][img_tokens][in_channels]   packed latents
 *   img_ids  [img_tokens][3]                    flux_image_ids
 *   context  [batch][txt_tokens][joint_attention_dim]  T5 prompt embeddings
 *   txt_ids  [txt_tokens][3]                    zeros in FluxPipeline
 *   timestep                                    as the pipeline passes it: t / 1000 (the sigma);
 *                                               the model multiplies by 1000 again
 *   guidance                                    the guidance scale (e.g. 3.5) when the config has
 *                                               guidance_embeds (NaN there is an error); ignored
 *                                               otherwise
 *   pooled   [batch][pooled_projection_dim]     CLIP pooled prompt embedding
 *   out      [batch][img_tokens][out_channels]  the raw prediction (flow velocity)
 * A model runs one forward at a time (it owns its scratch). */
sd_status flux_forward(flux_model *m, const float *x, int batch, int img_tokens,
                       const float *img_ids, const float *context, int txt_tokens,
                       const float *txt_ids, float timestep, float guidance, const float *pooled,
                       float *out);

/* NHWC latents [batch][h][w][c] -> packed [batch][(h/2)*(w/2)][c*4], where token (y, x) holds
 * channel-major 2x2 patches: packed[..][c*4 + dy*2 + dx] = latent[2y+dy][2x+dx][c]. h and w must
 * be even. */
sd_status flux_pack_latents(const float *latents, int batch, int h, int w, int c, float *packed);
/* The inverse: packed [batch][(h/2)*(w/2)][c*4] -> NHWC [batch][h][w][c]. */
sd_status flux_unpack_latents(const float *packed, int batch, int h, int w, int c, float *latents);
/* _prepare_latent_image_ids for a packed grid of gh x gw tokens (latent height/2 x width/2):
 * ids[(y*gw + x)*3 + {0, 1, 2}] = {0, y, x}. */
void flux_image_ids(int gh, int gw, float *ids);

#endif
