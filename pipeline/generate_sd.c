/* SD 1.x / 2.x, step for step as diffusers' StableDiffusionPipeline.__call__: encode_prompt,
 * set_timesteps, prepare_latents (torch.randn from the seeded CPU generator, times
 * init_noise_sigma), the denoising loop (one batched UNet call with both CFG halves, guidance,
 * optional guidance rescale, scheduler step), then the VAE decode and 8-bit conversion. With an
 * init image (and mask) the same steps run as StableDiffusionImg2ImgPipeline /
 * StableDiffusionInpaintPipeline (pipeline/img2img.c): later first step, start latents from the
 * image, the known region put back after each step or fed to a 9-channel UNet. */
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "denoise.h"
#include "embed_cache.h"
#include "img2img.h"

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
        st = dir ? unet_load(&p->unet, dir, &policy) : SD_ERR_NOMEM;
        free(dir);
    }
    if (st == SD_ERR_NOMEM) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st != SD_OK) return st;
    const vae_config *vc = vae_get_config(p->vae);
    const unet_config *uc = unet_get_config(p->unet);
    if (uc->in_channels != vc->latent_channels && uc->in_channels != 2 * vc->latent_channels + 1)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet in_channels %d does not fit the vae's %d "
                            "latent channels", p->mi.dir, uc->in_channels, vc->latent_channels);
    if (uc->out_channels != vc->latent_channels)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet out_channels %d differs from the vae's %d "
                            "latent channels", p->mi.dir, uc->out_channels, vc->latent_channels);
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

typedef struct {
    unet *unet;
    const float *context; /* [mb][tokens][dim] */
    int tokens;
    const pl_i2i *inpaint; /* 9-channel inpainting UNets: mask and masked latents join the input */
    float *input;          /* [mb][h][w][2c + 1] for them */
} unet_denoiser;

static sd_status unet_predict(void *ctx, const float *x, int mb, int h, int w, double t, float *out) {
    const unet_denoiser *u = ctx;
    if (u->inpaint) {
        pl_i2i_model_input(u->inpaint, x, mb, u->input);
        x = u->input;
    }
    return unet_forward(u->unet, x, mb, h, w, (float)t, u->context, u->tokens, NULL, out);
}

sd_status sd_generate_sd(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    const double t0 = pl_now();
    const clip_text_config *tc = clip_text_get_config(p->text_encoder);
    const unet_config *uc = unet_get_config(p->unet);
    const int c = vae_get_config(p->vae)->latent_channels, mc = uc->in_channels;
    int width = g->width, height = g->height;
    SD_TRY(pl_i2i_check(p, g, mc, c, &width, &height));
    SD_TRY(pl_check_params(g, width, height, 8));

    const int B = g->batch, tokens = clip_tokenizer_max_length(p->tokenizer), dim = tc->hidden_size;
    const int lh = height / p->vae_scale_factor, lw = width / p->vae_scale_factor;
    const bool cfg = g->guidance > 1.0; /* do_classifier_free_guidance */
    const size_t n = (size_t)B * lh * lw * c, emb = (size_t)tokens * dim;

    float *cond = malloc(emb * sizeof(float)), *uncond = malloc(emb * sizeof(float));
    float *context = malloc((size_t)(cfg ? 2 : 1) * B * emb * sizeof(float));
    float *latents = malloc(n * sizeof(float));
    float *input = mc != c ? malloc((size_t)(cfg ? 2 : 1) * B * lh * lw * mc * sizeof(float)) : NULL;
    sd_scheduler *sched = NULL;
    pl_noise noise = {0};
    pl_i2i i2i = {0};
    sd_status st = cond && uncond && context && latents && (input || mc == c)
                       ? SD_OK
                       : sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d batch of %d", width,
                                      height, B);
    /* 1. Prompt embeddings; the context batch is [uncond x B, cond x B], as torch.cat([neg, pos]). */
    if (st == SD_OK) st = encode_text(p, g->prompt ? g->prompt : "", g->clip_skip, cond);
    if (st == SD_OK && cfg) st = encode_text(p, g->negative_prompt ? g->negative_prompt : "", 0, uncond);
    if (st == SD_OK) {
        pl_emit(g, SD_EVENT_PROMPT_EMBEDS, 0, 1, 0, cond, 1, tokens, 1, dim);
        if (cfg) pl_emit(g, SD_EVENT_NEGATIVE_EMBEDS, 0, 1, 0, uncond, 1, tokens, 1, dim);
        float *ctx = context;
        if (cfg)
            for (int b = 0; b < B; b++, ctx += emb) memcpy(ctx, uncond, emb * sizeof(float));
        for (int b = 0; b < B; b++, ctx += emb) memcpy(ctx, cond, emb * sizeof(float));
    }
    /* 2. Timesteps, 3. initial latents (from the init image when there is one), 4. the loop,
     * 5. decode. */
    pl_release_text_encoders(p); /* low memory: not needed again for these prompts */
    if (st == SD_OK) st = pl_make_scheduler(p, g, NULL, &sched);
    if (st == SD_OK) st = pl_noise_init(&noise, g->seed, B, c, lh, lw);
    if (st == SD_OK && g->init_image)
        st = pl_i2i_prepare(&i2i, p, g, sched, &noise, width, height, mc, latents);
    else if (st == SD_OK)
        pl_initial_latents(g, &noise, sched, latents);
    pl_release_vae(p); /* low memory: the VAE encoder (init image) is done until the decode */
    if (st == SD_OK) {
        unet_denoiser u = {p->unet, context, tokens, mc != c ? &i2i : NULL, input};
        pl_denoiser d = {&u, unet_predict};
        const bool blend = i2i.inpaint && mc == c; /* 4-channel UNets inpaint by blending */
        pl_loop loop = {g, sched, &noise, B, lh, lw, c, cfg, i2i.first,
                        blend ? pl_i2i_after_step : NULL, &i2i};
        st = pl_denoise(&loop, &d, latents, out);
    }
    pl_release_denoiser(p); /* low memory: scratch and pages back before the decode */
    if (st == SD_OK) st = pl_decode(p, g, latents, B, lh, lw, c, out);
    pl_release_vae(p);
    if (st == SD_OK) out->scheduler_class = sched_class_name(sched);
    if (st == SD_OK && g->init_image) out->used.strength = i2i.strength;
    if (sched) sched_free(sched);
    pl_noise_free(&noise);
    pl_i2i_free(&i2i);
    free(cond), free(uncond), free(context), free(latents), free(input);
    if (st != SD_OK) sd_result_free(out);
    out->seconds = pl_now() - t0;
    return st;
}
