/* UNet2DConditionModel against diffusers: single calls (unet_direct), every denoiser call of the
 * recorded pipeline runs, and load errors (missing tensor, wrong shape, unsupported config). */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/arena.h"
#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../core/weights.h"
#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/gemm.h"
#include "../kernels/norm.h"
#include "../unet/unet.h"
#include "test.h"

static const double TOL = 1e-5;

/* snprintf that records a failure instead of silently truncating a path or a label. */
static void fmt(char *buf, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t size, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, size, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) CHECK(0, "name too long: %s", buf);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One UNet call on NCHW input, compared (NCHW) with the recorded output. */
static int check_call(unet *m, const char *what, const float *x_nchw, int n, int c, int h, int w,
                      float t, const float *ctx, int ctx_len, const unet_added_cond *added,
                      const float *want_nchw) {
    const unet_config *cfg = unet_get_config(m);
    size_t in_n = (size_t)n * c * h * w, out_n = (size_t)n * cfg->out_channels * h * w;
    float *x = malloc(in_n * sizeof *x), *y = malloc(out_n * sizeof *y),
          *y_nchw = malloc(out_n * sizeof *y);
    nchw_to_nhwc(x_nchw, x, n, c, h, w);
    sd_status st = unet_forward(m, x, n, h, w, t, ctx, ctx_len, added, y);
    CHECK(st == SD_OK, "%s: unet_forward: %s", what, sd_last_error());
    int ok = 0;
    if (st == SD_OK) {
        nhwc_to_nchw(y, y_nchw, n, h, w, cfg->out_channels);
        ok = check_rel(what, y_nchw, want_nchw, out_n, TOL);
    }
    free(x), free(y), free(y_nchw);
    return ok;
}

static void test_direct(unet *m) {
    const char *file = "sd15-tiny/expected/unet_direct.safetensors";
    int64_t xs[8], cs[8];
    float *sample = fixture_tensor(file, "sample", xs, NULL);
    float *ehs = fixture_tensor(file, "encoder_hidden_states", cs, NULL);
    static const float ts[] = {0.0f, 1.0f, 500.5f, 999.0f};
    for (int i = 0; sample && ehs && i < 4; i++) {
        char name[64], what[96];
        fmt(name, sizeof name, "out_t%.1f", ts[i]);
        float *want = fixture_tensor(file, name, NULL, NULL);
        fmt(what, sizeof what, "sd15-tiny unet_direct t=%g", ts[i]);
        if (want)
            check_call(m, what, sample, (int)xs[0], (int)xs[1], (int)xs[2], (int)xs[3], ts[i], ehs,
                       (int)cs[1], NULL, want);
        free(want);
    }
    free(sample);
    free(ehs);
}

/* The conditioning diffusers builds for a run: with CFG, [negative; positive], each half holding
 * every prompt's embeddings repeated num_images_per_prompt times in a row (encode_prompt's
 * repeat + view); without CFG, the positive half alone. */
static float *run_context(const float *pos, const float *neg, int n_prompts, int per_prompt,
                          int len, int dim, int cfg) {
    const size_t one = (size_t)len * dim;
    const int half = n_prompts * per_prompt;
    float *ctx = malloc((size_t)(cfg ? 2 : 1) * half * one * sizeof *ctx);
    float *p = ctx;
    for (int part = cfg ? 0 : 1; part < 2; part++)
        for (int i = 0; i < n_prompts; i++)
            for (int r = 0; r < per_prompt; r++, p += one)
                memcpy(p, (part == 0 ? neg : pos) + i * one, one * sizeof *p);
    return ctx;
}

/* What a run's JSON says about the call. */
typedef struct {
    double guidance;
    int per_prompt;    /* num_images_per_prompt */
    int height, width; /* pixels (0 when absent) */
} run_info;

static int read_run_json(const char *rel, run_info *r) {
    sd_cfg c;
    if (cfg_open(&c, fixture(rel)) != SD_OK) {
        CHECK(0, "%s: %s", rel, sd_last_error());
        return 0;
    }
    r->guidance = cfg_num(&c, "guidance_scale", 7.5);
    r->per_prompt = cfg_int(&c, "num_images_per_prompt", 1);
    r->height = cfg_int(&c, "height", 0);
    r->width = cfg_int(&c, "width", 0);
    int ok = cfg_status(&c) == SD_OK;
    CHECK(ok, "%s: %s", rel, sd_last_error());
    cfg_close(&c);
    return ok;
}

static int has_tensor(const char *rel, const char *name) {
    st_file f;
    if (st_open(&f, fixture(rel)) != SD_OK) return 0;
    int has = st_find(&f, name) != NULL;
    st_close(&f);
    return has;
}

/* SDXL's added conditions for a run, in the context's batch order: pooled text embeddings
 * ([negative; positive] with CFG) and time ids (original size, crop top-left, target size; the
 * pipeline's defaults: both sizes are the requested image size, no crop, same for both halves). */
static int run_added_cond(const char *rel, const run_info *r, int cfg, int nb, int h, int w,
                          unet_added_cond *added, float **text, float **ids) {
    int64_t ps[8];
    float *pos = fixture_tensor(rel, "pooled_prompt_embeds", ps, NULL);
    float *neg = fixture_tensor(rel, "negative_pooled_prompt_embeds", NULL, NULL);
    *text =
        pos && neg ? run_context(pos, neg, (int)ps[0], r->per_prompt, 1, (int)ps[1], cfg) : NULL;
    *ids = malloc((size_t)nb * 6 * sizeof **ids);
    const float height = r->height ? r->height : 8 * h, width = r->width ? r->width : 8 * w;
    for (int b = 0; b < nb; b++) {
        float *row = *ids + b * 6;
        row[0] = height, row[1] = width, row[2] = 0, row[3] = 0, row[4] = height, row[5] = width;
    }
    free(pos), free(neg);
    *added = (unet_added_cond){*text, *ids, 6};
    return *text != NULL;
}

/* Every call k of one run: unet(model_inputs[k], model_timesteps[k], context) vs model_outputs[k].
 * `ctx_pos`/`ctx_neg` [77][cross_dim] replace the recorded prompt embeddings when not NULL. */
static void test_run(unet *m, const char *model, const char *run, const float *ctx_pos,
                     const float *ctx_neg, int *calls) {
    char rel[256], json[256], what[160];
    fmt(rel, sizeof rel, "%s/expected/%s.safetensors", model, run);
    fmt(json, sizeof json, "%s/expected/%s.json", model, run);
    run_info info;
    if (!read_run_json(json, &info)) return;
    const int cfg = info.guidance > 1.0;
    int64_t is[8], es[8];
    float *inputs = fixture_tensor(rel, "model_inputs", is, NULL);
    float *outputs = fixture_tensor(rel, "model_outputs", NULL, NULL);
    float *steps = fixture_tensor(rel, "model_timesteps", NULL, NULL);
    float *pos = NULL, *neg = NULL, *text = NULL, *ids = NULL;
    if (!ctx_pos) {
        pos = fixture_tensor(rel, "prompt_embeds", es, NULL);
        neg = fixture_tensor(rel, "negative_prompt_embeds", NULL, NULL);
    } else {
        es[0] = 1, es[1] = 77, es[2] = unet_get_config(m)->cross_attention_dim;
    }
    const float *p = ctx_pos ? ctx_pos : pos, *ng = ctx_neg ? ctx_neg : neg;
    if (inputs && outputs && steps && p && ng) {
        const int k_calls = (int)is[0], nb = (int)is[1], c = (int)is[2], h = (int)is[3],
                  w = (int)is[4];
        const int n_prompts = (int)es[0];
        CHECK(nb == (cfg ? 2 : 1) * n_prompts * info.per_prompt,
              "%s/%s: batch %d does not match cfg=%d x %d x %d", model, run, nb, cfg, n_prompts,
              info.per_prompt);
        float *ctx = run_context(p, ng, n_prompts, info.per_prompt, (int)es[1], (int)es[2], cfg);
        unet_added_cond added, *ap = NULL;
        if (unet_get_config(m)->text_time &&
            run_added_cond(rel, &info, cfg, nb, h, w, &added, &text, &ids))
            ap = &added;
        const size_t per_call = (size_t)nb * c * h * w;
        for (int k = 0; k < k_calls; k++) {
            fmt(what, sizeof what, "%s/%s call %d/%d (t=%g, batch %d, %dx%d)", model, run, k + 1,
                k_calls, steps[k], nb, h, w);
            check_call(m, what, inputs + k * per_call, nb, c, h, w, steps[k], ctx, (int)es[1], ap,
                       outputs + k * per_call);
            (*calls)++;
        }
        free(ctx);
    }
    free(inputs), free(outputs), free(steps), free(pos), free(neg), free(text), free(ids);
}

/* Every run of <model>/expected that records prompt embeddings and denoiser calls. */
static void test_runs_with_embeddings(unet *m, const char *model) {
    char dir[256];
    fmt(dir, sizeof dir, "%s/expected", model);
    DIR *d = opendir(fixture(dir));
    CHECK(d != NULL, "cannot list %s", fixture(dir));
    if (!d) return;
    char names[64][128];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 64;) {
        size_t len = strlen(e->d_name);
        if (len > 5 && len < 120 && !strcmp(e->d_name + len - 5, ".json")) {
            memcpy(names[n], e->d_name, len - 5);
            names[n++][len - 5] = '\0';
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    int runs = 0, calls = 0;
    for (int i = 0; i < n; i++) {
        char rel[256];
        fmt(rel, sizeof rel, "%s/expected/%s.safetensors", model, names[i]);
        if (!has_tensor(rel, "prompt_embeds") || !has_tensor(rel, "model_outputs")) continue;
        test_run(m, model, names[i], NULL, NULL, &calls);
        runs++;
    }
    printf("%s: %d runs with prompt embeddings, %d denoiser calls checked\n", model, runs, calls);
    CHECK(runs > 0, "%s: no run records prompt embeddings", model);
}

/* ---- sd2v-tiny: its runs record token ids but no prompt embeddings, so a plain CLIP text
 * encoder (transformers' CLIPTextModel, last hidden state after the final layer norm, as the SD
 * pipelines use it) turns the recorded ids into the conditioning. It is checked first against
 * the prompt embeddings sd15-tiny's runs do record. ---- */

/* "<prefix>encoder.layers.<layer>.<name>" (layer >= 0) or "<prefix><name>", shape [d0] or [d0][d1].
 */
static float *clip_read(const sd_weights *w, const char *prefix, int layer, const char *name,
                        int64_t d0, int64_t d1) {
    char full[256];
    if (layer >= 0)
        fmt(full, sizeof full, "%sencoder.layers.%d.%s", prefix, layer, name);
    else
        fmt(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[2] = {d0, d1};
    float *x = NULL;
    if (weights_read_f32(w, full, d1 ? 2 : 1, shape, &x) != SD_OK)
        CHECK(0, "clip reference: %s", sd_last_error());
    return x;
}

/* ids [len] -> hidden [len][dim] (malloc'd); NULL after a recorded failure. */
static float *clip_encode(const char *dir, const int32_t *ids, int len, int *dim_out) {
    char path[512];
    fmt(path, sizeof path, "%s/config.json", dir);
    sd_cfg c;
    if (cfg_open(&c, path) != SD_OK) return NULL;
    const int d = cfg_int(&c, "hidden_size", 0), heads = cfg_int(&c, "num_attention_heads", 0);
    const int layers = cfg_int(&c, "num_hidden_layers", 0),
              inter = cfg_int(&c, "intermediate_size", 0);
    const float eps = (float)cfg_num(&c, "layer_norm_eps", 1e-5);
    const int quick = !strcmp(cfg_str(&c, "hidden_act", "quick_gelu"), "quick_gelu");
    cfg_close(&c);
    sd_weights w;
    if (weights_open(&w, dir, "model", NULL) != SD_OK) return NULL;
    const char *pre =
        weights_find(&w, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    float *x = calloc((size_t)len * d, sizeof *x), *h = malloc((size_t)len * d * sizeof *h);
    float *q = malloc((size_t)len * d * sizeof *q), *k = malloc((size_t)len * d * sizeof *k);
    float *v = malloc((size_t)len * d * sizeof *v), *f = malloc((size_t)len * inter * sizeof *f);
    float *tok = clip_read(&w, pre, -1, "embeddings.token_embedding.weight", 49408, d);
    float *pos = clip_read(&w, pre, -1, "embeddings.position_embedding.weight", 77, d);
    for (int i = 0; tok && pos && i < len; i++)
        for (int j = 0; j < d; j++) x[i * d + j] = tok[(size_t)ids[i] * d + j] + pos[i * d + j];
    free(tok), free(pos);
    /* one layer's tensors: name, rows and columns (0: a vector), in units of d or inter */
    enum { LN1W, LN1B, LN2W, LN2B, WQ, BQ, WK, BK, WV, BV, WO, BO, W1, B1, W2, B2, NT };
    static const struct {
        const char *name;
        char rows, cols; /* 'd' = hidden size, 'i' = intermediate size, 0 = none */
    } spec[NT] = {
        {"layer_norm1.weight", 'd', 0},
        {"layer_norm1.bias", 'd', 0},
        {"layer_norm2.weight", 'd', 0},
        {"layer_norm2.bias", 'd', 0},
        {"self_attn.q_proj.weight", 'd', 'd'},
        {"self_attn.q_proj.bias", 'd', 0},
        {"self_attn.k_proj.weight", 'd', 'd'},
        {"self_attn.k_proj.bias", 'd', 0},
        {"self_attn.v_proj.weight", 'd', 'd'},
        {"self_attn.v_proj.bias", 'd', 0},
        {"self_attn.out_proj.weight", 'd', 'd'},
        {"self_attn.out_proj.bias", 'd', 0},
        {"mlp.fc1.weight", 'i', 'd'},
        {"mlp.fc1.bias", 'i', 0},
        {"mlp.fc2.weight", 'd', 'i'},
        {"mlp.fc2.bias", 'd', 0},
    };
    const int hd = d / heads;
    for (int l = 0; l < layers; l++) {
        float *t[NT];
        int ok = 1;
        for (int i = 0; i < NT; i++) {
            int64_t r = spec[i].rows == 'd' ? d : inter, c = !spec[i].cols         ? 0
                                                             : spec[i].cols == 'd' ? d
                                                                                   : inter;
            ok &= (t[i] = clip_read(&w, pre, l, spec[i].name, r, c)) != NULL;
        }
        if (ok) {
            layer_norm_ref(x, h, len, d, eps, t[LN1W], t[LN1B]);
            gemm_nt_ref(len, d, d, h, d, t[WQ], d, q, d, t[BQ], 0);
            gemm_nt_ref(len, d, d, h, d, t[WK], d, k, d, t[BK], 0);
            gemm_nt_ref(len, d, d, h, d, t[WV], d, v, d, t[BV], 0);
            attn_shape as = {1, heads, len, len, hd, d, d, d, d, (float)(1.0 / sqrt((double)hd)),
                             1};
            attention_ref(&as, q, k, v, h);
            gemm_nt_ref(len, d, d, h, d, t[WO], d, x, d, t[BO], 1); /* x += out_proj(attention) */
            layer_norm_ref(x, h, len, d, eps, t[LN2W], t[LN2B]);
            gemm_nt_ref(len, inter, d, h, d, t[W1], d, f, inter, t[B1], 0);
            if (quick)
                act_quick_gelu(f, (size_t)len * inter);
            else
                act_gelu(f, (size_t)len * inter);
            gemm_nt_ref(len, d, inter, f, inter, t[W2], inter, x, d, t[B2], 1); /* x += mlp */
        }
        for (int i = 0; i < NT; i++) free(t[i]);
    }
    float *fw = clip_read(&w, pre, -1, "final_layer_norm.weight", d, 0),
          *fb = clip_read(&w, pre, -1, "final_layer_norm.bias", d, 0);
    if (fw && fb) layer_norm_ref(x, x, len, d, eps, fw, fb);
    free(fw), free(fb), free(h), free(q), free(k), free(v), free(f);
    weights_close(&w);
    *dim_out = d;
    return x;
}

/* The reference encoder reproduces sd15-tiny's recorded prompt embeddings. */
static void test_clip_reference(void) {
    const char *rel = "sd15-tiny/expected/euler.safetensors";
    static const char *const kinds[2][2] = {{"tokenizer_prompt_ids", "prompt_embeds"},
                                            {"tokenizer_negative_ids", "negative_prompt_embeds"}};
    for (int i = 0; i < 2; i++) {
        int32_t *ids = fixture_ids(rel, kinds[i][0], NULL, NULL);
        float *want = fixture_tensor(rel, kinds[i][1], NULL, NULL);
        int d = 0;
        float *got =
            ids ? clip_encode(fixture("sd15-tiny/pipeline/text_encoder"), ids, 77, &d) : NULL;
        if (got && want)
            check_rel(i ? "CLIP reference: sd15-tiny euler negative_prompt_embeds"
                        : "CLIP reference: sd15-tiny euler prompt_embeds",
                      got, want, (size_t)77 * d, TOL);
        free(ids), free(want), free(got);
    }
}

/* Every sd2v-tiny run, conditioned on the reference encoder's embeddings of its recorded ids. */
static void test_sd2v(void) {
    unet *m = NULL;
    CHECK_OK(unet_load(&m, fixture("sd2v-tiny/pipeline/unet"), NULL));
    if (!m) return;
    const unet_config *c = unet_get_config(m);
    CHECK(c->use_linear_projection && c->upcast_attention && c->heads[0] == 2 && c->heads[2] == 4,
          "sd2v-tiny config: linear projection, upcast attention, per-block heads [2 2 4 4]");
    static const char *const runs[] = {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v",
                                       "euler_v_zsnr"};
    int calls = 0;
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        char rel[256];
        fmt(rel, sizeof rel, "sd2v-tiny/expected/%s.safetensors", runs[r]);
        int32_t *pid = fixture_ids(rel, "tokenizer_prompt_ids", NULL, NULL);
        int32_t *nid = fixture_ids(rel, "tokenizer_negative_ids", NULL, NULL);
        int d = 0;
        float *pos =
            pid ? clip_encode(fixture("sd2v-tiny/pipeline/text_encoder"), pid, 77, &d) : NULL;
        float *neg =
            nid ? clip_encode(fixture("sd2v-tiny/pipeline/text_encoder"), nid, 77, &d) : NULL;
        CHECK(d == c->cross_attention_dim, "sd2v text width %d vs cross_attention_dim %d", d,
              c->cross_attention_dim);
        if (pos && neg) test_run(m, "sd2v-tiny", runs[r], pos, neg, &calls);
        free(pid), free(nid), free(pos), free(neg);
    }
    printf("sd2v-tiny: %zu runs, %d denoiser calls checked\n", sizeof runs / sizeof *runs, calls);
    unet_free(m);
}

/* SDXL: text_time added embeddings, transformer_layers_per_block [1, 1, 2], no attention at
 * level 0, cross_attention_dim 32 (two encoders concatenated). */
static void test_sdxl(void) {
    unet *m = NULL;
    CHECK_OK(unet_load(&m, fixture("sdxl-tiny/pipeline/unet"), NULL));
    if (!m) return;
    const unet_config *c = unet_get_config(m);
    CHECK(c->text_time && c->transformer_layers[2] == 2 && !c->down_has_attn[0] &&
              !c->up_has_attn[2],
          "sdxl-tiny config read");
    test_runs_with_embeddings(m, "sdxl-tiny");

    /* text_time conditions are required */
    float x[4 * 8 * 8] = {0}, ctx[77 * 32] = {0}, y[4 * 8 * 8];
    CHECK(unet_forward(m, x, 1, 8, 8, 1.0f, ctx, 77, NULL, y) == SD_ERR_ARG &&
              strstr(sd_last_error(), "text_time"),
          "missing added conditions refused: %s", sd_last_error());
    unet_free(m);
}

/* ---- load errors: variants of sd15-tiny's unet written to a temporary folder ---- */

static char tmpdir[256];

/* <dir>/config.json: sd15-tiny's config with up to two keys replaced by a value (JSON text; NULL
 * removes the key). */
static void write_config(const char *dir, const char *key, const char *value, const char *key2,
                         const char *value2) {
    char *text = NULL, path[512];
    CHECK_OK(sd_read_file(fixture("sd15-tiny/pipeline/unet/config.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!root) return;
    const char *keys[2] = {key, key2}, *values[2] = {value, value2};
    for (int i = 0; i < 2; i++) {
        if (!keys[i]) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(root, keys[i]);
        if (values[i]) cJSON_AddItemToObject(root, keys[i], cJSON_Parse(values[i]));
    }
    char *out = cJSON_Print(root);
    fmt(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp && out, "cannot write %s", path);
    if (fp && out) fputs(out, fp);
    if (fp) fclose(fp);
    cJSON_free(out);
    cJSON_Delete(root);
}

/* sd15-tiny's weights without `drop`, and with `reshape` (if not NULL) given shape [n0] and only
 * its first n0 values. */
static void write_weights(const char *dir, const char *drop, const char *reshape, int64_t n0) {
    st_file f;
    sd_status st =
        st_open(&f, fixture("sd15-tiny/pipeline/unet/diffusion_pytorch_model.safetensors"));
    CHECK_OK(st);
    if (st != SD_OK) return;
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        e[n] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        if (reshape && !strcmp(t->name, reshape)) e[n].ndim = 1, e[n].shape[0] = n0;
        n++;
    }
    char path[512];
    fmt(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    CHECK_OK(st_write(path, e, n, NULL, 0));
    free(e);
    st_close(&f);
}

static const char *variant_dir(const char *name) {
    static char dir[512];
    fmt(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0755);
    return dir;
}

/* Loading must fail with `want` and a message containing every needle. */
static void expect_load_error(const char *what, const char *dir, sd_status want,
                              const char *needle1, const char *needle2) {
    unet *m = NULL;
    sd_status st = unet_load(&m, dir, NULL);
    const char *msg = sd_last_error();
    CHECK(st == want, "%s: got %s (%s), expected %s", what, sd_status_name(st), msg,
          sd_status_name(want));
    CHECK(m == NULL, "%s: a model came back with the error", what);
    CHECK(strstr(msg, needle1) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle1);
    if (needle2)
        CHECK(strstr(msg, needle2) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle2);
    printf("ok   %s: %s\n", what, msg);
    unet_free(m);
}

static void test_load_errors(void) {
    const char *tensor = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    const char *dir = variant_dir("missing");
    write_config(dir, NULL, NULL, NULL, NULL);
    write_weights(dir, tensor, NULL, 0);
    expect_load_error("missing tensor", dir, SD_ERR_TENSOR, tensor, NULL);

    dir = variant_dir("shape");
    write_config(dir, NULL, NULL, NULL, NULL);
    write_weights(dir, NULL, "mid_block.resnets.1.conv2.weight", 32);
    expect_load_error("wrong shape", dir, SD_ERR_TENSOR, "mid_block.resnets.1.conv2.weight", NULL);

    /* a config that disagrees with the weights: cross_attention_dim sizes attn2.to_k */
    dir = variant_dir("crossdim");
    write_config(dir, "cross_attention_dim", "24", NULL, NULL);
    write_weights(dir, NULL, NULL, 0);
    expect_load_error("config/weights mismatch", dir, SD_ERR_TENSOR, "attn2.to_k.weight",
                      "[16, 16]");

    /* refused config values: the config is read before any weight */
    static const struct {
        const char *key, *value, *needle;
        sd_status want;
    } bad[] = {
        {"down_block_types",
         "[\"CrossAttnDownBlock2D\", \"SimpleCrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
         "\"DownBlock2D\"]",
         "SimpleCrossAttnDownBlock2D", SD_ERR_UNSUPPORTED},
        {"up_block_types",
         "[\"UpBlock2D\", \"AttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]",
         "AttnUpBlock2D", SD_ERR_UNSUPPORTED},
        {"mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"", "UNetMidBlock2DSimpleCrossAttn",
         SD_ERR_UNSUPPORTED},
        {"mid_block_type", "null", "null", SD_ERR_UNSUPPORTED},
        {"class_embed_type", "\"timestep\"", "timestep", SD_ERR_UNSUPPORTED},
        {"num_class_embeds", "10", "10", SD_ERR_UNSUPPORTED},
        {"time_cond_proj_dim", "256", "256", SD_ERR_UNSUPPORTED},
        {"attention_type", "\"gated\"", "gated", SD_ERR_UNSUPPORTED},
        {"addition_embed_type", "\"text\"", "text", SD_ERR_UNSUPPORTED},
        {"encoder_hid_dim", "32", "32", SD_ERR_UNSUPPORTED},
        {"only_cross_attention", "true", "true", SD_ERR_UNSUPPORTED},
        {"dual_cross_attention", "true", "true", SD_ERR_UNSUPPORTED},
        {"resnet_time_scale_shift", "\"scale_shift\"", "scale_shift", SD_ERR_UNSUPPORTED},
        {"time_embedding_type", "\"fourier\"", "fourier", SD_ERR_UNSUPPORTED},
        {"act_fn", "\"gelu\"", "gelu", SD_ERR_UNSUPPORTED},
        {"cross_attention_dim", "[16, 16, 16, 16]", "per-block", SD_ERR_UNSUPPORTED},
        {"transformer_layers_per_block", "[[1, 1], [1, 1], [1, 1], [1, 1]]", "list of lists",
         SD_ERR_UNSUPPORTED},
        {"norm_num_groups", "7", "= 7 groups", SD_ERR_CONFIG},
        {"norm_num_groups", "null", "null", SD_ERR_UNSUPPORTED},
        {"attention_head_dim", "[4, 4]", "2 entries", SD_ERR_CONFIG},
        {"attention_head_dim", "3", "3 attention heads", SD_ERR_CONFIG},
        {"num_attention_heads", "[2, 2, 3, 2]", "3 attention heads", SD_ERR_CONFIG},
        {"block_out_channels", "\"wide\"", "block_out_channels", SD_ERR_CONFIG},
    };
    dir = variant_dir("config");
    write_weights(dir, NULL, NULL, 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char what[160];
        write_config(dir, bad[i].key, bad[i].value, NULL, NULL);
        fmt(what, sizeof what, "config %s = %s", bad[i].key, bad[i].value);
        expect_load_error(what, dir, bad[i].want, bad[i].key, bad[i].needle);
    }
    /* num_attention_heads, when set, is the head count and attention_head_dim is ignored: the same
     * model as sd15-tiny (4 heads) with a head "dim" that would not even divide the channels */
    dir = variant_dir("numheads");
    write_config(dir, "num_attention_heads", "4", "attention_head_dim", "5");
    write_weights(dir, NULL, NULL, 0);
    unet *m = NULL;
    CHECK_OK(unet_load(&m, dir, NULL));
    if (m) {
        CHECK(unet_get_config(m)->heads[0] == 4 && unet_get_config(m)->heads[3] == 4,
              "num_attention_heads read");
        const char *file = "sd15-tiny/expected/unet_direct.safetensors";
        int64_t xs[8], cs[8];
        float *sample = fixture_tensor(file, "sample", xs, NULL);
        float *ehs = fixture_tensor(file, "encoder_hidden_states", cs, NULL);
        float *want = fixture_tensor(file, "out_t999.0", NULL, NULL);
        if (sample && ehs && want)
            check_call(m, "num_attention_heads = 4, attention_head_dim = 5: unet_direct t=999",
                       sample, (int)xs[0], (int)xs[1], (int)xs[2], (int)xs[3], 999.0f, ehs,
                       (int)cs[1], NULL, want);
        free(sample), free(ehs), free(want);
        unet_free(m);
    }
    expect_load_error("no such folder", "/nonexistent/unet", SD_ERR_IO, "/nonexistent/unet", NULL);
}

static void test_forward_errors(unet *m) {
    float x[4 * 12 * 16] = {0}, ctx[77 * 16] = {0}, y[4 * 12 * 16];
    CHECK(unet_forward(m, x, 1, 0, 16, 1.0f, ctx, 77, NULL, y) == SD_ERR_ARG &&
              strstr(sd_last_error(), "0x16"),
          "empty latent refused: %s", sd_last_error());
    CHECK(unet_forward(m, x, 0, 8, 8, 1.0f, ctx, 77, NULL, y) == SD_ERR_ARG, "batch 0 refused");
    CHECK(unet_forward(m, x, 1, 8, 8, 1.0f, NULL, 77, NULL, y) == SD_ERR_ARG,
          "NULL context refused");
}

/* After one call at a size, later calls at that size must not grow the arena; prints the time of
 * one forward (information only, not asserted). */
static void test_scratch_and_time(unet *m) {
    const unet_config *c = unet_get_config(m);
    const int n = 2, h = 16, w = 16, len = 77;
    float *x = malloc(sizeof(float) * n * h * w * c->in_channels);
    float *ctx = malloc(sizeof(float) * n * len * c->cross_attention_dim);
    float *y = malloc(sizeof(float) * n * h * w * c->out_channels);
    fill_random(x, (size_t)n * h * w * c->in_channels, 1);
    fill_random(ctx, (size_t)n * len * c->cross_attention_dim, 2);
    size_t bytes = 0, grew = 0;
    CHECK_OK(unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y));
    CHECK_OK(unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y));
    unet_scratch_stats(m, &bytes, &grew);
    CHECK(grew == 0, "second forward at the same size grew the arena %zu times", grew);
    const int reps = 20;
    double t0 = now_s();
    for (int i = 0; i < reps; i++) unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y);
    double per = (now_s() - t0) / reps;
    unet_scratch_stats(m, &bytes, &grew);
    CHECK(grew == 0, "repeated forwards grew the arena %zu times", grew);
    printf("sd15-tiny forward, batch %d, %dx%d latents: %.2f ms; scratch %.1f KiB\n", n, h, w,
           per * 1e3, bytes / 1024.0);

    /* The numbers do not depend on how the scratch is laid out over arena blocks. A UNet with an
     * empty arena, its spilled blocks made exactly the size of the allocation that needed them
     * (arena.h's test hook), spreads its first pass over many blocks: a block has no room left
     * for the next tensor, so skip connections are written in one block and read back by the up
     * path from others by construction, whatever scratch the kernels take. The second call runs
     * in the one block sd_arena_reset consolidated, allocates nothing, and gives the same
     * numbers. */
    const int bh = 48, bw = 40;
    float *bx = malloc(sizeof(float) * bh * bw * c->in_channels);
    float *y1 = malloc(sizeof(float) * bh * bw * c->out_channels);
    float *y2 = malloc(sizeof(float) * bh * bw * c->out_channels);
    fill_random(bx, (size_t)bh * bw * c->in_channels, 3);
    unet *fresh = NULL;
    CHECK_OK(unet_load(&fresh, fixture("sd15-tiny/pipeline/unet"), NULL));
    if (fresh) {
        const size_t saved_spill = sd_arena_set_min_spill(1);
        CHECK_OK(unet_forward(fresh, bx, 1, bh, bw, 250.0f, ctx, len, NULL, y1));
        sd_arena_set_min_spill(saved_spill);
        unet_scratch_stats(fresh, NULL, &grew);
        printf("sd15-tiny: the first %dx%d call spread over %zu exactly-sized arena blocks\n", bh,
               bw, grew);
        /* The time embedding, conv_in's output and a dozen skip tensors live at once: a handful
         * of blocks is a loose lower bound */
        CHECK(grew > 4, "the first %dx%d call took %zu arena blocks (expected many)", bh, bw, grew);
        CHECK_OK(unet_forward(fresh, bx, 1, bh, bw, 250.0f, ctx, len, NULL, y2));
        unet_scratch_stats(fresh, &bytes, &grew);
        CHECK(grew == 0, "second %dx%d call grew the arena %zu times", bh, bw, grew);
        CHECK(!memcmp(y1, y2, sizeof(float) * bh * bw * c->out_channels),
              "%dx%d: the first call (many arena blocks) and the second (one block) differ: "
              "rel err %.3g",
              bh, bw, rel_l2(y1, y2, (size_t)bh * bw * c->out_channels));
        printf("sd15-tiny scratch for batch 1, %dx%d: %.1f KiB\n", bh, bw, bytes / 1024.0);
        unet_free(fresh);
    }
    free(bx), free(y1), free(y2);
    free(x), free(ctx), free(y);
}

int main(void) {
    unet *m = NULL;
    CHECK_OK(unet_load(&m, fixture("sd15-tiny/pipeline/unet"), NULL));
    if (m) {
        test_direct(m);
        test_runs_with_embeddings(m, "sd15-tiny");
        test_scratch_and_time(m);
        test_forward_errors(m);
        unet_free(m);
    }
    test_clip_reference();
    test_sd2v();
    test_sdxl();
    fmt(tmpdir, sizeof tmpdir, "/tmp/sd-test-unet-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    test_load_errors();
    char cmd[300];
    fmt(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
