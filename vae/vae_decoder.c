/* The AutoencoderKL Decoder: conv_in, mid block, up blocks (layers_per_block + 1 resnets each, a
 * nearest 2x upsampler + 3x3 conv on all but the last), group norm + SiLU, conv_out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_internal.h"

/* up_blocks.i works at block_out_channels reversed: level i outputs cfg->block_out_channels[n-1-i]. */
static int level_channels(const vae_config *cfg, int i) {
    return cfg->block_out_channels[cfg->n_blocks - 1 - i];
}

sd_status vae_decoder_load(vae_decoder *d, const sd_weights *w, const vae_config *cfg) {
    memset(d, 0, sizeof *d);
    const int n = cfg->n_blocks, g = cfg->norm_num_groups;
    const int top = cfg->block_out_channels[n - 1], bottom = cfg->block_out_channels[0];
    sd_status st = nn_conv2d_load(&d->conv_in, w, cfg->latent_channels, top, 3, 1, 1, "decoder.conv_in");
    if (st == SD_OK)
        st = vae_mid_block_load(&d->mid, w, top, g, cfg->mid_block_add_attention, "decoder.mid_block");
    int prev = top;
    for (int i = 0; i < n && st == SD_OK; i++) {
        vae_level *l = &d->levels[i];
        d->n_levels = i + 1;
        const int c = level_channels(cfg, i);
        l->res = calloc((size_t)cfg->layers_per_block + 1, sizeof *l->res);
        if (!l->res) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for decoder.up_blocks.%d", w->dir, i);
            break;
        }
        for (int j = 0; j <= cfg->layers_per_block && st == SD_OK; j++) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "decoder.up_blocks.%d.resnets.%d", i, j);
            st = vae_resnet_load(&l->res[j], w, j == 0 ? prev : c, c, g, prefix);
            if (st == SD_OK) l->n_res = j + 1;
        }
        l->has_sample = i < n - 1;
        if (st == SD_OK && l->has_sample)
            st = nn_conv2d_load(&l->sample, w, c, c, 3, 1, 1, "decoder.up_blocks.%d.upsamplers.0.conv", i);
        prev = c;
    }
    if (st == SD_OK)
        st = nn_group_norm_load(&d->norm_out, w, bottom, g, VAE_NORM_EPS, "decoder.conv_norm_out");
    if (st == SD_OK)
        st = nn_conv2d_load(&d->conv_out, w, bottom, cfg->out_channels, 3, 1, 1, "decoder.conv_out");
    if (st != SD_OK) vae_decoder_free(d);
    return st;
}

void vae_decoder_free(vae_decoder *d) {
    nn_conv2d_free(&d->conv_in);
    vae_mid_block_free(&d->mid);
    for (int i = 0; i < d->n_levels; i++) vae_level_free(&d->levels[i]);
    nn_norm_free(&d->norm_out);
    nn_conv2d_free(&d->conv_out);
    memset(d, 0, sizeof *d);
}

static void grow(size_t *max, size_t v) {
    if (v > *max) *max = v;
}

size_t vae_decoder_region_floats(const vae_decoder *d, const vae_config *cfg, int h, int w) {
    size_t hw = (size_t)h * w, need = 0;
    const int top = cfg->block_out_channels[cfg->n_blocks - 1], l = cfg->latent_channels;
    grow(&need, vae_round(hw * l) + vae_round(hw * top)); /* post_quant_conv output -> conv_in */
    grow(&need, vae_mid_block_floats(&d->mid, top, hw));
    int prev = top;
    for (int i = 0; i < d->n_levels; i++) {
        const vae_level *lv = &d->levels[i];
        const int c = level_channels(cfg, i);
        for (int j = 0; j < lv->n_res; j++) grow(&need, vae_resnet_floats(j ? c : prev, c, hw));
        if (lv->has_sample) {
            grow(&need, vae_upsample_floats(c, (int)(hw / w), w));
            hw *= 4;
            w *= 2;
        }
        prev = c;
    }
    grow(&need, 2 * vae_round(hw * prev)); /* conv_norm_out's output beside its input */
    return need;
}

size_t vae_decoder_low_region_floats(const vae_decoder *d, const vae_config *cfg, int h, int w) {
    const size_t hw = (size_t)h * w;
    const int top = cfg->block_out_channels[cfg->n_blocks - 1], l = cfg->latent_channels;
    size_t need = vae_round(hw * l) + vae_round(hw * top);
    grow(&need, vae_mid_block_floats(&d->mid, top, hw));
    const vae_level *lv = &d->levels[0];
    for (int j = 0; j < lv->n_res; j++) grow(&need, vae_resnet_floats(j ? level_channels(cfg, 0) : top,
                                                                       level_channels(cfg, 0), hw));
    return need;
}

void vae_decoder_forward_low(const vae_decoder *d, vae_act *a, const float *z, int h, int w) {
    const size_t n0 = (size_t)h * w * d->conv_in.s.cout;
    float *x0 = vae_act_far(a, n0);
    nn_conv2d_forward(&d->conv_in, z, 1, h, w, x0, a->scratch);
    vae_act_set(a, x0, n0);
    vae_mid_block_forward(&d->mid, a, h, w);
    const vae_level *l = &d->levels[0];
    for (int j = 0; j < l->n_res; j++) vae_resnet_forward(&l->res[j], a, h, w);
}

void vae_decoder_forward(const vae_decoder *d, vae_act *a, const float *z, int h, int w,
                         float *image) {
    vae_decoder_forward_low(d, a, z, h, w);
    for (int i = 0; i < d->n_levels; i++) {
        const vae_level *l = &d->levels[i];
        if (i > 0)
            for (int j = 0; j < l->n_res; j++) vae_resnet_forward(&l->res[j], a, h, w);
        if (l->has_sample) {
            vae_upsample_forward(&l->sample, a, h, w);
            h *= 2;
            w *= 2;
        }
    }
    const size_t n = (size_t)h * w * d->norm_out.c;
    float *t = vae_act_gap(a, 0, 0, n);
    nn_group_norm_forward(&d->norm_out, a->x, t, 1, h * w, true);
    nn_conv2d_forward(&d->conv_out, t, 1, h, w, image, a->scratch);
}
