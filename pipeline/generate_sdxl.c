/* SDXL: what differs from the skeleton every family runs (pipeline/generate.c, which follows
 * diffusers' StableDiffusionXLPipeline.__call__ step for step): encode_prompt with two CLIP
 * encoders (the penultimate hidden state of each, concatenated on the feature axis; the pooled,
 * projected output of the second), the micro-conditioning time ids, and the UNet's text_time added
 * conditions. The VAE always computes in float32, whatever its weights are stored in, which is
 * what force_upcast asks for. No invisible watermark is applied (diffusers applies one only when
 * the optional invisible-watermark package is installed).
 *
 * Folders that have only the second encoder (text_encoder null, as the refiner ships) are encoded
 * as diffusers encodes them: the prompt goes through tokenizer (or tokenizer_2 when that is null
 * too) into text_encoder_2 alone, and prompt_2 is not used.
 *
 * With an init image (and mask) the same steps run as StableDiffusionXLImg2ImgPipeline /
 * StableDiffusionXLInpaintPipeline: the image parts are SD's (pipeline/img2img.c: size rules,
 * get_timesteps, prepare_latents, mask handling, generator order, all identical in the SDXL
 * pipelines); what differs is the default strength (0.3 / 0.9999), the inpainting guidance
 * default (7.5, in the family table) and the time ids, which follow the latents' size and, for a
 * folder with requires_aesthetics_score (the refiner), end in an aesthetic score instead of the
 * target size. */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "embed_cache.h"
#include "generate.h"

/* The (tokenizer, text encoder) pairs encode_prompt zips with [prompt, prompt_2]. */
typedef struct {
    const clip_tokenizer *tok;
    clip_text *te;
} sdxl_encoder;

static int sdxl_encoders(const sd_pipeline *p, sdxl_encoder e[2]) {
    if (p->text_encoder) {
        e[0] = (sdxl_encoder){p->tokenizer, p->text_encoder};
        e[1] = (sdxl_encoder){p->tokenizer_2, p->text_encoder_2};
        return 2;
    }
    e[0] = (sdxl_encoder){p->tokenizer ? p->tokenizer : p->tokenizer_2, p->text_encoder_2};
    return 1;
}

/* Width of the concatenated hidden states, and of the pooled output. */
static int sdxl_embed_dim(const sd_pipeline *p) {
    sdxl_encoder e[2];
    int n = sdxl_encoders(p, e), dim = 0;
    for (int i = 0; i < n; i++) dim += clip_text_get_config(e[i].te)->hidden_size;
    return dim;
}

static int sdxl_pooled_dim(const sd_pipeline *p) {
    return clip_text_get_config(p->text_encoder_2)->projection_dim;
}

/* The component folders, loaded through their own loaders (NULL dir: out of memory). */
static sd_status load_tokenizer(const sd_pipeline *p, const char *name, clip_tokenizer **out) {
    char *dir = pl_component_dir(p, name);
    sd_status st = dir ? clip_tokenizer_load(out, dir) : sd_set_error(SD_ERR_NOMEM, "out of memory");
    free(dir);
    return st;
}

static sd_status load_encoder(const sd_pipeline *p, const char *name, const char *cls,
                              clip_text **out) {
    char *dir = pl_component_dir(p, name);
    const weights_policy policy = pl_load_policy(p, name);
    sd_status st = dir ? clip_text_load_class(out, dir, cls, &policy)
                       : sd_set_error(SD_ERR_NOMEM, "out of memory");
    free(dir);
    return st;
}

/* Pipeline-level settings: force_zeros_for_empty_prompt (model_index.json, default true),
 * requires_aesthetics_score (the img2img / inpainting pipelines' config, default false) and the
 * VAE's latents_mean / latents_std, which change the scaling both ways and are not implemented. */
static sd_status read_settings(sd_pipeline *p) {
    char *path = sd_path_join(p->mi.dir, "model_index.json");
    char *vdir = pl_component_dir(p, "vae");
    char *vpath = vdir ? sd_path_join(vdir, "config.json") : NULL;
    free(vdir);
    sd_status st = path && vpath ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    if (st == SD_OK && (st = cfg_open(&c, path)) == SD_OK) {
        p->force_zeros_for_empty_prompt = cfg_bool(&c, "force_zeros_for_empty_prompt", true);
        p->requires_aesthetics_score = cfg_bool(&c, "requires_aesthetics_score", false);
        st = cfg_status(&c);
        cfg_close(&c);
    }
    if (st == SD_OK && (st = cfg_open(&c, vpath)) == SD_OK) {
        if (cfg_has(&c, "latents_mean") && cfg_has(&c, "latents_std"))
            st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: latents_mean / latents_std (per-channel "
                              "latent normalisation) are not supported", vpath);
        cfg_close(&c);
    }
    free(path), free(vpath);
    return st;
}

/* The checks diffusers makes at call time (_get_add_time_ids) or fails on with a shape error,
 * made once here with a message that names the keys. */
static sd_status check_dims(const sd_pipeline *p) {
    const unet_config *uc = unet_get_config(p->unet);
    const int lat = p->vae_latent_channels; /* the tiny VAE's when it replaces the model's */
    sdxl_encoder e[2] = {{0}};
    const int n = sdxl_encoders(p, e), dim = sdxl_embed_dim(p), pooled = sdxl_pooled_dim(p);
    if (!uc->text_time)
        return sd_set_error(SD_ERR_CONFIG, "%s/unet/config.json: an SDXL UNet needs "
                            "addition_embed_type 'text_time'", p->mi.dir);
    /* 2c + 1: an inpainting UNet (latents, mask, masked-image latents). */
    if (uc->in_channels != lat && uc->in_channels != 2 * lat + 1)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet in_channels %d does not fit the vae's %d "
                            "latent channels", p->mi.dir, uc->in_channels, lat);
    if (uc->out_channels != lat)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet out_channels %d differs from the vae's %d "
                            "latent channels", p->mi.dir, uc->out_channels, lat);
    if (uc->cross_attention_dim != dim)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet cross_attention_dim %d differs from the text "
                            "encoders' hidden sizes together (%d)", p->mi.dir,
                            uc->cross_attention_dim, dim);
    /* add_time_ids holds 6 values: original size, crop top-left, target size; with
     * requires_aesthetics_score 5: original size, crop top-left, aesthetic score. */
    const int ids = p->requires_aesthetics_score ? 5 : 6;
    const int want = uc->addition_time_embed_dim * ids + pooled;
    if (want != uc->projection_class_embeddings_input_dim) {
        /* One time id too many or too few: the flag is the likely culprit, as diffusers says. */
        const int off = uc->projection_class_embeddings_input_dim - want;
        const char *hint = off == -uc->addition_time_embed_dim && ids == 6
                               ? " (a refiner? set requires_aesthetics_score: true in "
                                 "model_index.json)"
                           : off == uc->addition_time_embed_dim && ids == 5
                               ? " (requires_aesthetics_score is set: should it be?)"
                               : "";
        return sd_set_error(SD_ERR_CONFIG, "%s: unet projection_class_embeddings_input_dim is %d, but "
                            "%d time ids x addition_time_embed_dim %d + text_encoder_2 projection_dim "
                            "%d = %d%s", p->mi.dir, uc->projection_class_embeddings_input_dim, ids,
                            uc->addition_time_embed_dim, pooled, want, hint);
    }
    if (n == 2 && clip_tokenizer_max_length(e[0].tok) != clip_tokenizer_max_length(e[1].tok))
        return sd_set_error(SD_ERR_CONFIG, "%s: tokenizer and tokenizer_2 pad to different lengths "
                            "(%d, %d)", p->mi.dir, clip_tokenizer_max_length(e[0].tok),
                            clip_tokenizer_max_length(e[1].tok));
    return SD_OK;
}

sd_status sd_load_sdxl(sd_pipeline *p) {
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const te[] = {"CLIPTextModel", NULL};
    static const char *const te2[] = {"CLIPTextModelWithProjection", NULL};
    static const char *const un[] = {"UNet2DConditionModel", NULL};
    SD_TRY(pl_expect_component(p, "tokenizer_2", tok));
    SD_TRY(pl_expect_component(p, "text_encoder_2", te2));
    SD_TRY(pl_expect_component(p, "unet", un));
    const bool has_te = model_index_get(&p->mi, "text_encoder") != NULL;
    const bool has_tok = model_index_get(&p->mi, "tokenizer") != NULL;
    if (has_te) SD_TRY(pl_expect_component(p, "text_encoder", te));
    if (has_tok) SD_TRY(pl_expect_component(p, "tokenizer", tok));
    /* diffusers would pair text_encoder with tokenizer_2 and find no pooled output: refuse. */
    if (has_te && !has_tok)
        return sd_set_error(SD_ERR_CONFIG, "%s/model_index.json: 'text_encoder' is set but "
                            "'tokenizer' is null", p->mi.dir);
    SD_TRY(read_settings(p));
    if (has_tok) SD_TRY(load_tokenizer(p, "tokenizer", &p->tokenizer));
    SD_TRY(load_tokenizer(p, "tokenizer_2", &p->tokenizer_2));
    if (has_te) SD_TRY(load_encoder(p, "text_encoder", "CLIPTextModel", &p->text_encoder));
    SD_TRY(load_encoder(p, "text_encoder_2", "CLIPTextModelWithProjection", &p->text_encoder_2));
    char *dir = pl_component_dir(p, "unet");
    const weights_policy policy = pl_load_policy(p, "unet");
    sd_status st = dir ? pl_unet_load(p, dir, &policy)
                       : sd_set_error(SD_ERR_NOMEM, "out of memory");
    free(dir);
    return st == SD_OK ? check_dims(p) : st;
}

/* One side of encode_prompt (the prompt, or the negative prompt): hidden [len][dim] (each
 * encoder's hidden_states[-(clip_skip + 2)], no final norm, side by side) and pooled [pdim]. */
static sd_status encode_pair(sd_pipeline *p, const char *text, const char *text_2, int clip_skip,
                             float *hidden, float *pooled) {
    sdxl_encoder e[2];
    const int n_enc = sdxl_encoders(p, e), len = clip_tokenizer_max_length(e[0].tok);
    const int dim = sdxl_embed_dim(p), pdim = sdxl_pooled_dim(p);
    const char *texts[2] = {text, text_2};
    for (int k = 0; k < n_enc; k++) {
        const int layers = clip_text_get_config(e[k].te)->num_layers;
        if (clip_skip > layers - 1)
            return sd_set_error(SD_ERR_ARG, "clip skip %d: text encoder %d has only %d layers "
                                "(SDXL counts from the penultimate one)", clip_skip, k + 1, layers);
    }
    const size_t n = (size_t)len * dim;
    /* The length of the first text keeps "a|b" + "c" apart from "a" + "b|c". */
    char *key = sd_strfmt("sdxl|skip=%d|%zu|%s|%s", clip_skip, strlen(text), text,
                          n_enc == 2 ? text_2 : "");
    const float *hit = key ? pl_cache_get(p, key, n + pdim) : NULL;
    if (hit) {
        memcpy(hidden, hit, n * sizeof *hidden);
        memcpy(pooled, hit + n, (size_t)pdim * sizeof *pooled);
        free(key);
        return SD_OK;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    float *one = malloc(n * sizeof *one), *both = malloc((n + pdim) * sizeof *both);
    sd_status st = ids && one && both && key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    int off = 0;
    for (int k = 0; k < n_enc && st == SD_OK; k++) {
        const clip_text_config *tc = clip_text_get_config(e[k].te);
        st = clip_tokenize_padded(e[k].tok, texts[k], ids, len);
        /* The pooled output comes from the last encoder (the one with the projection). */
        if (st == SD_OK)
            st = clip_text_encode(e[k].te, ids, 1, len, tc->num_layers - 1 - clip_skip, false, one,
                                  k == n_enc - 1 ? both + n : NULL);
        for (int t = 0; t < len && st == SD_OK; t++)
            memcpy(both + (size_t)t * dim + off, one + (size_t)t * tc->hidden_size,
                   (size_t)tc->hidden_size * sizeof *one);
        off += tc->hidden_size;
    }
    if (st == SD_OK) {
        memcpy(hidden, both, n * sizeof *hidden);
        memcpy(pooled, both + n, (size_t)pdim * sizeof *pooled);
        pl_cache_put(p, key, both, n + pdim);
    }
    free(ids), free(one), free(both), free(key);
    return st;
}

/* add_time_ids = original_size + crops_coords_top_left + target_size, each (h, w) / (top, left);
 * original and target default to the image size. */
sd_status sdxl_add_time_ids(const sd_gen_params *g, int width, int height, float ids[6]) {
    const int pairs[3][2] = {{g->original_height, g->original_width},
                             {g->crop_top, g->crop_left},
                             {g->target_height, g->target_width}};
    static const char *const names[3] = {"original size", "crop", "target size"};
    for (int i = 0; i < 3; i++) {
        if (pairs[i][0] < 0 || pairs[i][1] < 0)
            return sd_set_error(SD_ERR_ARG, "SDXL %s %d,%d: negative", names[i], pairs[i][0],
                                pairs[i][1]);
        if (i != 1 && (pairs[i][0] == 0) != (pairs[i][1] == 0))
            return sd_set_error(SD_ERR_ARG, "SDXL %s: give both width and height (got %dx%d)",
                                names[i], pairs[i][1], pairs[i][0]);
        const bool dflt = i != 1 && pairs[i][0] == 0;
        ids[2 * i] = (float)(dflt ? height : pairs[i][0]);
        ids[2 * i + 1] = (float)(dflt ? width : pairs[i][1]);
    }
    return SD_OK;
}

/* _get_add_time_ids of the img2img / inpainting pipelines: the cond half's ids and the uncond
 * half's. Without requires_aesthetics_score both are sdxl_add_time_ids' six (the negative
 * sizes default to the positive ones and are not exposed). With it (the refiner): original size,
 * crop top-left and diffusers' default aesthetic_score 6.0, negative_aesthetic_score 2.5. */
static sd_status sdxl_time_ids(const sd_pipeline *p, const sd_gen_params *g, int width, int height,
                               float pos[6], float neg[6], int *n_ids) {
    SD_TRY(sdxl_add_time_ids(g, width, height, pos));
    memcpy(neg, pos, 6 * sizeof *pos);
    *n_ids = 6;
    if (p->requires_aesthetics_score) {
        pos[4] = 6.0f, neg[4] = 2.5f;
        *n_ids = 5;
    }
    return SD_OK;
}

/* The refiner refines: without an init image there is nothing to take its aesthetic score's
 * time ids from. */
static sd_status sdxl_check(pl_run *r) {
    const sd_pipeline *p = r->p;
    if (!r->g.init_image && p->requires_aesthetics_score)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: requires_aesthetics_score is set (an SDXL "
                            "refiner): it refines an init image, give one", p->mi.dir);
    float pos[6], neg[6];
    int n_ids;
    SD_TRY(sdxl_time_ids(p, &r->g, r->width, r->height, pos, neg, &n_ids)); /* checks the sizes */
    sdxl_encoder e[2];
    sdxl_encoders(p, e);
    r->tokens = clip_tokenizer_max_length(e[0].tok);
    r->dim = sdxl_embed_dim(p);
    r->pooled_dim = sdxl_pooled_dim(p);
    return SD_OK;
}

/* encode_prompt: prompt_2 defaults to the prompt, negative_prompt_2 to the negative prompt. No
 * negative prompt at all (NULL, not "") with force_zeros_for_empty_prompt: the negative
 * embeddings and pooled embeddings are zeros (as the skeleton hands them over). clip_skip applies
 * to the prompt only: diffusers always takes hidden_states[-2] for the negative prompt. */
static sd_status sdxl_encode(pl_run *r, bool negative, float *hidden, float *pooled) {
    const sd_gen_params *g = &r->g;
    if (!negative) {
        const char *prompt = g->prompt ? g->prompt : "";
        return encode_pair(r->p, prompt, pl_or_else(g->prompt_2, prompt), g->clip_skip, hidden,
                           pooled);
    }
    if (!g->negative_prompt && r->p->force_zeros_for_empty_prompt) return SD_OK;
    const char *neg = g->negative_prompt ? g->negative_prompt : "";
    return encode_pair(r->p, neg, pl_or_else(g->negative_prompt_2, neg), 0, hidden, pooled);
}

/* The UNet with the text_time added conditions: the pooled embeddings batched as the context is,
 * and the time ids likewise (the img2img pipelines' cat([neg.repeat(B), pos.repeat(B)]); the
 * text-to-image one repeats cat([neg, pos]), the same rows since its halves are equal). */
static sd_status sdxl_denoiser(pl_run *r, pl_denoiser *out) {
    float pos[6], neg[6];
    int n_ids;
    SD_TRY(sdxl_time_ids(r->p, &r->g, r->width, r->height, pos, neg, &n_ids));
    const int mb = (r->cfg ? 2 : 1) * r->batch;
    float *ids = pl_run_alloc(r, (size_t)mb * n_ids * sizeof *ids);
    if (!ids) return SD_ERR_NOMEM;
    pl_batch_rows(ids, neg, pos, (size_t)n_ids, r->batch, r->cfg);
    const unet_added_cond added = {r->pooled, ids, n_ids};
    return pl_unet_denoiser(r, &added, out);
}

/* A1111's syntax: both encoders read the same chunks (penultimate layer, clip skip on both sides),
 * the pooled output from the last; an absent negative prompt is zeros as in encode_prompt (A1111
 * zeros an empty one for SDXL too). */
static void sdxl_a1111_plan(const pl_run *r, bool negative, pl_a1111_plan *out) {
    *out = (pl_a1111_plan){.clip_context = true};
    if (negative && !r->g.negative_prompt && r->p->force_zeros_for_empty_prompt) return;
    sdxl_encoder e[2];
    out->n_clip = sdxl_encoders(r->p, e);
    for (int k = 0; k < out->n_clip; k++) {
        const int layers = clip_text_get_config(e[k].te)->num_layers;
        out->clip[k] = (pl_clip_use){e[k].tok, e[k].te, e[k].te == r->p->text_encoder_2,
                                     layers - 1 - r->g.clip_skip, false,
                                     k == out->n_clip - 1 ? 0 : -1};
    }
}

const pl_generator pl_generator_sdxl = {
    .name = "SDXL",
    .options = PL_OPT_ETA | PL_OPT_GUIDANCE_RESCALE | PL_OPT_CLIP_SKIP | PL_OPT_PROMPT_2 |
               PL_OPT_MICRO_COND,
    .image_to_image = true,
    /* StableDiffusionXLImg2ImgPipeline 0.3, StableDiffusionXLInpaintPipeline 0.9999 (which, unlike
     * 1.0, starts from the noised image: int(steps * 0.9999) runs one step fewer than steps) */
    .strength_img2img = 0.3,
    .strength_inpaint = 0.9999,
    .scale_initial_noise = true,
    .pooled_event = PL_POOLED_AS_INDEX_1,
    .model_channels = pl_unet_model_channels,
    .check = sdxl_check,
    .encode = sdxl_encode,
    .denoiser = sdxl_denoiser,
    .a1111_plan = sdxl_a1111_plan,
};
