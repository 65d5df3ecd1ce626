/* Test-only: writes a diffusers folder as one original-layout (LDM / A1111) checkpoint, the other
 * way round from the library (convert/), following the tables of diffusers'
 * scripts/convert_diffusers_to_original_stable_diffusion.py and convert_diffusers_to_original_sdxl.py
 * (prefix substitution over the keys, q/k/v concatenated into in_proj for OpenCLIP). Written
 * independently of convert/ so that a shared misreading cannot pass unnoticed. */
#ifndef SD_TEST_LDM_WRITER_H
#define SD_TEST_LDM_WRITER_H

#include "../core/error.h"

typedef enum {
    LDMW_SD1,  /* text_encoder as cond_stage_model.transformer.* */
    LDMW_SD2,  /* text_encoder as OpenCLIP, cond_stage_model.model.* */
    LDMW_SDXL, /* conditioner.embedders.0.transformer.* and embedders.1.model.* */
} ldmw_flavour;

/* Options beyond the layout: extra keys a real file carries (EMA weights, DDPM buffers), and
 * components to leave out. */
typedef struct {
    int with_extras;
    int skip_vae;
} ldmw_options;

sd_status ldmw_write(const char *folder, const char *out_path, ldmw_flavour flavour,
                     const ldmw_options *opt);

/* One component of `folder` ("unet", "vae", "text_encoder", "text_encoder_2") alone in the
 * original layout, as the separate files people download hold them: under its checkpoint prefix
 * (model.diffusion_model., first_stage_model., ...) when `prefixed`, else bare (a VAE's
 * encoder.down.0...; a CLIP text encoder's bare keys are transformers' own). */
sd_status ldmw_write_component(const char *folder, const char *component, const char *out_path,
                               ldmw_flavour flavour, int prefixed);

#endif
