/* A single-file checkpoint in the original (LDM / A1111) layout: what it holds, detected from the
 * tensors present and their shapes (as diffusers' single_file_utils infers the model type), and
 * each component's weights read through diffusers names (ldm_names.h) by the unchanged loaders:
 * pl_load_policy hands ldm_checkpoint_source(c, "unet") to weights_open as weights_policy.source. */
#ifndef SD_LDM_SOURCE_H
#define SD_LDM_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/weights.h"

/* SD3 files (model.diffusion_model.joint_blocks.*) are told apart as diffusers' model type
 * inference does: dual attention (attn2) is SD3.5 medium, qk norm without it SD3.5 large. */
typedef enum {
    LDM_SD1, LDM_SD2, LDM_SDXL, LDM_SDXL_REFINER, LDM_SD3, LDM_SD35_MEDIUM, LDM_SD35_LARGE
} ldm_family;
/* LDM_MMDIT: SD3's transformer; LDM_CLIP_SD3L: SD3's CLIP-L (identity projection); LDM_AS_IS:
 * transformers' names under a prefix (SD3's CLIP-G and T5). */
typedef enum {
    LDM_UNET, LDM_VAE, LDM_CLIP, LDM_OPENCLIP, LDM_MMDIT, LDM_CLIP_SD3L, LDM_AS_IS
} ldm_part_kind;

typedef struct {
    weights_source base;   /* first: weights_policy.source points here */
    const char *path;      /* the checkpoint's (ldm_checkpoint.path) */
    const char *component; /* diffusers folder name: "unet", "vae", "text_encoder", ... */
    char prefix[48];       /* "model.diffusion_model.", "first_stage_model.", ... */
    ldm_part_kind kind;
    int levels;            /* UNet: layers_per_block; VAE: resolution levels; MMDiT: depth */
    bool present;
} ldm_part;

enum { LDM_N_PARTS = 5 };

typedef struct ldm_checkpoint_ {
    char *path;
    ldm_family family;
    ldm_part parts[LDM_N_PARTS]; /* unet (SD3: transformer), vae, text_encoder, text_encoder_2,
                                  * text_encoder_3 */
    int in_channels;             /* 4, or 9 for inpainting UNets; SD3: 16 */
    int context_dim;             /* the UNet's cross-attention width */
    int64_t unet_params;
    const char *unet_dtype;      /* "fp32", "fp16", "bf16" */
    bool v_pred;                 /* the file carries a `v_pred` marker key */
    /* SD3 only, what the tensors decide (diffusers' convert_sd3_transformer_checkpoint_to_
     * diffusers reads them so): joint blocks, the blocks with attn2 (a bit mask), RMS qk norm
     * (ln_q present), pos_embed's side (sqrt of its positions), caption_projection_dim. */
    int sd3_layers;
    uint64_t sd3_dual_mask;
    bool sd3_qk_norm;
    int sd3_pos_embed_max;
    int sd3_caption_dim;
} ldm_checkpoint;

/* Reads the file's header and decides what it holds. Refuses pickled files (.ckpt, .pt, .pth,
 * .bin) by name, a file whose keys are neither layout (naming the first unexpected key), and one
 * without a UNet. */
sd_status ldm_checkpoint_open(ldm_checkpoint *c, const char *path);
void ldm_checkpoint_close(ldm_checkpoint *c);

/* The weights source of diffusers component `component`, or NULL when the file lacks it. */
const weights_source *ldm_checkpoint_source(const ldm_checkpoint *c, const char *component);

/* "SD 1.x", "SD 2.x", "SDXL", "SDXL refiner", "SD3 medium", "SD3.5 medium", "SD3.5 large" */
const char *ldm_family_name(ldm_family f);
static inline bool ldm_family_is_sd3(ldm_family f) { return f >= LDM_SD3; }

/* An SD3 checkpoint against the transformer config.json of the folder describing it: the file's
 * depth, dual attention layers, qk norm, pos_embed size and caption width must be the config's
 * (else the loader would leave tensors unread or build another model); the error names the
 * tensor that decides and the config key. */
sd_status ldm_checkpoint_check_sd3(const ldm_checkpoint *c, const char *config_json);

/* Part of ldm_checkpoint_open (convert/sd3_source.c): an SD3 file's family, shape facts and
 * parts (transformer, VAE, clip_l, clip_g, t5xxl), read from its header; a text_encoders.* key
 * of another encoder is refused by name. */
sd_status ldm_sd3_detect(ldm_checkpoint *c, const st_file *f);
/* Marks part i present as diffusers `component`, its keys under `prefix` renamed by `kind`. */
void ldm_set_part(ldm_checkpoint *c, int i, const char *component, const char *prefix,
                  ldm_part_kind kind);

#endif
