/* SD3 / SD3.5 single-file names (ldm_names.h): Stability's MMDiT (joint_blocks.N.x_block /
 * context_block, fused attn.qkv) to diffusers' SD3Transformer2DModel, as diffusers'
 * convert_sd3_transformer_checkpoint_to_diffusers maps them, and the CLIP-L of such a file.
 *
 * Fused q/k/v become three row views. Two tensors need a copy: the final layer's adaLN
 * modulation and the last block's context modulation, which SD3's AdaLayerNormContinuous chunks
 * as (shift, scale) and diffusers' as (scale, shift) (diffusers' swap_scale_shift). The last
 * block's context stream is "pre only" in diffusers (no output projection, no MLP): a file that
 * still holds those tensors has them ignored, as the converter leaves them unread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

static int unknown(const char *key, const char *why) {
    sd_set_error(SD_ERR_FORMAT, "tensor 'model.diffusion_model.%s' %s", key, why);
    return -1;
}

/* head + rest into r->name. */
static int put(weights_rename *r, const char *head, const char *rest) {
    const int len = snprintf(r->name, sizeof r->name, "%s%s", head, rest);
    return len > 0 && (size_t)len < sizeof r->name ? 1 : -1;
}

/* A fused qkv Linear (rest: "weight" or "bias") as three row views named head + q/k/v. */
static int split_qkv(const char *head, const char *const names[3], const char *rest,
                     weights_rename out[WEIGHTS_RENAME_MAX]) {
    for (int j = 0; j < 3; j++) {
        char h[160];
        snprintf(h, sizeof h, "%s%s", head, names[j]);
        if (put(&out[j], h, rest) < 0) return -1;
        out[j].part = j;
        out[j].n_parts = 3;
    }
    return 3;
}

static bool linear_tail(const char *rest) { return !strcmp(rest, "weight") || !strcmp(rest, "bias"); }

/* One key of joint block n (rest after "joint_blocks.N."). */
static int block_name(const char *key, int n, bool last, const char *rest,
                      weights_rename out[WEIGHTS_RENAME_MAX]) {
    char head[96];
    snprintf(head, sizeof head, "transformer_blocks.%d.", n);
    const bool x = !strncmp(rest, "x_block.", 8), ctx = !strncmp(rest, "context_block.", 14);
    if (!x && !ctx) return unknown(key, "is neither an x_block nor a context_block tensor");
    const char *r = rest + (x ? 8 : 14);
    static const char *const qkv_x[3] = {"attn.to_q.", "attn.to_k.", "attn.to_v."};
    static const char *const qkv_c[3] = {"attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj."};
    static const char *const qkv_2[3] = {"attn2.to_q.", "attn2.to_k.", "attn2.to_v."};
    if (!strncmp(r, "attn.qkv.", 9) && linear_tail(r + 9))
        return split_qkv(head, x ? qkv_x : qkv_c, r + 9, out);
    if (x && !strncmp(r, "attn2.qkv.", 10) && linear_tail(r + 10))
        return split_qkv(head, qkv_2, r + 10, out);
    /* (stored, diffusers, which stream: 1 x, 2 context, 3 both) */
    static const struct { const char *sd, *x, *c; } map[] = {
        {"attn.ln_q.weight", "attn.norm_q.weight", "attn.norm_added_q.weight"},
        {"attn.ln_k.weight", "attn.norm_k.weight", "attn.norm_added_k.weight"},
        {"attn2.ln_q.weight", "attn2.norm_q.weight", NULL},
        {"attn2.ln_k.weight", "attn2.norm_k.weight", NULL},
        {"attn.proj.", "attn.to_out.0.", "attn.to_add_out."},
        {"attn2.proj.", "attn2.to_out.0.", NULL},
        {"adaLN_modulation.1.", "norm1.linear.", "norm1_context.linear."},
        {"mlp.fc1.", "ff.net.0.proj.", "ff_context.net.0.proj."},
        {"mlp.fc2.", "ff.net.2.", "ff_context.net.2."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        const size_t l = strlen(map[i].sd);
        const bool whole = map[i].sd[l - 1] != '.';
        if (whole ? strcmp(r, map[i].sd) : strncmp(r, map[i].sd, l)) continue;
        const char *to = x ? map[i].x : map[i].c;
        if (!to) break;
        if (!whole && !linear_tail(r + l)) break;
        const bool modulation = !strncmp(map[i].sd, "adaLN", 5);
        /* The last context block is pre-only: diffusers reads only its modulation and q/k/v. */
        if (ctx && last && !modulation && strncmp(map[i].sd, "attn.ln_", 8)) return 0;
        char h[160];
        snprintf(h, sizeof h, "%s%s", head, to);
        out[0].swap_halves = ctx && last && modulation;
        return put(&out[0], h, whole ? "" : r + l) < 0 ? -1 : 1;
    }
    return unknown(key, "is not part of an SD3 MMDiT joint block");
}

int sd3_mmdit_name(const char *key, int num_layers, weights_rename out[WEIGHTS_RENAME_MAX]) {
    if (!strncmp(key, "joint_blocks.", 13)) {
        char *end;
        const long n = strtol(key + 13, &end, 10);
        if (end == key + 13 || *end != '.' || n < 0 || n >= num_layers)
            return unknown(key, "has no joint block number below the file's depth");
        return block_name(key, (int)n, n == num_layers - 1, end + 1, out);
    }
    if (!strcmp(key, "pos_embed")) return put(&out[0], "pos_embed.pos_embed", "");
    static const char *const map[][2] = {
        {"x_embedder.proj.", "pos_embed.proj."},
        {"t_embedder.mlp.0.", "time_text_embed.timestep_embedder.linear_1."},
        {"t_embedder.mlp.2.", "time_text_embed.timestep_embedder.linear_2."},
        {"y_embedder.mlp.0.", "time_text_embed.text_embedder.linear_1."},
        {"y_embedder.mlp.2.", "time_text_embed.text_embedder.linear_2."},
        {"context_embedder.", "context_embedder."},
        {"final_layer.linear.", "proj_out."},
        {"final_layer.adaLN_modulation.1.", "norm_out.linear."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        const size_t l = strlen(map[i][0]);
        if (strncmp(key, map[i][0], l) || !linear_tail(key + l)) continue;
        out[0].swap_halves = !strncmp(key, "final_layer.adaLN", 17);
        return put(&out[0], map[i][1], key + l);
    }
    return unknown(key, "is not in the SD3 MMDiT layout");
}

int sd3_clip_l_name(const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    /* diffusers replaces whatever projection the file holds by an identity matrix (SD3 pools
     * CLIP-L unprojected); it is built from the final norm, whose width it has. */
    if (!strcmp(key, "text_projection.weight")) return 0;
    if (strncmp(key, "text_model.", 11)) {
        sd_set_error(SD_ERR_FORMAT, "tensor 'text_encoders.clip_l.transformer.%s' is not a "
                     "transformers CLIP text model's (text_model.*)", key);
        return -1;
    }
    if (put(&out[0], key, "") < 0) return -1;
    if (strcmp(key, "text_model.final_layer_norm.weight")) return 1;
    out[1].identity = true;
    return put(&out[1], "text_projection.weight", "") < 0 ? -1 : 2;
}
