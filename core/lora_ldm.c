/* kohya-ss SDXL LoRAs name UNet modules in the original (LDM / SGM) layout, '.' written as '_':
 * lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q. This maps such a module name to
 * the diffusers one (down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q), as diffusers'
 * _maybe_map_sgm_blocks_to_diffusers and _convert_non_diffusers_lora_to_diffusers do: the block
 * numbering follows from the UNet config's layers_per_block and which up blocks have attention. */
#include <stdio.h>
#include <string.h>

#include "lora.h"

static bool starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* A resnet's LDM sub-module names (in_layers.2, ...) to diffusers' (conv1, ...). */
static const char *resnet_part(const char *rest) {
    static const char *const map[][2] = {
        {"in_layers_0", "norm1"},     {"in_layers_2", "conv1"},
        {"emb_layers_1", "time_emb_proj"}, {"out_layers_0", "norm2"},
        {"out_layers_3", "conv2"},    {"skip_connection", "conv_shortcut"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(rest, map[i][0])) return map[i][1];
    return NULL;
}

bool lora_ldm_is_unet_key(const char *key) {
    return starts_with(key, "input_blocks_") || starts_with(key, "middle_block_") ||
           starts_with(key, "output_blocks_") || starts_with(key, "time_embed_") ||
           starts_with(key, "label_emb_") || !strcmp(key, "out_0") || !strcmp(key, "out_2");
}

bool lora_ldm_unet_key(const char *key, int layers_per_block, const bool *up_attn, int n_up,
                       char *out, size_t size) {
    static const char *const plain[][2] = {
        {"time_embed_0", "time_embedding_linear_1"}, {"time_embed_2", "time_embedding_linear_2"},
        {"label_emb_0_0", "add_embedding_linear_1"}, {"label_emb_0_2", "add_embedding_linear_2"},
        {"input_blocks_0_0", "conv_in"},             {"out_0", "conv_norm_out"},
        {"out_2", "conv_out"},
    };
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        if (!strcmp(key, plain[i][0])) return snprintf(out, size, "%s", plain[i][1]) < (int)size;
    const int per = layers_per_block + 1; /* an LDM input block per layer, plus a downsampler */
    int i, j, used = 0;
    const char *rest;
    if (sscanf(key, "input_blocks_%d_%d_%n", &i, &j, &used) == 2 && used && i >= 1) {
        rest = key + used;
        const int b = (i - 1) / per, r = (i - 1) % per;
        if (r == layers_per_block)
            return j == 0 && !strcmp(rest, "op") &&
                   snprintf(out, size, "down_blocks_%d_downsamplers_0_conv", b) < (int)size;
        if (j == 1) return snprintf(out, size, "down_blocks_%d_attentions_%d_%s", b, r, rest) < (int)size;
        const char *part = j == 0 ? resnet_part(rest) : NULL;
        return part && snprintf(out, size, "down_blocks_%d_resnets_%d_%s", b, r, part) < (int)size;
    }
    if (sscanf(key, "middle_block_%d_%n", &j, &used) == 1 && used) {
        rest = key + used;
        if (j == 1) return snprintf(out, size, "mid_block_attentions_0_%s", rest) < (int)size;
        const char *part = j == 0 || j == 2 ? resnet_part(rest) : NULL;
        return part && snprintf(out, size, "mid_block_resnets_%d_%s", j / 2, part) < (int)size;
    }
    if (sscanf(key, "output_blocks_%d_%d_%n", &i, &j, &used) == 2 && used) {
        rest = key + used;
        const int b = i / per, r = i % per;
        if (b >= n_up) return false;
        if (j == 0) {
            const char *part = resnet_part(rest);
            return part && snprintf(out, size, "up_blocks_%d_resnets_%d_%s", b, r, part) < (int)size;
        }
        /* After the resnet: the attention when the block has one, then the upsampler. */
        if (j == 1 && up_attn[b])
            return snprintf(out, size, "up_blocks_%d_attentions_%d_%s", b, r, rest) < (int)size;
        return j == (up_attn[b] ? 2 : 1) && !strcmp(rest, "conv") &&
               snprintf(out, size, "up_blocks_%d_upsamplers_0_conv", b) < (int)size;
    }
    return false;
}
