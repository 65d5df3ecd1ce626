/* Text-to-image for SD 1.x / 2.x, step for step as diffusers' StableDiffusionPipeline.__call__:
 * encode_prompt, set_timesteps, prepare_latents (torch.randn from the seeded CPU generator, times
 * init_noise_sigma), the denoising loop (one batched UNet call with both CFG halves, guidance,
 * optional guidance rescale, scheduler step), then the VAE decode and 8-bit conversion. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/config.h"
#include "../core/layout.h"
#include "../core/rng.h"
#include "../schedulers/scheduler.h"
#include "pipeline_internal.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void emit(const sd_gen_params *g, sd_event_kind kind, int index, int total, double t,
                 const float *data, int batch, int h, int w, int c) {
    if (!g->on_event) return;
    sd_event ev = {kind, index, total, t, {data, batch, h, w, c}};
    g->on_event(g->user, &ev);
}

/* Noise for the scheduler, drawn as diffusers draws it: one torch.randn of the latents' NCHW
 * shape from the pipeline's generator, then laid out NHWC. */
typedef struct {
    sd_rng *rng;
    int batch, c, h, w;
    float *nchw; /* batch*c*h*w scratch */
} noise_source;

static void draw_noise(void *ctx, float *out, size_t n) {
    noise_source *ns = ctx;
    (void)n; /* always the latents' size */
    rng_randn(ns->rng, ns->nchw, (size_t)ns->batch * ns->c * ns->h * ns->w);
    layout_nchw_to_nhwc(ns->nchw, out, ns->batch, ns->c, ns->h, ns->w);
}

static sd_status check_params(const sd_pipeline *p, const sd_gen_params *g, int width, int height) {
    (void)p;
    if (width <= 0 || width % 8)
        return sd_set_error(SD_ERR_ARG, "width %d is not a positive multiple of 8", width);
    if (height <= 0 || height % 8)
        return sd_set_error(SD_ERR_ARG, "height %d is not a positive multiple of 8", height);
    if (width > 8192 || height > 8192)
        return sd_set_error(SD_ERR_ARG, "image size %dx%d: at most 8192 per side", width, height);
    if (g->steps <= 0) return sd_set_error(SD_ERR_ARG, "steps must be at least 1 (got %d)", g->steps);
    if (g->batch <= 0 || g->batch > 64)
        return sd_set_error(SD_ERR_ARG, "batch must be between 1 and 64 (got %d)", g->batch);
    if (!isfinite(g->guidance)) return sd_set_error(SD_ERR_ARG, "guidance must be a number");
    if (!(g->guidance_rescale >= 0 && g->guidance_rescale <= 1))
        return sd_set_error(SD_ERR_ARG, "guidance rescale must be in [0, 1] (got %g)",
                            g->guidance_rescale);
    if (g->clip_skip < 0) return sd_set_error(SD_ERR_ARG, "clip skip must be >= 0");
    if (!(g->eta >= 0)) return sd_set_error(SD_ERR_ARG, "eta must be >= 0 (got %g)", g->eta);
    return SD_OK;
}

/* encode_prompt: [tokens][dim] embeddings of one text. clip_skip applies to the prompt only: diffusers
 * encodes the negative prompt without it (a quirk we keep, to compute what diffusers computes). */
static sd_status encode_text(sd_pipeline *p, const char *text, int clip_skip, float *embeds) {
    const int len = clip_tokenizer_max_length(p->tokenizer);
    const clip_text_config *tc = clip_text_get_config(p->text_encoder);
    if (clip_skip >= tc->num_layers)
        return sd_set_error(SD_ERR_ARG, "clip skip %d: the text encoder has only %d layers",
                            clip_skip, tc->num_layers);
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    if (!ids) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = clip_tokenize_padded(p->tokenizer, text, ids, len);
    if (st == SD_OK)
        st = clip_text_encode(p->text_encoder, ids, 1, len, tc->num_layers - clip_skip, true, embeds,
                              NULL);
    free(ids);
    return st;
}

/* rescale_noise_cfg: mixes the guided prediction with a copy rescaled to the text branch's
 * standard deviation (unbiased, per batch item). */
static void rescale_noise_cfg(float *cfg, const float *text, size_t per_item, int batch, double phi) {
    for (int b = 0; b < batch; b++) {
        float *x = cfg + (size_t)b * per_item;
        const float *t = text + (size_t)b * per_item;
        double sx = 0, sxx = 0, st = 0, stt = 0;
        for (size_t i = 0; i < per_item; i++) sx += x[i], st += t[i];
        double mx = sx / per_item, mt = st / per_item;
        for (size_t i = 0; i < per_item; i++) {
            sxx += (x[i] - mx) * (x[i] - mx);
            stt += (t[i] - mt) * (t[i] - mt);
        }
        float ratio = (float)(sqrt(stt / (per_item - 1)) / sqrt(sxx / (per_item - 1)));
        for (size_t i = 0; i < per_item; i++) {
            float rescaled = x[i] * ratio;
            x[i] = (float)phi * rescaled + (float)(1 - phi) * x[i];
        }
    }
}

typedef struct {
    float *cond, *uncond;        /* [tokens][dim] */
    float *context;              /* [2B or B][tokens][dim] */
    float *latents, *model_in, *model_out, *noise_pred;
    float *decoded;
    noise_source noise;
    sd_scheduler *sched;
    cJSON *overrides;
} sd_work;

static void work_free(sd_work *w) {
    free(w->cond), free(w->uncond), free(w->context);
    free(w->latents), free(w->model_in), free(w->model_out), free(w->noise_pred);
    free(w->decoded), free(w->noise.nchw);
    if (w->sched) sched_free(w->sched);
    cJSON_Delete(w->overrides);
}

static sd_status make_scheduler(sd_pipeline *p, const sd_gen_params *g, sd_work *w) {
    if (g->scheduler_overrides && *g->scheduler_overrides) {
        SD_TRY(sd_json_parse(g->scheduler_overrides, "scheduler options", &w->overrides));
        if (!cJSON_IsObject(w->overrides))
            return sd_set_error(SD_ERR_ARG, "scheduler options must be a JSON object");
    }
    SD_TRY(sched_create(&w->sched, g->scheduler, p->scheduler_config, w->overrides));
    sched_set_eta(w->sched, g->eta);
    return sched_set_timesteps(w->sched, g->steps, NULL);
}

static sd_status denoise(sd_pipeline *p, const sd_gen_params *g, sd_work *w, int cfg, int lh,
                         int lw, int c, int tokens, sd_result *out) {
    const int B = g->batch, calls = sched_len(w->sched);
    const size_t per_item = (size_t)lh * lw * c, n = (size_t)B * per_item;
    for (int i = 0; i < calls; i++) {
        const double t = sched_timestep(w->sched, i);
        sched_scale_model_input(w->sched, i, w->latents, w->model_in, n);
        if (cfg) memcpy(w->model_in + n, w->model_in, n * sizeof(float));
        const int mb = cfg ? 2 * B : B;
        emit(g, SD_EVENT_MODEL_INPUT, i, calls, t, w->model_in, mb, lh, lw, c);
        SD_TRY(unet_forward(p->unet, w->model_in, mb, lh, lw, (float)t, w->context, tokens, NULL,
                            w->model_out));
        out->model_calls++;
        emit(g, SD_EVENT_MODEL_OUTPUT, i, calls, t, w->model_out, mb, lh, lw, c);
        if (cfg) {
            const float *un = w->model_out, *te = w->model_out + n;
            const float gs = (float)g->guidance;
            for (size_t k = 0; k < n; k++) w->noise_pred[k] = un[k] + gs * (te[k] - un[k]);
            if (g->guidance_rescale > 0)
                rescale_noise_cfg(w->noise_pred, te, per_item, B, g->guidance_rescale);
        } else {
            memcpy(w->noise_pred, w->model_out, n * sizeof(float));
        }
        SD_TRY(sched_step(w->sched, i, w->noise_pred, w->latents, n, draw_noise, &w->noise));
        emit(g, SD_EVENT_STEP, i, calls, t, w->latents, B, lh, lw, c);
    }
    return SD_OK;
}

static sd_status decode(sd_pipeline *p, const sd_gen_params *g, sd_work *w, int lh, int lw, int c,
                        sd_result *out) {
    const int B = g->batch, f = p->vae_scale_factor;
    const size_t n = (size_t)B * lh * lw * c;
    emit(g, SD_EVENT_DECODE, 0, 1, 0, w->latents, B, lh, lw, c);
    out->latents = malloc(n * sizeof(float));
    out->images = calloc((size_t)B, sizeof *out->images);
    w->decoded = malloc((size_t)B * lh * f * lw * f * 3 * sizeof(float));
    if (!out->latents || !out->images || !w->decoded) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    out->latent_shape[0] = B, out->latent_shape[1] = c, out->latent_shape[2] = lh, out->latent_shape[3] = lw;
    layout_nhwc_to_nchw(w->latents, out->latents, B, lh, lw, c); /* as diffusers holds them */
    vae_unscale_latents(p->vae, w->latents, w->latents, n);
    SD_TRY(vae_decode(p->vae, w->latents, B, lh, lw, w->decoded));
    const int W = lw * f, H = lh * f;
    for (int b = 0; b < B; b++) {
        sd_image *im = &out->images[b];
        im->width = W, im->height = H;
        im->rgb = malloc((size_t)W * H * 3);
        if (!im->rgb) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        out->n_images = b + 1;
        image_from_float(w->decoded + (size_t)b * W * H * 3, W, H, im->rgb);
    }
    return SD_OK;
}

sd_status sd_generate_sd(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    const double t0 = now_seconds();
    int width = g->width, height = g->height;
    int dw, dh;
    sd_pipeline_default_size(p, &dw, &dh);
    if (!width) width = dw;
    if (!height) height = dh;
    SD_TRY(check_params(p, g, width, height));

    const clip_text_config *tc = clip_text_get_config(p->text_encoder);
    const unet_config *uc = unet_get_config(p->unet);
    const int B = g->batch, tokens = clip_tokenizer_max_length(p->tokenizer), dim = tc->hidden_size;
    const int c = uc->in_channels, lh = height / p->vae_scale_factor, lw = width / p->vae_scale_factor;
    const int cfg = g->guidance > 1.0; /* do_classifier_free_guidance */
    const size_t n = (size_t)B * lh * lw * c, emb = (size_t)tokens * dim;
    if (c != vae_get_config(p->vae)->latent_channels)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a %d-channel (inpainting) UNet needs an init "
                            "image and a mask", p->mi.dir, c);

    sd_work w = {0};
    sd_status st = SD_OK;
    w.cond = malloc(emb * sizeof(float));
    w.uncond = malloc(emb * sizeof(float));
    w.context = malloc((size_t)(cfg ? 2 : 1) * B * emb * sizeof(float));
    w.latents = malloc(n * sizeof(float));
    w.model_in = malloc((cfg ? 2 : 1) * n * sizeof(float));
    w.model_out = malloc((cfg ? 2 : 1) * n * sizeof(float));
    w.noise_pred = malloc(n * sizeof(float));
    w.noise.nchw = malloc(n * sizeof(float));
    if (!w.cond || !w.uncond || !w.context || !w.latents || !w.model_in || !w.model_out ||
        !w.noise_pred || !w.noise.nchw)
        st = sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d batch of %d", width, height, B);

    /* 1. Prompt embeddings; the context batch is [uncond x B, cond x B], as torch.cat([neg, pos]). */
    if (st == SD_OK) st = encode_text(p, g->prompt ? g->prompt : "", g->clip_skip, w.cond);
    if (st == SD_OK && cfg)
        st = encode_text(p, g->negative_prompt ? g->negative_prompt : "", 0, w.uncond);
    if (st == SD_OK) {
        emit(g, SD_EVENT_PROMPT_EMBEDS, 0, 1, 0, w.cond, 1, tokens, 1, dim);
        if (cfg) emit(g, SD_EVENT_NEGATIVE_EMBEDS, 0, 1, 0, w.uncond, 1, tokens, 1, dim);
        float *ctx = w.context;
        if (cfg)
            for (int b = 0; b < B; b++, ctx += emb) memcpy(ctx, w.uncond, emb * sizeof(float));
        for (int b = 0; b < B; b++, ctx += emb) memcpy(ctx, w.cond, emb * sizeof(float));
    }
    /* 2. Timesteps. */
    if (st == SD_OK) st = make_scheduler(p, g, &w);
    /* 3. Initial latents: randn(B, C, H/8, W/8) from the seeded generator, times init_noise_sigma. */
    sd_rng rng;
    rng_seed(&rng, g->seed);
    if (st == SD_OK) {
        w.noise = (noise_source){&rng, B, c, lh, lw, w.noise.nchw};
        if (g->latents) { /* given noise, NCHW as diffusers takes it */
            layout_nchw_to_nhwc(g->latents, w.latents, B, c, lh, lw);
        } else {
            draw_noise(&w.noise, w.latents, n);
        }
        const float sigma = (float)sched_init_noise_sigma(w.sched);
        for (size_t k = 0; k < n; k++) w.latents[k] *= sigma;
    }
    /* 4. Denoising loop, 5. decode. */
    if (st == SD_OK) st = denoise(p, g, &w, cfg, lh, lw, c, tokens, out);
    if (st == SD_OK) st = decode(p, g, &w, lh, lw, c, out);
    if (st == SD_OK) out->scheduler_class = sched_class_name(w.sched);
    work_free(&w);
    if (st != SD_OK) sd_result_free(out);
    out->seconds = now_seconds() - t0;
    return st;
}
