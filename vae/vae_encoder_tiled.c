/* Tiled encoding: the mirror of the tiled decode (vae_tiled.c), for image-to-image and inpainting
 * at sizes whose untiled encode does not fit (6.2 GB of scratch at 2048x2048 for SD's encoder).
 *
 * The layers above the latent's resolution (conv_in, the down blocks that end in a downsampler:
 * where the memory goes) run per tile through the tiled engine (vae_tiled.h): each piece is a
 * tile plus a margin as wide as those layers reach (6 latent pixels for SD's encoder) plus half
 * the blending band, its group norms use the whole image's statistics, and the pieces' outputs at
 * the latent's resolution are blended across the band. The rest (the last down block's resnets,
 * the mid block with its attention, conv_norm_out, conv_out, quant_conv) then runs once on the
 * whole latent. The result equals the untiled encode up to the order of float sums.
 *
 * Tiles are cut on the latent grid, so every piece starts on a multiple of 8 image pixels and its
 * stride-2 downsamplers sample the same pixels as the untiled encode's; their padding (right and
 * bottom only) falls in the margin except at the image's own edges, where it is the untiled one. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "vae_tiled.h"

void vt_encoder_net(const vae *m, vt_net *n) {
    const vae_encoder *e = &m->enc;
    memset(n, 0, sizeof *n);
    n->groups = m->cfg.norm_num_groups;
    int s = vae_scale_factor(m);
    vt_add_conv(n, &e->conv_in, s, s);
    for (int i = 0; i < e->n_levels && e->levels[i].has_sample; i++) {
        const vae_level *l = &e->levels[i];
        for (int j = 0; j < l->n_res; j++) vt_add_resnet(n, &l->res[j], s);
        vt_add_conv(n, &l->sample, s, s / 2);
        s /= 2;
    }
}

/* Region floats of the whole-latent part (h x w latent pixels), quant_conv included. */
static size_t low_region(const vae *m, int h, int w) {
    return vae_encoder_low_region_floats(&m->enc, &m->cfg, h, w);
}

size_t vt_encode_bytes(const vae *m, int h, int w, int tile, int band, size_t limit, vt_plan *plan,
                       double *cost) {
    const vae_config *c = &m->cfg;
    vt_net n;
    vt_encoder_net(m, &n);
    vt_plan p = {.n_seg = 1, .cut = {0, n.n_ops}};
    const size_t lr = low_region(m, h, w);
    const size_t low = (size_t)h * w * c->block_out_channels[c->n_blocks - 1] * sizeof(float);
    for (int pass = 0; pass < 2; pass++) {
        /* First the plan storing nothing, then the cheapest one within what it leaves of limit. */
        const vt_sizes z = vt_run_sizes(&n, &p, h, w, tile, band);
        const size_t bytes = vae_region_bytes(lr > z.region_floats ? lr : z.region_floats) + low +
                             z.own_bytes + z.stored_bytes;
        if (pass == 1 || limit <= bytes) {
            if (plan) *plan = p;
            if (cost) *cost = vt_plan_cost(&n, &p, h, w, tile, band);
            return bytes;
        }
        vt_plan_choose(&n, h, w, tile, band, limit - bytes, &p);
    }
    return 0; /* not reached */
}

/* The whole-latent part: low [h][w][top] -> mean and logvar [h][w][L]. */
static sd_status encode_low(vae *m, const float *low, int h, int w, float *mean, float *logvar) {
    const vae_config *c = &m->cfg;
    const size_t n0 = (size_t)h * w * c->block_out_channels[c->n_blocks - 1];
    vae_act a;
    SD_TRY(vae_take_region(m, &a, low_region(m, h, w), "tiled encode"));
    memcpy(a.base, low, n0 * sizeof *low);
    vae_act_set(&a, a.base, n0);
    vae_encoder_forward_low(&m->enc, &a, h, w);
    if (m->has_quant) vae_conv_forward(&m->quant_conv, &a, h, w);
    vae_moments_split(a.x, (size_t)h * w, c->latent_channels, mean, logvar);
    sd_arena_reset(&m->arena);
    return SD_OK;
}

sd_status vae_encode_tiled(vae *m, const float *image, int n, int h, int w, int tile, int overlap,
                           size_t limit_bytes, float *mean, float *logvar) {
    if (!m->has_encoder)
        return sd_set_error(SD_ERR_ARG,
                            "vae tiled encode: this vae was loaded without its encoder");
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sd_set_error(SD_ERR_ARG,
                            "vae tiled encode: tile %d with overlap %d (need tile >= 1 "
                            "and 0 <= overlap < tile)",
                            tile, overlap);
    const int f = vae_scale_factor(m), lh = h / f, lw = w / f;
    if (n < 1 || h < f || w < f || h % f || w % f || (long)h * w > INT_MAX / 4)
        return sd_set_error(SD_ERR_ARG,
                            "vae tiled encode: image size %d x %d x %d (sides need to "
                            "be multiples of %d)",
                            n, w, h, f);
    if (tile >= lh && tile >= lw) return vae_encode(m, image, n, h, w, mean, logvar);
    const vae_config *cfg = &m->cfg;
    vt_net net;
    vt_encoder_net(m, &net);
    vt_plan plan;
    vt_encode_bytes(m, lh, lw, tile, overlap, limit_bytes, &plan, NULL);
    const size_t top = (size_t)cfg->block_out_channels[cfg->n_blocks - 1];
    float *low = malloc((size_t)lh * lw * top * sizeof *low);
    sd_status st = low ? SD_OK : sd_set_error(SD_ERR_NOMEM, "vae tiled encode: out of memory");
    if (st == SD_OK) {
        /* One arena block for the pieces and the whole-latent part in turn (as the decode). */
        vae_act probe;
        const size_t pc = vt_run_sizes(&net, &plan, lh, lw, tile, overlap).region_floats;
        const size_t lr = low_region(m, lh, lw);
        st = vae_take_region(m, &probe, lr > pc ? lr : pc, "tiled encode");
        sd_arena_reset(&m->arena);
    }
    const size_t in = (size_t)h * w * cfg->in_channels,
                 out = (size_t)lh * lw * cfg->latent_channels;
    for (int b = 0; b < n && st == SD_OK; b++) {
        st = vt_run(m, &net, &plan, lh, lw, tile, overlap, image + b * in, low, "tiled encode");
        if (st == SD_OK) st = encode_low(m, low, lh, lw, mean + b * out, logvar + b * out);
    }
    free(low);
    return st;
}
