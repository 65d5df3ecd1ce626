/* T5 encoder: token embedding (no scaling, no absolute positions), then per block a pre-norm
 * self-attention with a learned relative position bias and no 1/sqrt(d) scaling, and a pre-norm
 * feed-forward; RMS layer norms without bias. The position bias comes from block 0's
 * relative_attention_bias and is shared by every block. */
#include "t5_encoder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/weights.h"
#include "../kernels/act.h"
#include "../kernels/gemm.h"
#include "../kernels/norm.h"
#include "../kernels/norm.h"
#include "../nn/layers.h"

typedef enum { T5_ACT_RELU, T5_ACT_GELU, T5_ACT_GELU_TANH, T5_ACT_SILU } t5_act;

typedef struct {
    float *ln_attn, *ln_ff; /* [d_model] */
    nn_linear qkv;          /* q, k, v stacked: [3 * inner][d_model], no bias */
    nn_linear o;            /* [d_model][inner] */
    nn_linear wi0, wi1;     /* [d_ff][d_model]; wi1 only when gated (wi0 is then wi_0) */
    nn_linear wo;           /* [d_model][d_ff] */
} t5_block;

struct t5_encoder {
    t5_encoder_config cfg;
    t5_act act;
    /* Kept open: the token table is read a row at a time from the mapping (T5-XXL's is 32128 x
     * 4096, 0.5 GB in float32, for a few hundred rows used). */
    sd_weights w;
    const st_tensor *tok_emb; /* [vocab][d_model] as stored */
    float *rel_bias;          /* [num_buckets][num_heads] */
    t5_block *blocks;
    float *final_ln; /* [d_model] */
    sd_arena scratch;
    long encode_calls; /* completed encodes, for sd_pipeline_stats */
};

/* Bounds far above any real model so int size arithmetic cannot overflow. */
enum {
    T5_MAX_DIM = 1 << 16,
    T5_MAX_VOCAB = 1 << 24,
    T5_MAX_LAYERS = 1024,
    T5_MAX_TOKENS = 1 << 16
};

/* ---- config ---- */

static sd_status parse_act(const char *name, t5_act *act, const char *path) {
    if (!strcmp(name, "relu"))
        *act = T5_ACT_RELU;
    else if (!strcmp(name, "gelu"))
        *act = T5_ACT_GELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh"))
        *act = T5_ACT_GELU_TANH; /* the same tanh formula in float32 */
    else if (!strcmp(name, "silu") || !strcmp(name, "swish"))
        *act = T5_ACT_SILU;
    else
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: feed-forward activation '%s' is not supported (relu, gelu, "
                            "gelu_new, gelu_pytorch_tanh, silu)",
                            path, name);
    return SD_OK;
}

/* T5Config: feed_forward_proj "ACT" or "gated-ACT" gives the activation and the gating, with
 * "gated-gelu" meaning gelu_new; dense_act_fn / is_gated_act saved in the file take precedence
 * (transformers sets them from the remaining config keys after deriving them). */
static sd_status read_ff(sd_cfg *c, t5_encoder_config *cfg, const char *path) {
    const char *proj = cfg_str(c, "feed_forward_proj", "relu");
    SD_TRY(cfg_status(c));
    const char *dash = strchr(proj, '-');
    const char *act = proj;
    cfg->gated = false;
    if (dash) {
        if (strncmp(proj, "gated-", 6) || strchr(dash + 1, '-'))
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: feed_forward_proj '%s' is not 'ACT' or 'gated-ACT'", path,
                                proj);
        cfg->gated = true;
        act = dash + 1;
    }
    if (!strcmp(proj, "gated-gelu")) act = "gelu_new";
    act = cfg_str(c, "dense_act_fn", act);
    cfg->gated = cfg_bool(c, "is_gated_act", cfg->gated);
    SD_TRY(cfg_status(c));
    snprintf(cfg->dense_act, sizeof cfg->dense_act, "%s", act);
    return SD_OK;
}

static sd_status read_config(const char *dir, t5_encoder_config *cfg, t5_act *act) {
    char *path = sd_path_join(dir, "config.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    if (st != SD_OK) {
        free(path);
        return st;
    }
    memset(cfg, 0, sizeof *cfg);
    const char *type = cfg_str(&c, "model_type", "t5");
    cfg->vocab_size = cfg_int(&c, "vocab_size", 32128);
    cfg->d_model = cfg_int(&c, "d_model", 512);
    cfg->d_kv = cfg_int(&c, "d_kv", 64);
    cfg->d_ff = cfg_int(&c, "d_ff", 2048);
    cfg->num_layers = cfg_int(&c, "num_layers", 6);
    cfg->num_heads = cfg_int(&c, "num_heads", 8);
    cfg->num_buckets = cfg_int(&c, "relative_attention_num_buckets", 32);
    cfg->max_distance = cfg_int(&c, "relative_attention_max_distance", 128);
    cfg->layer_norm_eps = (float)cfg_num(&c, "layer_norm_epsilon", 1e-6);
    st = cfg_status(&c);
    /* umt5 and mt5 share the layout but umt5 has a position bias per block. */
    if (st == SD_OK && strcmp(type, "t5") && strcmp(type, "mt5"))
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (t5, mt5)",
                          path, type);
    if (st == SD_OK) st = read_ff(&c, cfg, path);
    if (st == SD_OK) st = parse_act(cfg->dense_act, act, path);
    if (st == SD_OK) st = cfg_check_range(path, "vocab_size", cfg->vocab_size, 1, T5_MAX_VOCAB);
    if (st == SD_OK) st = cfg_check_range(path, "d_model", cfg->d_model, 1, T5_MAX_DIM);
    if (st == SD_OK) st = cfg_check_range(path, "d_kv", cfg->d_kv, 1, T5_MAX_DIM);
    if (st == SD_OK) st = cfg_check_range(path, "d_ff", cfg->d_ff, 1, T5_MAX_DIM * 4);
    if (st == SD_OK) st = cfg_check_range(path, "num_layers", cfg->num_layers, 1, T5_MAX_LAYERS);
    if (st == SD_OK) st = cfg_check_range(path, "num_heads", cfg->num_heads, 1, T5_MAX_DIM / cfg->d_kv);
    /* The bidirectional bucketing halves num_buckets and uses half of that for exact offsets. */
    if (st == SD_OK)
        st = cfg_check_range(path, "relative_attention_num_buckets", cfg->num_buckets, 4, 1 << 16);
    if (st == SD_OK)
        st = cfg_check_range(path, "relative_attention_max_distance", cfg->max_distance,
                         cfg->num_buckets / 4 + 1, 1 << 24);
    if (st == SD_OK && !(cfg->layer_norm_eps > 0.0f))
        st = sd_set_error(SD_ERR_CONFIG, "%s: layer_norm_epsilon must be positive", path);
    cfg_close(&c);
    free(path);
    return st;
}

/* ---- weights ---- */

static sd_status load_qkv(nn_linear *qkv, const sd_weights *w, int d, int inner, int i) {
    static const char *const names[3] = {"q", "k", "v"};
    nn_linear parts[3];
    memset(qkv, 0, sizeof *qkv);
    memset(parts, 0, sizeof parts);
    sd_status st = SD_OK;
    for (int p = 0; p < 3 && st == SD_OK; p++)
        st = nn_linear_load(&parts[p], w, d, inner, false, "encoder.block.%d.layer.0.SelfAttention.%s",
                            i, names[p]);
    if (st == SD_OK) return nn_linear_stack(qkv, parts, 3);
    for (int p = 0; p < 3; p++) nn_linear_free(&parts[p]);
    return st;
}

static sd_status load_block(t5_block *b, const sd_weights *w, const t5_encoder_config *c, int i) {
    const int d = c->d_model, inner = c->num_heads * c->d_kv, f = c->d_ff;
    const int64_t norm_shape[1] = {d};
    SD_TRY(nn_read_tensor(w, &b->ln_attn, 1, norm_shape,
                          "encoder.block.%d.layer.0.layer_norm.weight", i));
    SD_TRY(load_qkv(&b->qkv, w, d, inner, i));
    SD_TRY(
        nn_linear_load(&b->o, w, inner, d, false, "encoder.block.%d.layer.0.SelfAttention.o", i));
    SD_TRY(nn_read_tensor(w, &b->ln_ff, 1, norm_shape, "encoder.block.%d.layer.1.layer_norm.weight",
                          i));
    char ff[64];
    snprintf(ff, sizeof ff, "encoder.block.%d.layer.1.DenseReluDense", i);
    if (c->gated) {
        SD_TRY(nn_linear_load(&b->wi0, w, d, f, false, "%s.wi_0", ff));
        SD_TRY(nn_linear_load(&b->wi1, w, d, f, false, "%s.wi_1", ff));
    } else {
        SD_TRY(nn_linear_load(&b->wi0, w, d, f, false, "%s.wi", ff));
    }
    return nn_linear_load(&b->wo, w, f, d, false, "%s.wo", ff);
}

static sd_status load_weights(t5_encoder *m, const char *dir, const weights_policy *policy) {
    const t5_encoder_config *c = &m->cfg;
    SD_TRY(weights_open(&m->w, dir, "model", policy));
    m->w.keep_stored = true; /* closed with the model; layers run through nn_linear_forward* */
    /* `shared` and `encoder.embed_tokens` are one tied tensor; files keep either name. */
    const char *tok_name = "shared.weight";
    if (!weights_find(&m->w, tok_name)) tok_name = "encoder.embed_tokens.weight";
    m->tok_emb = weights_find(&m->w, tok_name);
    if (!m->tok_emb)
        return sd_set_error(SD_ERR_TENSOR,
                            "%s: tensor 'shared.weight' (or 'encoder.embed_tokens.weight') not "
                            "found",
                            dir);
    if (!st_is_float(m->tok_emb->dtype))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has dtype %s, expected a float type",
                            weights_file_of(&m->w, tok_name), tok_name,
                            st_dtype_name(m->tok_emb->dtype));
    const int64_t tok_shape[2] = {c->vocab_size, c->d_model};
    SD_TRY(st_check_shape(m->tok_emb, weights_file_of(&m->w, tok_name), 2, tok_shape));
    if (!st_rows_whole_blocks(m->tok_emb))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s': rows of %lld values are not whole "
                            "%s blocks (a reshaped GGUF tensor); a table is read row by row",
                            weights_file_of(&m->w, tok_name), tok_name,
                            (long long)m->tok_emb->shape[m->tok_emb->ndim - 1], st_dtype_name(m->tok_emb->dtype));
    const int64_t bias_shape[2] = {c->num_buckets, c->num_heads};
    SD_TRY(nn_read_tensor(&m->w, &m->rel_bias, 2, bias_shape,
                          "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"));
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (!m->blocks) return sd_set_error(SD_ERR_NOMEM, "out of memory for %d blocks", c->num_layers);
    for (int i = 0; i < c->num_layers; i++) SD_TRY(load_block(&m->blocks[i], &m->w, c, i));
    const int64_t norm_shape[1] = {c->d_model};
    return nn_read_tensor(&m->w, &m->final_ln, 1, norm_shape, "encoder.final_layer_norm.weight");
}

sd_status t5_encoder_load(t5_encoder **out, const char *dir, const weights_policy *policy) {
    *out = NULL;
    t5_encoder *m = calloc(1, sizeof *m);
    if (!m) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_arena_init(&m->scratch);
    sd_status st = read_config(dir, &m->cfg, &m->act);
    if (st == SD_OK) st = load_weights(m, dir, policy);
    if (st != SD_OK) {
        t5_encoder_free(m);
        return sd_wrap_error(st, "loading T5 encoder");
    }
    *out = m;
    return SD_OK;
}

void t5_encoder_release(t5_encoder *m) {
    if (!m) return;
    sd_arena_free(&m->scratch);
    sd_arena_init(&m->scratch);
    weights_release(&m->w);
}

void t5_encoder_free(t5_encoder *m) {
    if (!m) return;
    if (m->blocks)
        for (int i = 0; i < m->cfg.num_layers; i++) {
            t5_block *b = &m->blocks[i];
            free(b->ln_attn);
            free(b->ln_ff);
            nn_linear_free(&b->qkv);
            nn_linear_free(&b->o);
            nn_linear_free(&b->wi0);
            nn_linear_free(&b->wi1);
            nn_linear_free(&b->wo);
        }
    free(m->blocks);
    free(m->rel_bias);
    free(m->final_ln);
    weights_close(&m->w);
    sd_arena_free(&m->scratch);
    free(m);
}

const t5_encoder_config *t5_encoder_get_config(const t5_encoder *m) {
    return &m->cfg;
}

/* ---- forward ---- */

int t5_relative_bucket(int relative_position, int num_buckets, int max_distance) {
    /* Bidirectional: half the buckets for keys after the query. */
    num_buckets /= 2;
    int bucket = relative_position > 0 ? num_buckets : 0;
    int n = abs(relative_position);
    const int max_exact = num_buckets / 2;
    if (n < max_exact) return bucket + n;
    /* Logarithmic buckets up to max_distance, computed in float32 as torch does: log of a float
     * tensor, divided and multiplied by Python scalars (rounded to float), truncated. */
    const float ratio = logf((float)n / (float)max_exact) /
                        (float)log((double)max_distance / max_exact) *
                        (float)(num_buckets - max_exact);
    int large = max_exact + (int)ratio;
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

static void activate(t5_act act, float *x, size_t n) {
    switch (act) {
    case T5_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case T5_ACT_GELU:
        act_gelu(x, n);
        break;
    case T5_ACT_GELU_TANH:
        act_gelu_tanh(x, n);
        break;
    case T5_ACT_SILU:
        act_silu(x, n);
        break;
    }
}

/* y += x W^T: the residual add folded into the GEMM. */
static void linear_residual(const nn_linear *l, const float *x, float *y, int rows) {
    nn_linear_forward_add(l, x, y, rows);
}

/* x[rows][d_model] = token_embedding[id]. */
static void embed(const t5_encoder *m, const int32_t *ids, int rows, float *x) {
    const int d = m->cfg.d_model;
    const size_t row_bytes = st_dtype_bytes(m->tok_emb->dtype, d); /* GGUF blocks too */
    st_tensor row = *m->tok_emb; /* a one-row view, so st_to_f32 converts just that row */
    row.ndim = 1;
    row.shape[0] = d;
    row.nbytes = row_bytes;
    for (int r = 0; r < rows; r++) {
        row.data = (const unsigned char *)m->tok_emb->data + (size_t)ids[r] * row_bytes;
        st_to_f32(&row, x + (size_t)r * d);
        weights_round_f32(&m->w, m->tok_emb->dtype, x + (size_t)r * d, (size_t)d); /* as converted at load */
    }
}

/* bias[h][r] for relative positions r - (len - 1) in [-(len - 1), len - 1]. */
static void position_bias(const t5_encoder *m, int len, float *bias) {
    const t5_encoder_config *c = &m->cfg;
    const int span = 2 * len - 1;
    for (int r = 0; r < span; r++) {
        const int b = t5_relative_bucket(r - (len - 1), c->num_buckets, c->max_distance);
        for (int h = 0; h < c->num_heads; h++)
            bias[(size_t)h * span + r] = m->rel_bias[b * c->num_heads + h];
    }
}

/* Self-attention of one sequence: qkv [len][q | k | v] (each heads * d_kv), out [len][inner].
 * scores: [len][len] scratch. No 1/sqrt(d_kv) scaling: T5 folds it into its initialisation. */
static void attention_bias(const t5_encoder *m, const float *qkv, const float *bias, float *scores,
                           float *out, int len) {
    const t5_encoder_config *c = &m->cfg;
    const int dk = c->d_kv, inner = c->num_heads * dk, span = 2 * len - 1;
    for (int h = 0; h < c->num_heads; h++) {
        const float *q = qkv + h * dk, *k = qkv + inner + h * dk, *v = qkv + 2 * inner + h * dk;
        gemm_nt(len, len, dk, q, 3 * inner, k, 3 * inner, scores, len, NULL, 0);
        const float *bh = bias + (size_t)h * span;
        for (int i = 0; i < len; i++) {
            float *row = scores + (size_t)i * len;
            const float *bi = bh + (len - 1 - i); /* bi[j] is the bias of key j - query i */
            for (int j = 0; j < len; j++) row[j] += bi[j];
        }
        softmax_rows(scores, len, len); /* float32 like torch's, the sum in double */
        gemm_nn(len, dk, len, scores, len, v, 3 * inner, out + h * dk, inner, NULL, 0);
    }
}

static void block_forward(t5_encoder *m, const t5_block *b, float *x, float *t, float *qkv,
                          float *attn, float *f0, float *f1, const float *bias, float *scores,
                          int batch, int len) {
    const t5_encoder_config *c = &m->cfg;
    const int d = c->d_model, rows = batch * len, inner = c->num_heads * c->d_kv;
    rms_norm(x, t, rows, d, c->layer_norm_eps, b->ln_attn);
    nn_linear_forward(&b->qkv, t, qkv, rows);
    for (int s = 0; s < batch; s++)
        attention_bias(m, qkv + (size_t)s * len * 3 * inner, bias, scores,
                       attn + (size_t)s * len * inner, len);
    linear_residual(&b->o, attn, x, rows);
    rms_norm(x, t, rows, d, c->layer_norm_eps, b->ln_ff);
    nn_linear_forward(&b->wi0, t, f0, rows);
    activate(m->act, f0, (size_t)rows * c->d_ff);
    if (c->gated) {
        nn_linear_forward(&b->wi1, t, f1, rows);
        for (size_t i = 0; i < (size_t)rows * c->d_ff; i++) f0[i] *= f1[i];
    }
    linear_residual(&b->wo, f0, x, rows);
}

static sd_status check_args(const t5_encoder *m, const int32_t *ids, int batch, int len) {
    const t5_encoder_config *c = &m->cfg;
    if (!ids || batch < 1 || len < 1 || (size_t)batch * len > (size_t)T5_MAX_TOKENS)
        return sd_set_error(SD_ERR_ARG, "T5 encoder: %d sequences of %d ids (1 to %d tokens)",
                            batch, len, T5_MAX_TOKENS);
    for (size_t i = 0; i < (size_t)batch * len; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sd_set_error(SD_ERR_ARG,
                                "T5 encoder: token id %d (sequence %zu, position %zu) is outside "
                                "the vocabulary of %d",
                                ids[i], i / len, i % len, c->vocab_size);
    return SD_OK;
}

sd_status t5_encoder_encode(t5_encoder *m, const int32_t *ids, int batch, int len,
                            float *hidden_out) {
    SD_TRY(check_args(m, ids, batch, len));
    if (!hidden_out) return sd_set_error(SD_ERR_ARG, "T5 encoder: no output buffer");
    const t5_encoder_config *c = &m->cfg;
    const size_t rows = (size_t)batch * len, d = (size_t)c->d_model;
    const size_t inner = (size_t)c->num_heads * c->d_kv, ff = (size_t)c->d_ff;
    float *x = sd_arena_floats(&m->scratch, rows * d);
    float *t = sd_arena_floats(&m->scratch, rows * d);
    float *qkv = sd_arena_floats(&m->scratch, rows * 3 * inner);
    float *attn = sd_arena_floats(&m->scratch, rows * inner);
    float *f0 = sd_arena_floats(&m->scratch, rows * ff);
    float *f1 = c->gated ? sd_arena_floats(&m->scratch, rows * ff) : NULL;
    float *bias = sd_arena_floats(&m->scratch, (size_t)c->num_heads * (2 * len - 1));
    float *scores = sd_arena_floats(&m->scratch, (size_t)len * len);
    if (!x || !t || !qkv || !attn || !f0 || (c->gated && !f1) || !bias || !scores) {
        sd_arena_reset(&m->scratch);
        return sd_set_error(SD_ERR_NOMEM, "T5 encoder: out of memory for %zu tokens", rows);
    }
    embed(m, ids, (int)rows, x);
    position_bias(m, len, bias);
    for (int i = 0; i < c->num_layers; i++)
        block_forward(m, &m->blocks[i], x, t, qkv, attn, f0, f1, bias, scores, batch, len);
    rms_norm(x, hidden_out, (int)rows, (int)d, c->layer_norm_eps, m->final_ln);
    sd_arena_reset(&m->scratch);
    m->encode_calls++;
    return SD_OK;
}

long t5_encoder_encode_calls(const t5_encoder *m) { return m->encode_calls; }
