/* What a decode or an encode costs in memory, and the automatic choice between the untiled pass
 * and the tiled one (vae_tiled.c, vae_encoder_tiled.c), made from those costs.
 *
 * The figures are computed from the same functions that size the buffers (the region of
 * vae_internal.h's memory plan, the arena's kernel slack, the tiled engine's own buffers and
 * stored activations), so they are what the pass touches, not a guess. Weights, the latents and
 * the image are left out: the caller holds them whichever way it runs.
 *
 * The choice: untiled whenever its scratch fits the limit, since tiling costs time; otherwise,
 * among the tiles whose least scratch fits, the one whose plan under the limit (vae_tiled.h)
 * counts the fewest multiply-adds: small tiles leave room for stored activations that spare the
 * statistics passes their reruns, large ones decode fewer margins twice. Tiles are tried by their
 * count along the longer side (2, 3 ... tiles), because the tiled pass cuts each side into equal
 * tiles anyway: tile = ceil(side / count) wastes nothing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../core/log.h"
#include "vae_tiled.h"

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

size_t vae_decode_scratch_bytes(const vae *m, int h, int w, int tile, int overlap) {
    if (h < 1 || w < 1) return 0;
    if (tile <= 0 || (tile >= h && tile >= w))
        return vae_region_bytes(vae_decoder_region_floats(&m->dec, &m->cfg, h, w));
    return vt_decode_bytes(m, h, w, tile, overlap < 0 ? 0 : overlap, 0, NULL, NULL);
}

size_t vae_encode_scratch_bytes(const vae *m, int h, int w, int tile, int overlap) {
    const int f = vae_scale_factor(m), lh = h / f, lw = w / f;
    if (!m->has_encoder || lh < 1 || lw < 1) return 0;
    if (tile <= 0 || (tile >= lh && tile >= lw))
        return vae_region_bytes(vae_encoder_region_floats(&m->enc, &m->cfg, h, w));
    return vt_encode_bytes(m, lh, lw, tile, overlap < 0 ? 0 : overlap, 0, NULL, NULL);
}

/* Scratch and multiply-adds of a tiled run (tile, tile / 4) of an h x w latent under the limit. */
typedef size_t (*tiled_bytes)(const vae *, int, int, int, int, size_t, vt_plan *, double *);

/* Among the tiles (by their count along the longer side) whose least scratch is within `fit`,
 * the one whose run under `limit` counts the fewest multiply-adds; 0 when none fits. */
static int cheapest(const vae *m, int h, int w, size_t fit, size_t limit, tiled_bytes bytes,
                    size_t *least) {
    const int side = h > w ? h : w;
    int tile = side, best = 0;
    double best_cost = 0;
    for (int count = 2; tile > VAE_MIN_AUTO_TILE; count++) {
        tile = (side + count - 1) / count;
        if (tile < VAE_MIN_AUTO_TILE) tile = VAE_MIN_AUTO_TILE;
        const size_t lean = bytes(m, h, w, tile, tile / 4, 0, NULL, NULL);
        if (lean < *least) *least = lean;
        if (lean > fit) continue;
        double cost;
        bytes(m, h, w, tile, tile / 4, limit, NULL, &cost);
        if (!best || cost < best_cost) best = tile, best_cost = cost;
    }
    return best;
}

/* 0 when the untiled scratch fits; else the cheapest tile whose least scratch fits. */
static int pick_tile(const vae *m, int h, int w, size_t untiled, size_t limit, tiled_bytes bytes) {
    if (untiled <= limit) return 0;
    size_t least = SIZE_MAX;
    const int tile = cheapest(m, h, w, limit, limit, bytes, &least);
    if (tile) return tile;
    /* Nothing fits: the whole-latent part alone is over the limit (4096x4096 for SD: 3.1 GB).
     * Small tiles then save little (that part dominates) for many margins run twice (38 times
     * the work in tiles of 16 against 14 times in tiles of 103): the cheapest within a tenth of
     * the least scratch. */
    return cheapest(m, h, w, least + least / 10, limit, bytes, &least);
}

/* Says the choice, since a tiled run takes longer: the caller sees why, and how much longer (the
 * tiled layers' multiply-adds against one untiled pass over them). */
static void log_choice(const char *what, size_t untiled, size_t limit, int tile, size_t tiled,
                       double times) {
    if (tile)
        sd_log(SD_LOG_INFO, "%s tile auto: untiled scratch %zu MB, limit %zu MB: tiles of %d "
               "latent pixels, overlap %d (scratch %zu MB; the tiled layers' work %.1f times "
               "untiled)", what, untiled >> 20, limit >> 20, tile, tile / 4, tiled >> 20, times);
    else
        sd_log(SD_LOG_INFO, "%s tile auto: untiled scratch %zu MB, limit %zu MB: untiled", what,
               untiled >> 20, limit >> 20);
}

/* The automatic choice for one direction (h, w in latent pixels), logged with its expected work. */
static int auto_choice(const vae *m, int h, int w, size_t untiled, size_t limit_bytes,
                       tiled_bytes bytes, void (*net)(const vae *, vt_net *), const char *what) {
    const int tile = pick_tile(m, h, w, untiled, limit_bytes, bytes);
    double cost = 0;
    const size_t tiled = tile ? bytes(m, h, w, tile, tile / 4, limit_bytes, NULL, &cost) : 0;
    vt_net n;
    net(m, &n);
    log_choice(what, untiled, limit_bytes, tile, tiled, cost / vt_net_cost(&n, h, w));
    return tile;
}

int vae_auto_tile(const vae *m, int h, int w, size_t limit_bytes) {
    return auto_choice(m, h, w, vae_decode_scratch_bytes(m, h, w, 0, 0), limit_bytes,
                       vt_decode_bytes, vt_decoder_net, "decode");
}

int vae_auto_tile_encode(const vae *m, int h, int w, size_t limit_bytes) {
    const int f = vae_scale_factor(m), lh = h / f, lw = w / f;
    if (!m->has_encoder || lh < 1 || lw < 1) return 0;
    return auto_choice(m, lh, lw, vae_encode_scratch_bytes(m, h, w, 0, 0), limit_bytes,
                       vt_encode_bytes, vt_encoder_net, "encode");
}

sd_status vae_auto_tile_limit(int limit_mb, size_t *bytes) {
    *bytes = (size_t)VAE_AUTO_TILE_LIMIT_MB << 20;
    if (limit_mb < 0)
        return sd_set_error(SD_ERR_ARG, "VAE tile limit %d MB: it should be a whole number of MB, "
                            "at least 1 (0: the default, %d)", limit_mb, VAE_AUTO_TILE_LIMIT_MB);
    if (limit_mb > 0) *bytes = (size_t)limit_mb << 20;
    return SD_OK;
}
