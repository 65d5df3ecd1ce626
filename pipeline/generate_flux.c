/* FLUX.1 text-to-image, step for step as diffusers' FluxPipeline.__call__:
 *   encode_prompt: CLIP's pooled output (CLIPTextModel, no projection) of `prompt`, and T5's last
 *     hidden state of `prompt_2` (default: `prompt`) padded to max_sequence_length; text ids zeros;
 *   prepare_latents: torch.randn((B, 16, 2*(H//16), 2*(W//16))) from the seeded generator, packed
 *     into 2x2 patches, NOT scaled by init_noise_sigma (1 for flow matching anyway);
 *   timesteps: custom sigmas linspace(1, 1/n, n) and mu = calculate_shift(image tokens, ...) from
 *     the scheduler's config;
 *   the loop: one transformer call per step at timestep t / 1000, with the guidance scale as the
 *     guidance embedding when the model has one (FLUX.1-dev) and nothing otherwise (schnell), then
 *     the scheduler step; no classifier-free guidance batch;
 *   decode: unpack, z / scaling_factor + shift_factor, the VAE.
 *
 * Latents stay unpacked NHWC [B][lh][lw][16] in the shared loop (the flow-matching step is element-
 * wise, so the layout does not change a single number); the denoiser packs them around each
 * transformer call. Events therefore carry unpacked latents, as for every family.
 *
 * Not implemented: true_cfg_scale (a second, negative-prompt transformer call per step). diffusers
 * runs it only when true_cfg_scale > 1 (default 1), so with its defaults a negative prompt is
 * ignored, as here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/layout.h"
#include "../core/log.h"
#include "denoise.h"
#include "embed_cache.h"

/* FluxPipeline: default_sample_size 128 (times the VAE scale factor), max_sequence_length 512. */
enum { FLUX_DEFAULT_SAMPLE = 128, FLUX_DEFAULT_T5_LEN = 512, FLUX_MAX_T5_LEN = 512 };

static sd_status load_component(sd_pipeline *p, const char *name, const char *const *classes,
                                sd_status (*load)(sd_pipeline *p, const char *dir)) {
    SD_TRY(pl_expect_component(p, name, classes));
    char *dir = pl_component_dir(p, name);
    if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = load(p, dir);
    free(dir);
    return st;
}

static sd_status load_clip_tok(sd_pipeline *p, const char *dir) {
    return clip_tokenizer_load(&p->tokenizer, dir);
}
static sd_status load_clip(sd_pipeline *p, const char *dir) {
    return clip_text_load_class(&p->text_encoder, dir, "CLIPTextModel");
}
static sd_status load_t5_tok(sd_pipeline *p, const char *dir) {
    return t5_tokenizer_load(&p->t5_tokenizer, dir);
}
static sd_status load_t5(sd_pipeline *p, const char *dir) {
    return t5_encoder_load(&p->t5, dir);
}
static sd_status load_transformer(sd_pipeline *p, const char *dir) {
    return flux_load(&p->flux, dir); /* streams BF16 weights when float32 would not fit */
}

sd_status sd_load_flux(sd_pipeline *p) {
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const te[] = {"CLIPTextModel", NULL};
    static const char *const tok2[] = {"T5Tokenizer", "T5TokenizerFast", NULL};
    static const char *const te2[] = {"T5EncoderModel", NULL};
    static const char *const tr[] = {"FluxTransformer2DModel", NULL};
    SD_TRY(load_component(p, "tokenizer", tok, load_clip_tok));
    SD_TRY(load_component(p, "text_encoder", te, load_clip));
    SD_TRY(load_component(p, "tokenizer_2", tok2, load_t5_tok));
    SD_TRY(load_component(p, "text_encoder_2", te2, load_t5));
    SD_TRY(load_component(p, "transformer", tr, load_transformer));
    /* The shapes the components must agree on, named here rather than deep in a forward pass. */
    const flux_config *fc = flux_get_config(p->flux);
    const int latent_c = vae_get_config(p->vae)->latent_channels;
    const int clip_dim = clip_text_get_config(p->text_encoder)->hidden_size;
    const int t5_dim = t5_encoder_get_config(p->t5)->d_model;
    if (fc->in_channels != 4 * latent_c || fc->out_channels != fc->in_channels)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: transformer in/out_channels %d/%d do not match 2x2 "
                            "patches of the vae's %d latent channels (%d)",
                            p->mi.dir, fc->in_channels, fc->out_channels, latent_c, 4 * latent_c);
    if (fc->pooled_projection_dim != clip_dim)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: transformer pooled_projection_dim %d differs from "
                            "text_encoder hidden_size %d",
                            p->mi.dir, fc->pooled_projection_dim, clip_dim);
    if (fc->joint_attention_dim != t5_dim)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: transformer joint_attention_dim %d differs from "
                            "text_encoder_2 d_model %d",
                            p->mi.dir, fc->joint_attention_dim, t5_dim);
    return SD_OK;
}

/* diffusers: default_sample_size (128) * vae_scale_factor, whatever the transformer's config. */
void sd_default_size_flux(const sd_pipeline *p, int *width, int *height) {
    *width = *height = FLUX_DEFAULT_SAMPLE * p->vae_scale_factor;
}

/* _get_clip_prompt_embeds: the pooled output [dim] of `text` padded to the tokenizer's length. */
static sd_status encode_pooled(sd_pipeline *p, const char *text, float *pooled) {
    const int len = clip_tokenizer_max_length(p->tokenizer);
    const size_t n = (size_t)clip_text_get_config(p->text_encoder)->hidden_size;
    char *key = sd_strfmt("flux|clip-pooled|%s", text);
    if (pl_cache_copy(p, key, pooled, n)) {
        free(key);
        return SD_OK;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    sd_status st = ids && key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) st = clip_tokenize_padded(p->tokenizer, text, ids, len);
    if (st == SD_OK) {
        const int layers = clip_text_get_config(p->text_encoder)->num_layers;
        st = clip_text_encode(p->text_encoder, ids, 1, len, layers, true, NULL, pooled);
    }
    if (st == SD_OK) pl_cache_put(p, key, pooled, n);
    free(ids), free(key);
    return st;
}

/* The scheduler with set_timesteps(sigmas=linspace(1, 1/n, n), mu=calculate_shift(...)), where the
 * shift's parameters come from the scheduler's resolved config (scheduler.config.get(key, default)
 * in diffusers), so overrides of them count. */
static double config_num(const sd_scheduler *s, const char *key, double fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sched_config(s), key);
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

static sd_status make_scheduler(sd_pipeline *p, const sd_gen_params *g, int image_seq_len,
                                sd_scheduler **out) {
    SD_TRY(pl_create_scheduler(p, g, out));
    const int n = g->steps;
    double *sigmas = malloc((size_t)n * sizeof *sigmas);
    if (!sigmas) {
        sched_free(*out);
        *out = NULL;
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    /* np.linspace(1.0, 1 / n, n): start + i * step, the last value set exactly */
    const double stop = 1.0 / n, step = n > 1 ? (stop - 1.0) / (n - 1) : 0;
    for (int i = 0; i < n; i++) sigmas[i] = 1.0 + i * step;
    sigmas[n - 1] = stop;
    sched_timestep_opts opts = {0};
    const cJSON *flow = cJSON_GetObjectItemCaseSensitive(sched_config(*out), "use_flow_sigmas");
    if (!cJSON_IsTrue(flow)) { /* a scheduler making flow sigmas itself gets none */
        opts.sigmas = sigmas;
        opts.n_sigmas = n;
    }
    opts.has_mu = true;
    opts.mu =
        sched_flux_mu(image_seq_len, (int)config_num(*out, "base_image_seq_len", 256),
                      (int)config_num(*out, "max_image_seq_len", 4096),
                      config_num(*out, "base_shift", 0.5), config_num(*out, "max_shift", 1.15));
    sd_status st = sched_set_timesteps(*out, n, &opts);
    free(sigmas);
    if (st != SD_OK) {
        sched_free(*out);
        *out = NULL;
    }
    return st;
}

typedef struct {
    flux_model *model;
    const float *img_ids, *context, *txt_ids, *pooled; /* context [B][txt][dim], pooled [B][dim] */
    int txt_tokens;
    float guidance;
    float *packed_in, *packed_out; /* [B][tokens][64] */
} flux_denoiser;

static sd_status flux_predict(void *ctx, const float *x, int mb, int h, int w, double t,
                              float *out) {
    flux_denoiser *d = ctx;
    const int c = flux_get_config(d->model)->in_channels / 4, tokens = (h / 2) * (w / 2);
    SD_TRY(flux_pack_latents(x, mb, h, w, c, d->packed_in));
    /* timestep.to(float32) / 1000 in float32, as the pipeline passes it */
    const float timestep = (float)t / 1000.0f;
    SD_TRY(flux_forward(d->model, d->packed_in, mb, tokens, d->img_ids, d->context, d->txt_tokens,
                        d->txt_ids, timestep, d->guidance, d->pooled, d->packed_out));
    return flux_unpack_latents(d->packed_out, mb, h, w, c, out);
}

/* Checks diffusers makes or that the shapes need; the size is floored to a multiple of 16 (twice
 * the VAE factor) as diffusers' prepare_latents does, after its warning. */
static sd_status check_flux_params(const sd_pipeline *p, const sd_gen_params *g, int *width,
                                   int *height, int *t5_len) {
    if (g->init_image || g->mask_image)
        return sd_set_error(SD_ERR_UNSUPPORTED, "image-to-image and inpainting are not implemented "
                                                "for Flux (FluxPipeline is text-to-image)");
    const int f = 2 * p->vae_scale_factor;
    if (*width < f || *height < f)
        return sd_set_error(SD_ERR_ARG, "image size %dx%d: Flux needs at least %d pixels a side",
                            *width, *height, f);
    if (*width % f || *height % f)
        sd_log(SD_LOG_WARN, "image size %dx%d floored to %dx%d: Flux takes multiples of %d", *width,
               *height, *width / f * f, *height / f * f, f);
    *width = *width / f * f;
    *height = *height / f * f;
    SD_TRY(pl_check_params(g, *width, *height, f));
    *t5_len = g->max_sequence_length ? g->max_sequence_length : FLUX_DEFAULT_T5_LEN;
    if (*t5_len < 1 || *t5_len > FLUX_MAX_T5_LEN)
        return sd_set_error(SD_ERR_ARG, "max sequence length %d: Flux takes 1 to %d T5 tokens",
                            g->max_sequence_length, FLUX_MAX_T5_LEN);
    return SD_OK;
}

sd_status sd_generate_flux(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    const double t0 = pl_now();
    int width = g->width, height = g->height, t5_len = 0;
    SD_TRY(check_flux_params(p, g, &width, &height, &t5_len));
    const flux_config *fc = flux_get_config(p->flux);
    const int B = g->batch, c = fc->in_channels / 4, f = p->vae_scale_factor;
    const int lh = height / f, lw = width / f, tokens = (lh / 2) * (lw / 2);
    const int t5_dim = fc->joint_attention_dim, clip_dim = fc->pooled_projection_dim;
    const size_t n = (size_t)B * lh * lw * c, emb = (size_t)t5_len * t5_dim;
    const char *prompt = g->prompt ? g->prompt : "";
    /* encode_prompt: prompt_2 = prompt_2 or prompt (so an empty prompt_2 also falls back) */
    const char *prompt_2 = g->prompt_2 && *g->prompt_2 ? g->prompt_2 : prompt;

    float *context = malloc((size_t)B * emb * sizeof(float));
    float *pooled = malloc((size_t)B * clip_dim * sizeof(float));
    float *latents = malloc(n * sizeof(float));
    float *img_ids = malloc((size_t)tokens * 3 * sizeof(float));
    float *txt_ids = calloc((size_t)t5_len * 3, sizeof(float)); /* zeros, as encode_prompt */
    float *packed_in = malloc(n * sizeof(float)), *packed_out = malloc(n * sizeof(float));
    sd_scheduler *sched = NULL;
    pl_noise noise = {0};
    sd_status st =
        context && pooled && latents && img_ids && txt_ids && packed_in && packed_out
            ? SD_OK
            : sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d batch of %d", width, height, B);
    /* 1. Prompt encodings, repeated for each image of the batch. */
    if (st == SD_OK) st = encode_pooled(p, prompt, pooled);
    if (st == SD_OK) st = pl_encode_t5(p, prompt_2, t5_len, context);
    if (st == SD_OK) {
        pl_emit(g, SD_EVENT_PROMPT_EMBEDS, 0, 1, 0, context, 1, t5_len, 1, t5_dim);
        pl_emit(g, SD_EVENT_POOLED_EMBEDS, 0, 1, 0, pooled, 1, 1, 1, clip_dim);
        for (int b = 1; b < B; b++) {
            memcpy(context + b * emb, context, emb * sizeof(float));
            memcpy(pooled + (size_t)b * clip_dim, pooled, (size_t)clip_dim * sizeof(float));
        }
    }
    pl_release_text_encoders(p); /* low memory: not needed again for these prompts */
    /* 2. Latents (one randn of the NCHW shape for the whole batch) and image ids. */
    if (st == SD_OK) st = pl_noise_init(&noise, g->seed, B, c, lh, lw);
    if (st == SD_OK) {
        if (g->latents)
            layout_nchw_to_nhwc(g->latents, latents, B, c, lh, lw);
        else
            pl_noise_draw(&noise, latents, n);
        flux_image_ids(lh / 2, lw / 2, img_ids);
    }
    /* 3. Timesteps, 4. the loop, 5. decode. */
    if (st == SD_OK) st = make_scheduler(p, g, tokens, &sched);
    if (st == SD_OK) {
        flux_denoiser d = {p->flux,
                           img_ids,
                           context,
                           txt_ids,
                           pooled,
                           t5_len,
                           fc->guidance_embeds ? (float)g->guidance : NAN,
                           packed_in,
                           packed_out};
        pl_denoiser den = {&d, flux_predict};
        pl_loop loop = {g, sched, &noise, B, lh, lw, c, false, 0, NULL, NULL};
        st = pl_denoise(&loop, &den, latents, out);
    }
    pl_release_denoiser(p); /* low memory: scratch and pages back before the decode */
    if (st == SD_OK) st = pl_decode(p, g, latents, B, lh, lw, c, out);
    pl_release_vae(p);
    if (st == SD_OK) out->scheduler_class = sched_class_name(sched);
    if (sched) sched_free(sched);
    pl_noise_free(&noise);
    free(context), free(pooled), free(latents), free(img_ids), free(txt_ids);
    free(packed_in), free(packed_out);
    if (st != SD_OK) sd_result_free(out);
    out->seconds = pl_now() - t0;
    return st;
}
