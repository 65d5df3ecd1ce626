/* SD 1.x / 2.x: what differs from the skeleton every family runs (pipeline/generate.c, which
 * follows diffusers' StableDiffusionPipeline.__call__ step for step): one CLIP text encoder's last
 * hidden state (after the final norm; clip_skip takes an earlier layer), the UNet as denoiser. With
 * an init image (and mask) the skeleton runs StableDiffusionImg2ImgPipeline /
 * StableDiffusionInpaintPipeline (pipeline/img2img.c): later first step, start latents from the
 * image, the known region put back after each step or fed to a 9-channel UNet. The UNet pieces
 * here serve SDXL too. */
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "embed_cache.h"
#include "generate.h"

/* encode_prompt for one text: [tokens][dim]. clip_skip applies to the prompt only: diffusers
 * encodes the negative prompt without it (a quirk kept, to compute what diffusers computes). */
static sd_status encode_text(sd_pipeline *p, const char *text, int clip_skip, float *embeds) {
    const int len = clip_tokenizer_max_length(p->tokenizer);
    const clip_text_config *tc = clip_text_get_config(p->text_encoder);
    if (clip_skip >= tc->num_layers)
        return sd_set_error(SD_ERR_ARG, "clip skip %d: the text encoder has only %d layers",
                            clip_skip, tc->num_layers);
    const size_t n = (size_t)len * tc->hidden_size;
    char *key = sd_strfmt("sd|skip=%d|%s", clip_skip, text);
    if (pl_cache_copy(p, key, embeds, n)) {
        free(key);
        return SD_OK;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    sd_status st = ids && key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) st = clip_tokenize_padded(p->tokenizer, text, ids, len);
    if (st == SD_OK)
        st = clip_text_encode(p->text_encoder, ids, 1, len, tc->num_layers - clip_skip, true, embeds,
                              NULL);
    if (st == SD_OK) pl_cache_put(p, key, embeds, n);
    free(ids);
    free(key);
    return st;
}

sd_status sd_load_sd(sd_pipeline *p) {
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const te[] = {"CLIPTextModel", NULL};
    static const char *const un[] = {"UNet2DConditionModel", NULL};
    SD_TRY(pl_expect_component(p, "tokenizer", tok));
    SD_TRY(pl_expect_component(p, "text_encoder", te));
    SD_TRY(pl_expect_component(p, "unet", un));
    char *dir = pl_component_dir(p, "tokenizer");
    sd_status st = dir ? clip_tokenizer_load(&p->tokenizer, dir) : SD_ERR_NOMEM;
    free(dir);
    if (st == SD_OK) {
        dir = pl_component_dir(p, "text_encoder");
        const weights_policy policy = pl_load_policy(p, "text_encoder");
        st = dir ? clip_text_load_class(&p->text_encoder, dir, "CLIPTextModel", &policy)
                 : SD_ERR_NOMEM;
        free(dir);
    }
    if (st == SD_OK) {
        dir = pl_component_dir(p, "unet");
        const weights_policy policy = pl_load_policy(p, "unet");
        st = dir ? pl_unet_load(p, dir, &policy) : SD_ERR_NOMEM;
        free(dir);
    }
    if (st == SD_ERR_NOMEM) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st != SD_OK) return st;
    const int lat = p->vae_latent_channels; /* the tiny VAE's when it replaces the model's */
    const unet_config *uc = unet_get_config(p->unet);
    if (uc->in_channels != lat && uc->in_channels != 2 * lat + 1)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet in_channels %d does not fit the vae's %d "
                            "latent channels", p->mi.dir, uc->in_channels, lat);
    if (uc->out_channels != lat)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet out_channels %d differs from the vae's %d "
                            "latent channels", p->mi.dir, uc->out_channels, lat);
    if (uc->cross_attention_dim != clip_text_get_config(p->text_encoder)->hidden_size)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet cross_attention_dim %d differs from the text "
                            "encoder's hidden_size %d", p->mi.dir, uc->cross_attention_dim,
                            clip_text_get_config(p->text_encoder)->hidden_size);
    return SD_OK;
}

/* diffusers: unet.config.sample_size * vae_scale_factor. */
void sd_default_size_unet(const sd_pipeline *p, int *width, int *height) {
    *width = *height = unet_get_config(p->unet)->sample_size * p->vae_scale_factor;
}

/* SDXL's UNet too (generate.h): the context, SDXL's added conditions, and for 9-channel inpainting
 * UNets the mask and masked-image latents joined to the input. */
typedef struct {
    unet *unet;
    const float *context; /* [mb][tokens][dim] */
    int tokens;
    unet_added_cond added;
    bool has_added;
    const pl_i2i *inpaint; /* 9-channel inpainting UNets */
    float *input;          /* [mb][h][w][2c + 1] for them */
} unet_denoiser;

static sd_status unet_predict(void *ctx, const float *x, int mb, int h, int w, double t, float *out) {
    const unet_denoiser *u = ctx;
    if (u->inpaint) {
        pl_i2i_model_input(u->inpaint, x, mb, u->input);
        x = u->input;
    }
    return unet_forward(u->unet, x, mb, h, w, (float)t, u->context, u->tokens,
                        u->has_added ? &u->added : NULL, out);
}

sd_status pl_unet_denoiser(pl_run *r, const unet_added_cond *added, pl_denoiser *out) {
    unet_denoiser *u = pl_run_alloc(r, sizeof *u);
    if (!u) return SD_ERR_NOMEM;
    u->unet = r->p->unet, u->context = r->context, u->tokens = r->tokens;
    if (added) u->added = *added, u->has_added = true;
    if (r->model_channels != r->c) {
        const int mb = (r->cfg ? 2 : 1) * r->batch;
        u->inpaint = &r->i2i;
        u->input = pl_run_alloc(r, (size_t)mb * r->lh * r->lw * r->model_channels * sizeof(float));
        if (!u->input) return SD_ERR_NOMEM;
    }
    *out = (pl_denoiser){u, unet_predict};
    return SD_OK;
}

int pl_unet_model_channels(const sd_pipeline *p) { return unet_get_config(p->unet)->in_channels; }

static sd_status sd_check(pl_run *r) {
    r->tokens = clip_tokenizer_max_length(r->p->tokenizer);
    r->dim = clip_text_get_config(r->p->text_encoder)->hidden_size;
    r->pooled_dim = 0;
    return SD_OK;
}

/* No negative prompt encodes "" (clip_skip: see encode_text). */
static sd_status sd_encode(pl_run *r, bool negative, float *hidden, float *pooled) {
    (void)pooled;
    const char *text = negative ? r->g.negative_prompt : r->g.prompt;
    return encode_text(r->p, text ? text : "", negative ? 0 : r->g.clip_skip, hidden);
}

static sd_status sd_denoiser(pl_run *r, pl_denoiser *out) { return pl_unet_denoiser(r, NULL, out); }

/* A1111's syntax: the one encoder, clip skip on both sides (A1111's CLIP_stop_at_last_layers). */
static void sd_a1111_plan(const pl_run *r, bool negative, pl_a1111_plan *out) {
    (void)negative;
    const int layers = clip_text_get_config(r->p->text_encoder)->num_layers;
    *out = (pl_a1111_plan){.n_clip = 1, .clip_context = true};
    out->clip[0] = (pl_clip_use){r->p->tokenizer, r->p->text_encoder, 0, layers - r->g.clip_skip,
                                 true, -1};
}

const pl_generator pl_generator_sd = {
    .name = "Stable Diffusion 1.x/2.x",
    .options = PL_OPT_ETA | PL_OPT_GUIDANCE_RESCALE | PL_OPT_CLIP_SKIP,
    .image_to_image = true,
    .strength_img2img = 0.8, /* StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline */
    .strength_inpaint = 1.0,
    .scale_initial_noise = true,
    .model_channels = pl_unet_model_channels,
    .check = sd_check,
    .encode = sd_encode,
    .denoiser = sd_denoiser,
    .a1111_plan = sd_a1111_plan,
};
