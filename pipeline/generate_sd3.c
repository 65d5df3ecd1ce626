/* Stable Diffusion 3 / 3.5: what differs from the skeleton every family runs
 * (pipeline/generate.c, which follows diffusers' StableDiffusion3Pipeline.__call__ step for
 * step): encode_prompt (two CLIPs with projection, optional T5), FlowMatchEuler timesteps (sigma *
 * 1000, dynamic shifting's mu from the image size), prepare_latents without init_noise_sigma
 * scaling, one batched transformer call holding both CFG halves; the VAE decode applies the
 * shift factor. Skip-layer guidance, IP-Adapter and precomputed embeddings are not exposed. */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "embed_cache.h"
#include "generate.h"

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
    const int lat = p->vae_latent_channels;
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

/* check_inputs: divisible by vae_scale_factor * patch_size. */
static sd_status sd3_size(pl_run *r, int *multiple) {
    *multiple = r->p->vae_scale_factor * sd3_get_config(r->p->sd3)->patch_size;
    return SD_OK;
}

static sd_status sd3_check(pl_run *r) {
    const sd_pipeline *p = r->p;
    const sd3_config *tc = sd3_get_config(p->sd3);
    const int f = p->vae_scale_factor, lh = r->height / f, lw = r->width / f;
    const int maxp = tc->pos_embed_max_size;
    if (maxp > 0 && (lh / tc->patch_size > maxp || lw / tc->patch_size > maxp))
        return sd_set_error(SD_ERR_ARG, "image size %dx%d: this model takes at most %d pixels per "
                            "side (pos_embed_max_size %d)", r->width, r->height,
                            maxp * tc->patch_size * f, maxp);
    /* diffusers loads such a folder and encodes prompts; the transformer's context embedder is
     * where it fails. Checked here, before any work, so that the encoders stay usable. */
    if (p->t5 && t5_encoder_get_config(p->t5)->d_model != tc->joint_attention_dim)
        return sd_set_error(SD_ERR_CONFIG, "%s: text_encoder_3 d_model %d differs from the "
                            "transformer's joint_attention_dim %d", p->mi.dir,
                            t5_encoder_get_config(p->t5)->d_model, tc->joint_attention_dim);
    sd_embed_shape_sd3(p, r->max_sequence, &r->tokens, &r->dim, &r->pooled_dim);
    return SD_OK;
}

/* encode_prompt: prompt_2/3 default to the prompt, negative_2/3 to the negative prompt (itself ""
 * by default); clip_skip applies to the prompt only. */
static sd_status sd3_encode(pl_run *r, bool negative, float *hidden, float *pooled) {
    const sd_gen_params *g = &r->g;
    if (!negative) {
        const char *p1 = g->prompt ? g->prompt : "";
        return sd_encode_prompt_sd3(r->p, p1, pl_or_else(g->prompt_2, p1),
                                    pl_or_else(g->prompt_3, p1), g->clip_skip, r->max_sequence,
                                    hidden, pooled);
    }
    const char *n1 = pl_or_else(g->negative_prompt, "");
    return sd_encode_prompt_sd3(r->p, n1, pl_or_else(g->negative_prompt_2, n1),
                                pl_or_else(g->negative_prompt_3, n1), 0, r->max_sequence, hidden,
                                pooled);
}

/* retrieve_timesteps' arguments. With use_dynamic_shifting, mu comes from the image sequence
 * length and the RESOLVED scheduler config (class defaults for absent keys), known only once the
 * scheduler exists. With stochastic_sampling the step noise comes from the seeded generator;
 * diffusers' SD3 pipeline gives step() none (torch's global RNG), so such runs are not
 * reproducible there to begin with. */
static sd_status sd3_timesteps(pl_run *r, sched_timestep_opts *o) {
    const char *pred = sched_prediction_type(r->sched);
    if (strcmp(pred, "flow_prediction"))
        return sd_set_error(SD_ERR_ARG, "scheduler %s predicts %s; StableDiffusion3Pipeline needs "
                            "a flow-matching scheduler (FlowMatchEulerDiscreteScheduler)",
                            sched_class_name(r->sched), pred);
    const cJSON *dynamic = cJSON_GetObjectItemCaseSensitive(sched_config(r->sched),
                                                            "use_dynamic_shifting");
    if (cJSON_IsTrue(dynamic)) {
        const int patch = sd3_get_config(r->p->sd3)->patch_size;
        o->has_mu = true; /* calculate_shift, with the pipeline's fallback max_shift 1.16 */
        o->mu = pl_flow_mu(r->sched, (r->lh / patch) * (r->lw / patch), 1.16);
    }
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

static sd_status sd3_make_denoiser(pl_run *r, pl_denoiser *out) {
    sd3_denoiser *d = pl_run_alloc(r, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    *d = (sd3_denoiser){r->p->sd3, r->context, r->pooled, r->tokens};
    *out = (pl_denoiser){d, sd3_predict};
    return SD_OK;
}

/* A1111's syntax as its SD3 support runs it (modules/models/sd3/sd3_cond.py): both CLIPs read the
 * same chunks (penultimate layer; CLIP-G padded with 0 after the first EOS), side by side and
 * padded to the T5 width, with one emphasis over that joined row; pooled = both pooled outputs of
 * the first chunk; T5 reads the pieces' text (weights stripped, each piece tokenized alone) padded
 * or cut to as many tokens as the CLIP rows, appended after them. A1111 computes T5's weights and
 * does not apply them; here they are applied as CLIP's are (the mean restored). */
static void sd3_a1111_plan(const pl_run *r, bool negative, pl_a1111_plan *out) {
    (void)negative;
    const sd_pipeline *p = r->p;
    *out = (pl_a1111_plan){.n_clip = 2, .clip_context = true, .joint_emphasis = true,
                           .t5_rows = -1};
    const clip_text_config *c1 = clip_text_get_config(p->text_encoder);
    const clip_text_config *c2 = clip_text_get_config(p->text_encoder_2);
    out->clip[0] = (pl_clip_use){p->tokenizer, p->text_encoder, 0,
                                 c1->num_layers - 1 - r->g.clip_skip, false, 0};
    out->clip[1] = (pl_clip_use){p->tokenizer_2, p->text_encoder_2, 1,
                                 c2->num_layers - 1 - r->g.clip_skip, false, c1->projection_dim};
}

const pl_generator pl_generator_sd3 = {
    .name = "Stable Diffusion 3",
    .options = PL_OPT_CLIP_SKIP | PL_OPT_PROMPT_2 | PL_OPT_PROMPT_3 | PL_OPT_MAX_SEQUENCE,
    .scale_initial_noise = false, /* prepare_latents: plain randn (flow matching) */
    .max_sequence_default = SD3_DEFAULT_SEQ,
    .max_sequence_limit = SD3_MAX_SEQ,
    .pooled_event = PL_POOLED_SILENT,
    .size = sd3_size,
    .check = sd3_check,
    .encode = sd3_encode,
    .timesteps = sd3_timesteps,
    .denoiser = sd3_make_denoiser,
    .a1111_plan = sd3_a1111_plan,
};
