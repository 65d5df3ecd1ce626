/* Text-to-image for Stable Diffusion 3 / 3.5, step for step as diffusers'
 * StableDiffusion3Pipeline.__call__: encode_prompt (two CLIPs with projection, optional T5),
 * FlowMatchEuler timesteps (sigma * 1000), prepare_latents (torch.randn from the seeded CPU
 * generator; flow matching has no init_noise_sigma scaling), the loop with one batched
 * transformer call holding both CFG halves, then (latents / scaling_factor) + shift_factor through
 * the VAE. Skip-layer guidance, IP-Adapter and precomputed embeddings are not exposed. */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "denoise.h"
#include "embed_cache.h"

enum { SD3_DEFAULT_SEQ = 256, SD3_MAX_SEQ = 512 }; /* __call__'s default; check_inputs' bound */

/* Loads one listed component folder through `load`, with the component's weights policy
 * (tokenizers have no weights and ignore it). */
typedef sd_status (*component_loader)(void *out, const char *dir, const weights_policy *policy);

static sd_status load_clip_tok(void *out, const char *dir, const weights_policy *policy) {
    (void)policy;
    return clip_tokenizer_load(out, dir);
}
static sd_status load_t5_tok(void *out, const char *dir, const weights_policy *policy) {
    (void)policy;
    return t5_tokenizer_load(out, dir);
}
static sd_status load_t5(void *out, const char *dir, const weights_policy *policy) {
    return t5_encoder_load(out, dir, policy);
}
static sd_status load_transformer(void *out, const char *dir, const weights_policy *policy) {
    return sd3_load(out, dir, policy);
}
/* diffusers instantiates the class model_index.json names; SD3 takes the projected pooled output
 * (text_embeds), which only the WithProjection model has. */
static sd_status load_clip_proj(void *out, const char *dir, const weights_policy *policy) {
    return clip_text_load_class(out, dir, "CLIPTextModelWithProjection", policy);
}

static sd_status load_component(sd_pipeline *p, const char *name, const char *const *classes,
                                component_loader load, void *out) {
    SD_TRY(pl_expect_component(p, name, classes));
    char *dir = pl_component_dir(p, name);
    if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const weights_policy policy = pl_load_policy(p, name);
    sd_status st = load(out, dir, &policy);
    free(dir);
    return st;
}

sd_status sd_load_sd3(sd_pipeline *p) {
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const te[] = {"CLIPTextModelWithProjection", NULL};
    static const char *const t5tok[] = {"T5TokenizerFast", "T5Tokenizer", NULL};
    static const char *const t5[] = {"T5EncoderModel", NULL};
    static const char *const tr[] = {"SD3Transformer2DModel", NULL};
    SD_TRY(load_component(p, "tokenizer", tok, load_clip_tok, &p->tokenizer));
    SD_TRY(load_component(p, "tokenizer_2", tok, load_clip_tok, &p->tokenizer_2));
    SD_TRY(load_component(p, "text_encoder", te, load_clip_proj, &p->text_encoder));
    SD_TRY(load_component(p, "text_encoder_2", te, load_clip_proj, &p->text_encoder_2));
    /* T5 may be left out ([null, null]): its embeddings are then zeros. A T5 without its
     * tokenizer is a broken folder (diffusers would fail on the first prompt). */
    if (model_index_get(&p->mi, "text_encoder_3")) {
        SD_TRY(load_component(p, "tokenizer_3", t5tok, load_t5_tok, &p->t5_tokenizer));
        SD_TRY(load_component(p, "text_encoder_3", t5, load_t5, &p->t5));
    }
    SD_TRY(load_component(p, "transformer", tr, load_transformer, &p->sd3));

    const sd3_config *tc = sd3_get_config(p->sd3);
    const int lat = vae_get_config(p->vae)->latent_channels;
    if (tc->in_channels != lat || tc->out_channels != lat)
        return sd_set_error(SD_ERR_CONFIG, "%s: transformer in/out_channels %d/%d do not match the "
                            "vae's %d latent channels", p->mi.dir, tc->in_channels,
                            tc->out_channels, lat);
    const int pooled = clip_text_get_config(p->text_encoder)->projection_dim +
                       clip_text_get_config(p->text_encoder_2)->projection_dim;
    if (pooled != tc->pooled_projection_dim)
        return sd_set_error(SD_ERR_CONFIG, "%s: the text encoders' projection_dim add up to %d, "
                            "the transformer's pooled_projection_dim is %d", p->mi.dir, pooled,
                            tc->pooled_projection_dim);
    return SD_OK;
}

/* diffusers: default_sample_size (transformer.config.sample_size) * vae_scale_factor. */
void sd_default_size_sd3(const sd_pipeline *p, int *width, int *height) {
    *width = *height = sd3_get_config(p->sd3)->sample_size * p->vae_scale_factor;
}

void sd_embed_shape_sd3(const sd_pipeline *p, int max_seq, int *tokens, int *width, int *pooled) {
    *tokens = clip_tokenizer_max_length(p->tokenizer) + max_seq;
    /* the T5 output's width decides (the CLIP part is padded to it), else joint_attention_dim */
    *width = p->t5 ? t5_encoder_get_config(p->t5)->d_model : sd3_get_config(p->sd3)->joint_attention_dim;
    *pooled = clip_text_get_config(p->text_encoder)->projection_dim +
              clip_text_get_config(p->text_encoder_2)->projection_dim;
}

/* _get_clip_prompt_embeds for CLIP k (0, 1) and one text: part = [hidden state][len][hidden] then
 * the projected pooled output [projection_dim]. Both tokenizers pad to the FIRST tokenizer's
 * model_max_length (diffusers' tokenizer_max_length). */
static sd_status clip_part(sd_pipeline *p, int k, const char *text, int clip_skip, float *part) {
    const clip_tokenizer *tok = k ? p->tokenizer_2 : p->tokenizer;
    clip_text *te = k ? p->text_encoder_2 : p->text_encoder;
    const clip_text_config *tc = clip_text_get_config(te);
    const int len = clip_tokenizer_max_length(p->tokenizer);
    /* hidden_states[-(clip_skip + 2)]: one of the num_layers + 1 states, without the final norm */
    if (clip_skip > tc->num_layers - 1)
        return sd_set_error(SD_ERR_ARG, "clip skip %d: text_encoder%s has only %d layers", clip_skip,
                            k ? "_2" : "", tc->num_layers);
    const size_t nh = (size_t)len * tc->hidden_size, n = nh + (size_t)tc->projection_dim;
    char *key = sd_strfmt("sd3|clip%d|skip=%d|%s", k + 1, clip_skip, text);
    if (pl_cache_copy(p, key, part, n)) {
        free(key);
        return SD_OK;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    sd_status st = ids && key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) st = clip_tokenize_padded(tok, text, ids, len);
    if (st == SD_OK)
        st = clip_text_encode(te, ids, 1, len, tc->num_layers - 1 - clip_skip, false, part, part + nh);
    if (st == SD_OK) pl_cache_put(p, key, part, n);
    free(ids);
    free(key);
    return st;
}

/* Copies `n` features of `src` into dst[at..width), as much as fits: torch.nn.functional.pad to the
 * T5 width pads with zeros when the CLIP features are narrower and crops them when wider. */
static int put_features(float *dst, int at, int width, const float *src, int n) {
    int m = at >= width ? 0 : (n < width - at ? n : width - at);
    if (m > 0) memcpy(dst + at, src, (size_t)m * sizeof *dst);
    return at + n;
}

sd_status sd_encode_prompt_sd3(sd_pipeline *p, const char *text, const char *text_2,
                               const char *text_3, int clip_skip, int max_seq, float *embeds,
                               float *pooled) {
    int tokens, width, pd;
    sd_embed_shape_sd3(p, max_seq, &tokens, &width, &pd);
    const clip_text_config *c1 = clip_text_get_config(p->text_encoder);
    const clip_text_config *c2 = clip_text_get_config(p->text_encoder_2);
    const int len = clip_tokenizer_max_length(p->tokenizer);
    const size_t nh1 = (size_t)len * c1->hidden_size, nh2 = (size_t)len * c2->hidden_size;
    float *part1 = malloc((nh1 + (size_t)c1->projection_dim) * sizeof(float));
    float *part2 = malloc((nh2 + (size_t)c2->projection_dim) * sizeof(float));
    sd_status st = part1 && part2 ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) st = clip_part(p, 0, text, clip_skip, part1);
    if (st == SD_OK) st = clip_part(p, 1, text_2, clip_skip, part2);
    if (st == SD_OK) {
        /* rows [0, len): cat([clip_l, clip_g], -1) padded (or cropped) to the width */
        memset(embeds, 0, (size_t)len * width * sizeof *embeds);
        for (int t = 0; t < len; t++) {
            float *row = embeds + (size_t)t * width;
            int at = put_features(row, 0, width, part1 + (size_t)t * c1->hidden_size, c1->hidden_size);
            put_features(row, at, width, part2 + (size_t)t * c2->hidden_size, c2->hidden_size);
        }
        memcpy(pooled, part1 + nh1, (size_t)c1->projection_dim * sizeof *pooled);
        memcpy(pooled + c1->projection_dim, part2 + nh2, (size_t)c2->projection_dim * sizeof *pooled);
        /* rows [len, len + max_seq): T5's, or zeros without it */
        float *t5rows = embeds + (size_t)len * width;
        if (p->t5) st = pl_encode_t5(p, text_3, max_seq, t5rows);
        else memset(t5rows, 0, (size_t)max_seq * width * sizeof *t5rows);
    }
    free(part1), free(part2);
    return st;
}

/* Settings StableDiffusion3Pipeline.__call__ does not take: diffusers refuses them, so do we,
 * rather than ignore them silently. */
static sd_status check_sd3_params(const sd_pipeline *p, const sd_gen_params *g, int max_seq) {
    if (g->init_image || g->mask_image)
        return sd_set_error(SD_ERR_UNSUPPORTED, "SD3 image-to-image and inpainting are not "
                            "implemented yet");
    if (g->guidance_rescale != 0)
        return sd_set_error(SD_ERR_ARG, "guidance rescale is not a setting of "
                            "StableDiffusion3Pipeline");
    if (g->eta != 0) return sd_set_error(SD_ERR_ARG, "eta is not a setting of StableDiffusion3Pipeline");
    if (g->original_width || g->original_height || g->crop_top || g->crop_left ||
        g->target_width || g->target_height)
        return sd_set_error(SD_ERR_ARG, "original/crop/target sizes are SDXL settings; "
                            "StableDiffusion3Pipeline has none");
    if (max_seq < 1 || max_seq > SD3_MAX_SEQ)
        return sd_set_error(SD_ERR_ARG, "max sequence length %d: must be in 1..%d", max_seq,
                            SD3_MAX_SEQ);
    /* diffusers loads such a folder and encodes prompts; the transformer's context embedder is
     * where it fails. Checked here, before any work, so that the encoders stay usable. */
    if (p->t5 && t5_encoder_get_config(p->t5)->d_model != sd3_get_config(p->sd3)->joint_attention_dim)
        return sd_set_error(SD_ERR_CONFIG, "%s: text_encoder_3 d_model %d differs from the "
                            "transformer's joint_attention_dim %d", p->mi.dir,
                            t5_encoder_get_config(p->t5)->d_model,
                            sd3_get_config(p->sd3)->joint_attention_dim);
    return SD_OK;
}

/* The scheduler as retrieve_timesteps sets it up. With use_dynamic_shifting, mu comes from the
 * image sequence length and the RESOLVED scheduler config (class defaults for absent keys), known
 * only once the scheduler exists: so it is built first, then its timesteps set (which is why this
 * does not go through pl_make_scheduler). With stochastic_sampling the step noise comes from the
 * seeded generator; diffusers' SD3 pipeline gives step() none (torch's global RNG), so such runs
 * are not reproducible there to begin with. */
static sd_status make_scheduler(const sd_pipeline *p, const sd_gen_params *g, int lh, int lw,
                                sd_scheduler **out) {
    *out = NULL;
    cJSON *overrides = NULL;
    if (g->scheduler_overrides && *g->scheduler_overrides) {
        SD_TRY(sd_json_parse(g->scheduler_overrides, "scheduler options", &overrides));
        if (!cJSON_IsObject(overrides)) {
            cJSON_Delete(overrides);
            return sd_set_error(SD_ERR_ARG, "scheduler options must be a JSON object");
        }
    }
    sd_scheduler *s = NULL;
    sd_status st = sched_create(&s, g->scheduler, p->scheduler_config, overrides);
    cJSON_Delete(overrides);
    if (st != SD_OK) return st;
    const char *pred = sched_prediction_type(s);
    if (strcmp(pred, "flow_prediction"))
        st = sd_set_error(SD_ERR_ARG, "scheduler %s predicts %s; StableDiffusion3Pipeline needs a "
                          "flow-matching scheduler (FlowMatchEulerDiscreteScheduler)",
                          sched_class_name(s), pred);
    sched_timestep_opts o = {0};
    const cJSON *c = sched_config(s);
    if (st == SD_OK && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "use_dynamic_shifting"))) {
        const int patch = sd3_get_config(p->sd3)->patch_size;
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(c, "base_image_seq_len");
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "max_image_seq_len");
        const cJSON *bsh = cJSON_GetObjectItemCaseSensitive(c, "base_shift");
        const cJSON *msh = cJSON_GetObjectItemCaseSensitive(c, "max_shift");
        o.has_mu = true; /* calculate_shift, with the pipeline's fallbacks 256, 4096, 0.5, 1.16 */
        o.mu = sched_flux_mu((lh / patch) * (lw / patch), cJSON_IsNumber(bs) ? bs->valueint : 256,
                             cJSON_IsNumber(ms) ? ms->valueint : 4096,
                             cJSON_IsNumber(bsh) ? bsh->valuedouble : 0.5,
                             cJSON_IsNumber(msh) ? msh->valuedouble : 1.16);
    }
    if (st == SD_OK) st = sched_set_timesteps(s, g->steps, &o);
    if (st != SD_OK) {
        sched_free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

typedef struct {
    sd3_model *model;
    const float *context, *pooled; /* [mb][tokens][width], [mb][pooled_dim] */
    int tokens;
} sd3_denoiser;

static sd_status sd3_predict(void *ctx, const float *x, int mb, int h, int w, double t, float *out) {
    const sd3_denoiser *d = ctx;
    /* diffusers passes t (float32 sigma * 1000), expanded over the batch */
    return sd3_forward(d->model, x, mb, h, w, (float)t, d->context, d->tokens, d->pooled, out);
}

/* Python's `a or b`: None and "" both fall back. */
static const char *or_else(const char *a, const char *b) { return a && *a ? a : b; }

/* Repeats `item` (n floats) over `count` consecutive slots of dst; returns the end. */
static float *repeat(float *dst, const float *item, size_t n, int count) {
    for (int b = 0; b < count; b++, dst += n) memcpy(dst, item, n * sizeof *dst);
    return dst;
}

sd_status sd_generate_sd3(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    const double t0 = pl_now();
    const sd3_config *tc = sd3_get_config(p->sd3);
    int width = g->width, height = g->height, dw, dh;
    sd_default_size_sd3(p, &dw, &dh);
    if (!width) width = dw;
    if (!height) height = dh;
    const int max_seq = g->max_sequence_length ? g->max_sequence_length : SD3_DEFAULT_SEQ;
    SD_TRY(check_sd3_params(p, g, max_seq));
    /* check_inputs: divisible by vae_scale_factor * patch_size */
    SD_TRY(pl_check_params(g, width, height, p->vae_scale_factor * tc->patch_size));
    const int f = p->vae_scale_factor, lh = height / f, lw = width / f, c = tc->in_channels;
    const int maxp = tc->pos_embed_max_size;
    if (maxp > 0 && (lh / tc->patch_size > maxp || lw / tc->patch_size > maxp))
        return sd_set_error(SD_ERR_ARG, "image size %dx%d: this model takes at most %d pixels per "
                            "side (pos_embed_max_size %d)", width, height,
                            maxp * tc->patch_size * f, maxp);

    int tokens, dim, pd;
    sd_embed_shape_sd3(p, max_seq, &tokens, &dim, &pd);
    const int B = g->batch, mb = g->guidance > 1.0 ? 2 * B : B; /* do_classifier_free_guidance */
    const bool cfg = mb > B;
    const size_t emb = (size_t)tokens * dim, n = (size_t)B * lh * lw * c;
    float *cond = malloc(emb * sizeof(float)), *uncond = malloc(emb * sizeof(float));
    float *cpool = malloc((size_t)pd * sizeof(float)), *upool = malloc((size_t)pd * sizeof(float));
    float *context = malloc((size_t)mb * emb * sizeof(float));
    float *pooled = malloc((size_t)mb * pd * sizeof(float));
    float *latents = malloc(n * sizeof(float));
    sd_scheduler *sched = NULL;
    pl_noise noise = {0};
    sd_status st = cond && uncond && cpool && upool && context && pooled && latents
                       ? SD_OK
                       : sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d batch of %d", width,
                                      height, B);
    /* 1. encode_prompt: prompt_2/3 default to the prompt, negative_2/3 to the negative prompt
     * (itself "" by default); clip_skip applies to the prompt only. */
    const char *p1 = g->prompt ? g->prompt : "", *n1 = or_else(g->negative_prompt, "");
    if (st == SD_OK)
        st = sd_encode_prompt_sd3(p, p1, or_else(g->prompt_2, p1), or_else(g->prompt_3, p1),
                                  g->clip_skip, max_seq, cond, cpool);
    if (st == SD_OK && cfg)
        st = sd_encode_prompt_sd3(p, n1, or_else(g->negative_prompt_2, n1),
                                  or_else(g->negative_prompt_3, n1), 0, max_seq, uncond, upool);
    if (st == SD_OK) {
        pl_emit(g, SD_EVENT_PROMPT_EMBEDS, 0, 1, 0, cond, 1, tokens, 1, dim);
        if (cfg) pl_emit(g, SD_EVENT_NEGATIVE_EMBEDS, 0, 1, 0, uncond, 1, tokens, 1, dim);
        /* torch.cat([negative, prompt]) after repeating each num_images_per_prompt times */
        float *ctx = context, *pool = pooled;
        if (cfg) {
            ctx = repeat(ctx, uncond, emb, B);
            pool = repeat(pool, upool, (size_t)pd, B);
        }
        repeat(ctx, cond, emb, B);
        repeat(pool, cpool, (size_t)pd, B);
    }
    /* 2. timesteps, 3. latents, 4. the loop, 5. decode */
    pl_release_text_encoders(p); /* low memory: not needed again for these prompts */
    if (st == SD_OK) st = make_scheduler(p, g, lh, lw, &sched);
    if (st == SD_OK) st = pl_noise_init(&noise, g->seed, B, c, lh, lw);
    if (st == SD_OK) {
        pl_initial_latents(g, &noise, sched, latents); /* init_noise_sigma is 1 for flow matching */
        sd3_denoiser d3 = {p->sd3, context, pooled, tokens};
        pl_denoiser d = {&d3, sd3_predict};
        pl_loop loop = {g, sched, &noise, B, lh, lw, c, cfg, 0, NULL, NULL};
        st = pl_denoise(&loop, &d, latents, out);
    }
    pl_release_denoiser(p); /* low memory: scratch and pages back before the decode */
    if (st == SD_OK) st = pl_decode(p, g, latents, B, lh, lw, c, out);
    pl_release_vae(p);
    if (st == SD_OK) out->scheduler_class = sched_class_name(sched);
    if (sched) sched_free(sched);
    pl_noise_free(&noise);
    free(cond), free(uncond), free(cpool), free(upool), free(context), free(pooled), free(latents);
    if (st != SD_OK) sd_result_free(out);
    out->seconds = pl_now() - t0;
    return st;
}
