/* The VAE on its own (sd_vae in sd.h): load a model's vae/ (or a VAE folder), decode latents into
 * images and encode images into latents, for tools like vae-check that need no text encoder or
 * denoiser. Thin over vae/vae.h; the thread count is the sd_vae's, applied around each call. */
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/layout.h"
#include "../core/threads.h"
#include "../vae/vae.h"
#include "api_internal.h"

struct sd_vae {
    vae *m;
    int threads;
};

/* DIR/vae when it has a config.json, else DIR itself when it has one. */
static sd_status vae_dir(const char *model, char **out) {
    char *sub = sd_path_join(model, "vae"), *cfg = sub ? sd_path_join(sub, "config.json") : NULL;
    char *own = sd_path_join(model, "config.json");
    sd_status st = SD_OK;
    if (!sub || !cfg || !own) {
        st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    } else if (sd_file_exists(cfg)) {
        *out = sub;
        sub = NULL;
    } else if (sd_file_exists(own)) {
        *out = strdup(model);
        if (!*out) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    } else {
        st = sd_set_error(SD_ERR_IO, "%s: no vae/config.json (nor config.json): not a diffusers "
                          "model or VAE folder", model);
    }
    free(sub), free(cfg), free(own);
    return st;
}

sd_status sd_vae_load(sd_vae **out, const char *dir, const sd_vae_params *params) {
    *out = NULL;
    sd_vae_params vp;
    sd_vae_params_init(&vp);
    if (params)
        SD_TRY(api_copy_params(&vp, sizeof vp, params, SD_VAE_PARAMS_FIRST_SIZE, "sd_vae_params"));
    char *path = NULL;
    SD_TRY(vae_dir(dir, &path));
    sd_vae *v = calloc(1, sizeof *v);
    sd_status st = v ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) {
        v->threads = vp.threads;
        const int threads = sd_threads_begin(v->threads);
        st = vae_load_opt(&v->m, path, !vp.decoder_only, NULL);
        sd_threads_end(threads);
    }
    free(path);
    if (st != SD_OK) {
        sd_vae_free(v);
        return st;
    }
    *out = v;
    return SD_OK;
}

void sd_vae_free(sd_vae *v) {
    if (!v) return;
    if (v->m) vae_free(v->m);
    free(v);
}

int sd_vae_scale_factor(const sd_vae *v) { return vae_scale_factor(v->m); }
int sd_vae_latent_channels(const sd_vae *v) { return vae_get_config(v->m)->latent_channels; }

/* The tile and overlap a decode (latent h x w) or an encode (image h x w) uses under the
 * parameters (0: untiled), and the limit tiles may store up to. */
static sd_status choose_tiles(const sd_vae *v, const sd_vae_decode_params *dp, bool encode, int h,
                              int w, int *tile, int *overlap, size_t *limit) {
    *tile = dp->tile > 0 ? dp->tile : 0;
    *overlap = dp->tile_overlap >= 0 ? dp->tile_overlap : *tile / 4;
    *limit = 0;
    if (dp->tile >= 0) SD_TRY(vae_auto_tile_limit(dp->tile_limit_mb, limit));
    if (dp->tile == 0) { /* by size, as sd_generate decides it */
        *tile = encode ? vae_auto_tile_encode(v->m, h, w, *limit)
                       : vae_auto_tile(v->m, h, w, *limit);
        *overlap = *tile / 4;
    }
    if (*tile > 0 && *overlap >= *tile)
        return sd_set_error(SD_ERR_ARG, "VAE tile overlap %d: must be smaller than the tile (%d)",
                            *overlap, *tile);
    return SD_OK;
}

sd_status sd_vae_decode(sd_vae *v, const sd_latents *z, const sd_vae_decode_params *params,
                        sd_image *images) {
    sd_vae_decode_params dp;
    sd_vae_decode_params_init(&dp);
    if (params)
        SD_TRY(api_copy_params(&dp, sizeof dp, params, SD_VAE_DECODE_PARAMS_FIRST_SIZE,
                               "sd_vae_decode_params"));
    const vae_config *vc = vae_get_config(v->m);
    if (!z->data || z->n < 1 || z->h < 1 || z->w < 1)
        return sd_set_error(SD_ERR_ARG, "VAE decode: empty latents [%d][%d][%d][%d]", z->n, z->c,
                            z->h, z->w);
    if (z->c != vc->latent_channels)
        return sd_set_error(SD_ERR_TENSOR, "VAE decode: latents of %d channels; this VAE takes %d",
                            z->c, vc->latent_channels);
    if (vc->out_channels != 3)
        return sd_set_error(SD_ERR_UNSUPPORTED, "the VAE has %d output channels; images need 3",
                            vc->out_channels);
    int tile, overlap;
    size_t limit;
    SD_TRY(choose_tiles(v, &dp, false, z->h, z->w, &tile, &overlap, &limit));
    const int f = vae_scale_factor(v->m), W = z->w * f, H = z->h * f;
    const size_t nl = (size_t)z->n * z->c * z->h * z->w;
    float *nhwc = malloc(nl * sizeof *nhwc), *x = malloc((size_t)z->n * W * H * 3 * sizeof *x);
    sd_status st = nhwc && x ? SD_OK
                             : sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d decode", W, H);
    if (st == SD_OK) {
        layout_nchw_to_nhwc(z->data, nhwc, z->n, z->c, z->h, z->w);
        if (!dp.raw) vae_unscale_latents(v->m, nhwc, nhwc, nl);
        const int threads = sd_threads_begin(v->threads);
        st = tile ? vae_decode_tiled(v->m, nhwc, z->n, z->h, z->w, tile, overlap, limit, x)
                  : vae_decode(v->m, nhwc, z->n, z->h, z->w, x);
        sd_threads_end(threads);
    }
    for (int b = 0; b < z->n && st == SD_OK; b++) {
        st = image_alloc(&images[b], W, H);
        if (st == SD_OK) image_from_float(x + (size_t)b * W * H * 3, W, H, images[b].rgb);
    }
    if (st != SD_OK)
        for (int b = 0; b < z->n; b++) image_free(&images[b]);
    free(nhwc), free(x);
    return st;
}

sd_status sd_vae_encode(sd_vae *v, const sd_image *img, bool raw, sd_latents *out) {
    sd_vae_decode_params p;
    sd_vae_decode_params_init(&p);
    p.raw = raw;
    return sd_vae_encode_opt(v, img, &p, out);
}

sd_status sd_vae_encode_opt(sd_vae *v, const sd_image *img, const sd_vae_decode_params *params,
                            sd_latents *out) {
    memset(out, 0, sizeof *out);
    sd_vae_decode_params dp;
    sd_vae_decode_params_init(&dp);
    if (params)
        SD_TRY(api_copy_params(&dp, sizeof dp, params, SD_VAE_DECODE_PARAMS_FIRST_SIZE,
                               "sd_vae_decode_params"));
    const int f = vae_scale_factor(v->m), W = img->width, H = img->height;
    const int c = vae_get_config(v->m)->latent_channels, h = H / f, w = W / f;
    if (!img->rgb || W < f || H < f || W % f || H % f)
        return sd_set_error(SD_ERR_ARG, "VAE encode: image %dx%d is not a multiple of %d on each "
                            "side", W, H, f);
    int tile, overlap;
    size_t limit;
    SD_TRY(choose_tiles(v, &dp, true, H, W, &tile, &overlap, &limit));
    const size_t nl = (size_t)h * w * c;
    float *x = malloc((size_t)W * H * 3 * sizeof *x), *mean = malloc(nl * sizeof *mean);
    float *logvar = malloc(nl * sizeof *logvar);
    out->data = malloc(nl * sizeof *out->data);
    sd_status st = x && mean && logvar && out->data ? SD_OK
                                                    : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) {
        image_to_float(img->rgb, W, H, x);
        const int threads = sd_threads_begin(v->threads);
        st = tile ? vae_encode_tiled(v->m, x, 1, H, W, tile, overlap, limit, mean, logvar)
                  : vae_encode(v->m, x, 1, H, W, mean, logvar);
        sd_threads_end(threads);
    }
    if (st == SD_OK) {
        if (!dp.raw) vae_scale_latents(v->m, mean, mean, nl);
        layout_nhwc_to_nchw(mean, out->data, 1, h, w, c);
        out->n = 1, out->c = c, out->h = h, out->w = w;
    } else {
        sd_latents_free(out);
    }
    free(x), free(mean), free(logvar);
    return st;
}
