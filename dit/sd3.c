/* SD3Transformer2DModel: config, weights, and the forward pass around the joint blocks (patch and
 * position embedding, timestep + pooled text conditioning, context embedder, norm_out, proj_out,
 * unpatchify). */
#include "sd3.h"

#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../kernels/act.h"
#include "../kernels/norm.h"
#include "dit_common.h"
#include "sd3_internal.h"

/* Bounds far above any real model, so that size arithmetic in int cannot overflow. */
enum {
    SD3_MAX_DIM = 1 << 16,
    SD3_MAX_PATCH = 64,
    SD3_MAX_GRID = 1 << 12,
    SD3_MAX_TOKENS = 1 << 20
};

/* Keys SD3Transformer2DModel.__init__ takes; anything else (besides "_..." metadata) may change
 * the model in a way this engine does not know about. */
static const char *const known_keys[] = {
    "sample_size",
    "patch_size",
    "in_channels",
    "num_layers",
    "attention_head_dim",
    "num_attention_heads",
    "joint_attention_dim",
    "caption_projection_dim",
    "pooled_projection_dim",
    "out_channels",
    "pos_embed_max_size",
    "dual_attention_layers",
    "qk_norm",
};

static sd_status check_keys(const cJSON *root, const char *path) {
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!it->string || it->string[0] == '_') continue;
        bool known = false;
        for (size_t i = 0; i < sizeof known_keys / sizeof *known_keys; i++)
            if (!strcmp(it->string, known_keys[i])) known = true;
        if (!known)
            return sd_set_error(SD_ERR_UNSUPPORTED,
                                "%s: key '%s' is not an SD3Transformer2DModel setting this engine "
                                "supports",
                                path, it->string);
    }
    return SD_OK;
}

/* present with the value null (as opposed to absent): diffusers then passes None, not the default
 */
static bool is_null(const cJSON *root, const char *key) {
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, key));
}

static sd_status parse_config(sd_cfg *c, sd3_config *cfg, const char *path) {
    const cJSON *root = c->root;
    memset(cfg, 0, sizeof *cfg);
    const char *cls = cfg_str(c, "_class_name", "SD3Transformer2DModel");
    cfg->sample_size = cfg_int(c, "sample_size", 128);
    cfg->patch_size = cfg_int(c, "patch_size", 2);
    cfg->in_channels = cfg_int(c, "in_channels", 16);
    cfg->num_layers = cfg_int(c, "num_layers", 18);
    cfg->attention_head_dim = cfg_int(c, "attention_head_dim", 64);
    cfg->num_attention_heads = cfg_int(c, "num_attention_heads", 18);
    cfg->joint_attention_dim = cfg_int(c, "joint_attention_dim", 4096);
    cfg->caption_projection_dim = cfg_int(c, "caption_projection_dim", 1152);
    cfg->pooled_projection_dim = cfg_int(c, "pooled_projection_dim", 2048);
    cfg->out_channels =
        is_null(root, "out_channels") ? cfg->in_channels : cfg_int(c, "out_channels", 16);
    cfg->pos_embed_max_size =
        is_null(root, "pos_embed_max_size") ? 0 : cfg_int(c, "pos_embed_max_size", 96);
    int dual[SD3_MAX_LAYERS + 1];
    int n_dual = cfg_int_list(c, "dual_attention_layers", dual, SD3_MAX_LAYERS + 1);
    const char *qk_norm = cfg_str(c, "qk_norm", NULL);
    SD_TRY(cfg_status(c));
    SD_TRY(check_keys(root, path));

    if (strcmp(cls, "SD3Transformer2DModel"))
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: _class_name '%s' is not SD3Transformer2DModel",
                            path, cls);
    if (qk_norm && strcmp(qk_norm, "rms_norm"))
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: qk_norm '%s' is not supported (null, rms_norm)", path, qk_norm);
    cfg->qk_rms_norm = qk_norm != NULL;
    SD_TRY(cfg_check_range(path, "num_layers", cfg->num_layers, 1, SD3_MAX_LAYERS));
    SD_TRY(cfg_check_range(path, "patch_size", cfg->patch_size, 1, SD3_MAX_PATCH));
    SD_TRY(cfg_check_range(path, "sample_size", cfg->sample_size, cfg->patch_size, SD3_MAX_GRID));
    SD_TRY(cfg_check_range(path, "in_channels", cfg->in_channels, 1, SD3_MAX_DIM));
    SD_TRY(cfg_check_range(path, "out_channels", cfg->out_channels, 1, SD3_MAX_DIM));
    SD_TRY(cfg_check_range(path, "attention_head_dim", cfg->attention_head_dim, 1, SD3_MAX_DIM));
    SD_TRY(cfg_check_range(path, "num_attention_heads", cfg->num_attention_heads, 1,
                       SD3_MAX_DIM / cfg->attention_head_dim));
    SD_TRY(cfg_check_range(path, "joint_attention_dim", cfg->joint_attention_dim, 1, SD3_MAX_DIM));
    SD_TRY(cfg_check_range(path, "pooled_projection_dim", cfg->pooled_projection_dim, 1, SD3_MAX_DIM));
    SD_TRY(cfg_check_range(path, "pos_embed_max_size", cfg->pos_embed_max_size, 0, SD3_MAX_GRID));
    cfg->inner_dim = cfg->num_attention_heads * cfg->attention_head_dim;
    /* The text stream's projections take inner_dim inputs (added_kv_proj_dim = dim): a different
     * caption width fails in diffusers too. */
    if (cfg->caption_projection_dim != cfg->inner_dim)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: caption_projection_dim %d must equal num_attention_heads x "
                            "attention_head_dim = %d",
                            path, cfg->caption_projection_dim, cfg->inner_dim);
    if (cfg->inner_dim % 4)
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: the 2-D sin-cos position embedding needs num_attention_heads x "
                            "attention_head_dim (%d) to be a multiple of 4",
                            path, cfg->inner_dim);
    if (n_dual > SD3_MAX_LAYERS)
        return sd_set_error(SD_ERR_CONFIG, "%s: dual_attention_layers has more than %d entries",
                            path, SD3_MAX_LAYERS);
    /* diffusers tests `i in dual_attention_layers` per layer: other values select nothing. */
    for (int i = 0; i < n_dual; i++)
        if (dual[i] >= 0 && dual[i] < cfg->num_layers) cfg->dual_attention[dual[i]] = true;
    return SD_OK;
}

static sd_status read_config(const char *dir, sd3_config *cfg) {
    char *path = sd_path_join(dir, "config.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    if (st == SD_OK) {
        st = parse_config(&c, cfg, path);
        cfg_close(&c);
    }
    free(path);
    return st;
}

static sd_status load_weights(sd3_model *m, const char *dir, const weights_policy *policy) {
    const sd3_config *c = &m->cfg;
    const int dim = c->inner_dim, p = c->patch_size;
    const sd_weights *w = &m->w;
    SD_TRY(weights_open(&m->w, dir, "diffusion_pytorch_model", policy));
    m->w.keep_stored = true; /* closed with the model; layers run through nn_*_forward */
    SD_TRY(nn_conv2d_load(&m->patch, w, c->in_channels, dim, p, p, 0, "pos_embed.proj"));
    if (c->pos_embed_max_size > 0) {
        /* A persistent buffer: diffusers uses the checkpoint's copy when there is one. */
        const char *name = "pos_embed.pos_embed";
        m->pos_stored = weights_find(w, name);
        const int64_t shape[3] = {1, (int64_t)c->pos_embed_max_size * c->pos_embed_max_size, dim};
        if (m->pos_stored) {
            if (!st_is_float(m->pos_stored->dtype))
                return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has dtype %s, not a float type",
                                    weights_file_of(w, name), name,
                                    st_dtype_name(m->pos_stored->dtype));
            SD_TRY(st_check_shape(m->pos_stored, weights_file_of(w, name), 3, shape));
            if (!st_rows_whole_blocks(m->pos_stored))
                return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s': rows of %lld values are not whole "
                                    "%s blocks (a reshaped GGUF tensor); a table is read row by row",
                                    weights_file_of(w, name), name,
                                    (long long)m->pos_stored->shape[m->pos_stored->ndim - 1],
                                    st_dtype_name(m->pos_stored->dtype));
        }
    }
    SD_TRY(nn_linear_load(&m->t_lin1, w, 256, dim, true,
                          "time_text_embed.timestep_embedder.linear_1"));
    SD_TRY(nn_linear_load(&m->t_lin2, w, dim, dim, true,
                          "time_text_embed.timestep_embedder.linear_2"));
    SD_TRY(nn_linear_load(&m->p_lin1, w, c->pooled_projection_dim, dim, true,
                          "time_text_embed.text_embedder.linear_1"));
    SD_TRY(nn_linear_load(&m->p_lin2, w, dim, dim, true, "time_text_embed.text_embedder.linear_2"));
    SD_TRY(nn_linear_load(&m->ctx_embed, w, c->joint_attention_dim, c->caption_projection_dim, true,
                          "context_embedder"));
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (!m->blocks) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
    for (int i = 0; i < c->num_layers; i++) SD_TRY(sd3_block_load(&m->blocks[i], w, c, i));
    SD_TRY(nn_linear_load(&m->norm_out, w, dim, 2 * dim, true, "norm_out.linear"));
    SD_TRY(nn_linear_load(&m->proj_out, w, dim, p * p * c->out_channels, true, "proj_out"));
    return SD_OK;
}

sd_status sd3_load(sd3_model **out, const char *dir, const weights_policy *policy) {
    *out = NULL;
    sd3_model *m = calloc(1, sizeof *m);
    if (!m) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_arena_init(&m->scratch);
    sd_status st = read_config(dir, &m->cfg);
    if (st == SD_OK) st = load_weights(m, dir, policy);
    if (st != SD_OK) {
        sd_wrap_error(st, "loading SD3 transformer");
        sd3_free(m);
        return st;
    }
    *out = m;
    return SD_OK;
}

void sd3_release(sd3_model *m) {
    if (!m) return;
    sd_arena_free(&m->scratch);
    sd_arena_init(&m->scratch);
    weights_release(&m->w);
}

void sd3_free(sd3_model *m) {
    if (!m) return;
    nn_conv2d_free(&m->patch);
    nn_linear_free(&m->t_lin1);
    nn_linear_free(&m->t_lin2);
    nn_linear_free(&m->p_lin1);
    nn_linear_free(&m->p_lin2);
    nn_linear_free(&m->ctx_embed);
    if (m->blocks)
        for (int i = 0; i < m->cfg.num_layers; i++) sd3_block_free(&m->blocks[i]);
    free(m->blocks);
    nn_linear_free(&m->norm_out);
    nn_linear_free(&m->proj_out);
    weights_close(&m->w);
    sd_arena_free(&m->scratch);
    free(m);
}

const sd3_config *sd3_get_config(const sd3_model *m) {
    return &m->cfg;
}

/* pos [gh * gw][dim]: the middle crop of the pos_embed_max_size grid (stored or computed), or
 * without it the embedding of a gh x gw grid around the training size. */
static void position_embedding(const sd3_model *m, int gh, int gw, float *pos) {
    const sd3_config *c = &m->cfg;
    const int dim = c->inner_dim, max = c->pos_embed_max_size;
    const double base = c->sample_size / c->patch_size; /* PatchEmbed's base_size, an int */
    if (max <= 0) {
        dit_sincos_pos_embed_2d(dim, gh, gw, 0, 0, gh, gw, base, 1.0, pos);
        return;
    }
    const int top = (max - gh) / 2, left = (max - gw) / 2;
    if (!m->pos_stored) {
        dit_sincos_pos_embed_2d(dim, max, max, top, left, gh, gw, base, 1.0, pos);
        return;
    }
    const st_dtype dt = m->pos_stored->dtype; /* bytes by st_dtype_bytes: GGUF blocks too */
    st_tensor run =
        *m->pos_stored; /* a view of gw consecutive tokens, converted one run at a time */
    run.ndim = 1;
    run.shape[0] = (int64_t)gw * dim;
    run.nbytes = st_dtype_bytes(dt, (int64_t)gw * dim);
    for (int i = 0; i < gh; i++) {
        run.data = (const unsigned char *)m->pos_stored->data +
                   st_dtype_bytes(dt, ((int64_t)(top + i) * max + left) * dim);
        st_to_f32(&run, pos + (size_t)i * gw * dim);
        weights_round_f32(&m->w, dt, pos + (size_t)i * gw * dim, (size_t)gw * dim); /* --weights-dtype */
    }
}

/* temb [batch][dim] = timestep_embedder(proj(t)) + text_embedder(pooled); returns silu(temb). */
static void conditioning(const sd3_model *m, float t, const float *pooled, int batch, float *tproj,
                         float *temb, float *tmp, float *silu_temb) {
    const int dim = m->cfg.inner_dim;
    /* Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) */
    dit_timestep_embedding(t, 256, true, 0.0f, 1.0f, 10000.0f, tproj);
    nn_linear_forward(&m->t_lin1, tproj, tmp, 1);
    act_silu(tmp, (size_t)dim);
    nn_linear_forward(&m->t_lin2, tmp, silu_temb, 1); /* the timestep part, for now */
    nn_linear_forward(&m->p_lin1, pooled, tmp, batch);
    act_silu(tmp, (size_t)batch * dim);
    nn_linear_forward(&m->p_lin2, tmp, temb, batch);
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < dim; i++) temb[(size_t)b * dim + i] += silu_temb[i];
    memcpy(silu_temb, temb, (size_t)batch * dim * sizeof *temb);
    act_silu(silu_temb, (size_t)batch * dim);
}

static sd_status check_args(const sd3_model *m, const float *latents, int batch, int h, int w,
                            const float *context, int ctx_len, const float *pooled,
                            const float *out) {
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size, max = c->pos_embed_max_size;
    if (!latents || !context || !pooled || !out)
        return sd_set_error(SD_ERR_ARG, "SD3 transformer: NULL input or output");
    if (batch < 1 || batch > 1024 || ctx_len < 1 || ctx_len > SD3_MAX_TOKENS)
        return sd_set_error(SD_ERR_ARG,
                            "SD3 transformer: batch %d with %d context tokens (1 to 1024 items, 1 "
                            "to %d tokens)",
                            batch, ctx_len, SD3_MAX_TOKENS);
    if (h < p || w < p || h % p || w % p || h / p > SD3_MAX_GRID || w / p > SD3_MAX_GRID ||
        (long)(h / p) * (w / p) > SD3_MAX_TOKENS)
        return sd_set_error(SD_ERR_ARG,
                            "SD3 transformer: latent size %dx%d is not a positive multiple of the "
                            "patch size %d (or is too large)",
                            h, w, p);
    if (max > 0 && (h / p > max || w / p > max))
        return sd_set_error(SD_ERR_ARG,
                            "SD3 transformer: latent size %dx%d is %dx%d patches, more than "
                            "pos_embed_max_size %d",
                            h, w, h / p, w / p, max);
    return SD_OK;
}

sd_status sd3_forward(sd3_model *m, const float *latents, int batch, int h, int w, float timestep,
                      const float *context, int ctx_len, const float *pooled, float *out) {
    SD_TRY(check_args(m, latents, batch, h, w, context, ctx_len, pooled, out));
    const sd3_config *c = &m->cfg;
    const int dim = c->inner_dim, p = c->patch_size, gh = h / p, gw = w / p, ni = gh * gw;
    const int out_dim = p * p * c->out_channels;
    const sd3_dims d = {batch, ni, ctx_len, dim, c->num_attention_heads, c->attention_head_dim};
    sd_arena *a = &m->scratch;
    float *img = sd_arena_floats(a, (size_t)batch * ni * dim);
    float *txt = sd_arena_floats(a, (size_t)batch * ctx_len * dim);
    float *pos = sd_arena_floats(a, (size_t)ni * dim);
    float *tproj = sd_arena_floats(a, 256);
    float *temb = sd_arena_floats(a, (size_t)batch * dim);
    float *tmp = sd_arena_floats(a, (size_t)batch * dim);
    float *silu_temb = sd_arena_floats(a, (size_t)batch * dim);
    if (!img || !txt || !pos || !tproj || !temb || !tmp || !silu_temb) {
        sd_arena_reset(a);
        return sd_set_error(SD_ERR_NOMEM,
                            "SD3 transformer: out of memory for %d x (%d + %d) tokens", batch, ni,
                            ctx_len);
    }

    /* PatchEmbed: the strided conv gives [batch][gh][gw][dim], already the token order of
     * diffusers' flatten(2).transpose(1, 2). */
    nn_conv2d_forward(&m->patch, latents, batch, h, w, img, a);
    position_embedding(m, gh, gw, pos);
    for (int b = 0; b < batch; b++) {
        float *x = img + (size_t)b * ni * dim;
        for (size_t i = 0; i < (size_t)ni * dim; i++) x[i] += pos[i];
    }
    conditioning(m, timestep, pooled, batch, tproj, temb, tmp, silu_temb);
    nn_linear_forward(&m->ctx_embed, context, txt, batch * ctx_len);

    sd_status st = SD_OK;
    for (int i = 0; i < c->num_layers && st == SD_OK; i++)
        st = sd3_block_forward(&m->blocks[i], &d, img, txt, silu_temb, a);

    if (st == SD_OK) {
        /* norm_out (AdaLayerNormContinuous): chunks are (scale, shift), in that order */
        float *emb = sd_arena_floats(a, (size_t)batch * 2 * dim);
        float *xn = sd_arena_floats(a, (size_t)batch * ni * dim);
        float *tok = sd_arena_floats(a, (size_t)batch * ni * out_dim);
        if (!emb || !xn || !tok) {
            st = sd_set_error(SD_ERR_NOMEM, "SD3 transformer: out of memory for %d x %d tokens",
                              batch, ni);
        } else {
            nn_linear_forward(&m->norm_out, silu_temb, emb, batch);
            layer_norm(img, xn, batch * ni, dim, 1e-6f, NULL, NULL);
            dit_modulate(xn, xn, batch, ni, dim, emb + dim, emb, 2 * dim);
            nn_linear_forward(&m->proj_out, xn, tok, batch * ni);
            dit_unpatchify(tok, batch, gh, gw, p, c->out_channels, out);
        }
    }
    sd_arena_reset(a);
    return st;
}
