/* A FLUX.1 transformer saved as one file: Black Forest Labs' own layout (flux1-dev.safetensors,
 * flux1-schnell.safetensors: double_blocks.N.img_attn.qkv, single_blocks.N.linear1, ...; with or
 * without ComfyUI's "model.diffusion_model." prefix or a bare "diffusion_model.") or diffusers' (a transformer's
 * diffusion_pytorch_model.safetensors). The file is read through diffusers' names, as
 * diffusers' convert_flux_transformer_checkpoint_to_diffusers maps them, so dit/flux_load.c loads
 * it unchanged: pl_load_policy hands bfl_flux_source(...) to weights_open as
 * weights_policy.source. The architecture (num_layers, guidance_embeds, ...) stays the config's
 * of the folder; the file must agree with it. */
#ifndef SD_BFL_FLUX_H
#define SD_BFL_FLUX_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/safetensors.h"
#include "../core/weights.h"

typedef struct bfl_flux_file_ {
    weights_source base;    /* first: weights_policy.source points here */
    char *path;
    char prefix[32];        /* "", "model.diffusion_model." or "diffusion_model." */
    bool bfl;               /* BFL layout; false: diffusers' names already */
    int64_t dim;            /* hidden size (img_in's rows): splits single_blocks' linear1 */
    int num_layers, num_single_layers; /* the folder config's */
    bool guidance_embeds;
    int64_t params;
    const char *dtype;      /* "fp32", "fp16", "bf16": img_in's */
    int n_double, n_single; /* BFL layout: the blocks the file holds (bfl_flux_check_config) */
    bool has_guidance;      /* guidance_in.* present: FLUX.1 [dev] */
} bfl_flux_file;

/* What a file given alone (-m FILE) holds, from its header: a BFL FLUX.1 transformer
 * (double_blocks.N.*, bare or under a prefix bfl_flux_open takes) and then which model:
 * guidance_in.* present is FLUX.1 [dev], absent [schnell]. A file st_open cannot read is reported
 * as not FLUX, with no error recorded (the checkpoint reader then says what is wrong). */
typedef struct {
    bool flux, dev;
} bfl_flux_probe;
void bfl_flux_probe_file(const char *path, bfl_flux_probe *out);

/* Reads the file's header, decides its layout and checks every key against it and against
 * `config_json` (the folder's transformer/config.json: block counts, and for BFL files the
 * widths and guidance embedding, bfl_flux_check_config): errors name the file and the first
 * unexpected key, or the tensor and config key that disagree. Refuses pickled files by name. */
sd_status bfl_flux_open(bfl_flux_file *f, const char *path, const char *config_json);
void bfl_flux_close(bfl_flux_file *f);

/* Part of bfl_flux_open for BFL-layout files (convert/bfl_flux_check.c): the file's depth
 * (double_blocks / single_blocks counted), hidden size (img_in's rows), input, text and pooled
 * widths (img_in, txt_in, vector_in columns) and guidance embedding must be those of
 * `config_json`; the error names the tensor and the config key, and sets n_double, n_single and
 * has_guidance. */
sd_status bfl_flux_check_config(bfl_flux_file *f, const st_file *sf, const char *config_json);

static inline const weights_source *bfl_flux_source(const bfl_flux_file *f) { return &f->base; }

#endif
