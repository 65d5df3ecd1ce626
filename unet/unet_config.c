/* config.json of a UNet2DConditionModel: diffusers' defaults for absent keys, its naming quirks,
 * and a refusal (SD_ERR_UNSUPPORTED, naming the key) for every feature this engine does not
 * implement, so that an unknown model fails at load instead of producing wrong images. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "unet.h"

static const cJSON *raw(const sd_cfg *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static sd_status unsupported(const char *path, const char *key, const char *value) {
    return sd_set_error(SD_ERR_UNSUPPORTED, "%s: %s = %s is not supported", path, key, value);
}

/* A key that must be absent or null (a feature this engine does not implement). */
static sd_status require_null(const sd_cfg *c, const char *key) {
    const cJSON *v = raw(c, key);
    if (!v) return SD_OK;
    char *text = cJSON_PrintUnformatted(v);
    sd_status st = unsupported(c->path, key, text ? text : "?");
    cJSON_free(text);
    return st;
}

/* A string key that must take one value (or be absent when `def` is that value). */
static sd_status require_str(sd_cfg *c, const char *key, const char *def, const char *want,
                             const char *also) {
    const char *v = cfg_str(c, key, def);
    if (cfg_status(c) != SD_OK) return cfg_status(c);
    if (v && (!strcmp(v, want) || (also && !strcmp(v, also)))) return SD_OK;
    return unsupported(c->path, key, v ? v : "null");
}

/* only_cross_attention: a bool or a per-block list; only all-false is implemented. */
static sd_status require_false_or_list(const sd_cfg *c, const char *key) {
    const cJSON *v = raw(c, key);
    if (!v) return SD_OK;
    if (cJSON_IsArray(v)) {
        for (const cJSON *it = v->child; it; it = it->next)
            if (!cJSON_IsFalse(it)) return unsupported(c->path, key, "a list with true entries");
        return SD_OK;
    }
    if (cJSON_IsFalse(v)) return SD_OK;
    return unsupported(c->path, key, cJSON_IsTrue(v) ? "true" : "a non-boolean value");
}

/* Block type names; diffusers strips a "UNetRes" prefix before matching. */
static sd_status read_block_types(sd_cfg *c, const char *key, int n, const char *with_attn,
                                  const char *without, bool *has_attn) {
    const char *names[UNET_MAX_BLOCKS + 1];
    int got = cfg_str_list(c, key, names, UNET_MAX_BLOCKS + 1);
    if (cfg_status(c) != SD_OK) return cfg_status(c);
    if (got < 0) {
        /* Absent: diffusers' default, the 4-level SD layout (CrossAttn x3 then plain, mirrored
         * for up), which only fits 4 block_out_channels. */
        if (n != 4)
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: key '%s' is absent and its 4-entry default does not match %d "
                                "block_out_channels",
                                c->path, key, n);
        bool up = !strcmp(key, "up_block_types");
        for (int i = 0; i < n; i++) has_attn[i] = up ? i != 0 : i != n - 1;
        return SD_OK;
    }
    if (got != n)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: key '%s' has %d entries, expected %d (block_out_channels)",
                            c->path, key, got, n);
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        if (!strncmp(name, "UNetRes", 7)) name += 7;
        if (!strcmp(name, with_attn))
            has_attn[i] = true;
        else if (!strcmp(name, without))
            has_attn[i] = false;
        else
            return unsupported(c->path, key, names[i]);
    }
    return SD_OK;
}

/* transformer_layers_per_block: int or flat list; diffusers' nested lists (asymmetric UNets with
 * reverse_transformer_layers_per_block) are not implemented. */
static sd_status read_transformer_layers(sd_cfg *c, int *out, int n) {
    const cJSON *v = raw(c, "transformer_layers_per_block");
    if (v && cJSON_IsArray(v))
        for (const cJSON *it = v->child; it; it = it->next)
            if (cJSON_IsArray(it))
                return unsupported(c->path, "transformer_layers_per_block", "a list of lists");
    cfg_int_or_list(c, "transformer_layers_per_block", out, n, 1);
    return cfg_status(c);
}

static sd_status check_unsupported(sd_cfg *c) {
    static const char *must_be_null[] = {
        "class_embed_type",     "num_class_embeds",
        "time_cond_proj_dim",   "encoder_hid_dim",
        "encoder_hid_dim_type", "time_embedding_act_fn",
        "timestep_post_act",    "reverse_transformer_layers_per_block",
    };
    for (size_t i = 0; i < sizeof must_be_null / sizeof *must_be_null; i++)
        SD_TRY(require_null(c, must_be_null[i]));
    SD_TRY(require_str(c, "_class_name", "UNet2DConditionModel", "UNet2DConditionModel", NULL));
    SD_TRY(require_str(c, "attention_type", "default", "default", NULL));
    SD_TRY(require_str(c, "act_fn", "silu", "silu", "swish"));
    SD_TRY(require_str(c, "resnet_time_scale_shift", "default", "default", NULL));
    SD_TRY(require_str(c, "time_embedding_type", "positional", "positional", NULL));
    SD_TRY(require_str(c, "mid_block_type", "UNetMidBlock2DCrossAttn", "UNetMidBlock2DCrossAttn",
                       NULL));
    if (raw(c, "mid_block_type") == NULL &&
        cJSON_GetObjectItemCaseSensitive(c->root, "mid_block_type"))
        return unsupported(c->path, "mid_block_type", "null");
    if (cfg_bool(c, "dual_cross_attention", false))
        return unsupported(c->path, "dual_cross_attention", "true");
    SD_TRY(require_false_or_list(c, "only_cross_attention"));
    if (cJSON_IsArray(raw(c, "cross_attention_dim")))
        return unsupported(c->path, "cross_attention_dim", "a per-block list");
    if (cJSON_GetObjectItemCaseSensitive(c->root, "norm_num_groups") && !raw(c, "norm_num_groups"))
        return unsupported(c->path, "norm_num_groups", "null");
    const char *add = cfg_str(c, "addition_embed_type", NULL);
    if (add && strcmp(add, "text_time")) return unsupported(c->path, "addition_embed_type", add);
    /* resnet_skip_time_act, resnet_out_scale_factor, cross_attention_norm,
     * mid_block_only_cross_attention and addition_embed_type_num_heads only reach the
     * Simple/KDiffusion block types and "text" embeddings, all refused above; dropout is inactive
     * at inference. */
    return cfg_status(c);
}

static sd_status read_sizes(sd_cfg *c, unet_config *u) {
    int n = cfg_int_list(c, "block_out_channels", u->block_out_channels, UNET_MAX_BLOCKS);
    if (n < 0 && cfg_status(c) == SD_OK) {
        static const int def[4] = {320, 640, 1280, 1280};
        memcpy(u->block_out_channels, def, sizeof def);
        n = 4;
    }
    SD_TRY(cfg_status(c));
    if (n < 1 || n > UNET_MAX_BLOCKS)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: block_out_channels has %d entries (1 to %d supported)", c->path, n,
                            UNET_MAX_BLOCKS);
    u->n_blocks = n;
    u->in_channels = cfg_int(c, "in_channels", 4);
    u->out_channels = cfg_int(c, "out_channels", 4);
    u->sample_size = cJSON_IsNumber(raw(c, "sample_size")) ? cfg_int(c, "sample_size", 0) : 0;
    cfg_int_or_list(c, "layers_per_block", u->layers_per_block, n, 2);
    u->cross_attention_dim = cfg_int(c, "cross_attention_dim", 1280);
    u->norm_num_groups = cfg_int(c, "norm_num_groups", 32);
    u->norm_eps = (float)cfg_num(c, "norm_eps", 1e-5);
    /* The naming quirk (diffusers issue 2011): attention_head_dim holds the head COUNT unless
     * num_attention_heads is given. */
    cfg_int_or_list(c, "attention_head_dim", u->heads, n, 8);
    if (cfg_has(c, "num_attention_heads"))
        cfg_int_or_list(c, "num_attention_heads", u->heads, n, 8);
    SD_TRY(read_transformer_layers(c, u->transformer_layers, n));
    u->use_linear_projection = cfg_bool(c, "use_linear_projection", false);
    u->upcast_attention = cfg_bool(c, "upcast_attention", false);
    u->flip_sin_to_cos = cfg_bool(c, "flip_sin_to_cos", true);
    u->freq_shift = cfg_int(c, "freq_shift", 0);
    u->center_input_sample = cfg_bool(c, "center_input_sample", false);
    u->time_embed_dim = cfg_int(c, "time_embedding_dim", 4 * u->block_out_channels[0]);
    u->mid_block_scale_factor = (float)cfg_num(c, "mid_block_scale_factor", 1.0);
    u->downsample_padding = cfg_int(c, "downsample_padding", 1);
    u->conv_in_kernel = cfg_int(c, "conv_in_kernel", 3);
    u->conv_out_kernel = cfg_int(c, "conv_out_kernel", 3);
    const char *add = cfg_str(c, "addition_embed_type", NULL);
    u->text_time = add != NULL;
    if (u->text_time) {
        if (!cfg_has(c, "addition_time_embed_dim") ||
            !cfg_has(c, "projection_class_embeddings_input_dim"))
            return sd_set_error(
                SD_ERR_CONFIG,
                "%s: addition_embed_type 'text_time' needs addition_time_embed_dim and "
                "projection_class_embeddings_input_dim",
                c->path);
        u->addition_time_embed_dim = cfg_int(c, "addition_time_embed_dim", 0);
        u->projection_class_embeddings_input_dim =
            cfg_int(c, "projection_class_embeddings_input_dim", 0);
    }
    SD_TRY(read_block_types(c, "down_block_types", n, "CrossAttnDownBlock2D", "DownBlock2D",
                            u->down_has_attn));
    SD_TRY(read_block_types(c, "up_block_types", n, "CrossAttnUpBlock2D", "UpBlock2D",
                            u->up_has_attn));
    return cfg_status(c);
}

static sd_status bad_value(const char *path, const char *key, int v) {
    return sd_set_error(SD_ERR_CONFIG, "%s: %s = %d is out of range", path, key, v);
}

static sd_status validate(const unet_config *u, const char *path) {
    if (u->in_channels < 1) return bad_value(path, "in_channels", u->in_channels);
    if (u->out_channels < 1) return bad_value(path, "out_channels", u->out_channels);
    if (u->cross_attention_dim < 1)
        return bad_value(path, "cross_attention_dim", u->cross_attention_dim);
    if (u->norm_num_groups < 1) return bad_value(path, "norm_num_groups", u->norm_num_groups);
    if (!(u->norm_eps > 0))
        return sd_set_error(SD_ERR_CONFIG, "%s: norm_eps must be positive", path);
    if (!(u->mid_block_scale_factor != 0))
        return sd_set_error(SD_ERR_CONFIG, "%s: mid_block_scale_factor must not be 0", path);
    if (u->time_embed_dim < 1) return bad_value(path, "time_embedding_dim", u->time_embed_dim);
    if (u->downsample_padding != 0 && u->downsample_padding != 1)
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: downsample_padding = %d is not supported (0 or 1)", path,
                            u->downsample_padding);
    if (u->conv_in_kernel < 1 || u->conv_in_kernel % 2 == 0)
        return bad_value(path, "conv_in_kernel", u->conv_in_kernel);
    if (u->conv_out_kernel < 1 || u->conv_out_kernel % 2 == 0)
        return bad_value(path, "conv_out_kernel", u->conv_out_kernel);
    if (u->block_out_channels[0] % 2)
        return sd_set_error(
            SD_ERR_CONFIG,
            "%s: block_out_channels[0] = %d must be even (sinusoidal time embedding)", path,
            u->block_out_channels[0]);
    for (int i = 0; i < u->n_blocks; i++) {
        int ch = u->block_out_channels[i];
        if (ch < 1 || ch % u->norm_num_groups)
            return sd_set_error(
                SD_ERR_CONFIG,
                "%s: block_out_channels[%d] = %d does not split into norm_num_groups = %d groups",
                path, i, ch, u->norm_num_groups);
        if (u->layers_per_block[i] < 1)
            return bad_value(path, "layers_per_block", u->layers_per_block[i]);
        if (u->transformer_layers[i] < 1)
            return bad_value(path, "transformer_layers_per_block", u->transformer_layers[i]);
        if (u->heads[i] < 1 || ch % u->heads[i])
            return sd_set_error(
                SD_ERR_CONFIG,
                "%s: %d attention heads (attention_head_dim, or num_attention_heads when set) "
                "do not divide block_out_channels[%d] = %d",
                path, u->heads[i], i, ch);
    }
    if (u->text_time) {
        if (u->addition_time_embed_dim < 2 || u->addition_time_embed_dim % 2)
            return bad_value(path, "addition_time_embed_dim", u->addition_time_embed_dim);
        if (u->projection_class_embeddings_input_dim < 1)
            return bad_value(path, "projection_class_embeddings_input_dim",
                             u->projection_class_embeddings_input_dim);
    }
    return SD_OK;
}

sd_status unet_config_read(unet_config *u, const char *dir) {
    memset(u, 0, sizeof *u);
    char *path = sd_path_join(dir, "config.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    free(path);
    if (st != SD_OK) return st;
    st = check_unsupported(&c);
    if (st == SD_OK) st = read_sizes(&c, u);
    if (st == SD_OK) st = validate(u, c.path);
    cfg_close(&c);
    return st;
}
