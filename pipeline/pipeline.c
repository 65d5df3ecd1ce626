/* Loading a pipeline from a diffusers folder (model_index.json picks the family), and the small
 * public entry points. Each family's components and generation live in their own file. */
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/log.h"
#include "../core/threads.h"
#include "../kernels/cpu.h"
#include "api_internal.h"
#include "embed_cache.h"
#include "embeddings.h"
#include "generate.h"
#include "pipeline_internal.h"

static const sd_family_ops families[] = {
    {"StableDiffusionPipeline", SD_FAMILY_SD, 50, 7.5, sd_load_sd, sd_default_size_unet,
     &pl_generator_sd, 0},
    /* Same components; which task runs depends on the call (init image, mask), not the folder. */
    {"StableDiffusionImg2ImgPipeline", SD_FAMILY_SD, 50, 7.5, sd_load_sd, sd_default_size_unet,
     &pl_generator_sd, 0},
    {"StableDiffusionInpaintPipeline", SD_FAMILY_SD, 50, 7.5, sd_load_sd, sd_default_size_unet,
     &pl_generator_sd, 0},
    {"StableDiffusionXLPipeline", SD_FAMILY_SDXL, 50, 5.0, sd_load_sdxl, sd_default_size_unet,
     &pl_generator_sdxl, 7.5},
    /* The refiner ships as StableDiffusionXLImg2ImgPipeline (requires_aesthetics_score). */
    {"StableDiffusionXLImg2ImgPipeline", SD_FAMILY_SDXL, 50, 5.0, sd_load_sdxl,
     sd_default_size_unet, &pl_generator_sdxl, 7.5},
    {"StableDiffusionXLInpaintPipeline", SD_FAMILY_SDXL, 50, 5.0, sd_load_sdxl,
     sd_default_size_unet, &pl_generator_sdxl, 7.5},
    {"FluxPipeline", SD_FAMILY_FLUX, 28, 3.5, sd_load_flux, sd_default_size_flux,
     &pl_generator_flux, 0},
    {"StableDiffusion3Pipeline", SD_FAMILY_SD3, 28, 7.0, sd_load_sd3, sd_default_size_sd3,
     &pl_generator_sd3, 0},
};
enum { N_FAMILIES = sizeof families / sizeof families[0] };

/* Recognised but not (yet) implemented: named in the error so the user knows what they have. */
static const char *const known_unsupported[] = {
    "StableDiffusionUpscalePipeline",
};

char *pl_component_dir(const sd_pipeline *p, const char *name) {
    return model_index_path(&p->mi, name);
}

/* --precision: BF16 only where the avx512_bf16 kernels run (elsewhere the emulation would be far
 * slower than fp32). AUTO takes BF16 there for every family: the recorded runs of all of them
 * (SD 1.x/2.x, SDXL, SD3, FLUX) stay within the bf16 tolerance (README, "bf16 compute";
 * tests/test_pipeline_bf16.c). A family that did not would be kept in fp32 here. */
static void resolve_precision(sd_pipeline *p) {
    p->precision = SD_PRECISION_FP32;
    p->precision_note = NULL;
    if (p->load.precision == SD_PRECISION_FP32) return;
    /* --precision int8: only by name (AUTO never takes it: its tolerance is looser than bf16's),
     * and only for the UNet families, whose convolutions and Linear layers are packed once at
     * load. The SD3 / FLUX transformers multiply unpacked fp32 weights (their only packed layers
     * are the patch convolutions, the first layer, where int8 would cost the most accuracy). On
     * any CPU: the AVX2 kernel is faster than fp32 too; the portable C one is slow. */
    if (p->load.precision == SD_PRECISION_INT8) {
        const sd_family f = p->ops->family;
        if (f == SD_FAMILY_SD3 || f == SD_FAMILY_FLUX) {
            p->precision_note = "int8 reaches only the UNet families (SD 1.x/2.x, SDXL); the SD3 "
                                "and FLUX transformers run fp32";
            sd_log(SD_LOG_WARN, "precision int8: running fp32 (%s)", p->precision_note);
            return;
        }
        if (kern_isa_active() == KERN_ISA_GENERIC) {
            p->precision_note = "no AVX2: the portable int8 kernel runs, slower than fp32";
            sd_log(SD_LOG_WARN, "precision int8: %s", p->precision_note);
        }
        p->precision = SD_PRECISION_INT8;
        return;
    }
    if (!kern_bf16_active()) {
        p->precision_note = kern_bf16_unavailable();
        /* Asked for by name, the fallback is worth a warning; AUTO promised no more than this. */
        sd_log(p->load.precision == SD_PRECISION_BF16 ? SD_LOG_WARN : SD_LOG_INFO,
               "precision %s: running fp32 (%s)",
               p->load.precision == SD_PRECISION_BF16 ? "bf16" : "auto", p->precision_note);
        return;
    }
    p->precision = SD_PRECISION_BF16;
}

/* Issue 19: what --low-memory does is the default wherever it costs under 2% of a run's time,
 * measured per family with full-size random weights (README, "Memory": the table). Paging
 * re-faults each layer's weights from the page cache per call (about 0.12-0.16 CPU s per GB):
 * 1.2-1.6% of an SD 1.5 512x512 step, about 0.5% of an SDXL or SD3-medium 1024x1024 step, about
 * 0.6% of a FLUX.1 one (estimated). A family over the line would return false here. */
static bool family_pages_by_default(sd_family family) {
    switch (family) {
    case SD_FAMILY_SD:
    case SD_FAMILY_SDXL:
    case SD_FAMILY_SD3:
    case SD_FAMILY_FLUX:
        return true;
    }
    return false;
}

static sd_status resolve_paging(sd_pipeline *p) {
    if (p->load.low_memory && p->load.keep_resident)
        return sd_set_error(SD_ERR_ARG, "%s: low_memory and keep_resident are both set (paging "
                            "forced on and off): set one", p->mi.dir);
    p->paging = p->load.low_memory ||
                (!p->load.keep_resident && family_pages_by_default(p->mi.family));
    return SD_OK;
}

bool sd_pipeline_paging(const sd_pipeline *p) { return p->paging; }

sd_precision sd_pipeline_precision(const sd_pipeline *p, const char **note) {
    if (note) *note = p->precision_note;
    return p->precision;
}

sd_status pl_expect_component(const sd_pipeline *p, const char *name, const char *const *classes) {
    const mi_component *c = model_index_get(&p->mi, name);
    if (!c)
        return sd_set_error(SD_ERR_CONFIG, "%s/model_index.json: component '%s' is missing",
                            p->mi.dir, name);
    for (int i = 0; classes[i]; i++)
        if (!strcmp(c->cls, classes[i])) return SD_OK;
    return sd_set_error(SD_ERR_UNSUPPORTED, "%s/model_index.json: component '%s' is a %s, which is "
                        "not supported (expected %s)", p->mi.dir, name, c->cls, classes[0]);
}

/* Opens `file` in the folder of component `name` (model_index.json's) for reading. */
static sd_status open_component_config(const sd_pipeline *p, const char *name, const char *file,
                                       sd_cfg *c) {
    char *dir = pl_component_dir(p, name);
    char *path = dir ? sd_path_join(dir, file) : NULL;
    free(dir);
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const sd_status st = cfg_open(c, path);
    free(path);
    return st;
}

static sd_status load_scheduler_config(sd_pipeline *p) {
    if (!model_index_get(&p->mi, "scheduler"))
        return sd_set_error(SD_ERR_CONFIG, "%s/model_index.json: component 'scheduler' is missing",
                            p->mi.dir);
    sd_cfg c;
    SD_TRY(open_component_config(p, "scheduler", "scheduler_config.json", &c));
    p->scheduler_config = c.root; /* keep the parsed object, drop the reader */
    c.root = NULL;
    cfg_close(&c);
    return SD_OK;
}

static weights_dtype weights_dtype_of(sd_weights_dtype d) {
    switch (d) {
    case SD_WEIGHTS_F16: return WEIGHTS_TO_F16;
    case SD_WEIGHTS_BF16: return WEIGHTS_TO_BF16;
    case SD_WEIGHTS_Q8_0: return WEIGHTS_TO_Q8_0;
    case SD_WEIGHTS_Q4_0: return WEIGHTS_TO_Q4_0;
    case SD_WEIGHTS_Q4_K: return WEIGHTS_TO_Q4_K;
    case SD_WEIGHTS_Q5_K: return WEIGHTS_TO_Q5_K;
    case SD_WEIGHTS_Q6_K: return WEIGHTS_TO_Q6_K;
    default: return WEIGHTS_AS_STORED;
    }
}

weights_policy pl_load_policy(const sd_pipeline *p, const char *name) {
    const bool denoiser_or_vae =
        !strcmp(name, "unet") || !strcmp(name, "transformer") || !strcmp(name, "vae");
    const bool bf16 = p->precision == SD_PRECISION_BF16 && denoiser_or_vae;
    /* int8: the UNet only (the VAE decodes once per image and is where pixel error shows). */
    const bool int8 = p->precision == SD_PRECISION_INT8 && !strcmp(name, "unet");
    return (weights_policy){
        .dtype = weights_dtype_of(p->load.weights_dtype),
        .low_memory = p->paging,
        .precision = bf16   ? WEIGHTS_PRECISION_BF16
                     : int8 ? WEIGHTS_PRECISION_INT8
                            : WEIGHTS_PRECISION_FP32,
        .source = pl_single_source(p, name),
        .lora = p->lora,
        .lora_component = name,
    };
}

void pl_release_text_encoders(sd_pipeline *p) {
    if (!p->paging) return;
    clip_text_release(p->text_encoder);
    clip_text_release(p->text_encoder_2);
    t5_encoder_release(p->t5);
}

void pl_release_denoiser(sd_pipeline *p) {
    if (!p->paging) return;
    unet_release(p->unet);
    sd3_release(p->sd3);
    flux_release(p->flux);
}

void pl_release_vae(sd_pipeline *p) {
    if (!p->paging) return;
    if (p->vae) vae_release(p->vae);
    if (p->vae_tiny) vae_tiny_release(p->vae_tiny);
}

static sd_status load_vae(sd_pipeline *p) {
    static const char *const classes[] = {"AutoencoderKL", NULL};
    SD_TRY(pl_expect_component(p, "vae", classes));
    if (p->load.vae_tiny_dir && !p->load.vae_tiny_previews_only) return pl_tiny_vae_load(p);
    char *dir = pl_component_dir(p, "vae");
    if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const weights_policy policy = pl_load_policy(p, "vae");
    sd_status st = vae_load(&p->vae, dir, &policy);
    free(dir);
    if (st != SD_OK) return st;
    p->vae_scale_factor = vae_scale_factor(p->vae);
    p->vae_latent_channels = vae_get_config(p->vae)->latent_channels;
    return p->load.vae_tiny_dir ? pl_tiny_vae_load(p) : SD_OK; /* previews only */
}

static sd_status pick_family(sd_pipeline *p) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (!strcmp(p->mi.class_name, families[i].pipeline_class)) {
            p->ops = &families[i];
            p->mi.family = families[i].family;
            return SD_OK;
        }
    int known = 0;
    for (size_t i = 0; i < sizeof known_unsupported / sizeof *known_unsupported; i++)
        known |= !strcmp(p->mi.class_name, known_unsupported[i]);
    char list[512] = "";
    for (int i = 0; i < N_FAMILIES; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 families[i].pipeline_class);
    return sd_set_error(SD_ERR_UNSUPPORTED, "%s/model_index.json: pipeline class '%s' is %s; "
                        "supported: %s", p->mi.dir, p->mi.class_name,
                        known ? "not supported yet" : "unknown", list);
}

/* kohya SDXL LoRAs name the UNet in the original layout, numbered by the UNet's config. */
static sd_status map_ldm_unet(const sd_pipeline *p, lora_set *set) {
    sd_cfg c;
    SD_TRY(open_component_config(p, "unet", "config.json", &c));
    const int layers = cfg_int(&c, "layers_per_block", 2);
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(c.root, "up_block_types");
    bool up_attn[16] = {false};
    int n_up = 0;
    for (const cJSON *it = cJSON_IsArray(up) ? up->child : NULL; it && n_up < 16; it = it->next)
        up_attn[n_up++] = cJSON_IsString(it) && strstr(it->valuestring, "CrossAttn");
    const sd_status st = lora_set_map_ldm_unet(set, layers, up_attn, n_up);
    cfg_close(&c);
    return st;
}

sd_status pl_open_loras(const sd_pipeline *p, const sd_lora *loras, int n, lora_set **out) {
    *out = NULL;
    if (n == 0) return SD_OK;
    if (n < 0 || !loras)
        return sd_set_error(SD_ERR_ARG, "LoRAs: %d of them with the array %s", n,
                            loras ? "set" : "NULL");
    const char **paths = calloc((size_t)n, sizeof *paths);
    float *scales = calloc((size_t)n, sizeof *scales);
    sd_status st = paths && scales ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && st == SD_OK; i++) {
        paths[i] = loras[i].path;
        scales[i] = loras[i].scale;
        if (!paths[i] || !isfinite(scales[i]))
            st = sd_set_error(SD_ERR_ARG, "LoRAs: LoRA %d has %s", i,
                              paths[i] ? "a scale that is not a finite number" : "no path");
    }
    lora_set *set = NULL;
    if (st == SD_OK) st = lora_set_open(&set, paths, scales, n);
    free(paths);
    free(scales);
    const char *names[MI_MAX_COMPONENTS + 1] = {NULL};
    for (int i = 0, k = 0; i < p->mi.n; i++)
        if (p->mi.comps[i].present) names[k++] = p->mi.comps[i].name;
    if (st == SD_OK) st = lora_set_check_components(set, names, p->mi.family == SD_FAMILY_FLUX);
    if (st == SD_OK && lora_set_has_ldm_unet(set)) st = map_ldm_unet(p, set);
    if (st == SD_OK) *out = set;
    else lora_set_free(set);
    return st;
}

/* The LoRAs of the load parameters, opened before any weight is read; the caller's array is not
 * kept. */
static sd_status open_loras(sd_pipeline *p) {
    const sd_lora *loras = p->load.loras;
    const int n = p->load.n_loras;
    p->load.loras = NULL;
    p->load.n_loras = 0;
    return pl_open_loras(p, loras, n, &p->lora);
}

static sd_status load(sd_pipeline **out, const char *model_dir, const sd_load_params *params) {
    sd_pipeline *p = calloc(1, sizeof *p);
    if (!p) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    atomic_init(&p->busy, false);
    p->load = *params;
    sd_status st = SD_OK;
    if (params->precision < SD_PRECISION_FP32 || params->precision > SD_PRECISION_INT8)
        st = sd_set_error(SD_ERR_ARG, "%s: unknown precision %d", model_dir, (int)params->precision);
    if (st == SD_OK && (unsigned)params->weights_dtype > SD_WEIGHTS_Q6_K)
        st = sd_set_error(SD_ERR_ARG,
                          "%s: weights dtype %d is not one of stored, f16, bf16, q8_0, q4_0, "
                          "q4_k, q5_k, q6_k",
                          model_dir, (int)params->weights_dtype);
    char *config_dir = NULL; /* a single-file checkpoint: the folder that describes it */
    if (st == SD_OK) st = pl_single_open(p, model_dir, &config_dir);
    if (st == SD_OK) st = model_index_load(&p->mi, config_dir ? config_dir : model_dir);
    free(config_dir);
    if (st == SD_OK) st = pick_family(p);
    if (st == SD_OK) st = resolve_paging(p);
    if (st == SD_OK) st = pl_transformer_file_route(p);
    if (st == SD_OK) st = pl_component_files_open(p);
    if (st == SD_OK) st = pl_single_check(p);
    if (st == SD_OK) st = pl_transformer_file_open(p);
    if (st == SD_OK) resolve_precision(p);
    if (st == SD_OK) st = load_scheduler_config(p);
    if (st == SD_OK) st = pl_apply_prediction(p);
    if (st == SD_OK) st = open_loras(p);
    if (st == SD_OK) st = load_vae(p);
    if (st == SD_OK) st = p->ops->load(p);
    if (st == SD_OK) st = lora_set_check(p->lora);
    if (st == SD_OK) lora_set_release(p->lora); /* merged: its pages are not needed resident */
    if (st != SD_OK) {
        sd_pipeline_free(p);
        return st;
    }
    *out = p;
    return SD_OK;
}

sd_status sd_pipeline_load(sd_pipeline **out, const char *model_dir, const sd_load_params *params) {
    *out = NULL;
    sd_load_params lp;
    sd_load_params_init(&lp);
    if (params)
        SD_TRY(api_copy_params(&lp, sizeof lp, params, SD_LOAD_PARAMS_FIRST_SIZE, "sd_load_params"));
    const int threads = sd_threads_begin(lp.threads);
    const sd_status st = load(out, model_dir, &lp);
    sd_threads_end(threads);
    return st;
}

void sd_pipeline_free(sd_pipeline *p) {
    if (!p) return;
    if (p->tokenizer) clip_tokenizer_free(p->tokenizer);
    if (p->tokenizer_2) clip_tokenizer_free(p->tokenizer_2);
    if (p->text_encoder) clip_text_free(p->text_encoder);
    if (p->text_encoder_2) clip_text_free(p->text_encoder_2);
    if (p->t5_tokenizer) t5_tokenizer_free(p->t5_tokenizer);
    if (p->t5) t5_encoder_free(p->t5);
    if (p->unet) unet_free(p->unet);
    if (p->sd3) sd3_free(p->sd3);
    if (p->flux) flux_free(p->flux);
    if (p->vae) vae_free(p->vae);
    vae_tiny_free(p->vae_tiny);
    lora_set_free(p->lora);
    cJSON_Delete(p->scheduler_config);
    pl_cache_clear(p);
    pl_embeddings_free(p);
    model_index_free(&p->mi);
    pl_single_free(p);
    pl_transformer_file_free(p);
    pl_component_files_free(p);
    free(p);
}

sd_family sd_pipeline_family(const sd_pipeline *p) { return p->mi.family; }
const char *sd_pipeline_class(const sd_pipeline *p) { return p->mi.class_name; }

void sd_pipeline_default_size(const sd_pipeline *p, int *width, int *height) {
    p->ops->default_size(p, width, height);
}

const char *sd_pipeline_scheduler_class(const sd_pipeline *p) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p->scheduler_config, "_class_name");
    return cJSON_IsString(c) ? c->valuestring : "?";
}

void sd_result_free(sd_result *r) {
    for (int i = 0; i < r->n_images; i++) image_free(&r->images[i]);
    free(r->images);
    free(r->latents);
    memset(r, 0, sizeof *r);
}

static sd_status generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    return pl_generate(p, g, out); /* pipeline/generate.c, with the family's hooks */
}

/* The public entry around generate(): the caller's parameters read as far as their struct_size
 * says, one generation at a time per pipeline (a second gets SD_ERR_BUSY rather than racing on the
 * pipeline's arenas and prompt cache), and the pipeline's thread count on the calling thread. */
sd_status sd_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    if (!out) return sd_set_error(SD_ERR_ARG, "sd_generate: the result pointer is NULL");
    memset(out, 0, offsetof(sd_result, used));
    if (!p || !g)
        return sd_set_error(SD_ERR_ARG, "sd_generate: the %s is NULL", p ? "parameters" : "pipeline");
    sd_gen_params local;
    sd_gen_params_init(&local);
    SD_TRY(api_copy_params(&local, sizeof local, g, SD_GEN_PARAMS_FIRST_SIZE, "sd_gen_params"));
    /* out->used is as large as the caller's sd_gen_params, which may be older than ours. */
    const size_t used_size = local.struct_size < sizeof local ? local.struct_size : sizeof local;
    memset(&out->used, 0, used_size);
    if (atomic_exchange(&p->busy, true))
        return sd_set_error(SD_ERR_BUSY, "%s: another sd_generate is running on this pipeline (one "
                            "at a time per pipeline)", p->mi.dir);
    const int threads = sd_threads_begin(p->load.threads);
    sd_result r;
    const sd_status st = generate(p, &local, &r);
    sd_threads_end(threads);
    atomic_store(&p->busy, false);
    memcpy(out, &r, offsetof(sd_result, used) + used_size);
    return st;
}

/* {"tokenizer": [ids...], "tokenizer_2": [...]}: every CLIP and T5 tokenizer the pipeline has,
 * padded as the pipeline pads them. */
sd_status sd_tokenize_json(const sd_pipeline *p, const char *prompt, char **json) {
    *json = NULL;
    cJSON *root = cJSON_CreateObject();
    const struct {
        const char *name;
        const clip_tokenizer *tok;
    } clips[] = {{"tokenizer", p->tokenizer}, {"tokenizer_2", p->tokenizer_2}};
    sd_status st = SD_OK;
    for (size_t k = 0; k < 2 && st == SD_OK; k++) {
        if (!clips[k].tok) continue;
        int n = clip_tokenizer_max_length(clips[k].tok);
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        if (!ids) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) st = clip_tokenize_padded(clips[k].tok, prompt, ids, n);
        if (st == SD_OK) {
            cJSON *arr = cJSON_AddArrayToObject(root, clips[k].name);
            for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        }
        free(ids);
    }
    /* T5 under its folder's name (SD3 tokenizer_3, Flux tokenizer_2), padded to the pipeline's
     * default max_sequence_length */
    const char *t5_name = NULL;
    for (int i = 0; i < p->mi.n && p->t5_tokenizer; i++)
        if (p->mi.comps[i].present && !strncmp(p->mi.comps[i].cls, "T5Tokenizer", 11))
            t5_name = p->mi.comps[i].name;
    if (st == SD_OK && t5_name) {
        const int n = p->mi.family == SD_FAMILY_FLUX ? 512 : 256;
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        st = ids ? t5_tokenize_padded(p->t5_tokenizer, prompt, ids, n, NULL)
                 : sd_set_error(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) {
            cJSON *arr = cJSON_AddArrayToObject(root, t5_name);
            for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        }
        free(ids);
    }
    if (st == SD_OK) *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (st == SD_OK && !*json) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    return st;
}

void sd_pipeline_stats(const sd_pipeline *p, sd_stats *out) {
    memset(out, 0, sizeof *out);
    /* Counted by the encoders themselves, so every family's encode step is covered. */
    if (p->text_encoder) out->text_encoder_calls += clip_text_encode_calls(p->text_encoder);
    if (p->text_encoder_2) out->text_encoder_calls += clip_text_encode_calls(p->text_encoder_2);
    if (p->t5) out->text_encoder_calls += t5_encoder_encode_calls(p->t5);
}
