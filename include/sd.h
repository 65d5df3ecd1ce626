/* sd.h: the engine's public interface.
 *
 * Load a diffusers model folder once, then generate as often as needed:
 *
 *     sd_pipeline *p;
 *     if (sd_pipeline_load(&p, "models/sd15", NULL) != SD_OK) { puts(sd_last_error()); ... }
 *     sd_gen_params g;
 *     sd_gen_params_init(&g);
 *     g.prompt = "a lighthouse at dawn";
 *     sd_result r;
 *     if (sd_generate(p, &g, &r) == SD_OK) { ... r.images[0] ... sd_result_free(&r); }
 *     sd_pipeline_free(p);
 *
 * Every call returns an sd_status; on failure sd_last_error() holds a one-line message naming the
 * file, tensor, key or argument at fault. The library never prints and never exits. */
#ifndef SD_H
#define SD_H

#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include "../core/error.h"
#include "../core/image.h"

#define SD_VERSION "0.1.0" /* the Makefile's SD_VERSION_MAJOR.MINOR.PATCH (make check-version) */

/* Marks what libsd.so exports: the library is compiled with -fvisibility=hidden, so everything
 * else (the modules' internals) stays out of its dynamic symbol table. */
#if defined(__GNUC__) || defined(__clang__)
#define SD_API __attribute__((visibility("default")))
#else
#define SD_API
#endif

typedef struct sd_pipeline sd_pipeline;

typedef enum { SD_FAMILY_SD = 0, SD_FAMILY_SDXL, SD_FAMILY_SD3, SD_FAMILY_FLUX } sd_family;

/* A tensor handed to callbacks, in the engine's layout: [batch][h][w][c] for latents (h, w in
 * latent pixels), [batch][tokens][c] for embeddings (h = tokens, w = 1). Valid during the call. */
typedef struct {
    const float *data;
    int batch, h, w, c;
} sd_tensor;

typedef enum {
    SD_EVENT_PROMPT_EMBEDS,   /* tensor: prompt embeddings [B][tokens][dim] (cond); index 0. Models
                               * with a pooled embedding (SDXL) also send it as index 1 of total 2:
                               * [B][1][1][dim] */
    SD_EVENT_NEGATIVE_EMBEDS, /* tensor: negative prompt embeddings (only with CFG); pooled likewise */
    SD_EVENT_MODEL_INPUT,     /* tensor: the denoiser's input at call `index` (uncond half first) */
    SD_EVENT_MODEL_OUTPUT,    /* tensor: the denoiser's raw output at call `index` */
    SD_EVENT_STEP,            /* tensor: the latents after scheduler step `index` */
    SD_EVENT_DECODE,          /* before the VAE decode (tensor: the final latents) */
    SD_EVENT_POOLED_EMBEDS,   /* tensor: pooled prompt embedding [1][1][dim] (Flux: CLIP's) */
} sd_event_kind;

typedef struct {
    sd_event_kind kind;
    int index, total;  /* model call / step index and count */
    double timestep;   /* for MODEL_INPUT / MODEL_OUTPUT / STEP */
    sd_tensor tensor;
} sd_event;

/* Called during sd_generate (progress bars, tests comparing intermediates). */
typedef void (*sd_event_fn)(void *user, const sd_event *ev);

/* How weights are held in memory (issue 8). STORED keeps each tensor in the dtype of its file
 * (fp16/bf16 releases stay 2 bytes a weight, converted while packing); F16/BF16 convert an fp32
 * release at load. */
typedef enum { SD_WEIGHTS_STORED = 0, SD_WEIGHTS_F16, SD_WEIGHTS_BF16 } sd_weights_dtype;

/* Arithmetic of the GEMM/conv kernels. FP32 matches diffusers within the fixture tolerances;
 * BF16 (CPUs with AVX512_BF16) rounds operands to bf16 and accumulates in fp32: faster, looser.
 * AUTO picks BF16 where the CPU has it and the documented tolerance holds, else FP32. */
typedef enum { SD_PRECISION_FP32 = 0, SD_PRECISION_BF16, SD_PRECISION_AUTO } sd_precision;

typedef struct {
    int threads;                    /* 0: every core available */
    sd_weights_dtype weights_dtype; /* --weights-dtype; default STORED */
    sd_precision precision;         /* --precision; default FP32 */
    bool low_memory;                /* --low-memory: text encoders released before denoising,
                                     * the VAE loaded after it, weights paged in per layer */
} sd_load_params;

SD_API void sd_load_params_init(sd_load_params *p);

/* Loads the pipeline that model_index.json describes (SD 1.x/2.x now; the family decides). */
SD_API sd_status sd_pipeline_load(sd_pipeline **out, const char *model_dir,
                                 const sd_load_params *params);
SD_API void sd_pipeline_free(sd_pipeline *p);
/* The arithmetic the pipeline's denoiser and VAE run (FP32 or BF16: AUTO resolved at load). When
 * BF16 or AUTO was asked and FP32 is used, *note (when not NULL) says why (e.g. the CPU lacks
 * avx512_bf16); otherwise NULL. */
SD_API sd_precision sd_pipeline_precision(const sd_pipeline *p, const char **note);

SD_API sd_family sd_pipeline_family(const sd_pipeline *p);
SD_API const char *sd_pipeline_class(const sd_pipeline *p); /* model_index.json's _class_name */
/* Default image size: unet sample_size * VAE scale factor. */
SD_API void sd_pipeline_default_size(const sd_pipeline *p, int *width, int *height);
/* The model's scheduler class (scheduler_config.json's _class_name). */
SD_API const char *sd_pipeline_scheduler_class(const sd_pipeline *p);

/* Work done since sd_pipeline_load. Repeated generations with the same texts encode them once
 * (the pipeline caches prompt encodings), which text_encoder_calls shows. */
typedef struct {
    long text_encoder_calls; /* forward passes of every text encoder (CLIP and T5) together */
} sd_stats;

SD_API void sd_pipeline_stats(const sd_pipeline *p, sd_stats *out);

/* Threads for every parallel kernel (0: all cores). */
SD_API void sd_set_threads(int threads);

typedef struct {
    const char *prompt;
    const char *negative_prompt; /* NULL: none (SD 1.x/2.x then encode "" for CFG, as diffusers;
                                  * SDXL uses zero embeddings when the model sets
                                  * force_zeros_for_empty_prompt, and encodes "" otherwise) */
    /* Text for the second / third text encoder (SDXL, SD3; Flux's T5 takes prompt_2); NULL: the
     * same as prompt / negative_prompt, as diffusers does. */
    const char *prompt_2, *negative_prompt_2, *prompt_3, *negative_prompt_3;
    int width, height;           /* 0: the model's default */
    uint64_t seed;
    int steps;                   /* num_inference_steps; 0: the family's default (50 SD/SDXL, 28 SD3/Flux) */
    double guidance;             /* guidance_scale; NAN: the family's default (7.5 SD, 5 SDXL, 7 SD3,
                                  * 3.5 Flux); <= 1 disables CFG */
    double guidance_rescale;     /* default 0 */
    double eta;                  /* DDIM eta (default 0) */
    int batch;                   /* num_images_per_prompt (default 1) */
    int clip_skip;               /* 0: none */
    const char *scheduler;       /* class name or alias; NULL: the model's */
    /* Scheduler config overrides as a JSON object text, e.g. "{\"use_karras_sigmas\": true}". */
    const char *scheduler_overrides;
    /* SDXL micro-conditioning; 0: diffusers' defaults (original = target = the image size, crop
     * top-left 0,0). */
    int original_width, original_height, crop_top, crop_left, target_width, target_height;
    int max_sequence_length;     /* T5 tokens (SD3, Flux); 0: the pipeline's default */
    /* Image-to-image and inpainting: the start image, and (inpainting) the mask, white = repaint. */
    const sd_image *init_image;
    const sd_image *mask_image;
    double strength;             /* how much of the schedule runs; NAN: 0.8 (img2img), 1 (inpaint);
                                  * SDXL 0.3 and 0.9999, as its diffusers pipelines */
    /* Starting noise instead of drawing it from the seed, as diffusers' `latents=` argument: NCHW
     * [batch][C][H/8][W/8], before scaling by init_noise_sigma. NULL: drawn from `seed`. Flux
     * takes them unpacked (16 channels), not packed as its diffusers argument. */
    const float *latents;
    /* VAE decode tiles in latent pixels (8x that in image pixels for SD): 0 decides by size (tiled
     * only when an untiled decode would need more memory than a threshold), -1 never tiles. */
    int vae_tile;
    sd_event_fn on_event;
    void *user;
} sd_gen_params;

SD_API void sd_gen_params_init(sd_gen_params *g);

typedef struct {
    int n_images;
    sd_image *images;
    /* The final latents before the VAE, NCHW [batch][C][H/8][W/8] as diffusers holds them. */
    float *latents;
    int latent_shape[4];
    int model_calls;
    double seconds;
    const char *scheduler_class; /* the class actually used (static string) */
    sd_gen_params used;          /* the settings after defaults (steps, guidance, size...) */
} sd_result;

SD_API sd_status sd_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out);
SD_API void sd_result_free(sd_result *r);

/* Prints nothing: returns the padded token ids per tokenizer folder of the pipeline as a JSON
 * object text (malloc'd), e.g. {"tokenizer": [49406, ...]}; a T5 tokenizer is padded to the
 * pipeline's default max_sequence_length (Flux: "tokenizer_2", 512). */
SD_API sd_status sd_tokenize_json(const sd_pipeline *p, const char *prompt, char **json);

#endif
