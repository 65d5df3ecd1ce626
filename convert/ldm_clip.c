/* Text encoder names (ldm_names.h): transformers' CLIP as saved inside an LDM checkpoint, and
 * OpenCLIP's text tower as diffusers' convert_open_clip_checkpoint maps it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

static int put(weights_rename *r, const char *head, const char *rest) {
    const int len = snprintf(r->name, sizeof r->name, "%s%s", head, rest);
    return len > 0 && (size_t)len < sizeof r->name ? 1 : -1;
}

int ldm_clip_name(const char *key, weights_rename out[3]) {
    /* transformers before 4.x saved CLIPTextModel without the text_model level. */
    return put(&out[0], strncmp(key, "text_model.", 11) ? "text_model." : "", key);
}

static int unknown(const char *key) {
    sd_set_error(SD_ERR_FORMAT, "OpenCLIP text tensor '%s' has no transformers counterpart", key);
    return -1;
}

int ldm_openclip_name(const char *key, bool with_projection, weights_rename out[3]) {
    static const char *const direct[][2] = {
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.weight", "text_model.final_layer_norm.weight"},
        {"ln_final.bias", "text_model.final_layer_norm.bias"},
    };
    for (size_t i = 0; i < sizeof direct / sizeof *direct; i++)
        if (!strcmp(key, direct[i][0])) return put(&out[0], direct[i][1], "");
    /* OpenCLIP computes x @ text_projection; a Linear computes x @ W^T, so W is its transpose. */
    if (!strcmp(key, "text_projection")) {
        if (!with_projection) return 0;
        out[0].transpose = true;
        return put(&out[0], "text_projection.weight", "");
    }
    /* Not weights of the text encoder diffusers builds (the contrastive temperature, the causal
     * mask OpenCLIP keeps as a buffer). */
    if (!strcmp(key, "logit_scale") || !strcmp(key, "attn_mask")) return 0;
    if (strncmp(key, "transformer.resblocks.", 22)) return unknown(key);
    char *end;
    const int layer = (int)strtol(key + 22, &end, 10);
    if (end == key + 22 || *end != '.') return unknown(key);
    const char *rest = end + 1;
    char head[96];
    snprintf(head, sizeof head, "text_model.encoder.layers.%d.", layer);
    if (!strcmp(rest, "attn.in_proj_weight") || !strcmp(rest, "attn.in_proj_bias")) {
        static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
        const char *what = !strcmp(rest, "attn.in_proj_weight") ? "weight" : "bias";
        for (int i = 0; i < 3; i++) {
            char tail[64];
            snprintf(tail, sizeof tail, "self_attn.%s.%s", qkv[i], what);
            if (put(&out[i], head, tail) < 0) return unknown(key);
            out[i].part = i;
            out[i].n_parts = 3;
        }
        return 3;
    }
    static const char *const map[][2] = {
        {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."},
        {"mlp.c_proj.", "mlp.fc2."}, {"attn.out_proj.", "self_attn.out_proj."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strncmp(rest, map[i][0], strlen(map[i][0]))) {
            char tail[96];
            snprintf(tail, sizeof tail, "%s%s", map[i][1], rest + strlen(map[i][0]));
            return put(&out[0], head, tail);
        }
    return unknown(key);
}
