/* A single-file checkpoint in the original (LDM / A1111) layout: what it holds, detected from the
 * tensors present and their shapes (as diffusers' single_file_utils infers the model type), and
 * each component's weights read through diffusers names (ldm_names.h) by the unchanged loaders:
 * pl_load_policy hands ldm_checkpoint_source(c, "unet") to weights_open as weights_policy.source. */
#ifndef SD_LDM_SOURCE_H
#define SD_LDM_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/weights.h"

typedef enum { LDM_SD1, LDM_SD2, LDM_SDXL, LDM_SDXL_REFINER } ldm_family;
typedef enum { LDM_UNET, LDM_VAE, LDM_CLIP, LDM_OPENCLIP } ldm_part_kind;

typedef struct {
    weights_source base;   /* first: weights_policy.source points here */
    const char *path;      /* the checkpoint's (ldm_checkpoint.path) */
    const char *component; /* diffusers folder name: "unet", "vae", "text_encoder", ... */
    char prefix[48];       /* "model.diffusion_model.", "first_stage_model.", ... */
    ldm_part_kind kind;
    int levels;            /* UNet: layers_per_block; VAE: resolution levels */
    bool present;
} ldm_part;

enum { LDM_N_PARTS = 4 };

typedef struct ldm_checkpoint_ {
    char *path;
    ldm_family family;
    ldm_part parts[LDM_N_PARTS]; /* unet, vae, text_encoder, text_encoder_2 */
    int in_channels;             /* 4, or 9 for inpainting UNets */
    int context_dim;             /* the UNet's cross-attention width */
    int64_t unet_params;
    const char *unet_dtype;      /* "fp32", "fp16", "bf16" */
    bool v_pred;                 /* the file carries a `v_pred` marker key */
} ldm_checkpoint;

/* Reads the file's header and decides what it holds. Refuses pickled files (.ckpt, .pt, .pth,
 * .bin) by name, a file whose keys are neither layout (naming the first unexpected key), and one
 * without a UNet. */
sd_status ldm_checkpoint_open(ldm_checkpoint *c, const char *path);
void ldm_checkpoint_close(ldm_checkpoint *c);

/* The weights source of diffusers component `component`, or NULL when the file lacks it. */
const weights_source *ldm_checkpoint_source(const ldm_checkpoint *c, const char *component);

/* "SD 1.x", "SD 2.x", "SDXL", "SDXL refiner" */
const char *ldm_family_name(ldm_family f);

#endif
