/* UNet names: LDM's input_blocks / middle_block / output_blocks to diffusers' down_blocks /
 * mid_block / up_blocks (ldm_names.h). Transformer blocks keep their inner names; resnets rename
 * their layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

static int set(weights_rename *r, const char *fmt1, int a, int b, const char *rest) {
    char head[128];
    snprintf(head, sizeof head, fmt1, a, b);
    const int len = snprintf(r->name, sizeof r->name, "%s%s", head, rest);
    return len > 0 && (size_t)len < sizeof r->name ? 1 : -1;
}

/* Resnet layer names: in_layers.0 (GroupNorm), .2 (conv), out_layers.0 / .3, emb_layers.1,
 * skip_connection. Returns the diffusers rest or NULL. */
static const char *resnet_rest(const char *rest, char *buf, size_t n) {
    static const char *const map[][2] = {
        {"in_layers.0.", "norm1."},  {"in_layers.2.", "conv1."},        {"out_layers.0.", "norm2."},
        {"out_layers.3.", "conv2."}, {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        const size_t l = strlen(map[i][0]);
        if (!strncmp(rest, map[i][0], l)) {
            snprintf(buf, n, "%s%s", map[i][1], rest + l);
            return buf;
        }
    }
    return NULL;
}

/* "NAME.N.M.rest": N and M read, *rest set; 0 when the key has not this form. */
static int block_ids(const char *key, const char *name, int *n, int *m, const char **rest) {
    const size_t l = strlen(name);
    if (strncmp(key, name, l) || key[l] != '.') return 0;
    char *end;
    *n = (int)strtol(key + l + 1, &end, 10);
    if (end == key + l + 1 || *end != '.') return 0;
    const char *p = end + 1;
    *m = (int)strtol(p, &end, 10);
    if (end == p || *end != '.') return 0;
    *rest = end + 1;
    return 1;
}

static int unknown(const char *key) {
    sd_set_error(SD_ERR_FORMAT, "UNet tensor 'model.diffusion_model.%s' has no diffusers "
                 "counterpart (not an SD 1.x/2.x/SDXL UNet in the original layout?)", key);
    return -1;
}

int ldm_unet_name(const char *key, int lpb, weights_rename out[3]) {
    static const char *const direct[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"label_emb.0.0.", "add_embedding.linear_1."},  {"label_emb.0.2.", "add_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."}, {"out.0.", "conv_norm_out."}, {"out.2.", "conv_out."},
    };
    for (size_t i = 0; i < sizeof direct / sizeof *direct; i++) {
        const size_t l = strlen(direct[i][0]);
        if (!strncmp(key, direct[i][0], l)) return set(&out[0], direct[i][1], 0, 0, key + l);
    }
    int n, m;
    const char *rest;
    char buf[200];
    const char *res;
    if (block_ids(key, "input_blocks", &n, &m, &rest) && n >= 1) {
        const int b = (n - 1) / (lpb + 1), j = (n - 1) % (lpb + 1);
        if (j == lpb) /* the level's last entry: its downsampler */
            return m == 0 && !strncmp(rest, "op.", 3)
                       ? set(&out[0], "down_blocks.%d.downsamplers.0.conv.", b, 0, rest + 3)
                       : unknown(key);
        if (m == 0 && (res = resnet_rest(rest, buf, sizeof buf)))
            return set(&out[0], "down_blocks.%d.resnets.%d.", b, j, res);
        if (m == 1) return set(&out[0], "down_blocks.%d.attentions.%d.", b, j, rest);
        return unknown(key);
    }
    if (!strncmp(key, "middle_block.", 13)) {
        /* middle_block.N.rest: 0 and 2 resnets, 1 the attention */
        char *end;
        n = (int)strtol(key + 13, &end, 10);
        if (*end != '.') return unknown(key);
        rest = end + 1;
        if (n == 1) return set(&out[0], "mid_block.attentions.0.", 0, 0, rest);
        if ((n == 0 || n == 2) && (res = resnet_rest(rest, buf, sizeof buf)))
            return set(&out[0], "mid_block.resnets.%d.", n / 2, 0, res);
        return unknown(key);
    }
    if (block_ids(key, "output_blocks", &n, &m, &rest)) {
        const int b = n / (lpb + 1), j = n % (lpb + 1);
        if (m == 0 && (res = resnet_rest(rest, buf, sizeof buf)))
            return set(&out[0], "up_blocks.%d.resnets.%d.", b, j, res);
        /* The upsampler follows the resnet (and the attention, where the level has one). */
        if (m >= 1 && !strncmp(rest, "conv.", 5))
            return set(&out[0], "up_blocks.%d.upsamplers.0.", b, 0, rest);
        if (m == 1) return set(&out[0], "up_blocks.%d.attentions.%d.", b, j, rest);
        return unknown(key);
    }
    return unknown(key);
}
