/* One pipeline component's weights from a file of its own (gen --vae FILE, --unet FILE,
 * --text-encoder FILE, ...): a VAE such as vae-ft-mse-840000-ema-pruned.safetensors, a UNet, a
 * clip_l.safetensors. The key layout is read from the keys, never from the name: diffusers /
 * transformers names as the folders store them, or the original (LDM / A1111) layout either bare
 * (encoder.down.0..., input_blocks.1...) or under its checkpoint prefix (first_stage_model.,
 * model.diffusion_model., cond_stage_model.transformer., conditioner.embedders.N.model., ...; a
 * whole checkpoint given as --vae gives its VAE). The weights are then read through diffusers'
 * names (convert/ldm_names.h) by the unchanged loaders, as a single checkpoint's are
 * (ldm_source.h); the component's config stays the folder's. */
#ifndef SD_COMPONENT_FILE_H
#define SD_COMPONENT_FILE_H

#include "../core/weights.h"
#include "ldm_source.h"

/* A layout's renaming of one key (its prefix removed) into diffusers names: ldm_names.h's
 * contract (how many names, 0: not a weight, -1 after recording an error). The layouts and their
 * detection are a table in component_file.c: one row per (component, marker key, prefix). */
typedef int (*component_rename_fn)(const ldm_part *p, const char *key, weights_rename out[3]);

typedef struct component_file_ {
    ldm_part part;       /* first: its base is the weights source (weights_policy.source) */
    char *path;
    char *option;        /* what the caller named it by, for messages ("--vae") */
    component_rename_fn rename;
    bool diffusers;      /* stored under diffusers' names: read as they are */
} component_file;

/* Opens `path` as the weights of diffusers component `component` ("vae", "unet", "transformer",
 * "text_encoder", "text_encoder_2", ...) of class `cls` (model_index.json's; may be NULL). A
 * T5EncoderModel (SD3's text_encoder_3, FLUX's text_encoder_2) takes T5's layouts
 * (transformers' names, bare as t5xxl_fp16.safetensors or under an SD3 checkpoint's
 * text_encoders.t5xxl.transformer.); a CLIPTextModelWithProjection text_encoder (SD3's CLIP-L)
 * gets an identity text_projection where the file has none (ComfyUI's clip_l.safetensors) or
 * comes from a whole SD3 file, as diffusers' from_single_file gives it.
 * Refuses pickled files, a file holding another component (saying which it looks like) and keys
 * of neither layout (naming the first), each message naming the file and `option`. Components
 * without an original layout ("transformer") are taken in diffusers' names only. */
sd_status component_file_open(component_file *c, const char *path, const char *component,
                              const char *cls, const char *option);
void component_file_close(component_file *c);

#endif
