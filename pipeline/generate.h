/* One generation, written once for every family (pipeline/generate.c, pl_generate): resolve the
 * defaults, refuse the settings the family's diffusers pipeline does not take, check the size,
 * encode the prompts, build the scheduler, draw the noise (or prepare an init image and mask),
 * run the denoising loop, decode, and give memory back at the same points for every family
 * (low-memory mode). What differs between families is what each one plugs in: a pl_generator,
 * defined in its own file (generate_sd.c, generate_sdxl.c, generate_sd3.c, generate_flux.c). */
#ifndef SD_GENERATE_H
#define SD_GENERATE_H

#include <stdbool.h>

#include "denoise.h"
#include "img2img.h"

/* Settings that only some families take (pl_generator.options): a family refuses each one it does
 * not take when the caller set it (pipeline/gen_options.c), with one message for all families. */
enum {
    PL_OPT_ETA = 1u << 0,              /* eta */
    PL_OPT_GUIDANCE_RESCALE = 1u << 1, /* guidance_rescale */
    PL_OPT_CLIP_SKIP = 1u << 2,        /* clip_skip */
    PL_OPT_PROMPT_2 = 1u << 3,         /* prompt_2, negative_prompt_2 */
    PL_OPT_PROMPT_3 = 1u << 4,         /* prompt_3, negative_prompt_3 */
    PL_OPT_MICRO_COND = 1u << 5,       /* SDXL original / crop / target sizes */
    PL_OPT_MAX_SEQUENCE = 1u << 6,     /* max_sequence_length (T5 tokens) */
};

/* How a family's pooled prompt embedding (when it has one) is shown to the event callback. */
typedef enum {
    PL_POOLED_SILENT,      /* not sent (SD3) */
    PL_POOLED_AS_INDEX_1,  /* PROMPT/NEGATIVE_EMBEDS index 1 of total 2 (SDXL) */
    PL_POOLED_OWN_EVENT,   /* SD_EVENT_POOLED_EMBEDS (Flux) */
} pl_pooled_event;

typedef struct pl_generator pl_generator;

/* One CLIP encoder as A1111's prompt syntax runs it (pl_a1111_plan). */
typedef struct {
    const clip_tokenizer *tok;
    clip_text *te;
    int index;       /* 0: text_encoder, 1: text_encoder_2 (which embedding vectors it takes) */
    int layer;       /* the hidden state, as clip_text_encode's */
    bool final_norm;
    int pooled_at;   /* where its pooled output (of the first chunk, as A1111) goes; -1: unused */
} pl_clip_use;

/* How a family encodes one side under A1111's prompt syntax (pl_generator.a1111_plan). */
typedef struct {
    int n_clip;          /* 0: the side is zeros (SDXL's force_zeros_for_empty_prompt) */
    pl_clip_use clip[2]; /* their hidden states side by side in this order */
    bool clip_context;   /* CLIP's hidden states are context rows (not Flux: pooled only) */
    bool joint_emphasis; /* one emphasis over the encoders' joined row, padded to r->dim (A1111's
                          * SD3); otherwise each encoder's output on its own (A1111's SDXL) */
    int t5_rows;         /* T5 rows after the CLIP rows: 0 none, -1 as many as the CLIP rows
                          * (A1111's SD3), else that many (Flux's max_sequence_length) */
} pl_a1111_plan;

/* Blocks one run owns: the skeleton takes up to 7 (embeddings, batched context, latents), a
 * family up to 6 (Flux: its denoiser, ids, packing buffers, sigmas). */
enum { PL_RUN_MAX_OWNED = 16 };

/* One generation in progress. The skeleton fills it in order; each hook may read what is filled
 * before it is called. */
typedef struct {
    sd_pipeline *p;
    const pl_generator *gen;
    sd_gen_params g;        /* the caller's settings after the family's defaults */
    int width, height;      /* the image size, resolved and checked */
    int batch, lh, lw, c;   /* the latents [batch][lh][lw][c] */
    int model_channels;     /* the denoiser's input channels: c, or 2c + 1 (inpainting UNets) */
    int max_sequence;       /* T5 tokens after the default (families with PL_OPT_MAX_SEQUENCE) */
    bool cfg;               /* classifier-free guidance: model batch [uncond x B; cond x B] */
    /* Prompt embeddings: one prompt's [tokens][dim] (and [pooled_dim]; 0: none), set by the check
     * hook; then batched for the model as [uncond x B; cond x B] (cond x B without CFG). */
    int tokens, dim, pooled_dim;
    float *context, *pooled;
    sd_scheduler *sched;
    pl_noise noise;
    pl_i2i i2i;             /* image-to-image and inpainting state (zero without an init image) */
    void *owned[PL_RUN_MAX_OWNED]; /* pl_run_alloc's blocks, freed when the run ends */
    struct pl_a1111 *a1111; /* A1111's prompt syntax (pipeline/prompt_a1111.c), or NULL */
} pl_run;

/* What a family plugs into pl_generate. Hooks marked optional may be NULL. */
struct pl_generator {
    const char *name;         /* the family in messages: "FLUX.1" */
    unsigned options;         /* PL_OPT_* its pipelines take; the others are refused when set */
    bool image_to_image;      /* init_image / mask_image (pipeline/img2img.c); otherwise refused */
    double strength_img2img;  /* strength defaults (image_to_image only) */
    double strength_inpaint;
    bool embedded_guidance;   /* guidance is a model input (Flux): never a CFG batch */
    bool scale_initial_noise; /* prepare_latents multiplies the noise by init_noise_sigma */
    int max_sequence_default; /* T5 tokens: default and largest (PL_OPT_MAX_SEQUENCE only) */
    int max_sequence_limit;
    pl_pooled_event pooled_event;
    /* Optional: the denoiser's input channels (default: the VAE's latent channels). */
    int (*model_channels)(const sd_pipeline *p);
    /* Optional: the size rule; may adjust r->width / r->height (Flux floors them) and gives the
     * multiple both must then be. NULL: multiples of 8, as the UNet pipelines' check_inputs. */
    sd_status (*size)(pl_run *r, int *multiple);
    /* Every other check before work starts; sets r->tokens, r->dim, r->pooled_dim. */
    sd_status (*check)(pl_run *r);
    /* Encodes the prompt (negative: the negative prompt) into hidden [tokens][dim] and pooled
     * [pooled_dim], both zeroed beforehand. Called for the negative side only with CFG. */
    sd_status (*encode)(pl_run *r, bool negative, float *hidden, float *pooled);
    /* Optional: set_timesteps' arguments for r->sched (created, timesteps not yet set), or a
     * refusal of the scheduler. NULL: set_timesteps(steps) with none. */
    sd_status (*timesteps)(pl_run *r, sched_timestep_opts *opts);
    /* The model for the loop, built from r (context, pooled, i2i); its memory from pl_run_alloc. */
    sd_status (*denoiser)(pl_run *r, pl_denoiser *out);
    /* Optional: how A1111's prompt syntax encodes one side (pipeline/prompt_a1111.c). NULL: the
     * family does not take the syntax. */
    void (*a1111_plan)(const pl_run *r, bool negative, pl_a1111_plan *out);
};

extern const pl_generator pl_generator_sd, pl_generator_sdxl, pl_generator_sd3, pl_generator_flux;

/* The UNet hooks SD and SDXL share (generate_sd.c): its input channels (9 for inpainting UNets),
 * and the denoiser over r->context, with SDXL's added conditions when `added` is given (copied;
 * its arrays must live until the run ends). */
int pl_unet_model_channels(const sd_pipeline *p);
sd_status pl_unet_denoiser(pl_run *r, const unet_added_cond *added, pl_denoiser *out);

/* The whole generation with p->ops->generator's hooks; what sd_generate does. */
sd_status pl_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out);

/* Zeroed memory that lives until the run ends (NULL after recording SD_ERR_NOMEM). */
void *pl_run_alloc(pl_run *r, size_t bytes);

/* Refuses the settings that r->gen's family does not take (pipeline/gen_options.c). */
sd_status pl_check_options(const pl_run *r);

/* Writes [uncond x batch; cond x batch] (cond x batch alone without cfg), n floats each, into
 * dst: the model batch order of every family (torch.cat([negative, positive]) after repeating
 * each num_images_per_prompt times). */
void pl_batch_rows(float *dst, const float *uncond, const float *cond, size_t n, int batch,
                   bool cfg);

/* Python's `a or b` on optional strings: NULL and "" both fall through. */
const char *pl_or_else(const char *a, const char *b);

#endif
