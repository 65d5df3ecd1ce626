/* Original (LDM / A1111) tensor names to diffusers / transformers names, one component at a time,
 * following the tables of diffusers' single-file converters (convert_ldm_unet_checkpoint,
 * convert_ldm_vae_checkpoint, convert_open_clip_checkpoint) read the other way round.
 *
 * Each function takes a key with its component prefix already removed
 * ("input_blocks.1.0.in_layers.0.weight", not "model.diffusion_model.input_blocks...") and
 * fills `out` (weights.h's weights_rename) with the diffusers name(s): it returns how many (0: a
 * tensor diffusers ignores too, such as buffers), or -1 after recording an error naming `key`. */
#ifndef SD_LDM_NAMES_H
#define SD_LDM_NAMES_H

#include "../core/weights.h"

/* `layers_per_block`: resnets per down block (the LDM file counts blocks of layers_per_block + 1
 * input_blocks entries, the last being the downsampler). */
int ldm_unet_name(const char *key, int layers_per_block, weights_rename out[3]);
/* `n_blocks`: the VAE's resolution levels (decoder.up.I is diffusers' up_blocks[n_blocks-1-I]). */
int ldm_vae_name(const char *key, int n_blocks, weights_rename out[3]);
/* transformers' CLIPTextModel saved whole (SD 1.x cond_stage_model.transformer, SDXL
 * conditioner.embedders.0.transformer): names are kept, under text_model. */
int ldm_clip_name(const char *key, weights_rename out[3]);
/* OpenCLIP's text tower (SD 2.x cond_stage_model.model, SDXL conditioner.embedders.1.model): fused
 * in_proj split into q/k/v rows; text_projection transposed into a Linear weight where the model
 * has one (`with_projection`: SDXL's CLIPTextModelWithProjection), else left out as diffusers'
 * CLIPTextModel for SD 2.x leaves it. */
int ldm_openclip_name(const char *key, bool with_projection, weights_rename out[3]);

/* SD3 / SD3.5 (convert/sd3_names.c). The MMDiT under model.diffusion_model. to diffusers'
 * SD3Transformer2DModel (`num_layers`: the file's joint blocks; the last one's context stream is
 * pre-only). The CLIP-L under text_encoders.clip_l.transformer.: transformers' names, with
 * text_projection an identity (WEIGHTS_RENAME_MAX names at most). */
int sd3_mmdit_name(const char *key, int num_layers, weights_rename out[WEIGHTS_RENAME_MAX]);
int sd3_clip_l_name(const char *key, weights_rename out[WEIGHTS_RENAME_MAX]);

#endif
