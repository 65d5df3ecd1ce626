/* VAE names: LDM's encoder.down.I.block.J / decoder.up.I.block.J / mid.block_K / mid.attn_1 to
 * diffusers' down_blocks / up_blocks (reversed order) / mid_block (ldm_names.h). The attention's
 * 1x1 convolution weights stay [c][c][1][1]: the VAE loader reads that shape as well. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

static int put(weights_rename *r, const char *head, const char *rest) {
    const int len = snprintf(r->name, sizeof r->name, "%s%s", head, rest);
    return len > 0 && (size_t)len < sizeof r->name ? 1 : -1;
}

static int unknown(const char *key) {
    sd_set_error(SD_ERR_FORMAT, "VAE tensor 'first_stage_model.%s' has no diffusers counterpart "
                 "(not an AutoencoderKL in the original layout?)", key);
    return -1;
}

/* Resnet layers: the same names but the shortcut. */
static const char *resnet_rest(const char *rest, char *buf, size_t n) {
    if (!strncmp(rest, "nin_shortcut.", 13)) {
        snprintf(buf, n, "conv_shortcut.%s", rest + 13);
        return buf;
    }
    static const char *const same[] = {"norm1.", "conv1.", "norm2.", "conv2."};
    for (int i = 0; i < 4; i++)
        if (!strncmp(rest, same[i], strlen(same[i]))) return rest;
    return NULL;
}

/* "I.NAME.rest" after "down." / "up.": I read, NAME matched, *rest set. */
static int level(const char *s, int *i, const char **rest) {
    char *end;
    *i = (int)strtol(s, &end, 10);
    if (end == s || *end != '.') return 0;
    *rest = end + 1;
    return 1;
}

int ldm_vae_name(const char *key, int n_blocks, weights_rename out[3]) {
    static const char *const top[] = {"quant_conv.", "post_quant_conv."};
    for (int i = 0; i < 2; i++)
        if (!strncmp(key, top[i], strlen(top[i]))) return put(&out[0], "", key);
    const int enc = !strncmp(key, "encoder.", 8), dec = !strncmp(key, "decoder.", 8);
    if (!enc && !dec) return unknown(key);
    const char *side = enc ? "encoder." : "decoder.", *k = key + 8, *rest, *res;
    char head[96], buf[160];
    int i, j;
    if (!strncmp(k, "conv_in.", 8) || !strncmp(k, "conv_out.", 9)) return put(&out[0], side, k);
    if (!strncmp(k, "norm_out.", 9)) {
        snprintf(head, sizeof head, "%sconv_norm_out.", side);
        return put(&out[0], head, k + 9);
    }
    const int down = enc && !strncmp(k, "down.", 5), up = dec && !strncmp(k, "up.", 3);
    if ((down || up) && level(k + (down ? 5 : 3), &i, &rest)) {
        const int b = down ? i : n_blocks - 1 - i;
        const char *blocks = down ? "down_blocks" : "up_blocks";
        if (b < 0) return unknown(key);
        if (!strncmp(rest, "block.", 6) && level(rest + 6, &j, &rest) &&
            (res = resnet_rest(rest, buf, sizeof buf))) {
            snprintf(head, sizeof head, "%s%s.%d.resnets.%d.", side, blocks, b, j);
            return put(&out[0], head, res);
        }
        const char *sampler = down ? "downsample." : "upsample.";
        if (!strncmp(rest, sampler, strlen(sampler))) {
            snprintf(head, sizeof head, "%s%s.%d.%s.0.", side, blocks, b,
                     down ? "downsamplers" : "upsamplers");
            return put(&out[0], head, rest + strlen(sampler));
        }
        return unknown(key);
    }
    if (!strncmp(k, "mid.block_", 10) && level(k + 10, &j, &rest) && (j == 1 || j == 2) &&
        (res = resnet_rest(rest, buf, sizeof buf))) {
        snprintf(head, sizeof head, "%smid_block.resnets.%d.", side, j - 1);
        return put(&out[0], head, res);
    }
    if (!strncmp(k, "mid.attn_1.", 11)) {
        static const char *const attn[][2] = {
            {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."},
            {"proj_out.", "to_out.0."},
        };
        rest = k + 11;
        for (size_t a = 0; a < sizeof attn / sizeof *attn; a++)
            if (!strncmp(rest, attn[a][0], strlen(attn[a][0]))) {
                snprintf(head, sizeof head, "%smid_block.attentions.0.%s", side, attn[a][1]);
                return put(&out[0], head, rest + strlen(attn[a][0]));
            }
    }
    return unknown(key);
}
