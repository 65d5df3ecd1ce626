#include "denoise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/config.h"
#include "../core/layout.h"

double pl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

sd_status pl_emit(const sd_gen_params *g, sd_event_kind kind, int index, int total, double t,
                  const float *data, int batch, int h, int w, int c) {
    if (!g->on_event) return SD_OK;
    sd_event ev = {kind, index, total, t, {data, batch, h, w, c}};
    if (!g->on_event(g->user, &ev)) return SD_OK;
    switch (kind) {
    case SD_EVENT_MODEL_INPUT:
    case SD_EVENT_MODEL_OUTPUT:
    case SD_EVENT_STEP: /* steps counted from 1, as progress bars show them */
        return sd_set_error(SD_ERR_CANCELLED, "cancelled by the event callback at step %d of %d",
                            index + 1, total);
    case SD_EVENT_DECODE:
        return sd_set_error(SD_ERR_CANCELLED, "cancelled by the event callback before the VAE "
                            "decode");
    default:
        return sd_set_error(SD_ERR_CANCELLED, "cancelled by the event callback while encoding "
                            "the prompts");
    }
}

sd_status pl_noise_init(pl_noise *ns, uint64_t seed, int batch, int c, int h, int w) {
    rng_seed(&ns->rng, seed);
    ns->batch = batch, ns->c = c, ns->h = h, ns->w = w;
    ns->nchw = malloc((size_t)batch * c * h * w * sizeof(float));
    return ns->nchw ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory for the noise");
}

void pl_noise_free(pl_noise *ns) {
    free(ns->nchw);
    ns->nchw = NULL;
}

void pl_noise_draw(void *ctx, float *out, size_t n) {
    pl_noise *ns = ctx;
    (void)n; /* always the latents' size */
    rng_randn(&ns->rng, ns->nchw, (size_t)ns->batch * ns->c * ns->h * ns->w);
    layout_nchw_to_nhwc(ns->nchw, out, ns->batch, ns->c, ns->h, ns->w);
}

sd_status pl_check_params(const sd_gen_params *g, int width, int height, int multiple) {
    if (width <= 0 || width % multiple)
        return sd_set_error(SD_ERR_ARG, "width %d is not a positive multiple of %d", width, multiple);
    if (height <= 0 || height % multiple)
        return sd_set_error(SD_ERR_ARG, "height %d is not a positive multiple of %d", height,
                            multiple);
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

sd_status pl_create_scheduler(const sd_pipeline *p, const sd_gen_params *g, sd_scheduler **out) {
    *out = NULL;
    cJSON *overrides = NULL;
    if (g->scheduler_overrides && *g->scheduler_overrides) {
        SD_TRY(sd_json_parse(g->scheduler_overrides, "scheduler options", &overrides));
        if (!cJSON_IsObject(overrides)) {
            cJSON_Delete(overrides);
            return sd_set_error(SD_ERR_ARG, "scheduler options must be a JSON object");
        }
    }
    sd_status st = sched_create(out, g->scheduler, p->scheduler_config, overrides);
    cJSON_Delete(overrides);
    if (st != SD_OK) return st;
    sched_set_eta(*out, g->eta);
    return SD_OK;
}

static double config_num(const sd_scheduler *s, const char *key, double fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sched_config(s), key);
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

double pl_flow_mu(const sd_scheduler *s, int image_seq_len, double max_shift) {
    return sched_flux_mu(image_seq_len, (int)config_num(s, "base_image_seq_len", 256),
                         (int)config_num(s, "max_image_seq_len", 4096),
                         config_num(s, "base_shift", 0.5), config_num(s, "max_shift", max_shift));
}

void pl_initial_latents(const sd_gen_params *g, pl_noise *ns, const sd_scheduler *s, float *latents) {
    const size_t n = (size_t)ns->batch * ns->c * ns->h * ns->w;
    if (g->latents) layout_nchw_to_nhwc(g->latents, latents, ns->batch, ns->c, ns->h, ns->w);
    else pl_noise_draw(ns, latents, n);
    if (!s) return;
    const float sigma = (float)sched_init_noise_sigma(s);
    for (size_t k = 0; k < n; k++) latents[k] *= sigma;
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

sd_status pl_denoise(const pl_loop *L, const pl_denoiser *d, float *latents, sd_result *out) {
    const sd_gen_params *g = L->g;
    const int B = L->batch, calls = sched_len(L->sched), mb = L->cfg ? 2 * B : B;
    const size_t per_item = (size_t)L->h * L->w * L->c, n = (size_t)B * per_item;
    float *in = malloc((size_t)mb * per_item * sizeof(float));
    float *mo = malloc((size_t)mb * per_item * sizeof(float));
    float *pred = malloc(n * sizeof(float));
    sd_status st = in && mo && pred ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    for (int i = L->first; i < calls && st == SD_OK; i++) {
        const double t = sched_timestep(L->sched, i);
        sched_scale_model_input(L->sched, i, latents, in, n);
        if (L->cfg) memcpy(in + n, in, n * sizeof(float));
        st = pl_emit(g, SD_EVENT_MODEL_INPUT, i, calls, t, in, mb, L->h, L->w, L->c);
        if (st == SD_OK && L->before_call) L->before_call(L->before_ctx, i);
        if (st == SD_OK) st = d->predict(d->ctx, in, mb, L->h, L->w, t, mo);
        if (st != SD_OK) break;
        out->model_calls++;
        st = pl_emit(g, SD_EVENT_MODEL_OUTPUT, i, calls, t, mo, mb, L->h, L->w, L->c);
        if (st != SD_OK) break;
        if (L->cfg) { /* in float32 and in torch's order: uncond + g * (text - uncond) */
            const float *un = mo, *te = mo + n, gs = (float)g->guidance;
            for (size_t k = 0; k < n; k++) pred[k] = un[k] + gs * (te[k] - un[k]);
            if (g->guidance_rescale > 0) rescale_noise_cfg(pred, te, per_item, B, g->guidance_rescale);
        } else {
            memcpy(pred, mo, n * sizeof(float));
        }
        st = sched_step(L->sched, i, pred, latents, n, pl_noise_draw, L->noise);
        if (st == SD_OK && L->after_step) L->after_step(L->after_ctx, i, latents);
        if (st == SD_OK) st = pl_emit(g, SD_EVENT_STEP, i, calls, t, latents, B, L->h, L->w, L->c);
    }
    free(in), free(mo), free(pred);
    return st;
}

sd_status pl_decode(sd_pipeline *p, const sd_gen_params *g, float *latents, int batch, int h,
                    int w, int c, sd_result *out) {
    const int f = p->vae_scale_factor, W = w * f, H = h * f;
    const size_t n = (size_t)batch * h * w * c;
    SD_TRY(pl_emit(g, SD_EVENT_DECODE, 0, 1, 0, latents, batch, h, w, c));
    out->latents = malloc(n * sizeof(float));
    out->images = calloc((size_t)batch, sizeof *out->images);
    float *decoded = malloc((size_t)batch * W * H * 3 * sizeof(float));
    sd_status st = out->latents && out->images && decoded ? SD_OK
                                                          : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) {
        out->latent_shape[0] = batch, out->latent_shape[1] = c;
        out->latent_shape[2] = h, out->latent_shape[3] = w;
        layout_nhwc_to_nchw(latents, out->latents, batch, h, w, c); /* as diffusers holds them */
    }
    if (st == SD_OK && p->tiny_decodes) {
        st = pl_tiny_vae_decode(p, latents, batch, h, w, decoded); /* no tiling: see sd.h */
    } else if (st == SD_OK) {
        vae_unscale_latents(p->vae, latents, latents, n);
        /* --vae-tile N: tiles of N latent pixels; off (-1) decodes whole; auto (0) tiles only
         * when the untiled decode's scratch is over the limit (vae_auto_tile). */
        int tile = g->vae_tile;
        size_t limit = 0;
        if (tile >= 0) st = vae_auto_tile_limit(g->vae_tile_limit_mb, &limit); /* tiles store up to it */
        if (st == SD_OK && tile == 0) tile = vae_auto_tile(p->vae, h, w, limit);
        if (st == SD_OK)
            st = tile > 0 ? vae_decode_tiled(p->vae, latents, batch, h, w, tile, tile / 4, limit, decoded)
                          : vae_decode(p->vae, latents, batch, h, w, decoded);
    }
    for (int b = 0; b < batch && st == SD_OK; b++) {
        sd_image *im = &out->images[b];
        im->width = W, im->height = H;
        im->rgb = malloc((size_t)W * H * 3);
        if (!im->rgb) {
            st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            break;
        }
        out->n_images = b + 1;
        image_from_float(decoded + (size_t)b * W * H * 3, W, H, im->rgb);
    }
    free(decoded);
    return st;
}
