/* The tiny autoencoder (sd_load_params.vae_tiny_dir, gen --vae-tiny) in place of the model's
 * AutoencoderKL, as a diffusers pipeline built with vae=AutoencoderTiny.from_pretrained(dir):
 *
 * - decode: the pipelines divide by vae.config.scaling_factor, the TINY config's (1.0 for taesd
 *   and taesdxl; taesd3 and taef1 carry the big VAE's), and the SD3 and Flux pipelines add its
 *   shift_factor; the SD and SDXL ones never add a shift;
 * - encode (img2img, inpainting): retrieve_latents finds no latent_dist on AutoencoderTiny's
 *   output and takes .latents as they are, so nothing is drawn from the generator (the noise the
 *   scheduler draws afterwards therefore starts earlier in the stream than with the big VAE),
 *   then multiplies by scaling_factor (SDXL: no latents_mean on the tiny config either).
 * The model's VAE is not loaded at all: everything a pipeline reads from it (scale factor, latent
 * channels) comes from the tiny one, as diffusers' pipelines read self.vae.config.
 *
 * With load.vae_tiny_previews_only the tiny VAE (decoder only) sits beside the model's and decodes
 * previews alone (sd_preview_image), with the same scaling. */
#include <stdlib.h>

#include "pipeline_internal.h"

/* Whether the family's pipeline adds vae.config.shift_factor when decoding (and subtracts it
 * after encoding). */
static bool family_shifts(const sd_pipeline *p) {
    return p->mi.family == SD_FAMILY_SD3 || p->mi.family == SD_FAMILY_FLUX;
}

sd_status pl_tiny_vae_load(sd_pipeline *p) {
    const bool replaces = !p->load.vae_tiny_previews_only;
    if (replaces && p->load.vae_file)
        return sd_set_error(SD_ERR_ARG,
                            "vae_tiny_dir (--vae-tiny) and vae_file (--vae) both given: "
                            "the tiny autoencoder replaces the model's VAE");
    /* The tiny VAE's own folder: no single-file source, no LoRA (its layers have other names). */
    weights_policy policy = pl_load_policy(p, "vae");
    policy.source = NULL;
    policy.lora = NULL;
    policy.lora_component = NULL;
    SD_TRY(vae_tiny_load(&p->vae_tiny, p->load.vae_tiny_dir, replaces, &policy));
    const vae_tiny_config *c = vae_tiny_get_config(p->vae_tiny);
    if (!replaces) { /* beside the model's VAE: it must decode the same latents to the same size */
        if (c->latent_channels != p->vae_latent_channels ||
            vae_tiny_scale_factor(p->vae_tiny) != p->vae_scale_factor)
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: a tiny VAE of %d latent channels and scale "
                                "factor %d does not fit the model's VAE (%d, %d)",
                                p->load.vae_tiny_dir, c->latent_channels,
                                vae_tiny_scale_factor(p->vae_tiny), p->vae_latent_channels,
                                p->vae_scale_factor);
        return SD_OK;
    }
    if (c->n_enc != c->n_dec)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s/config.json: the encoder has %d stages and the "
                            "decoder %d: their scale factors differ",
                            p->load.vae_tiny_dir, c->n_enc, c->n_dec);
    if (c->in_channels != 3 || c->out_channels != 3)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s/config.json: in_channels %d and out_channels %d; "
                            "images have 3",
                            p->load.vae_tiny_dir, c->in_channels, c->out_channels);
    p->vae_scale_factor = vae_tiny_scale_factor(p->vae_tiny);
    p->vae_latent_channels = c->latent_channels;
    p->tiny_decodes = true;
    return SD_OK;
}

sd_status pl_tiny_vae_decode(sd_pipeline *p, float *latents, int batch, int h, int w,
                             float *image) {
    const size_t n = (size_t)batch * h * w * p->vae_latent_channels;
    vae_tiny_unscale_latents(p->vae_tiny, family_shifts(p), latents, latents, n);
    return vae_tiny_decode(p->vae_tiny, latents, batch, h, w, image);
}

sd_status pl_tiny_vae_encode(sd_pipeline *p, const float *image, int width, int height,
                             float *out) {
    const int f = p->vae_scale_factor;
    const size_t n = (size_t)(height / f) * (width / f) * p->vae_latent_channels;
    SD_TRY(vae_tiny_encode(p->vae_tiny, image, 1, height, width, out));
    vae_tiny_scale_latents(p->vae_tiny, family_shifts(p), out, out, n);
    return SD_OK;
}
