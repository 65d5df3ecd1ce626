/* The AutoencoderKL Encoder: conv_in, down blocks (layers_per_block resnets each, a stride-2 conv
 * on all but the last), mid block, group norm + SiLU, conv_out to 2 * latent_channels moments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_internal.h"

sd_status vae_encoder_load(vae_encoder *e, const sd_weights *w, const vae_config *cfg) {
    memset(e, 0, sizeof *e);
    const int n = cfg->n_blocks, g = cfg->norm_num_groups;
    const int top = cfg->block_out_channels[n - 1];
    sd_status st = nn_conv2d_load(&e->conv_in, w, cfg->in_channels, cfg->block_out_channels[0], 3,
                                  1, 1, "encoder.conv_in");
    int prev = cfg->block_out_channels[0];
    for (int i = 0; i < n && st == SD_OK; i++) {
        vae_level *l = &e->levels[i];
        e->n_levels = i + 1;
        const int c = cfg->block_out_channels[i];
        l->res = calloc((size_t)cfg->layers_per_block, sizeof *l->res);
        if (!l->res) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for encoder.down_blocks.%d", w->dir, i);
            break;
        }
        for (int j = 0; j < cfg->layers_per_block && st == SD_OK; j++) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "encoder.down_blocks.%d.resnets.%d", i, j);
            st = vae_resnet_load(&l->res[j], w, j == 0 ? prev : c, c, g, prefix);
            if (st == SD_OK) l->n_res = j + 1;
        }
        l->has_sample = i < n - 1;
        if (st == SD_OK && l->has_sample) {
            /* Downsample2D with padding=0 pads (0, 1, 0, 1) itself: right and bottom only. */
            st = nn_conv2d_load(&l->sample, w, c, c, 3, 2, 0, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            l->sample.s.pad_b = l->sample.s.pad_r = 1;
        }
        prev = c;
    }
    if (st == SD_OK)
        st = vae_mid_block_load(&e->mid, w, top, g, cfg->mid_block_add_attention, "encoder.mid_block");
    if (st == SD_OK)
        st = nn_group_norm_load(&e->norm_out, w, top, g, VAE_NORM_EPS, "encoder.conv_norm_out");
    if (st == SD_OK)
        st = nn_conv2d_load(&e->conv_out, w, top, 2 * cfg->latent_channels, 3, 1, 1, "encoder.conv_out");
    if (st != SD_OK) vae_encoder_free(e);
    return st;
}

void vae_encoder_free(vae_encoder *e) {
    nn_conv2d_free(&e->conv_in);
    for (int i = 0; i < e->n_levels; i++) vae_level_free(&e->levels[i]);
    vae_mid_block_free(&e->mid);
    nn_norm_free(&e->norm_out);
    nn_conv2d_free(&e->conv_out);
    memset(e, 0, sizeof *e);
}

static void grow(size_t *max, size_t v) {
    if (v > *max) *max = v;
}

size_t vae_encoder_region_floats(const vae_encoder *e, const vae_config *cfg, int h, int w) {
    size_t hw = (size_t)h * w, need = 0;
    int prev = cfg->block_out_channels[0];
    grow(&need, vae_round(hw * prev)); /* conv_in output */
    for (int i = 0; i < e->n_levels; i++) {
        const vae_level *lv = &e->levels[i];
        const int c = cfg->block_out_channels[i];
        for (int j = 0; j < lv->n_res; j++) grow(&need, vae_resnet_floats(j ? c : prev, c, hw));
        if (lv->has_sample) {
            grow(&need, vae_round(hw * c) + vae_round(hw / 4 * c));
            hw /= 4;
        }
        prev = c;
    }
    grow(&need, vae_mid_block_floats(&e->mid, prev, hw));
    const size_t moments = vae_round(hw * 2 * cfg->latent_channels);
    grow(&need, 2 * vae_round(hw * prev) + moments); /* conv_norm_out beside its input, conv_out */
    grow(&need, 2 * moments);                        /* quant_conv */
    return need;
}

/* The levels that downsample (conv_in first): x (outside the region) -> the current activation,
 * *h and *w becoming the latent's size. */
static void forward_high(const vae_encoder *e, vae_act *a, const float *x, int *h, int *w) {
    /* The input lies outside the region: conv_in writes the region's first activation. */
    const size_t n0 = (size_t)*h * *w * e->conv_in.s.cout;
    float *out = vae_act_far(a, n0);
    nn_conv2d_forward(&e->conv_in, x, 1, *h, *w, out, a->scratch);
    vae_act_set(a, out, n0);
    for (int i = 0; i < e->n_levels && e->levels[i].has_sample; i++) {
        const vae_level *l = &e->levels[i];
        for (int j = 0; j < l->n_res; j++) vae_resnet_forward(&l->res[j], a, *h, *w);
        vae_conv_forward(&l->sample, a, *h, *w);
        *h = conv2d_out_h(&l->sample.s, *h);
        *w = conv2d_out_w(&l->sample.s, *w);
    }
}

void vae_encoder_forward_low(const vae_encoder *e, vae_act *a, int h, int w) {
    for (int i = 0; i < e->n_levels; i++) {
        const vae_level *l = &e->levels[i];
        for (int j = 0; !l->has_sample && j < l->n_res; j++)
            vae_resnet_forward(&l->res[j], a, h, w);
    }
    vae_mid_block_forward(&e->mid, a, h, w);
    const size_t n = (size_t)h * w * e->norm_out.c, on = (size_t)h * w * e->conv_out.s.cout;
    float *mom = vae_act_far(a, on), *t = vae_act_gap(a, on, 0, n);
    nn_group_norm_forward(&e->norm_out, a->x, t, 1, h * w, true);
    nn_conv2d_forward(&e->conv_out, t, 1, h, w, mom, a->scratch);
    vae_act_set(a, mom, on);
}

size_t vae_encoder_low_region_floats(const vae_encoder *e, const vae_config *cfg, int h, int w) {
    const size_t hw = (size_t)h * w;
    const int top = cfg->block_out_channels[cfg->n_blocks - 1];
    size_t need = vae_round(hw * top);
    for (int i = 0; i < e->n_levels; i++) {
        const vae_level *lv = &e->levels[i];
        const int c = cfg->block_out_channels[i], cin = cfg->block_out_channels[i > 0 ? i - 1 : 0];
        for (int j = 0; !lv->has_sample && j < lv->n_res; j++)
            grow(&need, vae_resnet_floats(j ? c : cin, c, hw));
    }
    grow(&need, vae_mid_block_floats(&e->mid, top, hw));
    const size_t moments = vae_round(hw * 2 * cfg->latent_channels);
    grow(&need, 2 * vae_round(hw * top) + moments); /* conv_norm_out beside its input, conv_out */
    grow(&need, 2 * moments);                       /* quant_conv */
    return need;
}

void vae_encoder_forward(const vae_encoder *e, vae_act *a, const float *x, int h, int w) {
    forward_high(e, a, x, &h, &w);
    vae_encoder_forward_low(e, a, h, w);
}

void vae_moments_split(const float *mom, size_t hw, int l, float *mean, float *logvar) {
    for (size_t p = 0; p < hw; p++)
        for (int k = 0; k < l; k++) {
            mean[p * l + k] = mom[p * 2 * l + k];
            const float v = mom[p * 2 * l + l + k];
            logvar[p * l + k] = v < -30.0f ? -30.0f : v > 20.0f ? 20.0f : v;
        }
}
