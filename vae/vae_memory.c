/* What a decode costs in memory, and the automatic choice between the untiled decode and the
 * tiled one (vae_tiled.c), made from those costs.
 *
 * The figures are computed from the same functions that size the buffers (the region of
 * vae_internal.h's memory plan, the arena's kernel slack, the tiled decode's own buffers), so
 * they are what the decode touches, not a guess. Weights, the latents and the output image are
 * left out: the caller holds them whichever way it decodes.
 *
 * The choice: untiled whenever its scratch fits the limit, since tiling costs several times the
 * time (vae_tiled.c); otherwise the largest tile whose scratch fits. Tiles are tried by their
 * count along the longer side (1, 2, 3 ... tiles), because the tiled decode cuts each side into
 * equal tiles anyway: tile = ceil(side / count) wastes nothing, and fewer tiles mean fewer
 * margins decoded twice. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../core/log.h"
#include "vae_internal.h"

int vae_decoder_context_pixels(const vae_decoder *d) {
    double r = 0;
    for (int i = 0; i < d->n_levels; i++) {
        const double px = 1.0 / (double)(1 << i);
        if (i > 0) r += 2 * d->levels[i].n_res * px;
        if (d->levels[i].has_sample) r += px / 2; /* the upsampler's conv, at twice the resolution */
    }
    r += 1.0 / (double)(1 << (d->n_levels - 1)); /* conv_out */
    return (int)ceil(r);
}

int vae_tile_max_piece(int len, int tile, int margin) {
    const int n = (len + tile - 1) / tile;
    int max = 0;
    for (int k = 0; k < n; k++) {
        const int lo = (int)((long)k * len / n), hi = (int)((long)(k + 1) * len / n);
        const int plo = lo > margin ? lo - margin : 0, phi = hi + margin < len ? hi + margin : len;
        if (phi - plo > max) max = phi - plo;
    }
    return max;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

size_t vae_decode_scratch_bytes(const vae *m, int h, int w, int tile, int overlap) {
    const vae_config *c = &m->cfg;
    const vae_decoder *d = &m->dec;
    if (h < 1 || w < 1) return 0;
    if (tile <= 0 || (tile >= h && tile >= w))
        return vae_region_bytes(vae_decoder_region_floats(d, c, h, w));
    if (overlap < 0) overlap = 0;
    const int margin = vae_decoder_context_pixels(d) + (overlap + 1) / 2;
    const int ph = vae_tile_max_piece(h, tile, margin), pw = vae_tile_max_piece(w, tile, margin);
    const size_t f = (size_t)vae_scale_factor(m), top = (size_t)c->block_out_channels[c->n_blocks - 1];
    size_t maxc = 0;
    for (int i = 0; i < c->n_blocks; i++) maxc = max_size(maxc, (size_t)c->block_out_channels[i]);
    /* The whole-latent first part and the pieces use the arena one after the other; the tiled
     * decode sizes it once for the larger of the two. */
    const size_t region = max_size(vae_decoder_low_region_floats(d, c, h, w),
                                   vae_decoder_region_floats(d, c, ph, pw));
    const size_t own = (size_t)h * w * top * sizeof(float)                       /* first part's output */
                       + (size_t)h * w * f * f * sizeof(float)                   /* blend weight sums */
                       + (size_t)ph * f * pw * f * c->out_channels * sizeof(float) /* a piece's pixels */
                       + (size_t)ph * f * 2 * maxc * sizeof(double);             /* statistics rows */
    return vae_region_bytes(region) + own;
}

size_t vae_encode_scratch_bytes(const vae *m, int h, int w) {
    if (!m->has_encoder || h < 1 || w < 1) return 0;
    return vae_region_bytes(vae_encoder_region_floats(&m->enc, &m->cfg, h, w));
}

static int pick_tile(const vae *m, int h, int w, size_t limit_bytes) {
    if (vae_decode_scratch_bytes(m, h, w, 0, 0) <= limit_bytes) return 0;
    const int side = h > w ? h : w;
    int tile = side;
    for (int count = 2; tile > VAE_MIN_AUTO_TILE; count++) {
        tile = (side + count - 1) / count;
        if (tile < VAE_MIN_AUTO_TILE) tile = VAE_MIN_AUTO_TILE;
        if (vae_decode_scratch_bytes(m, h, w, tile, tile / 4) <= limit_bytes) return tile;
    }
    /* Nothing fits (the whole-latent part alone is over the limit): the smallest tile is the
     * least memory there is. */
    return tile;
}

int vae_auto_tile(const vae *m, int h, int w, size_t limit_bytes) {
    const int tile = pick_tile(m, h, w, limit_bytes);
    /* Said, since a tiled decode takes several times as long: the caller sees why. */
    const size_t untiled_mb = vae_decode_scratch_bytes(m, h, w, 0, 0) >> 20;
    if (tile)
        sd_log(SD_LOG_INFO, "tile auto: untiled scratch %zu MB, limit %zu MB: tiles of %d latent "
               "pixels, overlap %d (scratch %zu MB)", untiled_mb, limit_bytes >> 20, tile, tile / 4,
               vae_decode_scratch_bytes(m, h, w, tile, tile / 4) >> 20);
    else
        sd_log(SD_LOG_INFO, "tile auto: untiled scratch %zu MB, limit %zu MB: untiled", untiled_mb,
               limit_bytes >> 20);
    return tile;
}

sd_status vae_auto_tile_limit(int limit_mb, size_t *bytes) {
    *bytes = (size_t)VAE_AUTO_TILE_LIMIT_MB << 20;
    if (limit_mb < 0)
        return sd_set_error(SD_ERR_ARG, "VAE tile limit %d MB: it should be a whole number of MB, "
                            "at least 1 (0: the default, %d)", limit_mb, VAE_AUTO_TILE_LIMIT_MB);
    if (limit_mb > 0) *bytes = (size_t)limit_mb << 20;
    return SD_OK;
}
