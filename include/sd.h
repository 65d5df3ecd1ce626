/* sd.h: the engine's public interface, the only header a program using the library includes.
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
 * Errors: every call that can fail returns an sd_status; on failure sd_last_error() holds a
 * one-line message naming the file, tensor, key or argument at fault. The library never prints,
 * never exits and reads no environment variable: what it has to say besides errors goes to the
 * log callback (sd_set_log_callback), and its settings are parameters.
 *
 * Threads:
 * - One sd_generate at a time per pipeline: a second call on a pipeline that is generating returns
 *   SD_ERR_BUSY at once (it neither waits nor races). Other pipelines are independent: any number
 *   of pipelines may load and generate in parallel, each on its own thread.
 * - The queries on a pipeline (family, class, sizes, precision, tokenize, latents preview) may be
 *   called from any thread at any time while it lives; sd_pipeline_stats reads counters that a
 *   running sd_generate updates, so call it between generations; sd_pipeline_free only when no
 *   other call on that pipeline runs. The same holds for an sd_vae.
 * - sd_load_params.threads is the pipeline's: every call that computes (sd_pipeline_load,
 *   sd_generate) runs its parallel parts with that many threads on whatever thread calls it, and
 *   leaves the calling thread's OpenMP setting as it found it.
 * - Process-wide settings (sd_set_log_callback, sd_set_kernel_isa, sd_set_configs_dir) apply
 *   to every pipeline; set them before loading, not while other threads compute.
 * - sd_last_error() is per thread: it reads the message of the calling thread's last failure.
 *
 * Cancellation: the event callback (sd_gen_params.on_event) returns 0 to go on; any other value
 * stops the generation at the next event with SD_ERR_CANCELLED.
 *
 * ABI rules (compatible changes within one SD_VERSION_MAJOR):
 * - sd_load_params, sd_gen_params, sd_vae_params and sd_vae_decode_params begin with struct_size,
 *   which their _init functions set to the size the caller was compiled with. New members are only
 *   ever added at the end; the library reads struct_size bytes and takes the defaults for the
 *   rest, refuses sizes smaller than the first release's (SD_ERR_ARG), and refuses larger ones
 *   whose unknown tail is not all zero (SD_ERR_UNSUPPORTED: the caller set a member this library
 *   does not know). Always initialise them with their _init function.
 * - sd_result ends with `used` (an sd_gen_params): sd_generate writes only as much of it as
 *   the caller's struct_size says, so sd_result grows with sd_gen_params.
 * - sd_event and sd_scheduler_info reach the caller by pointer and may grow at the end; the other
 *   structs (sd_image, sd_tensor, sd_latents, sd_stats) and the enums' existing values are fixed.
 * - Enum values are only added, never renumbered. */
#ifndef SD_H
#define SD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define SD_API __attribute__((visibility("default")))
#else
#define SD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SD_VERSION_MAJOR 0
#define SD_VERSION_MINOR 2
#define SD_VERSION_PATCH 0
#define SD_VERSION "0.2.0"

/* The library's version as "MAJOR.MINOR.PATCH" (the one it was built as, which may differ from the
 * SD_VERSION a program was compiled against). */
SD_API const char *sd_version(void);

/* ---- Errors ---------------------------------------------------------------------------------- */

typedef enum {
    SD_OK = 0,
    SD_ERR_IO,          /* a file is missing, unreadable or unwritable */
    SD_ERR_FORMAT,      /* a file exists but its contents are malformed (JSON, safetensors, PNG) */
    SD_ERR_CONFIG,      /* a config key is missing, of the wrong type or out of range */
    SD_ERR_TENSOR,      /* a tensor is missing or has the wrong shape or dtype */
    SD_ERR_ARG,         /* a caller passed an impossible value (size, steps, option) */
    SD_ERR_UNSUPPORTED, /* valid input that this engine does not implement */
    SD_ERR_NOMEM,
    SD_ERR_CANCELLED,   /* the event callback asked to stop */
    SD_ERR_BUSY,        /* the pipeline is generating on another thread */
} sd_status;

/* A short human name of a status ("I/O error", "out of memory"); static. */
SD_API const char *sd_status_string(sd_status status);

/* The message of the calling thread's last failure (thread-local: another thread's failures do
 * not touch it). Valid until that thread's next failing call. */
SD_API const char *sd_last_error(void);

/* ---- Logging --------------------------------------------------------------------------------- */

typedef enum { SD_LOG_DEBUG = 0, SD_LOG_INFO, SD_LOG_WARN } sd_log_level;

/* Receives one line (no trailing newline) the library has to say besides errors: a fallback it
 * took (bf16 asked, fp32 run), an input it adjusted (a size floored, a prompt truncated), a choice
 * it made (VAE tiles). Called on the thread that made the call, possibly from several threads at
 * once; it must not call back into the library. */
typedef void (*sd_log_fn)(void *user, sd_log_level level, const char *message);

/* Process-wide. NULL (the default) drops every message. */
SD_API void sd_set_log_callback(sd_log_fn fn, void *user);

/* ---- Process-wide settings ------------------------------------------------------------------- */

/* The instruction set level of the kernels for the whole process: "avx512", "avx2" (x86), "neon"
 * (aarch64), "generic", or NULL / "" / "best" for the best this CPU runs (the default). A level
 * above the CPU's, or of another architecture, is lowered to the best it has (logged). Every level computes the same bits; lower ones are for testing and
 * measuring. Unknown names are SD_ERR_ARG. Call it before loading, not while other threads
 * compute. */
SD_API sd_status sd_set_kernel_isa(const char *name);
/* The level in use: "avx512", "avx2", "neon" or "generic". */
SD_API const char *sd_kernel_isa(void);

/* Where single-file checkpoints find their bundled configs (README, "Single-file checkpoints"):
 * the folder holding sd15/, sd21/, sdxl/, ... Looked up, in order: the folder set here (NULL or
 * "" forgets it; gen sets $SD_CONFIGS_DIR's), share/sd/configs beside the installed program or
 * library (<prefix>/bin or <prefix>/lib -> <prefix>/share/sd/configs, so an install stays
 * relocatable), the install path the build recorded, the source tree's configs/. The library
 * reads no environment variable. A per-load sd_load_params.config_dir still comes first. */
SD_API void sd_set_configs_dir(const char *path);
/* The first of those folders that exists (a thread-local buffer, valid until the calling thread's
 * next call), or NULL when none does. */
SD_API const char *sd_configs_dir(void);

/* ---- Images ---------------------------------------------------------------------------------- */

typedef struct {
    int width, height;
    uint8_t *rgb; /* [height][width][3], malloc'd by the library; free with sd_image_free */
} sd_image;

/* Reads a PNG or JPEG (by content) as 8-bit RGB: grey expanded, alpha dropped, 16-bit reduced, the
 * EXIF orientation applied (as diffusers' load_image). *out is empty on failure. */
SD_API sd_status sd_image_read(const char *path, sd_image *out);
/* Writes .png or .jpg/.jpeg (by the path's extension, case-insensitive; others are SD_ERR_ARG)
 * through a temporary file renamed over `path`, so a failure never leaves a half-written file.
 * text: n_text key/value pairs (text[2i], text[2i+1]) stored as PNG text chunks (not in JPEG);
 * quality 1..100 for JPEG. */
SD_API sd_status sd_image_write(const char *path, const sd_image *img, const char *const *text,
                                int n_text, int quality);
/* The largest images the library allocates or reads: a 16-bit side, and Pillow's
 * decompression-bomb limit of pixels. */
#define SD_IMAGE_MAX_SIDE 65535
#define SD_IMAGE_MAX_PIXELS 178956970LL
/* The longest prompt (bytes of UTF-8) the tokenizers and A1111's prompt parser accept; a longer
 * one is refused before any work (its emphasis parsing grows faster than linearly, and 64 KiB is
 * already some 15000 CLIP tokens, 200 of A1111's chunks). */
#define SD_PROMPT_MAX_BYTES 65536

/* A black width x height image (sides 1..SD_IMAGE_MAX_SIDE, at most SD_IMAGE_MAX_PIXELS). */
SD_API sd_status sd_image_alloc(sd_image *img, int width, int height);
/* Frees the pixels and empties *img (an empty image is fine). */
SD_API void sd_image_free(sd_image *img);

/* ---- Latents files --------------------------------------------------------------------------- */

/* Latents as diffusers holds them: NCHW [n][c][h][w] float32. */
typedef struct {
    float *data;
    int n, c, h, w;
} sd_latents;

/* Reads tensor `tensor` (NULL: "latents") of a safetensors file: 4 dimensions, F32/F16/BF16
 * (widened to float32). The error names the tensors the file has when it lacks that one. */
SD_API sd_status sd_latents_read(const char *path, const char *tensor, sd_latents *out);
/* Writes l as tensor "latents" (F32) of a safetensors file, as `gen --save-latents` does. */
SD_API sd_status sd_latents_write(const char *path, const sd_latents *l);
SD_API void sd_latents_free(sd_latents *l);

/* ---- Schedulers ------------------------------------------------------------------------------ */

typedef struct {
    const char *class_name;  /* the diffusers class, e.g. "EulerDiscreteScheduler" */
    const char *aliases;     /* comma-separated short names, e.g. "euler" */
    const char *description; /* one line */
} sd_scheduler_info;

/* The supported scheduler classes: i in [0, sd_scheduler_count()); NULL outside. Static. */
SD_API int sd_scheduler_count(void);
SD_API const sd_scheduler_info *sd_scheduler_get(int i);
/* Whether `name` (a class name or alias) with `overrides_json` (a JSON object of config
 * overrides, or NULL) builds a scheduler: SD_OK, or the error sd_generate would give. */
SD_API sd_status sd_scheduler_check(const char *name, const char *overrides_json);

/* ---- Pipelines ------------------------------------------------------------------------------- */

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
    SD_EVENT_STEP,            /* tensor: the latents after scheduler step `index` (previews:
                               * sd_preview_image, sd_latents_preview) */
    SD_EVENT_DECODE,          /* before the VAE decode (tensor: the final latents) */
    SD_EVENT_POOLED_EMBEDS,   /* tensor: pooled prompt embedding [1][1][dim] (Flux: CLIP's) */
} sd_event_kind;

typedef struct {
    sd_event_kind kind;
    int index, total;  /* model call / step index and count */
    double timestep;   /* for MODEL_INPUT / MODEL_OUTPUT / STEP */
    sd_tensor tensor;
} sd_event;

/* Called during sd_generate on the generating thread (progress bars, tests comparing intermediates). Return 0 to go on;
 * any other value cancels the run at once (no further event, no further model call):
 * sd_generate then returns SD_ERR_CANCELLED, sd_last_error() says where (e.g. "cancelled by the
 * event callback at step 2 of 4"), and the sd_result is all zeros (no images, nothing to free).
 * The pipeline stays usable. */
typedef int (*sd_event_fn)(void *user, const sd_event *ev);

/* How weights are held in memory. STORED keeps each tensor in the dtype of its file (fp16/bf16
 * releases stay 2 bytes a weight, converted while packing); F16/BF16 convert an fp32 release at
 * load; Q8_0 ... Q6_K quantize a 16/32-bit release's Linear weights at load into ggml's blocks
 * (the sensitive ones and everything else held at 16 bits: README, "GGUF files"). */
typedef enum {
    SD_WEIGHTS_STORED = 0, SD_WEIGHTS_F16, SD_WEIGHTS_BF16,
    SD_WEIGHTS_Q8_0, SD_WEIGHTS_Q4_0, SD_WEIGHTS_Q4_K, SD_WEIGHTS_Q5_K, SD_WEIGHTS_Q6_K
} sd_weights_dtype;

/* Arithmetic of the GEMM/conv kernels. FP32 matches diffusers within the fixture tolerances;
 * BF16 (CPUs with AVX512_BF16) rounds operands to bf16 and accumulates in fp32: faster, looser.
 * AUTO picks BF16 where the CPU has it and the documented tolerance holds, else FP32 (never
 * INT8). INT8 runs the denoiser's convolutions and packed Linear layers with int8 weights (per
 * output channel) and int8 activations (per row), int32 sums: a speed option with a looser
 * documented tolerance (README, "int8 compute"); fast with AVX2, fastest with VNNI. */
typedef enum {
    SD_PRECISION_FP32 = 0,
    SD_PRECISION_BF16,
    SD_PRECISION_AUTO,
    SD_PRECISION_INT8
} sd_precision;
/* The denoiser's prediction type (scheduler prediction_type): AUTO leaves it to the model. */
typedef enum { SD_PREDICTION_AUTO = 0, SD_PREDICTION_EPSILON, SD_PREDICTION_V } sd_prediction;

/* One LoRA file (safetensors: kohya-ss / A1111, LoCon, LyCORIS LoHa / LoKr, diffusers / PEFT
 * naming, FLUX.1 in kohya-ss or BFL naming) and its scale (1: as trained; 0: no effect). */
typedef struct {
    const char *path;
    float scale;
} sd_lora;

typedef struct {
    size_t struct_size;             /* set by sd_load_params_init */
    int threads;                    /* threads of every call on this pipeline; 0: all cores */
    sd_weights_dtype weights_dtype; /* default STORED */
    sd_precision precision;         /* default FP32 */
    /* Paging (README, "Memory"): weights kept in their file mappings and paged in per layer,
     * the text encoders' and the denoiser's scratch and pages given back between uses. Since
     * issue 19 it is the default of every family where it costs under 2% of a run; low_memory
     * forces it on for every family, keep_resident (the last member) off. */
    bool low_memory;
    /* Single-file checkpoints (sd_pipeline_load given a .safetensors file in the original LDM
     * layout): a diffusers folder whose configs and tokenizers are used instead of the bundled
     * ones (its weights only for components the file lacks), as from_single_file(config=...). */
    const char *config_dir;
    /* What the denoiser predicts, where the file cannot say (SD 2.x: v picks the 768 model's
     * config, epsilon the 512 base's); set, it also overrides a folder's scheduler config. */
    sd_prediction prediction; /* default AUTO */
    /* LoRAs merged into the weights at load (README, "LoRA"), n_loras of them; the array and its
     * paths are read during sd_pipeline_load only. */
    const sd_lora *loras;
    int n_loras;
    /* A FLUX.1 folder's transformer weights from this one .safetensors file instead (Black Forest
     * Labs' flux1-dev.safetensors / flux1-schnell.safetensors as released, with or without
     * ComfyUI's model.diffusion_model. prefix, or a diffusers-layout file); the folder's config
     * says the architecture and the file must match it. NULL: the folder's. A BFL file with
     * sd_pipeline_load's model_dir NULL is the model itself (as given as model_dir). */
    const char *transformer_file;
    /* Components' weights from files of their own instead of the folder's or the checkpoint's
     * (README, "Single-file checkpoints"): a .safetensors file in diffusers' or the original
     * (LDM) key layout, detected from its keys; the component's config stays the folder's (or
     * the bundled one). unet_file is the denoiser: unet/, or transformer/ for SD3 and FLUX
     * (diffusers names only there). NULL: none. Read during sd_pipeline_load only. */
    const char *vae_file;
    const char *unet_file;
    const char *text_encoder_file;
    const char *text_encoder_2_file;
    /* SD3's third text encoder (T5) from a file of its own: transformers' T5EncoderModel names
     * (encoder.block.N..., shared.weight, as t5xxl_fp16.safetensors holds them), bare or under
     * an SD3 checkpoint's text_encoders.t5xxl.transformer. prefix. (FLUX's T5 is its
     * text_encoder_2: text_encoder_2_file takes such a file there.) NULL: none. */
    const char *text_encoder_3_file;
    /* A tiny autoencoder (diffusers' AutoencoderTiny: madebyollin's taesd, taesdxl, taesd3, taef1
     * in diffusers layout, config.json + diffusion_pytorch_model.safetensors) used instead of the
     * model's AutoencoderKL, as a diffusers pipeline given
     * vae=AutoencoderTiny.from_pretrained(dir): it decodes the final latents (divided by ITS scaling_factor, plus ITS shift_factor for SD3
     * and FLUX.1) and encodes init images (its latents are deterministic: no posterior sample is
     * drawn from the generator, as in diffusers), and sd_preview_image decodes step previews with
     * it. The model's VAE is then not loaded at all; vae_tile does not apply. Its latent channels
     * must be the model's. Not with vae_file (unless vae_tiny_previews_only). NULL: none. */
    const char *vae_tiny_dir;
    /* With vae_tiny_dir: the tiny VAE (its decoder only) decodes sd_preview_image's previews and
     * nothing else; the model's VAE is loaded and decodes and encodes as without it (A1111's
     * TAESD live previews; sd-server --vae-tiny). */
    bool vae_tiny_previews_only;
    /* Weights stay resident once read and scratch is kept between uses (no re-paging): what a
     * server generating many images wants, at the cost of the model's full size in memory. The
     * default (false) pages where it is cheap (see low_memory); setting both is an error. */
    bool keep_resident;
} sd_load_params;

/* The defaults, with struct_size = size (use sd_load_params_init, which passes the caller's). */
SD_API void sd_load_params_init_size(sd_load_params *p, size_t size);
static inline void sd_load_params_init(sd_load_params *p) {
    sd_load_params_init_size(p, sizeof *p);
}

/* A1111 prompt tags: removes every "<lora:NAME>" / "<lora:NAME:SCALE>" (scale 1 when absent)
 * from `prompt`, resolving NAME to lora_dir/NAME.safetensors. *text is the prompt without the tags
 * (malloc'd; free()), *loras the tags in order (free with sd_loras_free), ready for
 * sd_load_params.loras. A name not in lora_dir is an error listing the folder's LoRAs; a tag with
 * lora_dir NULL is an error. No tag: *text is a copy of prompt, *n_loras 0. */
SD_API sd_status sd_prompt_extract_loras(const char *prompt, const char *lora_dir, char **text,
                                         sd_lora **loras, int *n_loras);
SD_API void sd_loras_free(sd_lora *loras, int n);

/* Loads the pipeline that model_index.json describes (the family decides the components), or a
 * single .safetensors checkpoint in the original (LDM / A1111) layout: SD 1.x, SD 2.x, SDXL, SD3,
 * detected from its tensors, with the bundled configs (or params->config_dir's), or a FLUX.1
 * transformer file in Black Forest Labs' layout (dev or schnell by its guidance_in tensors),
 * whose VAE and text encoders then come from vae_file, text_encoder_file and
 * text_encoder_2_file (ae, clip_l, t5xxl) or params->config_dir's folder.
 * params NULL: the defaults. */
SD_API sd_status sd_pipeline_load(sd_pipeline **out, const char *model_dir,
                                  const sd_load_params *params);
SD_API void sd_pipeline_free(sd_pipeline *p);
/* Replaces the pipeline's LoRAs (those of sd_load_params, or of the last call) by `loras` (n of
 * them; n 0: none, the plain model), without loading the model again: only the components that
 * the old or the new set adapts are rebuilt, from the model files already open, with the new set
 * merged. The pixels are those of a fresh sd_pipeline_load with `loras`. The array and its paths
 * are read during the call only. SD_ERR_BUSY while an sd_generate runs on the pipeline (and an
 * sd_generate during the call gets SD_ERR_BUSY); on any error the pipeline is unchanged and keeps
 * its previous LoRAs. Needs memory for a second copy of the largest rebuilt component meanwhile.
 * Not to be called while another thread uses the pipeline through calls other than sd_generate
 * (sd_tokenize_json, sd_pipeline_stats, ...): the components it replaces are freed. */
SD_API sd_status sd_pipeline_set_loras(sd_pipeline *p, const sd_lora *loras, int n);
/* For a pipeline loaded from a single file, what was detected, e.g. "SD 1.x, epsilon, 859.5M UNet
 * parameters, fp16, configs from .../sd15"; NULL for a folder. Lives as long as the pipeline. */
SD_API const char *sd_pipeline_checkpoint_info(const sd_pipeline *p);
/* The arithmetic the pipeline's denoiser and VAE run (FP32 or BF16: AUTO resolved at load). When
 * BF16 or AUTO was asked and FP32 is used, *note (when not NULL) says why (e.g. the CPU lacks
 * avx512_bf16; also logged at load); otherwise NULL. */
SD_API sd_precision sd_pipeline_precision(const sd_pipeline *p, const char **note);
/* Whether the pipeline pages its weights per layer (sd_load_params.low_memory, or the family's
 * default when keep_resident is not set): what sd_pipeline_load resolved. */
SD_API bool sd_pipeline_paging(const sd_pipeline *p);

SD_API sd_family sd_pipeline_family(const sd_pipeline *p);
SD_API const char *sd_pipeline_class(const sd_pipeline *p); /* model_index.json's _class_name */
/* Default image size: the denoiser's sample_size * the VAE scale factor. */
SD_API void sd_pipeline_default_size(const sd_pipeline *p, int *width, int *height);
/* The model's scheduler class (scheduler_config.json's _class_name). */
SD_API const char *sd_pipeline_scheduler_class(const sd_pipeline *p);

/* Work done since sd_pipeline_load. Repeated generations with the same texts encode them once
 * (the pipeline caches prompt encodings), which text_encoder_calls shows. */
typedef struct {
    long text_encoder_calls; /* forward passes of every text encoder (CLIP and T5) together */
} sd_stats;

SD_API void sd_pipeline_stats(const sd_pipeline *p, sd_stats *out);

/* Textual-inversion embeddings (README, "Prompts"), for SD 1.x/2.x and SDXL: a .safetensors file
 * in A1111's layout (one [vectors][width] tensor; SDXL: clip_l and clip_g) or diffusers'
 * learned_embeds.safetensors. `trigger` NULL: the file name without extension (a diffusers file
 * named learned_embeds*: its token). Prompts in both syntaxes then use it: plain as diffusers'
 * load_textual_inversion (the trigger becomes added tokens), a1111 as A1111 does. Pickled
 * .pt/.bin files are refused (SD_ERR_UNSUPPORTED, the message says how to convert them); vectors of
 * the wrong width are an SD_ERR_ARG naming the file and the widths. Not while sd_generate runs. */
SD_API sd_status sd_pipeline_add_embedding(sd_pipeline *p, const char *path, const char *trigger);
/* Every .safetensors file of `dir`, each triggered by its file name (A1111's embeddings folder). */
SD_API sd_status sd_pipeline_add_embeddings_dir(sd_pipeline *p, const char *dir);

/* How sd_generate reads prompts (README, "Prompts"). */
typedef enum {
    SD_PROMPT_PLAIN = 0, /* as diffusers: the text as written, cut at the tokenizer's length */
    SD_PROMPT_A1111 = 1, /* AUTOMATIC1111's syntax: (emphasis:1.2), [de-emphasis], long prompts in
                          * 75-token chunks, BREAK, [from:to:when] editing, [a|b] alternation */
} sd_prompt_syntax;

typedef struct {
    size_t struct_size;          /* set by sd_gen_params_init */
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
    /* VAE decode (and image-to-image encode) tiles in latent pixels (8x that in image pixels for
     * SD): 0 decides by size (tiled only when the untiled pass would need more scratch memory than
     * vae_tile_limit_mb), -1 never tiles. */
    int vae_tile;
    int vae_tile_limit_mb;       /* the limit of vae_tile 0 (and what tiles may store), in MB; 0: 2560 */
    sd_event_fn on_event;
    void *user;
    /* How the prompts are read; default SD_PROMPT_PLAIN. A1111's syntax takes no prompt_2 /
     * prompt_3 or their negatives (every encoder reads the prompt, as in A1111). */
    sd_prompt_syntax prompt_syntax;
} sd_gen_params;

/* The defaults, with struct_size = size (use sd_gen_params_init, which passes the caller's). */
SD_API void sd_gen_params_init_size(sd_gen_params *g, size_t size);
static inline void sd_gen_params_init(sd_gen_params *g) {
    sd_gen_params_init_size(g, sizeof *g);
}

typedef struct {
    int n_images;
    sd_image *images;
    /* The final latents before the VAE, NCHW [batch][C][H/8][W/8] as diffusers holds them. */
    float *latents;
    int latent_shape[4];
    int model_calls;
    double seconds;
    const char *scheduler_class; /* the class actually used (static string) */
    /* The settings after defaults (steps, guidance, size...). Must stay the last member: only the
     * caller's g->struct_size bytes of it are written. */
    sd_gen_params used;
} sd_result;

/* Generates; *out is filled on success (free with sd_result_free) and empty on failure.
 * SD_ERR_BUSY when another sd_generate runs on p, SD_ERR_CANCELLED when on_event asked to stop. */
SD_API sd_status sd_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out);
SD_API void sd_result_free(sd_result *r);

/* A preview of step latents without the VAE: the first batch item of `latents` (the engine's NHWC
 * tensor as SD_EVENT_STEP carries it) mapped to RGB by the family's linear latent-to-RGB factors
 * (ComfyUI's and A1111's), one pixel per latent pixel (h x w, 1/8 of the image's sides). *out is
 * allocated (sd_image_free). SD_ERR_ARG when the channel count is not the family's. */
SD_API sd_status sd_latents_preview(const sd_pipeline *p, const sd_tensor *latents, sd_image *out);

/* The picture forming during a run, for SD_EVENT_STEP latents (as sd_latents_preview takes them):
 * with a tiny autoencoder loaded (sd_load_params.vae_tiny_dir), the first batch item decoded
 * through it at full image size (taesd at 512x512: 141 GFLOP, under a second on one core);
 * without one, sd_latents_preview's image (1/8 of the sides). *out is allocated (sd_image_free).
 * Meant for the event callback of the pipeline's own sd_generate (the tiny VAE's scratch is the
 * one the final decode uses): not concurrently with another sd_generate or preview on the same
 * pipeline. */
SD_API sd_status sd_preview_image(sd_pipeline *p, const sd_tensor *latents, sd_image *out);

/* Prints nothing: returns the padded token ids per tokenizer folder of the pipeline as a JSON
 * object text (malloc'd; free()), e.g. {"tokenizer": [49406, ...]}; a T5 tokenizer is padded to
 * the pipeline's default max_sequence_length (Flux: "tokenizer_2", 512). */
SD_API sd_status sd_tokenize_json(const sd_pipeline *p, const char *prompt, char **json);

/* ---- VAE alone ------------------------------------------------------------------------------- */

/* An AutoencoderKL on its own (decode latents files, round-trip images) without the rest of a
 * pipeline. One call at a time per sd_vae; any number of them in parallel. */
typedef struct sd_vae sd_vae;

typedef struct {
    size_t struct_size; /* set by sd_vae_params_init */
    int threads;        /* threads of every call on this VAE; 0: all cores */
    bool decoder_only;  /* skip the encoder's weights (about 40%): sd_vae_encode then fails */
} sd_vae_params;

SD_API void sd_vae_params_init_size(sd_vae_params *p, size_t size);
static inline void sd_vae_params_init(sd_vae_params *p) {
    sd_vae_params_init_size(p, sizeof *p);
}

/* dir: a diffusers model folder (its vae/ is used) or a VAE folder (config.json and weights).
 * params NULL: the defaults. */
SD_API sd_status sd_vae_load(sd_vae **out, const char *dir, const sd_vae_params *params);
SD_API void sd_vae_free(sd_vae *v);
/* Image pixels per latent pixel along each side (8 for SD) and latent channels (4 SD/SDXL, 16
 * SD3/Flux). */
SD_API int sd_vae_scale_factor(const sd_vae *v);
SD_API int sd_vae_latent_channels(const sd_vae *v);

typedef struct {
    size_t struct_size; /* set by sd_vae_decode_params_init */
    /* The latents are the decoder's input already (what vae.decode takes); otherwise they are
     * as a pipeline holds them and are divided by scaling_factor (plus shift_factor) first. */
    bool raw;
    int tile;           /* as sd_gen_params.vae_tile: 0 by size (default), -1 never, N: tiles of N */
    int tile_overlap;   /* blending band between tiles, latent pixels; -1: tile / 4 (default) */
    int tile_limit_mb;  /* as sd_gen_params.vae_tile_limit_mb (default 0: 2560) */
} sd_vae_decode_params;

SD_API void sd_vae_decode_params_init_size(sd_vae_decode_params *p, size_t size);
static inline void sd_vae_decode_params_init(sd_vae_decode_params *p) {
    sd_vae_decode_params_init_size(p, sizeof *p);
}

/* Decodes z (NCHW, z->c the VAE's latent channels) into z->n images that the caller's array
 * `images` receives (each allocated: sd_image_free). params NULL: the defaults. A tile choice
 * made by size is logged (SD_LOG_INFO). */
SD_API sd_status sd_vae_decode(sd_vae *v, const sd_latents *z, const sd_vae_decode_params *params,
                               sd_image *images);
/* Encodes an image (sides multiples of the scale factor) to its posterior mean, NCHW [1][c][h][w]
 * (*out allocated: sd_latents_free): raw as the encoder gives it, or scaled as a pipeline holds
 * latents (times scaling_factor, after subtracting shift_factor). */
SD_API sd_status sd_vae_encode(sd_vae *v, const sd_image *img, bool raw, sd_latents *out);
/* The same with params' raw, tile, tile_overlap and tile_limit_mb, in the senses sd_vae_decode
 * gives them (tile 0: tiled by size, as sd_vae_encode does; a tiled encode equals the untiled one
 * up to float rounding). params NULL: the defaults. */
SD_API sd_status sd_vae_encode_opt(sd_vae *v, const sd_image *img,
                                   const sd_vae_decode_params *params, sd_latents *out);

#ifdef __cplusplus
}
#endif

#endif
