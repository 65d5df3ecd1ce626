/* Tiled decoding: the image is produced tile by tile, so the large activations held at once are
 * those of one tile (and what the plan stores) whatever the image size, and tiles are blended
 * linearly across their overlap.
 *
 * diffusers' AutoencoderKL.tiled_decode decodes each tile on its own and cross-fades the overlaps.
 * That changes the picture, not only at seams: each tile's group norms take their statistics
 * from that tile alone and its mid-block attention sees only that tile. On the tiny test VAE the
 * difference from the untiled decode reaches 255 levels (diffusers' pipelines accept it for huge
 * images). This decode keeps the untiled result instead, and is measured against it (tests: within
 * one level), not against diffusers' tiled one:
 *
 *  - everything at the latent's own resolution (conv_in, the mid block with its attention, the
 *    first up block's resnets) runs once on the whole latent: it holds 1/64 of the pixels;
 *  - the rest (upsamplers and the larger blocks, where the memory goes) runs per tile through the
 *    tiled engine (vae_tiled.h, vae_tiled_engine.c): pieces with a margin of context, group norms
 *    with the whole image's statistics gathered in passes of their own.
 *
 * The price is time, set by how many activations the memory limit lets the plan store whole
 * (vae_tiled_plan.c): with none, about ten times one decode for SD's layer widths (every
 * statistics pass reruns the layers from the latent's resolution); with a stored activation
 * between each pair of resnets, about 1.5 times plus the margins. Memory: the latent-resolution
 * activations of the whole image (the mid block's, about 5 x h x w x 512 floats for SD), one
 * piece's decode, and the stored activations. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "vae_tiled.h"

void vt_decoder_net(const vae *m, vt_net *n) {
    const vae_decoder *d = &m->dec;
    memset(n, 0, sizeof *n);
    n->groups = m->cfg.norm_num_groups;
    int s = 1;
    for (int i = 0; i < d->n_levels; i++) {
        const vae_level *l = &d->levels[i];
        for (int j = 0; i > 0 && j < l->n_res; j++) vt_add_resnet(n, &l->res[j], s);
        if (l->has_sample) {
            vt_add_upconv(n, &l->sample, s);
            s *= 2;
        }
    }
    vt_add_norm_conv(n, &d->norm_out, &d->conv_out, s);
}

size_t vt_decode_bytes(const vae *m, int h, int w, int tile, int band, size_t limit, vt_plan *plan,
                       double *cost) {
    const vae_config *c = &m->cfg;
    vt_net n;
    vt_decoder_net(m, &n);
    vt_plan p = {.n_seg = 1, .cut = {0, n.n_ops}};
    const size_t low_region = vae_decoder_low_region_floats(&m->dec, c, h, w);
    const size_t low = (size_t)h * w * c->block_out_channels[c->n_blocks - 1] * sizeof(float);
    for (int pass = 0; pass < 2; pass++) {
        /* First the plan storing nothing, then the cheapest one within what it leaves of limit. */
        const vt_sizes z = vt_run_sizes(&n, &p, h, w, tile, band);
        const size_t region =
            vae_region_bytes(low_region > z.region_floats ? low_region : z.region_floats);
        const size_t bytes = region + low + z.own_bytes + z.stored_bytes;
        if (pass == 1 || limit <= bytes) {
            if (plan) *plan = p;
            if (cost) *cost = vt_plan_cost(&n, &p, h, w, tile, band);
            return bytes;
        }
        vt_plan_choose(&n, h, w, tile, band, limit - bytes, &p);
    }
    return 0; /* not reached */
}

/* The first part, whole: z [h][w][L] -> low [h][w][top]. */
static sd_status decode_low(vae *m, const float *z, int h, int w, float *low) {
    const vae_config *c = &m->cfg;
    const size_t in_floats = (size_t)h * w * c->latent_channels;
    vae_act a;
    SD_TRY(vae_take_region(m, &a, vae_decoder_low_region_floats(&m->dec, c, h, w), "tiled decode"));
    if (m->has_post_quant) {
        float *pq = vae_act_far(&a, in_floats);
        nn_conv2d_forward(&m->post_quant_conv, z, 1, h, w, pq, a.scratch);
        vae_act_set(&a, pq, in_floats);
        z = pq;
    }
    vae_decoder_forward_low(&m->dec, &a, z, h, w);
    memcpy(low, a.x, (size_t)h * w * c->block_out_channels[c->n_blocks - 1] * sizeof *low);
    sd_arena_reset(&m->arena);
    return SD_OK;
}

sd_status vae_decode_tiled(vae *m, const float *z, int n, int h, int w, int tile, int overlap,
                           size_t limit_bytes, float *image) {
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sd_set_error(SD_ERR_ARG,
                            "vae tiled decode: tile %d with overlap %d (need tile >= 1 "
                            "and 0 <= overlap < tile)",
                            tile, overlap);
    const long f = vae_scale_factor(m);
    if (n < 1 || h < 1 || w < 1 || (long)h * f * w * f > INT_MAX / 4)
        return sd_set_error(SD_ERR_ARG, "vae tiled decode: impossible size %d x %d x %d", n, h, w);
    if (tile >= h && tile >= w) return vae_decode(m, z, n, h, w, image);
    const vae_config *cfg = &m->cfg;
    vt_net net;
    vt_decoder_net(m, &net);
    vt_plan plan;
    vt_decode_bytes(m, h, w, tile, overlap, limit_bytes, &plan, NULL);
    const size_t top = (size_t)cfg->block_out_channels[cfg->n_blocks - 1];
    float *low = malloc((size_t)h * w * top * sizeof *low);
    sd_status st = low ? SD_OK : sd_set_error(SD_ERR_NOMEM, "vae tiled decode: out of memory");
    if (st == SD_OK) {
        /* The whole-latent part and the pieces take the arena in turn: size it once for the larger
         * (reset replaces the blocks by one before either touches its pages), so the peak is one
         * region, not a first block kept while a larger second one is added. */
        vae_act probe;
        const size_t lo = vae_decoder_low_region_floats(&m->dec, cfg, h, w);
        const size_t pc = vt_run_sizes(&net, &plan, h, w, tile, overlap).region_floats;
        st = vae_take_region(m, &probe, lo > pc ? lo : pc, "tiled decode");
        sd_arena_reset(&m->arena);
    }
    const size_t pixels = (size_t)h * w * f * f * cfg->out_channels;
    for (int b = 0; b < n && st == SD_OK; b++) {
        st = decode_low(m, z + (size_t)b * h * w * cfg->latent_channels, h, w, low);
        if (st == SD_OK)
            st = vt_run(m, &net, &plan, h, w, tile, overlap, low, image + b * pixels,
                        "tiled decode");
    }
    free(low);
    return st;
}
