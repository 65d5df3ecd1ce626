/* UNet2DConditionModel (diffusers) for SD 1.x, SD 2.x and SDXL configs, activations in NHWC.
 * Loaded from a unet folder: config.json (diffusers' defaults for absent keys) and
 * diffusion_pytorch_model.safetensors (F32/F16/BF16, sharded or fp16 variant). */
#ifndef SD_UNET_H
#define SD_UNET_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/error.h"
#include "../core/weights.h"

#define UNET_MAX_BLOCKS 8

/* Every per-block array is indexed by DOWN block (level 0 = full resolution); up block i works at
 * level n_blocks - 1 - i, and diffusers builds it from the reversed lists. */
typedef struct {
    int in_channels, out_channels, sample_size;
    int n_blocks; /* len(block_out_channels) == len(down_block_types) */
    int block_out_channels[UNET_MAX_BLOCKS];
    int layers_per_block[UNET_MAX_BLOCKS]; /* resnets per down block; up blocks have one more */
    int cross_attention_dim;
    int norm_num_groups;
    float norm_eps;
    bool down_has_attn[UNET_MAX_BLOCKS]; /* CrossAttnDownBlock2D vs DownBlock2D */
    bool up_has_attn[UNET_MAX_BLOCKS];   /* in up-block order */
    int heads[UNET_MAX_BLOCKS];          /* per down block; see the attention_head_dim quirk */
    int transformer_layers[UNET_MAX_BLOCKS];
    bool use_linear_projection, upcast_attention;
    bool flip_sin_to_cos;
    int freq_shift;
    bool center_input_sample;
    int time_embed_dim;           /* time_embedding_dim, or 4 * block_out_channels[0] */
    float mid_block_scale_factor; /* the mid block's resnets divide their sum by it */
    int downsample_padding;       /* 1: symmetric; 0: diffusers pads right/bottom by one */
    int conv_in_kernel, conv_out_kernel;
    /* SDXL: addition_embed_type "text_time" */
    bool text_time;
    int addition_time_embed_dim, projection_class_embeddings_input_dim;
} unet_config;

typedef struct unet unet;

/* Reads and validates <dir>/config.json (no weights). Unsupported features (other block types,
 * class embeddings, time_cond_proj_dim, attention_type other than "default", ...) give
 * SD_ERR_UNSUPPORTED naming the key. */
sd_status unet_config_read(unet_config *cfg, const char *dir);

/* Config and weights of a UNet folder, held as `policy` says (NULL: the default;
 * core/weights.h). */
sd_status unet_load(unet **out, const char *dir, const weights_policy *policy);
/* The same with a config the caller read (unet_config_read) and may have adjusted: a single-file
 * checkpoint's tensors decide in_channels (a 9-channel inpainting UNet under an SD 1.5 config). */
sd_status unet_load_with_config(unet **out, const unet_config *cfg, const char *dir,
                                const weights_policy *policy);
void unet_free(unet *m);
/* Low-memory mode after denoising: frees the scratch arena and gives back the mapped weight
 * pages (both come back on the next forward; results are unchanged). */
void unet_release(unet *m);
const unet_config *unet_get_config(const unet *m);

/* SDXL's added conditions, per batch item: text_embeds [batch][pooled_dim] and time_ids
 * [batch][n_time_ids] (pooled_dim = projection_class_embeddings_input_dim -
 * n_time_ids * addition_time_embed_dim). NULL for models without addition_embed_type. */
typedef struct {
    const float *text_embeds;
    const float *time_ids;
    int n_time_ids; /* 0 means 6: original size, crop top-left, target size */
} unet_added_cond;

/* x [batch][h][w][in_channels] (NHWC), timestep t (float: schedulers pass fractional ones),
 * context [batch][ctx_len][cross_attention_dim] -> out [batch][h][w][out_channels].
 * h and w must be multiples of 2^(n_blocks - 1). out must not overlap x.
 * Not reentrant: the model's scratch arena serves one forward at a time. */
sd_status unet_forward(unet *m, const float *x, int batch, int h, int w, float t,
                       const float *context, int ctx_len, const unet_added_cond *added, float *out);

/* Scratch use of the last forward: the arena's size (its high-water mark) and how many times it
 * had to grow during that call (0 once a call at the same size has been made). */
void unet_scratch_stats(const unet *m, size_t *bytes, size_t *grew);

#endif
