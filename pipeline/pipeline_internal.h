/* What an sd_pipeline holds; shared by the files of pipeline/. */
#ifndef SD_PIPELINE_INTERNAL_H
#define SD_PIPELINE_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdatomic.h>

#include "../dit/flux.h"
#include "../dit/sd3.h"
#include "../core/image.h"
#include "../core/weights.h"
#include "../include/sd.h"
#include "../text_encoder/clip_text.h"
#include "../text_encoder/clip_tokenizer.h"
#include "../text_encoder/t5_encoder.h"
#include "../text_encoder/t5_tokenizer.h"
#include "../unet/unet.h"
#include "../vae/vae.h"
#include "../vae/vae_tiny.h"
#include "model_index.h"

typedef struct sd_family_ops sd_family_ops;
typedef struct pl_generator pl_generator; /* pipeline/generate.h */
typedef struct pl_embedding pl_embedding; /* pipeline/embeddings.h */

#define PL_CACHE_SLOTS 8
#define PL_N_COMPONENT_FILES 5 /* vae, unet (or transformer), text_encoder, text_encoder_2, _3 */
typedef struct {
    char *key;
    float *data;
    size_t n;
    unsigned long stamp; /* last use, for eviction */
} pl_cache_entry;

/* Components a family does not use stay NULL; sd_pipeline_free frees whatever is there. */
struct sd_pipeline {
    model_index mi;
    const sd_family_ops *ops;
    sd_load_params load;                     /* as given to sd_pipeline_load */
    bool paging; /* low-memory mode: load.low_memory, or the family's default unless
                  * load.keep_resident (pipeline.c, resolve_paging) */
    sd_precision precision;                  /* what load.precision resolved to (FP32, BF16, INT8) */
    const char *precision_note;              /* why BF16 / INT8 was not used where asked (or NULL) */
    clip_tokenizer *tokenizer, *tokenizer_2; /* CLIP tokenizers (SDXL/SD3 have two) */
    clip_text *text_encoder, *text_encoder_2;
    t5_tokenizer *t5_tokenizer;              /* SD3 tokenizer_3, Flux tokenizer_2 */
    t5_encoder *t5;                          /* SD3 text_encoder_3, Flux text_encoder_2 */
    unet *unet;
    sd3_model *sd3;
    flux_model *flux;
    vae *vae;           /* NULL when vae_tiny replaces it (load.vae_tiny_dir) */
    vae_tiny *vae_tiny; /* AutoencoderTiny (pipeline/tiny_vae.c), or NULL */
    bool tiny_decodes;  /* vae_tiny replaces vae (false: it only decodes previews) */
    int vae_latent_channels; /* of whichever VAE is loaded */
    lora_set *lora; /* load.loras opened (core/lora.h): merged at load, kept for the layers' sets */
    cJSON *scheduler_config; /* scheduler/scheduler_config.json */
    int vae_scale_factor;    /* 2^(len(vae.block_out_channels) - 1) */
    bool force_zeros_for_empty_prompt; /* SDXL (model_index.json): no negative prompt -> zeros */
    bool requires_aesthetics_score;    /* SDXL refiner (model_index.json): ids end in a score */
    pl_cache_entry cache[PL_CACHE_SLOTS]; /* prompt encodings (pipeline/embed_cache.c) */
    unsigned long cache_clock;
    atomic_bool busy;                     /* an sd_generate is running (pipeline.c) */
    struct ldm_checkpoint_ *ckpt;         /* loaded from a single file (pipeline/single_file.c) */
    char *ckpt_info;                      /* sd_pipeline_checkpoint_info's text */
    struct bfl_flux_file_ *transformer_file; /* load.transformer_file (transformer_file.c) */
    bool flux_file_only;                  /* the model is that file alone: no folder given */
    struct component_file_ *comp_files[PL_N_COMPONENT_FILES]; /* pipeline/component_files.c */
    pl_embedding *embeddings; /* textual inversion (pipeline/embeddings.c) */
    int n_embeddings;
};

/* What a family provides: loading its components (model_index.json is read and the VAE and
 * scheduler config are loaded by the caller), its default image size and __call__ defaults, and
 * the hooks generation runs (pipeline/generate.h). */
struct sd_family_ops {
    const char *pipeline_class; /* model_index.json _class_name */
    sd_family family;
    int default_steps;          /* num_inference_steps default of the diffusers pipeline */
    double default_guidance;    /* guidance_scale default */
    sd_status (*load)(sd_pipeline *p);
    void (*default_size)(const sd_pipeline *p, int *width, int *height);
    const pl_generator *generator;
    double inpaint_guidance;    /* guidance_scale default with a mask, when it differs (0: same) */
};

/* The LoRAs `loras` (n of them) opened for this pipeline and checked against its family and
 * components before any weight is read (UNet names in the original layout mapped by its
 * config); n 0 gives NULL. Errors name the file and the key. pipeline.c. */
sd_status pl_open_loras(const sd_pipeline *p, const sd_lora *loras, int n, lora_set **out);

/* How component `name` holds its weights (given to its loader): weights dtype and low memory from
 * p->load; bf16 packing where p->precision is BF16 for the denoiser ("unet", "transformer") and
 * the "vae", fp32 for the rest (text encoders run once per prompt and are cached: bf16 would cost
 * accuracy for no measurable time); int8 packing where it is INT8 for the "unet" only. Needs
 * p->precision resolved. */
weights_policy pl_load_policy(const sd_pipeline *p, const char *name);

/* Components' weights from files of their own (pipeline/component_files.c), sd_load_params'
 * vae_file, unet_file, text_encoder_file, text_encoder_2_file, text_encoder_3_file.
 * pl_component_files_open, after
 * model_index.json: opens each (its component must be in the pipeline) and detects its layout.
 * pl_component_file_source: the weights source of component `name`, NULL when none was given
 * (pl_single_source asks it first). */
sd_status pl_component_files_open(sd_pipeline *p);
const struct weights_source *pl_component_file_source(const sd_pipeline *p, const char *name);
void pl_component_files_free(sd_pipeline *p);

/* Single-file checkpoints (pipeline/single_file.c). pl_single_open: when `path` is a file, detects
 * what it holds, sets p->ckpt and *config_dir (malloc'd: the folder whose model_index.json and
 * configs describe it); a folder leaves both unset. pl_single_check: after model_index.json and
 * the component files, every weighted component the file lacks must come from a --config folder
 * (an SD3 file without T5 and no --config runs without T5); the checkpoint info then names the
 * components files of their own replace. pl_single_source: the
 * weights source of component `name` (NULL: its folder). pl_apply_prediction: sd_load_params'
 * prediction (or the file's v_pred marker) into the scheduler config. */
sd_status pl_single_open(sd_pipeline *p, const char *path, char **config_dir);
sd_status pl_single_check(sd_pipeline *p);
/* *config_dir (malloc'd) for a `family` file at `path`: sd_load_params.config_dir when given,
 * else the bundled configs/<bundled>; errors name the file and what was detected. */
sd_status pl_single_configs(const sd_pipeline *p, const char *path, const char *family,
                            const char *bundled, char **config_dir);
/* p->ckpt_info gains "; <component> from <file>" for each component file given. */
sd_status pl_single_note_replaced(sd_pipeline *p);
const struct weights_source *pl_single_source(const sd_pipeline *p, const char *name);
sd_status pl_apply_prediction(sd_pipeline *p);
/* p->unet from `dir` (unet_load), but for a single file the tensors decide in_channels over the
 * config's (an inpainting checkpoint's 9 under the SD 1.5 / 2.1 configs, as diffusers'
 * from_single_file reads conv_in). */
sd_status pl_unet_load(sd_pipeline *p, const char *dir, const weights_policy *policy);
void pl_single_free(sd_pipeline *p);

/* load.transformer_file (pipeline/transformer_file.c): opened after model_index.json (a FLUX.1
 * folder's, whose transformer config it must agree with); the source of "transformer" then. */
sd_status pl_transformer_file_open(sd_pipeline *p);
/* Before the component files: load.transformer_file of a non-FLUX transformer pipeline (SD3)
 * becomes load.unet_file, the denoiser's file whichever flag named it; a UNet pipeline's is
 * refused, naming --unet. */
sd_status pl_transformer_file_route(sd_pipeline *p);
/* A FLUX.1 transformer file in BFL's layout given as the model itself (pl_single_open found
 * double_blocks.*; `dev`: guidance_in.* present): it becomes load.transformer_file, the folder is
 * the bundled configs/flux1-dev or flux1-schnell (or config_dir), *config_dir as
 * pl_single_open's. pl_flux_file_check (from pl_single_check): the VAE and both text encoders
 * must come from files of their own (vae_file, text_encoder_file, text_encoder_2_file) or the
 * config_dir folder; one error lists every option missing. */
sd_status pl_flux_file_open(sd_pipeline *p, const char *path, bool dev, char **config_dir);
sd_status pl_flux_file_check(sd_pipeline *p);
const struct weights_source *pl_transformer_file_source(const sd_pipeline *p, const char *name);
void pl_transformer_file_free(sd_pipeline *p);

/* Low-memory mode (p->paging; no-ops otherwise): give back what a component holds
 * between uses: scratch memory and resident weight pages. The text encoders after the prompts are
 * encoded (they fault back in if a later prompt misses the cache), the denoiser after the loop,
 * the VAE after encoding an init image and after decoding. Results are unchanged. */
void pl_release_text_encoders(sd_pipeline *p);
void pl_release_denoiser(sd_pipeline *p);
void pl_release_vae(sd_pipeline *p);

/* The tiny autoencoder in place of the model's VAE (pipeline/tiny_vae.c). pl_tiny_vae_load: from
 * load.vae_tiny_dir (the model's vae component must still be listed), after p->vae when it only
 * decodes previews (load.vae_tiny_previews_only), instead of it otherwise. pl_tiny_vae_decode:
 * final latents (pipeline scale, NHWC, overwritten) -> images [batch][H][W][3] in about [-1, 1].
 * pl_tiny_vae_encode: one image in [-1, 1] -> latents in pipeline scale, no draw from the
 * generator (AutoencoderTiny's encode has no posterior to sample). */
sd_status pl_tiny_vae_load(sd_pipeline *p);
sd_status pl_tiny_vae_decode(sd_pipeline *p, float *latents, int batch, int h, int w, float *image);
sd_status pl_tiny_vae_encode(sd_pipeline *p, const float *image, int width, int height, float *out);

/* Loads component `name` through `load(out, dir)` after checking model_index.json lists it with
 * one of `classes` (NULL-terminated); the error names what was found instead. */
sd_status pl_expect_component(const sd_pipeline *p, const char *name, const char *const *classes);
/* The folder of component `name` (malloc'd; NULL when out of memory). */
char *pl_component_dir(const sd_pipeline *p, const char *name);

/* SD 1.x/2.x (pipeline/generate_sd.c). */
sd_status sd_load_sd(sd_pipeline *p);
void sd_default_size_unet(const sd_pipeline *p, int *width, int *height);

/* SDXL (pipeline/generate_sdxl.c); the default size is sd_default_size_unet's. */
sd_status sd_load_sdxl(sd_pipeline *p);
/* add_time_ids [orig_h, orig_w, crop_top, crop_left, target_h, target_w] for a width x height
 * image, with diffusers' defaults for the settings left at 0. */
sd_status sdxl_add_time_ids(const sd_gen_params *g, int width, int height, float ids[6]);

/* FLUX.1 (pipeline/generate_flux.c). */
sd_status sd_load_flux(sd_pipeline *p);
void sd_default_size_flux(const sd_pipeline *p, int *width, int *height);

/* SD3 / SD3.5 (pipeline/generate_sd3.c). */
sd_status sd_load_sd3(sd_pipeline *p);
void sd_default_size_sd3(const sd_pipeline *p, int *width, int *height);
/* encode_prompt for one prompt whose texts are already resolved (prompt_2/3 defaults applied):
 * embeds [tokens][width] and pooled [pooled_dim] as sd_embed_shape_sd3 gives them (tokens: 77 CLIP
 * + max_seq T5 rows; width: T5's d_model, else joint_attention_dim). For tests and the loop. */
sd_status sd_encode_prompt_sd3(sd_pipeline *p, const char *text, const char *text_2,
                               const char *text_3, int clip_skip, int max_seq, float *embeds,
                               float *pooled);
void sd_embed_shape_sd3(const sd_pipeline *p, int max_seq, int *tokens, int *width, int *pooled);

#endif
