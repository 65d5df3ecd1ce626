/* Step previews without the VAE: each latent pixel mapped to RGB by a per-family linear map (a
 * 3 x C matrix plus a bias), fitted by others against VAE decodes. The factors are ComfyUI's
 * (comfy/latent_formats.py, classes SD15, SDXL, SD3 and Flux: latent_rgb_factors and
 * latent_rgb_factors_bias; commit 040a3243 of comfyanonymous/ComfyUI), which A1111's "Approx
 * cheap" live preview does likewise (with older SD 1.x factors). As ComfyUI's previewer, the result
 * is taken as [-1, 1], mapped to [0, 1], clamped and scaled to 255, and truncated to a byte.
 *
 * The latents are the denoiser's (scaled by the VAE's scaling_factor, shifted for SD3/Flux), as
 * SD_EVENT_STEP carries them and as ComfyUI samples in them (its process_in). Cheap: C
 * multiply-adds per channel and pixel, no allocation beyond the image.
 *
 * sd_preview_image decodes them through the tiny VAE instead when the pipeline has one (full
 * size, the final decode's own path), else gives this projection. */
#include <stdlib.h>
#include <string.h>

#include "../core/image.h"
#include "pipeline_internal.h"

typedef struct {
    int channels;
    const float (*factors)[3]; /* [channels][R, G, B] */
    float bias[3];
} preview_map;

static const float sd15_factors[4][3] = {
    {0.3512f, 0.2297f, 0.3227f},
    {0.3250f, 0.4974f, 0.2350f},
    {-0.2829f, 0.1762f, 0.2721f},
    {-0.2120f, -0.2616f, -0.7177f},
};

static const float sdxl_factors[4][3] = {
    {0.3651f, 0.4232f, 0.4341f},
    {-0.2533f, -0.0042f, 0.1068f},
    {0.1076f, 0.1111f, -0.0362f},
    {-0.3165f, -0.2492f, -0.2188f},
};

static const float sd3_factors[16][3] = {
    {-0.0922f, -0.0175f, 0.0749f}, {0.0311f, 0.0633f, 0.0954f},  {0.1994f, 0.0927f, 0.0458f},
    {0.0856f, 0.0339f, 0.0902f},   {0.0587f, 0.0272f, -0.0496f}, {-0.0006f, 0.1104f, 0.0309f},
    {0.0978f, 0.0306f, 0.0427f},   {-0.0042f, 0.1038f, 0.1358f}, {-0.0194f, 0.0020f, 0.0669f},
    {-0.0488f, 0.0130f, -0.0268f}, {0.0922f, 0.0988f, 0.0951f},  {-0.0278f, 0.0524f, -0.0542f},
    {0.0332f, 0.0456f, 0.0895f},   {-0.0069f, -0.0030f, -0.0810f}, {-0.0596f, -0.0465f, -0.0293f},
    {-0.1448f, -0.1463f, -0.1189f},
};

static const float flux_factors[16][3] = {
    {-0.0346f, 0.0244f, 0.0681f},  {0.0034f, 0.0210f, 0.0687f},   {0.0275f, -0.0668f, -0.0433f},
    {-0.0174f, 0.0160f, 0.0617f},  {0.0859f, 0.0721f, 0.0329f},   {0.0004f, 0.0383f, 0.0115f},
    {0.0405f, 0.0861f, 0.0915f},   {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
    {0.1008f, 0.0755f, -0.0421f},  {-0.0515f, 0.0201f, 0.0011f},  {0.0428f, -0.0012f, -0.0036f},
    {0.0817f, 0.0765f, 0.0749f},   {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
    {-0.1262f, -0.0982f, -0.0778f},
};

static preview_map family_map(sd_family family) {
    switch (family) {
    case SD_FAMILY_SDXL: return (preview_map){4, sdxl_factors, {0.1084f, -0.0175f, -0.0011f}};
    case SD_FAMILY_SD3: return (preview_map){16, sd3_factors, {0.2394f, 0.2135f, 0.1925f}};
    case SD_FAMILY_FLUX: return (preview_map){16, flux_factors, {-0.0329f, -0.0718f, -0.0851f}};
    default: return (preview_map){4, sd15_factors, {0, 0, 0}};
    }
}

/* [-1, 1] -> a byte, as ComfyUI's preview_to_image: ((v + 1) / 2).clamp(0, 1) * 255, truncated. */
static uint8_t to_byte(double v) {
    double u = (v + 1.0) / 2.0;
    u = u < 0 ? 0 : u > 1 ? 1 : u;
    return (uint8_t)(u * 255.0);
}

sd_status sd_latents_preview(const sd_pipeline *p, const sd_tensor *latents, sd_image *out) {
    memset(out, 0, sizeof *out);
    const preview_map map = family_map(p->mi.family);
    if (!latents || !latents->data || latents->batch < 1 || latents->h < 1 || latents->w < 1)
        return sd_set_error(SD_ERR_ARG, "latents preview: empty latents");
    if (latents->c != map.channels)
        return sd_set_error(SD_ERR_ARG, "latents preview: %d channels; a %s pipeline's latents "
                            "have %d", latents->c, p->mi.class_name, map.channels);
    SD_TRY(image_alloc(out, latents->w, latents->h));
    const size_t pixels = (size_t)latents->h * latents->w;
    for (size_t i = 0; i < pixels; i++) { /* batch item 0 comes first in [batch][h][w][c] */
        const float *x = latents->data + i * (size_t)map.channels;
        for (int k = 0; k < 3; k++) {
            double v = map.bias[k];
            for (int ch = 0; ch < map.channels; ch++) v += (double)x[ch] * map.factors[ch][k];
            out->rgb[i * 3 + k] = to_byte(v);
        }
    }
    return SD_OK;
}

/* With a tiny VAE, the step latents decoded through it: the same unscaling and decoder as the
 * final image (pl_tiny_vae_decode), on a copy of the first batch item. */
sd_status sd_preview_image(sd_pipeline *p, const sd_tensor *latents, sd_image *out) {
    if (!p->vae_tiny) return sd_latents_preview(p, latents, out);
    memset(out, 0, sizeof *out);
    if (!latents || !latents->data || latents->batch < 1 || latents->h < 1 || latents->w < 1)
        return sd_set_error(SD_ERR_ARG, "preview: empty latents");
    if (latents->c != p->vae_latent_channels)
        return sd_set_error(SD_ERR_ARG, "preview: %d channels; the tiny VAE takes %d", latents->c,
                            p->vae_latent_channels);
    const int f = p->vae_scale_factor, h = latents->h, w = latents->w;
    const size_t n = (size_t)h * w * latents->c, px = (size_t)h * f * w * f;
    float *z = malloc(n * sizeof *z), *img = malloc(px * 3 * sizeof *img);
    sd_status st = z && img ? SD_OK : sd_set_error(SD_ERR_NOMEM, "preview: out of memory");
    if (st == SD_OK) {
        memcpy(z, latents->data, n * sizeof *z); /* batch item 0 */
        st = pl_tiny_vae_decode(p, z, 1, h, w, img);
    }
    if (st == SD_OK) st = image_alloc(out, w * f, h * f);
    if (st == SD_OK) image_from_float(img, w * f, h * f, out->rgb);
    free(z), free(img);
    return st;
}
