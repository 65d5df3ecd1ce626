/* FLUX.1: what differs from the skeleton every family runs (pipeline/generate.c, which follows
 * diffusers' FluxPipeline.__call__ step for step):
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
 * ignored, as here (pipeline/gen_options.c accepts it for that reason). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/log.h"
#include "embed_cache.h"
#include "generate.h"

/* FluxPipeline: default_sample_size 128 (times the VAE scale factor), max_sequence_length 512. */
enum { FLUX_DEFAULT_SAMPLE = 128, FLUX_DEFAULT_T5_LEN = 512, FLUX_MAX_T5_LEN = 512 };

/* Loads one listed component folder through `load`, with the component's weights policy
 * (tokenizers have no weights and ignore it). */
typedef sd_status (*component_loader)(sd_pipeline *p, const char *dir,
                                      const weights_policy *policy);

static sd_status load_component(sd_pipeline *p, const char *name, const char *const *classes,
                                component_loader load) {
    SD_TRY(pl_expect_component(p, name, classes));
    char *dir = pl_component_dir(p, name);
    if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const weights_policy policy = pl_load_policy(p, name);
    sd_status st = load(p, dir, &policy);
    free(dir);
    return st;
}

static sd_status load_clip_tok(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    (void)policy;
    return clip_tokenizer_load(&p->tokenizer, dir);
}
static sd_status load_clip(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    return clip_text_load_class(&p->text_encoder, dir, "CLIPTextModel", policy);
}
static sd_status load_t5_tok(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    (void)policy;
    return t5_tokenizer_load(&p->t5_tokenizer, dir);
}
static sd_status load_t5(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    return t5_encoder_load(&p->t5, dir, policy);
}
/* BF16 weights (every FLUX.1 release) stay in the file mapping: a float32 copy would not fit. */
static sd_status load_transformer(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    return flux_load(&p->flux, dir, policy);
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
    const int latent_c = p->vae_latent_channels;
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

/* The size is floored to a multiple of 16 (twice the VAE factor) as diffusers' prepare_latents
 * does, after its warning. */
static sd_status flux_size(pl_run *r, int *multiple) {
    const int f = 2 * r->p->vae_scale_factor;
    if (r->width < f || r->height < f)
        return sd_set_error(SD_ERR_ARG, "image size %dx%d: Flux needs at least %d pixels a side",
                            r->width, r->height, f);
    if (r->width % f || r->height % f)
        sd_log(SD_LOG_WARN, "image size %dx%d floored to %dx%d: Flux takes multiples of %d",
               r->width, r->height, r->width / f * f, r->height / f * f, f);
    r->width = r->width / f * f;
    r->height = r->height / f * f;
    *multiple = f;
    return SD_OK;
}

/* The conditioning: T5's hidden states [max_sequence][joint_attention_dim], CLIP's pooled
 * output. */
static sd_status flux_check(pl_run *r) {
    const flux_config *fc = flux_get_config(r->p->flux);
    r->tokens = r->max_sequence;
    r->dim = fc->joint_attention_dim;
    r->pooled_dim = fc->pooled_projection_dim;
    return SD_OK;
}

/* encode_prompt: CLIP's pooled output of the prompt, T5 of prompt_2 = prompt_2 or prompt (so an
 * empty prompt_2 also falls back). Never asked for a negative side: no CFG batch. */
static sd_status flux_encode(pl_run *r, bool negative, float *hidden, float *pooled) {
    (void)negative;
    const char *prompt = r->g.prompt ? r->g.prompt : "";
    SD_TRY(encode_pooled(r->p, prompt, pooled));
    return pl_encode_t5(r->p, pl_or_else(r->g.prompt_2, prompt), r->max_sequence, hidden);
}

/* set_timesteps(sigmas=linspace(1, 1/n, n), mu=calculate_shift(...)), where the shift's
 * parameters come from the scheduler's resolved config (scheduler.config.get(key, default) in
 * diffusers), so overrides of them count. */
static sd_status flux_timesteps(pl_run *r, sched_timestep_opts *o) {
    const int n = r->g.steps;
    double *sigmas = pl_run_alloc(r, (size_t)n * sizeof *sigmas);
    if (!sigmas) return SD_ERR_NOMEM;
    /* np.linspace(1.0, 1 / n, n): start + i * step, the last value set exactly */
    const double stop = 1.0 / n, step = n > 1 ? (stop - 1.0) / (n - 1) : 0;
    for (int i = 0; i < n; i++) sigmas[i] = 1.0 + i * step;
    sigmas[n - 1] = stop;
    const cJSON *flow = cJSON_GetObjectItemCaseSensitive(sched_config(r->sched), "use_flow_sigmas");
    if (!cJSON_IsTrue(flow)) { /* a scheduler making flow sigmas itself gets none */
        o->sigmas = sigmas;
        o->n_sigmas = n;
    }
    o->has_mu = true;
    o->mu = pl_flow_mu(r->sched, (r->lh / 2) * (r->lw / 2), 1.15);
    return SD_OK;
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

/* The transformer with the image ids of the latent grid's 2x2 patches, text ids all zeros (as
 * encode_prompt makes them), and the guidance scale as the guidance embedding when the model has
 * one (FLUX.1-dev), nothing otherwise (schnell). */
static sd_status flux_make_denoiser(pl_run *r, pl_denoiser *out) {
    const size_t n = (size_t)r->batch * r->lh * r->lw * r->c;
    const int tokens = (r->lh / 2) * (r->lw / 2);
    flux_denoiser *d = pl_run_alloc(r, sizeof *d);
    float *img_ids = pl_run_alloc(r, (size_t)tokens * 3 * sizeof(float));
    float *txt_ids = pl_run_alloc(r, (size_t)r->max_sequence * 3 * sizeof(float));
    float *packed_in = pl_run_alloc(r, n * sizeof(float));
    float *packed_out = pl_run_alloc(r, n * sizeof(float));
    if (!d || !img_ids || !txt_ids || !packed_in || !packed_out) return SD_ERR_NOMEM;
    flux_image_ids(r->lh / 2, r->lw / 2, img_ids);
    const bool embeds_guidance = flux_get_config(r->p->flux)->guidance_embeds;
    *d = (flux_denoiser){r->p->flux, img_ids, r->context, txt_ids, r->pooled, r->max_sequence,
                         embeds_guidance ? (float)r->g.guidance : NAN, packed_in, packed_out};
    *out = (pl_denoiser){d, flux_predict};
    return SD_OK;
}

/* A1111's syntax for FLUX.1 (which A1111 itself does not run; the rules of its SD3 support):
 * CLIP's pooled output of the first chunk, T5 reading the pieces' text (weights stripped, each
 * piece tokenized alone), its output weighted per token with the mean restored,
 * max_sequence_length rows. */
static void flux_a1111_plan(const pl_run *r, bool negative, pl_a1111_plan *out) {
    (void)negative;
    const int layers = clip_text_get_config(r->p->text_encoder)->num_layers;
    *out = (pl_a1111_plan){.n_clip = 1, .t5_rows = r->max_sequence};
    out->clip[0] = (pl_clip_use){r->p->tokenizer, r->p->text_encoder, 0, layers, true, 0};
}

const pl_generator pl_generator_flux = {
    .name = "FLUX.1",
    .options = PL_OPT_PROMPT_2 | PL_OPT_MAX_SEQUENCE,
    .embedded_guidance = true,
    .scale_initial_noise = false, /* prepare_latents: plain randn, packed */
    .max_sequence_default = FLUX_DEFAULT_T5_LEN,
    .max_sequence_limit = FLUX_MAX_T5_LEN,
    .pooled_event = PL_POOLED_OWN_EVENT,
    .size = flux_size,
    .check = flux_check,
    .encode = flux_encode,
    .timesteps = flux_timesteps,
    .denoiser = flux_make_denoiser,
    .a1111_plan = flux_a1111_plan,
};
