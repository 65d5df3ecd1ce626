/* ResnetBlock2D as the UNet's down, mid and up blocks build it: pre-norm, SiLU, the time
 * embedding added per channel between the two convolutions, and a 1x1 conv_shortcut when the
 * channel count changes. */
#include <stdio.h>
#include <string.h>

#include "unet_internal.h"

sd_status unet_resnet_load(unet_resnet *r, const sd_weights *w, const unet_config *c, int cin,
                           int cout, float output_scale_factor, const char *prefix) {
    memset(r, 0, sizeof *r);
    r->cin = cin;
    r->cout = cout;
    r->output_scale_factor = output_scale_factor;
    r->has_shortcut = cin != cout;
    const int g = c->norm_num_groups;
    const float eps = c->norm_eps;
    sd_status st = nn_group_norm_load(&r->norm1, w, cin, g, eps, "%s.norm1", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&r->conv1, w, cin, cout, 3, 1, 1, "%s.conv1", prefix);
    if (st == SD_OK)
        st = nn_linear_load(&r->time_emb_proj, w, c->time_embed_dim, cout, true, "%s.time_emb_proj",
                            prefix);
    if (st == SD_OK) st = nn_linear_pack(&r->time_emb_proj);
    if (st == SD_OK) st = nn_group_norm_load(&r->norm2, w, cout, g, eps, "%s.norm2", prefix);
    if (st == SD_OK) st = nn_conv2d_load(&r->conv2, w, cout, cout, 3, 1, 1, "%s.conv2", prefix);
    if (st == SD_OK && r->has_shortcut)
        st = nn_conv2d_load(&r->conv_shortcut, w, cin, cout, 1, 1, 0, "%s.conv_shortcut", prefix);
    if (st != SD_OK) unet_resnet_free(r);
    return st;
}

sd_status unet_resnet_forward(const unet_resnet *r, const float *x, int n, int h, int w,
                              const float *temb_act, float *out, sd_arena *a) {
    const long hw = (long)h * w;
    const int cin = r->cin, cout = r->cout;
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *act = sd_arena_floats(a, (size_t)n * hw * cin);
    float *hid = sd_arena_floats(a, (size_t)n * hw * cout);
    float *tproj = sd_arena_floats(a, (size_t)n * cout);
    if (!act || !hid || !tproj) return unet_nomem();

    nn_group_norm_forward(&r->norm1, x, act, n, (int)hw, true);
    nn_conv2d_forward(&r->conv1, act, n, h, w, hid, a);
    nn_linear_forward(&r->time_emb_proj, temb_act, tproj, n);
    /* Elementwise passes over the activations run on all threads: on one they would cost a few
     * percent of a step at two. */
#pragma omp parallel for schedule(static) if ((size_t)n * hw * cout >= UNET_PARALLEL_MIN)
    for (long q = 0; q < (long)n * hw; q++) {
        float *hq = hid + q * cout;
        const float *tb = tproj + q / hw * cout;
        for (int ch = 0; ch < cout; ch++) hq[ch] += tb[ch];
    }
    nn_group_norm_forward(&r->norm2, hid, hid, n, (int)hw, true);
    nn_conv2d_forward(&r->conv2, hid, n, h, w, out, a);

    const float *shortcut = x;
    if (r->has_shortcut) {
        /* conv2 has consumed hid: it holds the projected input now. */
        nn_conv2d_forward(&r->conv_shortcut, x, n, h, w, hid, a);
        shortcut = hid;
    }
    const size_t total = (size_t)n * hw * cout;
    if (r->output_scale_factor == 1.0f) {
        unet_add(out, shortcut, total);
    } else {
        /* diffusers divides (not multiplies by the reciprocal): keep its rounding */
        const float s = r->output_scale_factor;
#pragma omp parallel for schedule(static) if (total >= UNET_PARALLEL_MIN)
        for (size_t i = 0; i < total; i++) out[i] = (shortcut[i] + out[i]) / s;
    }
    sd_arena_release(a, mark);
    return SD_OK;
}

void unet_resnet_free(unet_resnet *r) {
    nn_norm_free(&r->norm1);
    nn_norm_free(&r->norm2);
    nn_conv2d_free(&r->conv1);
    nn_conv2d_free(&r->conv2);
    nn_linear_free(&r->time_emb_proj);
    nn_conv2d_free(&r->conv_shortcut);
}
