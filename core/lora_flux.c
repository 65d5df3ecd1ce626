/* FLUX.1 LoRAs in Black Forest Labs' module names (kohya-ss lora_unet_double_blocks_0_img_attn_qkv,
 * ComfyUI diffusion_model.double_blocks.0.img_attn.qkv, '.' written as '_'), mapped to the
 * diffusers FluxTransformer2DModel modules as diffusers' _convert_kohya_flux_lora_to_diffusers
 * does. BFL fuses some projections that diffusers keeps apart: img_attn.qkv is to_q, to_k, to_v
 * (three equal row blocks) and single_blocks.N.linear1 is to_q, to_k, to_v and proj_mlp (three
 * blocks of the hidden size, then the MLP's rows). Since delta = up @ down, each diffusers module
 * gets the matching rows of `up` with the whole `down`, as diffusers splits them; which rows is
 * worked out from the model tensor's shape when the delta is applied (core/lora.c), so no FLUX
 * config is needed here. XLabs files name attention processors under the BFL blocks
 * (double_blocks.0.processor.qkv_lora1.down.weight) and are mapped as diffusers'
 * _convert_xlabs_flux_lora_to_diffusers does, without alpha. */
#include <stdio.h>
#include <string.h>

#include "lora.h"

static bool starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static const char *const top_names[] = {
    "double_blocks_", "single_blocks_", "img_in", "txt_in", "time_in_", "vector_in_",
    "guidance_in_",   "final_layer_",
};

bool lora_flux_is_key(const char *key) {
    for (size_t i = 0; i < sizeof top_names / sizeof *top_names; i++)
        if (starts_with(key, top_names[i])) return true;
    return false;
}

typedef struct {
    const char *bfl;         /* after "double_blocks_N_" / "single_blocks_N_", or the whole key */
    const char *diffusers[4]; /* after "transformer_blocks_N_" / ..., or the whole name */
    int n;
    bool tail, swap_halves, ignore_alpha;
} flux_row;

static const flux_row double_rows[] = {
    {"img_attn_qkv", {"attn_to_q", "attn_to_k", "attn_to_v"}, 3, false, false, false},
    {"img_attn_proj", {"attn_to_out_0"}, 1, false, false, false},
    {"img_mlp_0", {"ff_net_0_proj"}, 1, false, false, false},
    {"img_mlp_2", {"ff_net_2"}, 1, false, false, false},
    {"img_mod_lin", {"norm1_linear"}, 1, false, false, false},
    {"txt_attn_qkv", {"attn_add_q_proj", "attn_add_k_proj", "attn_add_v_proj"}, 3, false, false,
     false},
    {"txt_attn_proj", {"attn_to_add_out"}, 1, false, false, false},
    {"txt_mlp_0", {"ff_context_net_0_proj"}, 1, false, false, false},
    {"txt_mlp_2", {"ff_context_net_2"}, 1, false, false, false},
    {"txt_mod_lin", {"norm1_context_linear"}, 1, false, false, false},
    /* XLabs' attention processors (image stream 1, text stream 2); diffusers reads no alpha */
    {"processor_qkv_lora1", {"attn_to_q", "attn_to_k", "attn_to_v"}, 3, false, false, true},
    {"processor_qkv_lora2", {"attn_add_q_proj", "attn_add_k_proj", "attn_add_v_proj"}, 3, false,
     false, true},
    {"processor_proj_lora1", {"attn_to_out_0"}, 1, false, false, true},
    {"processor_proj_lora2", {"attn_to_add_out"}, 1, false, false, true},
};
static const flux_row single_rows[] = {
    {"linear1", {"attn_to_q", "attn_to_k", "attn_to_v", "proj_mlp"}, 4, true, false, false},
    {"linear2", {"proj_out"}, 1, false, false, false},
    {"modulation_lin", {"norm_linear"}, 1, false, false, false},
    /* XLabs: q, k, v alone (linear1's MLP rows untouched) */
    {"processor_qkv_lora", {"attn_to_q", "attn_to_k", "attn_to_v"}, 3, false, false, true},
    {"processor_proj_lora", {"proj_out"}, 1, false, false, true},
};
/* diffusers' kohya conversion takes final_layer's up as it is (adaLN's halves swapped: BFL's
 * (shift, scale) is diffusers' (scale, shift)) and drops its alpha: kept so here. */
static const flux_row plain_rows[] = {
    {"img_in", {"x_embedder"}, 1, false, false, false},
    {"txt_in", {"context_embedder"}, 1, false, false, false},
    {"time_in_in_layer", {"time_text_embed_timestep_embedder_linear_1"}, 1, false, false, false},
    {"time_in_out_layer", {"time_text_embed_timestep_embedder_linear_2"}, 1, false, false, false},
    {"vector_in_in_layer", {"time_text_embed_text_embedder_linear_1"}, 1, false, false, false},
    {"vector_in_out_layer", {"time_text_embed_text_embedder_linear_2"}, 1, false, false, false},
    {"guidance_in_in_layer", {"time_text_embed_guidance_embedder_linear_1"}, 1, false, false,
     false},
    {"guidance_in_out_layer", {"time_text_embed_guidance_embedder_linear_2"}, 1, false, false,
     false},
    {"final_layer_linear", {"proj_out"}, 1, false, false, true},
    {"final_layer_adaLN_modulation_1", {"norm_out_linear"}, 1, false, true, true},
};

static const flux_row *find_row(const flux_row *rows, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].bfl, name)) return &rows[i];
    return NULL;
}

int lora_flux_targets(const char *key, lora_flux_target out[4]) {
    const flux_row *row = NULL;
    const char *block = "";
    int b = 0, used = 0;
    if (sscanf(key, "double_blocks_%d_%n", &b, &used) == 1 && used && b >= 0) {
        row = find_row(double_rows, sizeof double_rows / sizeof *double_rows, key + used);
        block = "transformer_blocks_";
    } else if (sscanf(key, "single_blocks_%d_%n", &b, &used) == 1 && used && b >= 0) {
        row = find_row(single_rows, sizeof single_rows / sizeof *single_rows, key + used);
        block = "single_transformer_blocks_";
    } else {
        row = find_row(plain_rows, sizeof plain_rows / sizeof *plain_rows, key);
    }
    if (!row) return 0;
    for (int i = 0; i < row->n; i++) {
        lora_flux_target *t = &out[i];
        const int len = block[0] ? snprintf(t->key, sizeof t->key, "%s%d_%s", block, b,
                                            row->diffusers[i])
                                 : snprintf(t->key, sizeof t->key, "%s", row->diffusers[i]);
        if (len < 0 || (size_t)len >= sizeof t->key) return 0;
        t->part = i;
        t->n_parts = row->n > 1 ? row->n : 0;
        t->has_tail = row->tail;
        t->swap_halves = row->swap_halves;
        t->ignore_alpha = row->ignore_alpha;
    }
    return row->n;
}
