/* config.json and the checkpoint's tensors (diffusers' names) for FluxTransformer2DModel. */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "flux_internal.h"

/* Sanity bounds far above any real model, so size arithmetic cannot overflow. */
enum { FLUX_MAX_DIM = 1 << 16, FLUX_MAX_LAYERS = 1024 };

static sd_status check_config(const char *path, const flux_config *c, int n_axes) {
    SD_TRY(cfg_check_range(path, "in_channels", c->in_channels, 1, FLUX_MAX_DIM));
    SD_TRY(cfg_check_range(path, "out_channels", c->out_channels, 1, FLUX_MAX_DIM));
    SD_TRY(cfg_check_range(path, "num_layers", c->num_layers, 0, FLUX_MAX_LAYERS));
    SD_TRY(cfg_check_range(path, "num_single_layers", c->num_single_layers, 0, FLUX_MAX_LAYERS));
    SD_TRY(cfg_check_range(path, "attention_head_dim", c->attention_head_dim, 2, FLUX_MAX_DIM));
    SD_TRY(cfg_check_range(path, "num_attention_heads", c->num_attention_heads, 1, FLUX_MAX_DIM));
    SD_TRY(cfg_check_range(path, "joint_attention_dim", c->joint_attention_dim, 1, FLUX_MAX_DIM));
    SD_TRY(cfg_check_range(path, "pooled_projection_dim", c->pooled_projection_dim, 1, FLUX_MAX_DIM));
    if ((long)c->num_attention_heads * c->attention_head_dim > FLUX_MAX_DIM)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: num_attention_heads %d x attention_head_dim %d is too large", path,
                            c->num_attention_heads, c->attention_head_dim);
    /* patch_size only resizes proj_out in diffusers, and FluxPipeline's unpacking assumes 1. */
    if (c->patch_size != 1)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: patch_size %d is not supported (only 1)", path,
                            c->patch_size);
    /* The pipeline's ids have 3 columns (unused, row, column); FluxPosEmbed takes one axis per
     * column. */
    if (n_axes != 3)
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: axes_dims_rope has %d entries; only 3 axes are supported", path,
                            n_axes);
    int sum = 0;
    for (int a = 0; a < 3; a++) {
        const int d = c->axes_dims_rope[a];
        if (d < 0 || d % 2 || d > FLUX_MAX_DIM)
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: axes_dims_rope[%d] = %d must be even and non-negative", path,
                                a, d);
        sum += d;
    }
    if (sum != c->attention_head_dim)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: axes_dims_rope (%d, %d, %d) sum to %d, not attention_head_dim %d",
                            path, c->axes_dims_rope[0], c->axes_dims_rope[1], c->axes_dims_rope[2],
                            sum, c->attention_head_dim);
    return SD_OK;
}

sd_status flux_read_config(const char *dir, flux_config *cfg) {
    char *path = sd_path_join(dir, "config.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    if (st != SD_OK) {
        free(path);
        return st;
    }
    memset(cfg, 0, sizeof *cfg);
    /* FluxTransformer2DModel.__init__'s defaults (the FLUX.1 sizes). */
    const char *cls = cfg_str(&c, "_class_name", "FluxTransformer2DModel");
    cfg->patch_size = cfg_int(&c, "patch_size", 1);
    cfg->in_channels = cfg_int(&c, "in_channels", 64);
    cfg->out_channels = cfg_int(&c, "out_channels", cfg->in_channels);
    cfg->num_layers = cfg_int(&c, "num_layers", 19);
    cfg->num_single_layers = cfg_int(&c, "num_single_layers", 38);
    cfg->attention_head_dim = cfg_int(&c, "attention_head_dim", 128);
    cfg->num_attention_heads = cfg_int(&c, "num_attention_heads", 24);
    cfg->joint_attention_dim = cfg_int(&c, "joint_attention_dim", 4096);
    cfg->pooled_projection_dim = cfg_int(&c, "pooled_projection_dim", 768);
    cfg->guidance_embeds = cfg_bool(&c, "guidance_embeds", false);
    int axes[8];
    int n_axes = cfg_int_list(&c, "axes_dims_rope", axes, 8);
    if (n_axes < 0) {
        axes[0] = 16, axes[1] = 56, axes[2] = 56;
        n_axes = 3;
    }
    for (int a = 0; a < 3 && a < n_axes; a++) cfg->axes_dims_rope[a] = axes[a];
    st = cfg_status(&c);
    if (st == SD_OK && strcmp(cls, "FluxTransformer2DModel"))
        st = sd_set_error(SD_ERR_UNSUPPORTED,
                          "%s: _class_name '%s' is not supported (FluxTransformer2DModel)", path,
                          cls);
    if (st == SD_OK) st = check_config(path, cfg, n_axes);
    cfg->inner_dim = cfg->num_attention_heads * cfg->attention_head_dim;
    cfg_close(&c);
    free(path);
    return st;
}

static sd_status load_double(flux_model *m, flux_double_block *b, int i) {
    const sd_weights *w = &m->w;
    const int dim = m->cfg.inner_dim, d = m->cfg.attention_head_dim;
    const int64_t hd[1] = {d};
    const char *p = "transformer_blocks";
    SD_TRY(nn_linear_load(&b->norm1, w, dim, 6 * dim, true, "%s.%d.norm1.linear", p, i));
    SD_TRY(nn_linear_load(&b->norm1_context, w, dim, 6 * dim, true, "%s.%d.norm1_context.linear",
                          p, i));
    SD_TRY(nn_linear_load(&b->to_q, w, dim, dim, true, "%s.%d.attn.to_q", p, i));
    SD_TRY(nn_linear_load(&b->to_k, w, dim, dim, true, "%s.%d.attn.to_k", p, i));
    SD_TRY(nn_linear_load(&b->to_v, w, dim, dim, true, "%s.%d.attn.to_v", p, i));
    SD_TRY(nn_linear_load(&b->to_out, w, dim, dim, true, "%s.%d.attn.to_out.0", p, i));
    SD_TRY(nn_linear_load(&b->add_q, w, dim, dim, true, "%s.%d.attn.add_q_proj", p, i));
    SD_TRY(nn_linear_load(&b->add_k, w, dim, dim, true, "%s.%d.attn.add_k_proj", p, i));
    SD_TRY(nn_linear_load(&b->add_v, w, dim, dim, true, "%s.%d.attn.add_v_proj", p, i));
    SD_TRY(nn_linear_load(&b->add_out, w, dim, dim, true, "%s.%d.attn.to_add_out", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_q, 1, hd, "%s.%d.attn.norm_q.weight", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_k, 1, hd, "%s.%d.attn.norm_k.weight", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_added_q, 1, hd, "%s.%d.attn.norm_added_q.weight", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_added_k, 1, hd, "%s.%d.attn.norm_added_k.weight", p, i));
    SD_TRY(nn_linear_load(&b->ff1, w, dim, 4 * dim, true, "%s.%d.ff.net.0.proj", p, i));
    SD_TRY(nn_linear_load(&b->ff2, w, 4 * dim, dim, true, "%s.%d.ff.net.2", p, i));
    SD_TRY(nn_linear_load(&b->ff_context1, w, dim, 4 * dim, true, "%s.%d.ff_context.net.0.proj",
                          p, i));
    SD_TRY(nn_linear_load(&b->ff_context2, w, 4 * dim, dim, true, "%s.%d.ff_context.net.2", p, i));
    return SD_OK;
}

static sd_status load_single(flux_model *m, flux_single_block *b, int i) {
    const sd_weights *w = &m->w;
    const int dim = m->cfg.inner_dim, d = m->cfg.attention_head_dim;
    const int64_t hd[1] = {d};
    const char *p = "single_transformer_blocks";
    SD_TRY(nn_linear_load(&b->norm, w, dim, 3 * dim, true, "%s.%d.norm.linear", p, i));
    SD_TRY(nn_linear_load(&b->to_q, w, dim, dim, true, "%s.%d.attn.to_q", p, i));
    SD_TRY(nn_linear_load(&b->to_k, w, dim, dim, true, "%s.%d.attn.to_k", p, i));
    SD_TRY(nn_linear_load(&b->to_v, w, dim, dim, true, "%s.%d.attn.to_v", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_q, 1, hd, "%s.%d.attn.norm_q.weight", p, i));
    SD_TRY(nn_read_tensor(w, &b->norm_k, 1, hd, "%s.%d.attn.norm_k.weight", p, i));
    SD_TRY(nn_linear_load(&b->proj_mlp, w, dim, 4 * dim, true, "%s.%d.proj_mlp", p, i));
    SD_TRY(nn_linear_load(&b->proj_out, w, 5 * dim, dim, true, "%s.%d.proj_out", p, i));
    return SD_OK;
}

sd_status flux_load_blocks(flux_model *m) {
    const flux_config *c = &m->cfg;
    const sd_weights *w = &m->w;
    const int dim = c->inner_dim;
    SD_TRY(nn_linear_load(&m->x_embedder, w, c->in_channels, dim, true, "x_embedder"));
    SD_TRY(nn_linear_load(&m->context_embedder, w, c->joint_attention_dim, dim, true,
                          "context_embedder"));
    const char *te = "time_text_embed";
    SD_TRY(nn_linear_load(&m->time_1, w, 256, dim, true, "%s.timestep_embedder.linear_1", te));
    SD_TRY(nn_linear_load(&m->time_2, w, dim, dim, true, "%s.timestep_embedder.linear_2", te));
    if (c->guidance_embeds) {
        SD_TRY(nn_linear_load(&m->guidance_1, w, 256, dim, true, "%s.guidance_embedder.linear_1",
                              te));
        SD_TRY(nn_linear_load(&m->guidance_2, w, dim, dim, true, "%s.guidance_embedder.linear_2",
                              te));
    }
    SD_TRY(nn_linear_load(&m->text_1, w, c->pooled_projection_dim, dim, true,
                          "%s.text_embedder.linear_1", te));
    SD_TRY(nn_linear_load(&m->text_2, w, dim, dim, true, "%s.text_embedder.linear_2", te));

    m->blocks = calloc((size_t)(c->num_layers ? c->num_layers : 1), sizeof *m->blocks);
    m->single_blocks =
        calloc((size_t)(c->num_single_layers ? c->num_single_layers : 1), sizeof *m->single_blocks);
    if (!m->blocks || !m->single_blocks)
        return sd_set_error(SD_ERR_NOMEM, "out of memory for %d + %d blocks", c->num_layers,
                            c->num_single_layers);
    for (int i = 0; i < c->num_layers; i++) SD_TRY(load_double(m, &m->blocks[i], i));
    for (int i = 0; i < c->num_single_layers; i++) SD_TRY(load_single(m, &m->single_blocks[i], i));
    SD_TRY(nn_linear_load(&m->norm_out, w, dim, 2 * dim, true, "norm_out.linear"));
    SD_TRY(nn_linear_load(&m->proj_out, w, dim, c->out_channels, true, "proj_out"));
    return SD_OK;
}

static void free_double(flux_double_block *b) {
    nn_linear *ls[] = {&b->norm1,       &b->norm1_context, &b->to_q,  &b->to_k,
                       &b->to_v,        &b->to_out,        &b->add_q, &b->add_k,
                       &b->add_v,       &b->add_out,       &b->ff1,   &b->ff2,
                       &b->ff_context1, &b->ff_context2};
    for (size_t j = 0; j < sizeof ls / sizeof *ls; j++) nn_linear_free(ls[j]);
    free(b->norm_q);
    free(b->norm_k);
    free(b->norm_added_q);
    free(b->norm_added_k);
}

static void free_single(flux_single_block *b) {
    nn_linear *ls[] = {&b->norm, &b->to_q, &b->to_k, &b->to_v, &b->proj_mlp, &b->proj_out};
    for (size_t j = 0; j < sizeof ls / sizeof *ls; j++) nn_linear_free(ls[j]);
    free(b->norm_q);
    free(b->norm_k);
}

void flux_free_blocks(flux_model *m) {
    nn_linear *top[] = {&m->x_embedder, &m->context_embedder, &m->time_1, &m->time_2,
                        &m->guidance_1, &m->guidance_2,       &m->text_1, &m->text_2,
                        &m->norm_out,   &m->proj_out};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++) nn_linear_free(top[i]);
    if (m->blocks)
        for (int i = 0; i < m->cfg.num_layers; i++) free_double(&m->blocks[i]);
    if (m->single_blocks)
        for (int i = 0; i < m->cfg.num_single_layers; i++) free_single(&m->single_blocks[i]);
    free(m->blocks);
    free(m->single_blocks);
    m->blocks = NULL;
    m->single_blocks = NULL;
}
