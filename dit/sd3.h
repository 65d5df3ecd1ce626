/* SD3Transformer2DModel (diffusers): the MMDiT of Stable Diffusion 3 / 3.5, float32, activations
 * as row-major token matrices. Loaded from a transformer folder: config.json (diffusers' defaults
 * for absent keys) and diffusion_pytorch_model.safetensors (F32/F16/BF16, sharded or fp16
 * variant). SD3.5 features: dual_attention_layers (a second image self-attention, 9-chunk
 * modulation) and qk_norm "rms_norm". */
#ifndef SD_SD3_H
#define SD_SD3_H

#include <stdbool.h>

#include "../core/error.h"
#include "../core/weights.h"

#define SD3_MAX_LAYERS 256

typedef struct {
    int sample_size, patch_size, in_channels, out_channels;
    int num_layers, attention_head_dim, num_attention_heads;
    int joint_attention_dim, caption_projection_dim, pooled_projection_dim;
    int pos_embed_max_size; /* 0 when null: the table is computed for the latent size instead */
    bool dual_attention[SD3_MAX_LAYERS]; /* per layer: the index is in dual_attention_layers */
    bool qk_rms_norm;                    /* qk_norm == "rms_norm" (null: none) */
    int inner_dim;                       /* num_attention_heads * attention_head_dim */
} sd3_config;

typedef struct sd3_model sd3_model;

/* Weights held as `policy` says (NULL: the default; core/weights.h): its Linear layers are never
 * packed (they run the fp32 GEMM on the float32 copy or the stored weight), so bf16 packing
 * reaches only the patch convolution. */
sd_status sd3_load(sd3_model **out, const char *dir, const weights_policy *policy);
void sd3_free(sd3_model *m);
/* Low-memory mode after denoising: frees the scratch arena and gives back the mapped weight
 * pages (both come back on the next forward; results are unchanged). */
void sd3_release(sd3_model *m);
const sd3_config *sd3_get_config(const sd3_model *m);

/* latents NHWC [batch][h][w][in_channels] (h, w: latent pixels, multiples of patch_size; with
 * pos_embed_max_size, at most pos_embed_max_size patches each way); timestep as the pipeline
 * passes it (SD3: sigma * 1000), the same for every batch item; context
 * [batch][ctx_len][joint_attention_dim]; pooled [batch][pooled_projection_dim]
 * -> out NHWC [batch][h][w][out_channels]. A model runs one forward at a time (it owns its
 * scratch). */
sd_status sd3_forward(sd3_model *m, const float *latents, int batch, int h, int w, float timestep,
                      const float *context, int ctx_len, const float *pooled, float *out);

#endif
