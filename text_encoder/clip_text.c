/* transformers' CLIPTextModel / CLIPTextModelWithProjection in float32: token + position
 * embeddings, pre-LN causal encoder layers, final layer norm, EOS pooling, optional projection. */
#include "clip_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/weights.h"
#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/gemm.h"
#include "../nn/layers.h"

typedef enum { CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU, CLIP_ACT_GELU_TANH } clip_act;

typedef struct {
    nn_norm ln1, ln2; /* [hidden] */
    nn_linear qkv;    /* q_proj, k_proj, v_proj stacked: [3 * hidden][hidden], one GEMM per layer */
    nn_linear out;    /* [hidden][hidden] */
    nn_linear fc1;    /* [intermediate][hidden] */
    nn_linear fc2;    /* [hidden][intermediate] */
} clip_layer;

struct clip_text {
    clip_text_config cfg;
    clip_act act;
    /* Kept open because the token table is read from the mapping a row at a time: converting all
     * 49408 rows to float32 would cost 150-250 MB for the SD/SDXL encoders, for 77 rows used. */
    sd_weights w;
    const st_tensor *tok_emb; /* [vocab][hidden], F32/F16/BF16 as stored */
    float *pos_emb;           /* [max_positions][hidden] */
    clip_layer *layers;       /* [num_layers] */
    nn_norm final_ln;         /* [hidden] */
    nn_linear proj;           /* [projection_dim][hidden], no bias; only with_projection */
    sd_arena scratch;
    long encode_calls; /* completed encodes, for sd_pipeline_stats */
    float *added;      /* [n_added][hidden]: rows of ids vocab_size... (clip_text_add_rows) */
    int n_added;
};

/* Sanity bounds on config values and call sizes, far above any real model, so size arithmetic
 * in int cannot overflow. */
enum {
    CLIP_MAX_DIM = 1 << 16,
    CLIP_MAX_VOCAB = 1 << 24,
    CLIP_MAX_LAYERS = 1024,
    CLIP_MAX_TOKENS = 1 << 16
};

static const char *const class_plain = "CLIPTextModel";
static const char *const class_proj = "CLIPTextModelWithProjection";

static sd_status parse_act(const char *name, clip_act *act, const char *path) {
    if (!strcmp(name, "quick_gelu"))
        *act = CLIP_ACT_QUICK_GELU;
    else if (!strcmp(name, "gelu"))
        *act = CLIP_ACT_GELU;
    /* transformers' NewGELUActivation and PytorchGELUTanh are the same tanh formula. */
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh"))
        *act = CLIP_ACT_GELU_TANH;
    else
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: hidden_act '%s' is not supported (quick_gelu, gelu, gelu_new, "
                            "gelu_pytorch_tanh)",
                            path, name);
    return SD_OK;
}

/* Reads config.json with CLIPTextConfig's defaults. *arch is 1 / 0 when architectures[0] names
 * the WithProjection / plain class, -1 when the config does not say. */
static sd_status read_config(const char *dir, clip_text_config *cfg, clip_act *act, int *arch) {
    char *path = sd_path_join(dir, "config.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    if (st != SD_OK) {
        free(path);
        return st;
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = cfg_int(&c, "vocab_size", 49408);
    cfg->hidden_size = cfg_int(&c, "hidden_size", 512);
    cfg->intermediate_size = cfg_int(&c, "intermediate_size", 2048);
    cfg->num_layers = cfg_int(&c, "num_hidden_layers", 12);
    cfg->num_heads = cfg_int(&c, "num_attention_heads", 8);
    cfg->max_position_embeddings = cfg_int(&c, "max_position_embeddings", 77);
    cfg->projection_dim = cfg_int(&c, "projection_dim", 512);
    cfg->eos_token_id = cfg_int(&c, "eos_token_id", 49407);
    cfg->layer_norm_eps = (float)cfg_num(&c, "layer_norm_eps", 1e-5);
    const char *act_name = cfg_str(&c, "hidden_act", "quick_gelu");
    const char *archs[1] = {NULL};
    int n_arch = cfg_str_list(&c, "architectures", archs, 1);
    st = cfg_status(&c);
    if (st == SD_OK) {
        snprintf(cfg->hidden_act, sizeof cfg->hidden_act, "%s", act_name);
        st = parse_act(act_name, act, path);
    }
    *arch = -1;
    if (st == SD_OK && n_arch > 0) {
        if (!strcmp(archs[0], class_proj))
            *arch = 1;
        else if (!strcmp(archs[0], class_plain))
            *arch = 0;
    }
    if (st == SD_OK) st = cfg_check_range(path, "vocab_size", cfg->vocab_size, 1, CLIP_MAX_VOCAB);
    if (st == SD_OK) st = cfg_check_range(path, "hidden_size", cfg->hidden_size, 1, CLIP_MAX_DIM);
    if (st == SD_OK)
        st = cfg_check_range(path, "intermediate_size", cfg->intermediate_size, 1, CLIP_MAX_DIM);
    if (st == SD_OK)
        st = cfg_check_range(path, "num_hidden_layers", cfg->num_layers, 1, CLIP_MAX_LAYERS);
    if (st == SD_OK)
        st = cfg_check_range(path, "num_attention_heads", cfg->num_heads, 1, cfg->hidden_size);
    if (st == SD_OK)
        st = cfg_check_range(path, "max_position_embeddings", cfg->max_position_embeddings, 1,
                         CLIP_MAX_DIM);
    if (st == SD_OK) st = cfg_check_range(path, "projection_dim", cfg->projection_dim, 1, CLIP_MAX_DIM);
    if (st == SD_OK && cfg->hidden_size % cfg->num_heads)
        st = sd_set_error(SD_ERR_CONFIG,
                          "%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                          cfg->hidden_size, cfg->num_heads);
    if (st == SD_OK && !(cfg->layer_norm_eps > 0.0f))
        st = sd_set_error(SD_ERR_CONFIG, "%s: layer_norm_eps must be positive", path);
    cfg_close(&c);
    free(path);
    return st;
}

/* Stacks the three projections so one GEMM writes [tokens][q | k | v] rows, which the attention
 * kernel reads in place through its strides. */
static sd_status load_qkv(nn_linear *qkv, const sd_weights *w, int h, const char *pfx, int i) {
    static const char *const names[3] = {"q_proj", "k_proj", "v_proj"};
    nn_linear parts[3];
    memset(qkv, 0, sizeof *qkv);
    memset(parts, 0, sizeof parts);
    sd_status st = SD_OK;
    for (int p = 0; p < 3 && st == SD_OK; p++)
        st = nn_linear_load(&parts[p], w, h, h, true, "%sencoder.layers.%d.self_attn.%s", pfx, i,
                            names[p]);
    if (st == SD_OK) return nn_linear_stack(qkv, parts, 3);
    for (int p = 0; p < 3; p++) nn_linear_free(&parts[p]);
    return st;
}

static sd_status load_layer(clip_layer *l, const sd_weights *w, const clip_text_config *c,
                            const char *pfx, int i) {
    const int h = c->hidden_size, f = c->intermediate_size;
    const float eps = c->layer_norm_eps;
    SD_TRY(nn_layer_norm_load(&l->ln1, w, h, true, eps, "%sencoder.layers.%d.layer_norm1", pfx, i));
    SD_TRY(load_qkv(&l->qkv, w, h, pfx, i));
    SD_TRY(
        nn_linear_load(&l->out, w, h, h, true, "%sencoder.layers.%d.self_attn.out_proj", pfx, i));
    SD_TRY(nn_layer_norm_load(&l->ln2, w, h, true, eps, "%sencoder.layers.%d.layer_norm2", pfx, i));
    SD_TRY(nn_linear_load(&l->fc1, w, h, f, true, "%sencoder.layers.%d.mlp.fc1", pfx, i));
    SD_TRY(nn_linear_load(&l->fc2, w, f, h, true, "%sencoder.layers.%d.mlp.fc2", pfx, i));
    /* Packed for the GEMM engine once, not on every call: with 77-token rows, packing the weights
     * per call took about a fifth of an encode. */
    SD_TRY(nn_linear_pack(&l->qkv));
    SD_TRY(nn_linear_pack(&l->out));
    SD_TRY(nn_linear_pack(&l->fc1));
    SD_TRY(nn_linear_pack(&l->fc2));
    return SD_OK;
}

/* with_projection: 1 / 0 as the class says, -1 to decide from the presence of the tensor. */
static sd_status load_weights(clip_text *m, const char *dir, int with_projection,
                              const weights_policy *policy) {
    clip_text_config *c = &m->cfg;
    SD_TRY(weights_open(&m->w, dir, "model", policy));
    m->w.keep_stored = true; /* closed with the model; layers run through nn_linear_forward* */
    if (with_projection < 0)
        with_projection = weights_find(&m->w, "text_projection.weight") != NULL;
    c->with_projection = with_projection == 1;
    /* transformers 4 saved everything under `text_model.`; transformers 5 drops the prefix. The
     * projection sits at the top level in both. */
    const char *pfx = "text_model.";
    const char *tok_name = "text_model.embeddings.token_embedding.weight";
    if (!weights_find(&m->w, tok_name)) {
        pfx = "";
        tok_name = "embeddings.token_embedding.weight";
    }
    m->tok_emb = weights_find(&m->w, tok_name);
    if (!m->tok_emb)
        return sd_set_error(SD_ERR_TENSOR,
                            "%s: tensor 'text_model.embeddings.token_embedding.weight' (or "
                            "'embeddings.token_embedding.weight') not found",
                            dir);
    const int64_t tok_shape[2] = {c->vocab_size, c->hidden_size};
    if (!st_is_float(m->tok_emb->dtype))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has dtype %s, expected a float type",
                            weights_file_of(&m->w, tok_name), tok_name,
                            st_dtype_name(m->tok_emb->dtype));
    SD_TRY(st_check_shape(m->tok_emb, weights_file_of(&m->w, tok_name), 2, tok_shape));
    if (!st_rows_whole_blocks(m->tok_emb))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s': rows of %lld values are not whole "
                            "%s blocks (a reshaped GGUF tensor); a table is read row by row",
                            weights_file_of(&m->w, tok_name), tok_name,
                            (long long)m->tok_emb->shape[m->tok_emb->ndim - 1], st_dtype_name(m->tok_emb->dtype));

    const int64_t pos_shape[2] = {c->max_position_embeddings, c->hidden_size};
    SD_TRY(nn_read_tensor(&m->w, &m->pos_emb, 2, pos_shape,
                          "%sembeddings.position_embedding.weight", pfx));
    m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    if (!m->layers) return sd_set_error(SD_ERR_NOMEM, "out of memory for %d layers", c->num_layers);
    for (int i = 0; i < c->num_layers; i++) SD_TRY(load_layer(&m->layers[i], &m->w, c, pfx, i));
    SD_TRY(nn_layer_norm_load(&m->final_ln, &m->w, c->hidden_size, true, c->layer_norm_eps,
                              "%sfinal_layer_norm", pfx));
    if (c->with_projection)
        SD_TRY(nn_linear_load(&m->proj, &m->w, c->hidden_size, c->projection_dim, false,
                              "text_projection"));
    return SD_OK;
}

sd_status clip_text_load_class(clip_text **out, const char *dir, const char *class_name,
                              const weights_policy *policy) {
    *out = NULL;
    int want = -1;
    if (class_name && !strcmp(class_name, class_proj))
        want = 1;
    else if (class_name && !strcmp(class_name, class_plain))
        want = 0;
    else if (class_name)
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: text encoder class '%s' is not supported (%s, %s)", dir,
                            class_name, class_plain, class_proj);
    clip_text *m = calloc(1, sizeof *m);
    if (!m) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_arena_init(&m->scratch);
    int arch = -1;
    sd_status st = read_config(dir, &m->cfg, &m->act, &arch);
    if (st == SD_OK) st = load_weights(m, dir, want >= 0 ? want : arch, policy);
    if (st != SD_OK) {
        clip_text_free(m);
        return sd_wrap_error(st, "loading CLIP text encoder");
    }
    *out = m;
    return SD_OK;
}

sd_status clip_text_load(clip_text **out, const char *dir, const weights_policy *policy) {
    return clip_text_load_class(out, dir, NULL, policy);
}

void clip_text_free(clip_text *m) {
    if (!m) return;
    free(m->added);
    if (m->layers)
        for (int i = 0; i < m->cfg.num_layers; i++) {
            clip_layer *l = &m->layers[i];
            nn_norm_free(&l->ln1);
            nn_norm_free(&l->ln2);
            nn_linear_free(&l->qkv);
            nn_linear_free(&l->out);
            nn_linear_free(&l->fc1);
            nn_linear_free(&l->fc2);
        }
    free(m->layers);
    free(m->pos_emb);
    nn_norm_free(&m->final_ln);
    nn_linear_free(&m->proj);
    weights_close(&m->w);
    sd_arena_free(&m->scratch);
    free(m);
}

void clip_text_release(clip_text *m) {
    if (!m) return;
    sd_arena_free(&m->scratch);
    sd_arena_init(&m->scratch);
    weights_release(&m->w);
}

const clip_text_config *clip_text_get_config(const clip_text *m) {
    return &m->cfg;
}

/* ---- forward ---- */

static void activate(clip_act act, float *x, size_t n) {
    switch (act) {
    case CLIP_ACT_QUICK_GELU:
        act_quick_gelu(x, n);
        break;
    case CLIP_ACT_GELU:
        act_gelu(x, n);
        break;
    case CLIP_ACT_GELU_TANH:
        act_gelu_tanh(x, n);
        break;
    }
}

/* y += x W^T + b: the residual add folded into the GEMM. */
static void linear_residual(const nn_linear *l, const float *x, float *y, int rows) {
    nn_linear_forward_add(l, x, y, rows);
}

/* x[rows][hidden] = token_embedding[id] (or the row given for that position) +
 * position_embedding[position]. */
static void embed(const clip_text *m, const int32_t *ids, const float *const *rows, int batch,
                  int len, float *x) {
    const int h = m->cfg.hidden_size;
    const size_t row_bytes = st_dtype_bytes(m->tok_emb->dtype, h); /* GGUF blocks too */
    st_tensor row = *m->tok_emb; /* a one-row view, so st_to_f32 converts just that row */
    row.ndim = 1;
    row.shape[0] = h;
    row.nbytes = row_bytes;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < len; i++) {
            float *xr = x + ((size_t)b * len + i) * h;
            const int32_t id = ids[(size_t)b * len + i];
            const float *given = rows ? rows[(size_t)b * len + i] : NULL;
            if (!given && id >= m->cfg.vocab_size) given = m->added + (size_t)(id - m->cfg.vocab_size) * h;
            if (given) { /* a textual-inversion vector, in the token table's precision */
                memcpy(xr, given, (size_t)h * sizeof *xr);
                weights_round_f32(&m->w, m->tok_emb->dtype, xr, (size_t)h);
                const float *pr = m->pos_emb + (size_t)i * h;
                for (int c = 0; c < h; c++) xr[c] += pr[c];
                continue;
            }
            row.data = (const unsigned char *)m->tok_emb->data +
                       (size_t)ids[(size_t)b * len + i] * row_bytes;
            st_to_f32(&row, xr);
            weights_round_f32(&m->w, m->tok_emb->dtype, xr, (size_t)h); /* as converted at load (--weights-dtype) */
            const float *pr = m->pos_emb + (size_t)i * h;
            for (int c = 0; c < h; c++) xr[c] += pr[c];
        }
}

/* One pre-LN encoder layer, in place on x. t [rows][hidden], qkv [rows][3 hidden] and
 * f [rows][intermediate] are scratch. */
static void layer_forward(clip_text *m, const clip_layer *l, float *x, float *t, float *qkv,
                          float *f, int batch, int len) {
    const clip_text_config *c = &m->cfg;
    const int h = c->hidden_size, rows = batch * len, d = h / c->num_heads;
    nn_layer_norm_forward(&l->ln1, x, t, rows);
    nn_linear_forward(&l->qkv, t, qkv, rows);
    const attn_shape s = {
        .batch = batch,
        .heads = c->num_heads,
        .nq = len,
        .nk = len,
        .d = d,
        .q_stride = 3 * h,
        .k_stride = 3 * h,
        .v_stride = 3 * h,
        .out_stride = h,
        .scale = (float)(1.0 / sqrt((double)d)),
        .causal = 1,
    };
    attention(&s, qkv, qkv + h, qkv + 2 * h, t, &m->scratch);
    linear_residual(&l->out, t, x, rows);
    nn_layer_norm_forward(&l->ln2, x, t, rows);
    nn_linear_forward(&l->fc1, t, f, rows);
    activate(m->act, f, (size_t)rows * c->intermediate_size);
    linear_residual(&l->fc2, f, x, rows);
}

/* transformers' pooling position: openai's original configs carry eos_token_id 2, which is not the
 * EOS id, so those pool at the largest id (EOS is the last vocabulary entry); fixed configs pool at
 * the first EOS, position 0 when there is none (argmax of an all-false mask). */
static int eos_position(const int32_t *ids, int len, int eos) {
    int at = 0;
    if (eos == 2) {
        for (int i = 1; i < len; i++)
            if (ids[i] > ids[at]) at = i;
        return at;
    }
    for (int i = 0; i < len; i++)
        if (ids[i] == eos) return i;
    return 0;
}

static void emit_hidden(const clip_text *m, const float *x, size_t rows, bool final_norm,
                        float *out) {
    if (final_norm)
        nn_layer_norm_forward(&m->final_ln, x, out, (int)rows);
    else
        memcpy(out, x, rows * m->cfg.hidden_size * sizeof *out);
}

static sd_status check_args(const clip_text *m, const int32_t *ids, const float *const *rows,
                            int batch, int len, int layer) {
    const clip_text_config *c = &m->cfg;
    if (batch < 1 || len < 1 || len > c->max_position_embeddings)
        return sd_set_error(SD_ERR_ARG,
                            "CLIP text encoder: %d sequences of %d ids (1 to %d ids per sequence)",
                            batch, len, c->max_position_embeddings);
    if ((size_t)batch * len > (size_t)CLIP_MAX_TOKENS)
        return sd_set_error(SD_ERR_ARG, "CLIP text encoder: batch of %d sequences is too large",
                            batch);
    if (layer < 0 || layer > c->num_layers)
        return sd_set_error(SD_ERR_ARG,
                            "CLIP text encoder: hidden state %d requested, the model has "
                            "0 to %d",
                            layer, c->num_layers);
    for (size_t i = 0; i < (size_t)batch * len; i++)
        if ((ids[i] < 0 || ids[i] >= c->vocab_size + m->n_added) && !(rows && rows[i]))
            return sd_set_error(SD_ERR_ARG,
                                "CLIP text encoder: token id %d (sequence %zu, position %zu) is "
                                "outside the vocabulary of %d",
                                ids[i], i / len, i % len, c->vocab_size);
    return SD_OK;
}

sd_status clip_text_encode(clip_text *m, const int32_t *ids, int batch, int len, int layer,
                           bool final_norm, float *hidden_out, float *pooled_out) {
    return clip_text_encode_rows(m, ids, NULL, batch, len, layer, final_norm, hidden_out,
                                 pooled_out);
}

sd_status clip_text_encode_rows(clip_text *m, const int32_t *ids, const float *const *given,
                                int batch, int len, int layer, bool final_norm, float *hidden_out,
                                float *pooled_out) {
    SD_TRY(check_args(m, ids, given, batch, len, layer));
    const clip_text_config *c = &m->cfg;
    const int h = c->hidden_size, rows = batch * len;
    float *x = sd_arena_floats(&m->scratch, (size_t)rows * h);
    float *t = sd_arena_floats(&m->scratch, (size_t)rows * h);
    float *qkv = sd_arena_floats(&m->scratch, (size_t)rows * 3 * h);
    float *f = sd_arena_floats(&m->scratch, (size_t)rows * c->intermediate_size);
    if (!x || !t || !qkv || !f) {
        sd_arena_reset(&m->scratch);
        return sd_set_error(SD_ERR_NOMEM, "CLIP text encoder: out of memory for %d tokens", rows);
    }
    embed(m, ids, given, batch, len, x);
    /* Only the pooled output needs the layers past the requested hidden state (clip skip). */
    const int run = pooled_out ? c->num_layers : layer;
    if (hidden_out && layer == 0) emit_hidden(m, x, rows, final_norm, hidden_out);
    for (int i = 0; i < run; i++) {
        layer_forward(m, &m->layers[i], x, t, qkv, f, batch, len);
        if (hidden_out && i + 1 == layer) emit_hidden(m, x, rows, final_norm, hidden_out);
    }
    if (pooled_out) {
        /* t holds the final-norm EOS rows, one per sequence. */
        for (int b = 0; b < batch; b++) {
            int at = eos_position(ids + (size_t)b * len, len, c->eos_token_id);
            nn_layer_norm_forward(&m->final_ln, x + ((size_t)b * len + at) * h, t + (size_t)b * h,
                                  1);
        }
        if (c->with_projection)
            nn_linear_forward(&m->proj, t, pooled_out, batch);
        else
            memcpy(pooled_out, t, (size_t)batch * h * sizeof *pooled_out);
    }
    sd_arena_reset(&m->scratch);
    m->encode_calls++;
    return SD_OK;
}

long clip_text_encode_calls(const clip_text *m) { return m->encode_calls; }

sd_status clip_text_add_rows(clip_text *m, const float *rows, int n) {
    const size_t h = (size_t)m->cfg.hidden_size;
    float *a = realloc(m->added, (size_t)(m->n_added + n) * h * sizeof *a);
    if (!a) return sd_set_error(SD_ERR_NOMEM, "CLIP text encoder: out of memory for %d added "
                                "token embeddings", m->n_added + n);
    memcpy(a + (size_t)m->n_added * h, rows, (size_t)n * h * sizeof *a);
    m->added = a;
    m->n_added += n;
    return SD_OK;
}

int clip_text_vocab_size(const clip_text *m) { return m->cfg.vocab_size + m->n_added; }
