/* The generation skeleton every family runs (see generate.h), in diffusers' __call__ order:
 * defaults and checks, encode_prompt, set_timesteps, prepare_latents (or the init image and mask),
 * the denoising loop, the VAE decode. Memory is given back at the same points for every family in
 * low-memory mode: the text encoders once the prompts are encoded, the VAE once the start latents
 * exist (its encoder has run for an init image), the denoiser after the loop, the VAE after the
 * decode; on failures and cancellation too. */
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "embeddings.h"
#include "prompt_a1111.h"

void *pl_run_alloc(pl_run *r, size_t bytes) {
    for (int i = 0; i < PL_RUN_MAX_OWNED; i++) {
        if (r->owned[i]) continue;
        r->owned[i] = calloc(1, bytes ? bytes : 1);
        if (!r->owned[i])
            sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d batch of %d", r->width,
                         r->height, r->g.batch);
        return r->owned[i];
    }
    sd_set_error(SD_ERR_NOMEM, "pl_run_alloc: more than %d blocks in one run", PL_RUN_MAX_OWNED);
    return NULL;
}

void pl_batch_rows(float *dst, const float *uncond, const float *cond, size_t n, int batch,
                   bool cfg) {
    for (int b = 0; cfg && b < batch; b++, dst += n) memcpy(dst, uncond, n * sizeof *dst);
    for (int b = 0; b < batch; b++, dst += n) memcpy(dst, cond, n * sizeof *dst);
}

const char *pl_or_else(const char *a, const char *b) { return a && *a ? a : b; }

/* The defaults of the family's diffusers __call__ (p->ops), and the strength of the task. */
static void resolve_defaults(pl_run *r, const sd_gen_params *g) {
    const sd_family_ops *ops = r->p->ops;
    r->g = *g;
    if (r->g.steps == 0) r->g.steps = ops->default_steps;
    if (isnan(r->g.guidance))
        r->g.guidance = g->mask_image && ops->inpaint_guidance > 0 ? ops->inpaint_guidance
                                                                   : ops->default_guidance;
    /* An init image decides the size it is not given (pl_i2i_check). */
    int dw, dh;
    ops->default_size(r->p, &dw, &dh);
    if (r->g.width == 0) r->g.width = g->init_image ? 0 : dw;
    if (r->g.height == 0) r->g.height = g->init_image ? 0 : dh;
    if (g->init_image && isnan(g->strength) && r->gen->image_to_image)
        r->g.strength = g->mask_image ? r->gen->strength_inpaint : r->gen->strength_img2img;
}

/* Everything checked before any work: settings, size, the family's own rules. */
static sd_status check_run(pl_run *r) {
    const pl_generator *gen = r->gen;
    sd_pipeline *p = r->p;
    SD_TRY(pl_check_options(r));
    r->c = p->vae_latent_channels;
    r->model_channels = gen->model_channels ? gen->model_channels(p) : r->c;
    r->width = r->g.width, r->height = r->g.height;
    if (gen->image_to_image)
        SD_TRY(pl_i2i_check(p, &r->g, r->model_channels, r->c, &r->width, &r->height));
    int multiple = 8;
    if (gen->size) SD_TRY(gen->size(r, &multiple));
    SD_TRY(pl_check_params(&r->g, r->width, r->height, multiple));
    if (gen->options & PL_OPT_MAX_SEQUENCE) {
        const int n = r->g.max_sequence_length;
        r->max_sequence = n ? n : gen->max_sequence_default;
        if (r->max_sequence < 1 || r->max_sequence > gen->max_sequence_limit)
            return sd_set_error(SD_ERR_ARG, "max_sequence_length %d: %s takes 1 to %d T5 tokens",
                                n, gen->name, gen->max_sequence_limit);
    }
    SD_TRY(gen->check(r));
    r->batch = r->g.batch;
    r->lh = r->height / p->vae_scale_factor, r->lw = r->width / p->vae_scale_factor;
    r->cfg = !gen->embedded_guidance && r->g.guidance > 1.0; /* do_classifier_free_guidance */
    if (r->g.prompt_syntax == SD_PROMPT_A1111) return pl_a1111_prepare(r);
    if (r->g.prompt_syntax != SD_PROMPT_PLAIN)
        return sd_set_error(SD_ERR_ARG, "prompt_syntax %d: 0 (plain) or 1 (a1111)",
                            (int)r->g.prompt_syntax);
    return pl_embeddings_expand_run(r); /* diffusers' maybe_convert_prompt */
}

/* One side's embeddings to the event callback (a non-zero return cancels). */
static sd_status emit_embeds(const pl_run *r, bool negative, const float *hidden,
                             const float *pooled) {
    const sd_event_kind kind = negative ? SD_EVENT_NEGATIVE_EMBEDS : SD_EVENT_PROMPT_EMBEDS;
    const bool second = pooled && r->gen->pooled_event == PL_POOLED_AS_INDEX_1;
    SD_TRY(pl_emit(&r->g, kind, 0, second ? 2 : 1, 0, hidden, 1, r->tokens, 1, r->dim));
    if (second) SD_TRY(pl_emit(&r->g, kind, 1, 2, 0, pooled, 1, 1, 1, r->pooled_dim));
    if (pooled && !negative && r->gen->pooled_event == PL_POOLED_OWN_EVENT)
        SD_TRY(pl_emit(&r->g, SD_EVENT_POOLED_EMBEDS, 0, 1, 0, pooled, 1, 1, 1, r->pooled_dim));
    return SD_OK;
}

/* encode_prompt: the prompt, and the negative prompt with CFG, then the model batch. */
static sd_status encode_prompts(pl_run *r) {
    if (r->a1111) return pl_a1111_encode(r);
    const size_t emb = (size_t)r->tokens * r->dim, pd = (size_t)r->pooled_dim;
    const int sides = r->cfg ? 2 : 1, mb = sides * r->batch;
    float *hidden[2] = {NULL, NULL}, *pooled[2] = {NULL, NULL};
    for (int s = 0; s < sides; s++) {
        hidden[s] = pl_run_alloc(r, emb * sizeof(float));
        if (pd) pooled[s] = pl_run_alloc(r, pd * sizeof(float));
        if (!hidden[s] || (pd && !pooled[s])) return SD_ERR_NOMEM;
    }
    r->context = pl_run_alloc(r, (size_t)mb * emb * sizeof(float));
    if (!r->context) return SD_ERR_NOMEM;
    if (pd && !(r->pooled = pl_run_alloc(r, (size_t)mb * pd * sizeof(float)))) return SD_ERR_NOMEM;
    for (int s = 0; s < sides; s++) {
        SD_TRY(r->gen->encode(r, s == 1, hidden[s], pooled[s]));
        SD_TRY(emit_embeds(r, s == 1, hidden[s], pooled[s]));
    }
    pl_batch_rows(r->context, hidden[1], hidden[0], emb, r->batch, r->cfg);
    if (pd) pl_batch_rows(r->pooled, pooled[1], pooled[0], pd, r->batch, r->cfg);
    return SD_OK;
}

/* The scheduler from the model's config, then set_timesteps with the family's arguments. */
static sd_status make_scheduler(pl_run *r) {
    SD_TRY(pl_create_scheduler(r->p, &r->g, &r->sched));
    sched_timestep_opts opts = {0};
    if (r->gen->timesteps) SD_TRY(r->gen->timesteps(r, &opts));
    return sched_set_timesteps(r->sched, r->g.steps, r->gen->timesteps ? &opts : NULL);
}

/* prepare_latents: noise (or the caller's latents), or the init image's noised latents. */
static sd_status start_latents(pl_run *r, float **latents) {
    const size_t n = (size_t)r->batch * r->lh * r->lw * r->c;
    if (!(*latents = pl_run_alloc(r, n * sizeof(float)))) return SD_ERR_NOMEM;
    SD_TRY(pl_noise_init(&r->noise, r->g.seed, r->batch, r->c, r->lh, r->lw));
    if (r->g.init_image)
        return pl_i2i_prepare(&r->i2i, r->p, &r->g, r->sched, &r->noise, r->width, r->height,
                              r->model_channels, *latents);
    pl_initial_latents(&r->g, &r->noise, r->gen->scale_initial_noise ? r->sched : NULL, *latents);
    return SD_OK;
}

static sd_status denoise(pl_run *r, float *latents, sd_result *out) {
    pl_denoiser d;
    SD_TRY(r->gen->denoiser(r, &d));
    const bool blend = r->i2i.inpaint && r->model_channels == r->c; /* 4-channel inpainting */
    const pl_loop loop = {&r->g, r->sched, &r->noise, r->batch, r->lh, r->lw, r->c, r->cfg,
                          r->i2i.first, blend ? pl_i2i_after_step : NULL, &r->i2i,
                          r->a1111 ? pl_a1111_before_call : NULL, r};
    return pl_denoise(&loop, &d, latents, out);
}

static void run_free(pl_run *r) {
    if (r->sched) sched_free(r->sched);
    pl_noise_free(&r->noise);
    pl_i2i_free(&r->i2i);
    pl_a1111_free(r);
    for (int i = 0; i < PL_RUN_MAX_OWNED; i++) free(r->owned[i]);
}

sd_status pl_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    const double t0 = pl_now();
    memset(out, 0, sizeof *out);
    pl_run r = {.p = p, .gen = p->ops->generator};
    resolve_defaults(&r, g);
    float *latents = NULL;
    sd_status st = check_run(&r);
    if (st == SD_OK) st = encode_prompts(&r);
    pl_release_text_encoders(p); /* low memory: not needed again for these prompts */
    if (st == SD_OK) st = make_scheduler(&r);
    if (st == SD_OK) st = start_latents(&r, &latents);
    pl_release_vae(p); /* low memory: the VAE encoder (init image) is done until the decode */
    if (st == SD_OK) st = denoise(&r, latents, out);
    pl_release_denoiser(p); /* low memory: scratch and pages back before the decode */
    if (st == SD_OK) st = pl_decode(p, &r.g, latents, r.batch, r.lh, r.lw, r.c, out);
    pl_release_vae(p);
    if (st == SD_OK) out->scheduler_class = sched_class_name(r.sched); /* a static string */
    run_free(&r);
    if (st != SD_OK) sd_result_free(out); /* no images, no latents; zeroed */
    if (st == SD_ERR_CANCELLED) return st; /* nothing at all, as sd.h says */
    out->used = r.g;
    /* the caller's texts, not the run's spelled-out copies (pl_embeddings_expand_run) */
    out->used.prompt = g->prompt, out->used.negative_prompt = g->negative_prompt;
    out->used.prompt_2 = g->prompt_2, out->used.negative_prompt_2 = g->negative_prompt_2;
    if (st == SD_OK) { /* the size an init image (or Flux's flooring) decided */
        out->used.width = out->images[0].width;
        out->used.height = out->images[0].height;
    }
    out->seconds = pl_now() - t0;
    return st;
}
