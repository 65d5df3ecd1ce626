/* Image-to-image and inpainting shared by the families (see img2img.h for what diffusers does and
 * in which order). */
#include "img2img.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/layout.h"
#include "../core/resize.h"

static sd_status check_image(const sd_image *im, const char *what) {
    if (!im->rgb || im->width <= 0 || im->height <= 0)
        return sd_set_error(SD_ERR_ARG, "the %s is empty", what);
    return SD_OK;
}

sd_status pl_i2i_check(const sd_pipeline *p, const sd_gen_params *g, int model_channels,
                       int latent_c, int *width, int *height) {
    const bool inpaint_model = model_channels == 2 * latent_c + 1;
    if (!g->init_image) {
        if (inpaint_model)
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a %d-channel inpainting UNet needs an "
                                "init image and a mask", p->mi.dir, model_channels);
        return SD_OK;
    }
    const sd_image *im = g->init_image;
    SD_TRY(check_image(im, "init image"));
    if (g->mask_image) {
        SD_TRY(check_image(g->mask_image, "mask"));
        /* diffusers would stretch each to the output size on its own; a mask drawn for another
         * image would then repaint the wrong place, so refuse it. */
        if (g->mask_image->width != im->width || g->mask_image->height != im->height)
            return sd_set_error(SD_ERR_ARG, "the mask is %dx%d but the init image is %dx%d: they "
                                "must be the same size", g->mask_image->width,
                                g->mask_image->height, im->width, im->height);
    } else if (inpaint_model) {
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a %d-channel inpainting UNet needs a mask",
                            p->mi.dir, model_channels);
    }
    if (!(g->strength > 0 && g->strength <= 1))
        return sd_set_error(SD_ERR_ARG, "strength %g is outside (0, 1]", g->strength);
    const int f = p->vae_scale_factor;
    int w = g->width, h = g->height;
    if (g->mask_image) {
        /* StableDiffusionInpaintPipeline: height/width default to the UNet's sample size. */
        int dw, dh;
        sd_pipeline_default_size(p, &dw, &dh);
        if (!w) w = dw;
        if (!h) h = dh;
    } else {
        /* get_default_height_width: the image's size, down to a multiple of the scale factor. */
        if (!w) w = im->width - im->width % f;
        if (!h) h = im->height - im->height % f;
        if (w == 0 || h == 0)
            return sd_set_error(SD_ERR_ARG, "the init image (%dx%d) is smaller than %d pixels on a "
                                "side", im->width, im->height, f);
    }
    *width = w, *height = h;
    return SD_OK;
}

sd_status pl_i2i_first_call(const sd_scheduler *s, int steps, double strength, int *first) {
    int run = (int)(steps * strength); /* Python's int(): truncation */
    if (run > steps) run = steps;
    if (run < 1)
        return sd_set_error(SD_ERR_ARG, "strength %g with %d steps runs no denoising step "
                            "(steps x strength must be at least 1)", strength, steps);
    *first = (steps - run) * sched_order(s);
    if (*first >= sched_len(s))
        return sd_set_error(SD_ERR_ARG, "strength %g: the schedule has only %d model calls",
                            strength, sched_len(s));
    return SD_OK;
}

sd_status pl_i2i_image_pixels(const sd_image *img, int width, int height, float *out) {
    if (img->width == width && img->height == height) {
        image_to_float(img->rgb, width, height, out);
        return SD_OK;
    }
    sd_image r;
    SD_TRY(resize_image(img, width, height, RESIZE_LANCZOS, &r));
    image_to_float(r.rgb, width, height, out);
    image_free(&r);
    return SD_OK;
}

sd_status pl_i2i_mask_pixels(const sd_image *mask, int width, int height, float *out) {
    /* The mask processor resizes the RGB image first, then converts it to grey. */
    sd_image r = {0};
    const sd_image *m = mask;
    if (mask->width != width || mask->height != height) {
        SD_TRY(resize_image(mask, width, height, RESIZE_LANCZOS, &r));
        m = &r;
    }
    const size_t n = (size_t)width * height;
    uint8_t *grey = malloc(n);
    if (!grey) {
        image_free(&r);
        return sd_set_error(SD_ERR_NOMEM, "out of memory for the mask");
    }
    resize_rgb_to_gray(m->rgb, width, height, grey);
    for (size_t i = 0; i < n; i++) out[i] = (float)grey[i] / 255.0f < 0.5f ? 0.0f : 1.0f;
    free(grey);
    image_free(&r);
    return SD_OK;
}

sd_status pl_i2i_encode(sd_pipeline *p, const sd_gen_params *g, const float *image, int width,
                        int height, sd_rng *rng, float *out) {
    if (p->tiny_decodes) return pl_tiny_vae_encode(p, image, width, height, out);
    vae *v = p->vae;
    const int f = vae_scale_factor(v), c = vae_get_config(v)->latent_channels;
    const int h = height / f, w = width / f;
    const size_t n = (size_t)h * w * c;
    float *mean = malloc(n * sizeof *mean), *logvar = malloc(n * sizeof *logvar);
    float *draw = malloc(n * sizeof *draw);
    sd_status st = mean && logvar && draw ? SD_OK
                                          : sd_set_error(SD_ERR_NOMEM, "out of memory encoding an image");
    /* --vae-tile: N tiles of N latent pixels, off (-1) whole, auto (0) tiled only when the
     * untiled encode's scratch is over the limit (vae_auto_tile_encode). */
    int tile = g->vae_tile;
    size_t limit = 0;
    if (st == SD_OK && tile >= 0) st = vae_auto_tile_limit(g->vae_tile_limit_mb, &limit);
    if (st == SD_OK && tile == 0) tile = vae_auto_tile_encode(v, height, width, limit);
    if (st == SD_OK)
        st = tile > 0
                 ? vae_encode_tiled(v, image, 1, height, width, tile, tile / 4, limit, mean, logvar)
                 : vae_encode(v, image, 1, height, width, mean, logvar);
    if (st == SD_OK) {
        rng_randn(rng, draw, n); /* torch.randn of the posterior's NCHW shape */
        layout_nchw_to_nhwc(draw, out, 1, c, h, w);
        for (size_t i = 0; i < n; i++) out[i] = mean[i] + expf(0.5f * logvar[i]) * out[i];
        vae_scale_latents(v, out, out, n);
    }
    free(mean), free(logvar), free(draw);
    return st;
}

void pl_i2i_free(pl_i2i *st) {
    free(st->image_latents), free(st->noise), free(st->mask), free(st->masked), free(st->scratch);
    memset(st, 0, sizeof *st);
}

/* The mask on the latent grid and, for inpainting models, the masked image's latents; `image` is
 * the preprocessed init image, masked in place. */
static sd_status prepare_mask(pl_i2i *st, sd_pipeline *p, const sd_gen_params *g, pl_noise *ns,
                              int width, int height, float *image) {
    const size_t px = (size_t)width * height, n1 = (size_t)st->h * st->w * st->c;
    float *mask = malloc(px * sizeof *mask);
    st->mask = malloc((size_t)st->h * st->w * sizeof *st->mask);
    st->masked = malloc(n1 * sizeof *st->masked);
    sd_status st_ = mask && st->mask && st->masked ? SD_OK
                                                   : sd_set_error(SD_ERR_NOMEM, "out of memory for the mask");
    if (st_ == SD_OK) st_ = pl_i2i_mask_pixels(g->mask_image, width, height, mask);
    if (st_ == SD_OK) {
        resize_torch_nearest(mask, height, width, 1, st->mask, st->h, st->w);
        if (st->model_channels != st->c) {
            for (size_t i = 0; i < px; i++) {
                const float keep = mask[i] < 0.5f ? 1.0f : 0.0f; /* image * (mask < 0.5) */
                for (int k = 0; k < 3; k++) image[3 * i + k] *= keep;
            }
            st_ = pl_i2i_encode(p, g, image, width, height, &ns->rng, st->masked);
        } else {
            /* A 4-channel UNet never sees the masked image's latents, but diffusers encodes them
             * all the same, drawing their sample from the generator: draw it too, so that a
             * scheduler's later noise comes from the same place in the stream. (The tiny VAE's
             * encode draws nothing.) */
            if (!p->tiny_decodes) rng_randn(&ns->rng, st->masked, n1);
        }
    }
    free(mask);
    return st_;
}

sd_status pl_i2i_prepare(pl_i2i *st, sd_pipeline *p, const sd_gen_params *g, sd_scheduler *sched,
                         pl_noise *ns, int width, int height, int model_channels, float *latents) {
    memset(st, 0, sizeof *st);
    const int f = p->vae_scale_factor;
    st->batch = g->batch, st->h = height / f, st->w = width / f;
    st->c = p->vae_latent_channels;
    st->model_channels = model_channels;
    st->inpaint = g->mask_image != NULL;
    st->strength = g->strength;
    st->sched = sched;
    SD_TRY(pl_i2i_first_call(sched, g->steps, st->strength, &st->first));

    const size_t n1 = (size_t)st->h * st->w * st->c, n = (size_t)st->batch * n1;
    float *image = malloc((size_t)width * height * 3 * sizeof *image);
    st->image_latents = malloc(n1 * sizeof(float));
    st->noise = malloc(n * sizeof(float));
    st->scratch = malloc(n * sizeof(float));
    sd_status r = image && st->image_latents && st->noise && st->scratch
                      ? SD_OK
                      : sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d init image", width,
                                     height);
    if (r == SD_OK) r = pl_i2i_image_pixels(g->init_image, width, height, image);
    const bool strength_max = st->strength == 1.0, inpaint_model = model_channels != st->c;
    /* img2img and noised starts need the image's latents; inpainting blends need them too. */
    const bool noised_start = !st->inpaint || (!g->latents && !strength_max);
    if (r == SD_OK && (noised_start || (st->inpaint && !inpaint_model)))
        r = pl_i2i_encode(p, g, image, width, height, &ns->rng, st->image_latents);
    if (r == SD_OK) {
        /* Given latents replace the drawn noise (inpainting: diffusers' latents= argument). */
        if (g->latents) layout_nchw_to_nhwc(g->latents, st->noise, st->batch, st->c, st->h, st->w);
        else pl_noise_draw(ns, st->noise, n);
        if (noised_start) {
            for (int b = 0; b < st->batch; b++) memcpy(latents + b * n1, st->image_latents, n1 * sizeof(float));
            sched_add_noise(sched, st->first, latents, st->noise, latents, n);
        } else {
            const float sigma = (float)sched_init_noise_sigma(sched);
            for (size_t k = 0; k < n; k++) latents[k] = st->noise[k] * sigma;
        }
    }
    if (r == SD_OK && st->inpaint) r = prepare_mask(st, p, g, ns, width, height, image);
    free(image);
    return r;
}

void pl_i2i_after_step(void *ctx, int i, float *latents) {
    pl_i2i *st = ctx;
    const size_t hw = (size_t)st->h * st->w, n1 = hw * st->c, n = (size_t)st->batch * n1;
    float *known = st->scratch;
    for (int b = 0; b < st->batch; b++) memcpy(known + b * n1, st->image_latents, n1 * sizeof(float));
    if (i + 1 < sched_len(st->sched)) sched_add_noise(st->sched, i + 1, known, st->noise, known, n);
    for (int b = 0; b < st->batch; b++)
        for (size_t p = 0; p < hw; p++) {
            const float m = st->mask[p], keep = 1.0f - m;
            float *x = latents + b * n1 + p * st->c;
            const float *k = known + b * n1 + p * st->c;
            for (int ch = 0; ch < st->c; ch++) x[ch] = keep * k[ch] + m * x[ch];
        }
}

void pl_i2i_model_input(const pl_i2i *st, const float *x, int mb, float *out) {
    const int c = st->c, oc = 2 * c + 1;
    const size_t hw = (size_t)st->h * st->w;
    for (int b = 0; b < mb; b++)
        for (size_t p = 0; p < hw; p++) {
            float *o = out + ((size_t)b * hw + p) * oc;
            memcpy(o, x + ((size_t)b * hw + p) * c, c * sizeof *o);
            o[c] = st->mask[p];
            memcpy(o + c + 1, st->masked + p * c, c * sizeof *o);
        }
}
