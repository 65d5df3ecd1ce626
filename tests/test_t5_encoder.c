/* T5 encoder against transformers: the prompt embeddings (FluxPipeline's prompt_embeds are the T5
 * last_hidden_state) of both flux-tiny runs from their recorded tokenizer_2 ids, one at a time and
 * batched; the same weights stored as BF16 / F16 under the other tied name; the relative position
 * buckets; load and call errors. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../text_encoder/t5_encoder.h"
#include "test.h"

#define TOL     1e-5
#define ENC_DIR "flux-tiny/pipeline/text_encoder_2"
enum { SEQ = 64, D = 16 };

static const char *const runs[2] = {"flux-tiny/expected/flux_dev_like.safetensors",
                                    "flux-tiny/expected/flux_nonsquare.safetensors"};
static char tmpdir[64];

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The recorded ids [1][64] and prompt_embeds [1][64][16] of a run (NULL after a failure). */
static int read_run(const char *file, int32_t **ids, float **embeds) {
    int64_t shape[8];
    int nd = 0;
    *ids = fixture_ids(file, "tokenizer_2_prompt_ids", shape, &nd);
    CHECK(*ids && nd == 2 && shape[0] == 1 && shape[1] == SEQ, "%s: ids [1, %d]", file, SEQ);
    *embeds = fixture_tensor(file, "prompt_embeds", shape, &nd);
    CHECK(*embeds && nd == 3 && shape[0] == 1 && shape[1] == SEQ && shape[2] == D,
          "%s: prompt_embeds [1, %d, %d]", file, SEQ, D);
    return *ids && *embeds;
}

/* Both runs through `dir`'s model, one by one and as a batch of two, within tol. */
static void check_model(const char *label, const char *dir, double tol) {
    t5_encoder *m = NULL;
    CHECK_OK(t5_encoder_load(&m, dir, NULL));
    int32_t *ids[2] = {NULL, NULL}, batch_ids[2 * SEQ];
    float *want[2] = {NULL, NULL}, got[2 * SEQ * D];
    char what[128];
    if (!m || !read_run(runs[0], &ids[0], &want[0]) || !read_run(runs[1], &ids[1], &want[1]))
        goto done;
    for (int r = 0; r < 2; r++) {
        double t0 = now_ms();
        CHECK_OK(t5_encoder_encode(m, ids[r], 1, SEQ, got));
        if (r == 1) printf("encode 1 x %d tokens: %.2f ms\n", SEQ, now_ms() - t0);
        snprintf(what, sizeof what, "%s prompt_embeds %s", label, runs[r] + 19);
        check_rel(what, got, want[r], SEQ * D, tol);
        memcpy(batch_ids + r * SEQ, ids[r], SEQ * sizeof *batch_ids);
    }
    CHECK_OK(t5_encoder_encode(m, batch_ids, 2, SEQ, got));
    for (int r = 0; r < 2; r++) {
        snprintf(what, sizeof what, "%s batched, sequence %d", label, r);
        check_rel(what, got + r * SEQ * D, want[r], SEQ * D, tol);
    }
done:
    for (int r = 0; r < 2; r++) free(ids[r]), free(want[r]);
    t5_encoder_free(m);
}

/* Values of transformers' bucketing for 32 buckets and max distance 128, worked out by hand:
 * 16 buckets per direction, exact up to 7, then 8 + floor(log(n / 8) / log(16) * 8). */
static void test_buckets(void) {
    static const int cases[][2] = {
        {0, 0},    {-1, 1},   {-7, 7},   {-8, 8},    {-11, 8},    {-12, 9}, {-16, 10},
        {-32, 12}, {-64, 14}, {-90, 14}, {-127, 15}, {-5000, 15}, {1, 17},  {7, 23},
        {8, 24},   {16, 26},  {63, 29},  {128, 31},  {5000, 31},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int got = t5_relative_bucket(cases[i][0], 32, 128);
        CHECK(got == cases[i][1], "bucket of relative position %d: %d, want %d", cases[i][0], got,
              cases[i][1]);
    }
}

/* ---- weights in other dtypes / under the other tied name ---- */

static char *tmp_path(const char *name) {
    return sd_path_join(tmpdir, name);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (fp) fputs(text, fp), fclose(fp);
}

static void copy_file(const char *from, const char *to) {
    char *text = NULL;
    size_t len = 0;
    if (sd_read_file(from, &text, &len) == SD_OK) {
        FILE *fp = fopen(to, "wb");
        if (fp) fwrite(text, 1, len, fp), fclose(fp);
    }
    free(text);
}

/* A copy of the fixture model in `dir` with every tensor converted to `dtype`, `shared.weight`
 * renamed to `tok_name`, and `skip` (if not NULL) left out. */
static void write_model(const char *dir, st_dtype dtype, const char *tok_name, const char *skip) {
    char rel[128];
    snprintf(rel, sizeof rel, "%s/model.safetensors", ENC_DIR);
    st_file f;
    if (st_open(&f, fixture(rel)) != SD_OK) {
        CHECK(0, "open %s", rel);
        return;
    }
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    void **data = calloc((size_t)f.n_tensors, sizeof *data);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (skip && !strcmp(t->name, skip)) continue;
        size_t numel = (size_t)st_numel(t);
        float *v = malloc(numel * sizeof *v);
        uint16_t *h = malloc(numel * sizeof *h);
        st_to_f32(t, v);
        for (size_t k = 0; k < numel; k++)
            h[k] = dtype == ST_BF16 ? st_f32_to_bf16(v[k]) : st_f32_to_f16(v[k]);
        data[n] = dtype == ST_F32 ? (void *)v : (void *)h;
        free(dtype == ST_F32 ? (void *)h : (void *)v);
        e[n] = (st_entry){
            !strcmp(t->name, "shared.weight") ? tok_name : t->name, dtype, t->ndim, {0}, data[n]};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    mkdir(dir, 0755);
    char *model = sd_path_join(dir, "model.safetensors"), *cfg = sd_path_join(dir, "config.json");
    snprintf(rel, sizeof rel, "%s/config.json", ENC_DIR);
    copy_file(fixture(rel), cfg);
    CHECK_OK(st_write(model, e, n, NULL, 0));
    for (int i = 0; i < n; i++) free(data[i]);
    free(data), free(e), free(model), free(cfg);
    st_close(&f);
}

static void test_dtypes(void) {
    char *dir = tmp_path("bf16");
    write_model(dir, ST_BF16, "encoder.embed_tokens.weight", NULL);
    /* The reference ran float32 weights; rounding them to bf16 / f16 costs about their precision.
     */
    check_model("bf16 weights", dir, 2e-2);
    free(dir);
    dir = tmp_path("f16");
    write_model(dir, ST_F16, "shared.weight", NULL);
    check_model("f16 weights", dir, 3e-3);
    free(dir);
}

/* ---- errors ---- */

static void expect_load_error(const char *what, const char *dir, sd_status status,
                              const char *needle) {
    t5_encoder *m = NULL;
    sd_status st = t5_encoder_load(&m, dir, NULL);
    CHECK(st == status && m == NULL && strstr(sd_last_error(), needle),
          "%s: got %s \"%s\", want %s naming \"%s\"", what, sd_status_name(st), sd_last_error(),
          sd_status_name(status), needle);
    if (st == status) printf("ok   %s: %s\n", what, sd_last_error());
    t5_encoder_free(m);
}

/* The fixture's config.json with `from` replaced by `to`, next to the fixture's weights. */
static void write_config(const char *dir, const char *from, const char *to) {
    char rel[128], *text = NULL;
    snprintf(rel, sizeof rel, "%s/config.json", ENC_DIR);
    CHECK_OK(sd_read_file(fixture(rel), &text, NULL));
    const char *at = text ? strstr(text, from) : NULL;
    CHECK(at != NULL, "config.json has no '%s'", from);
    if (!at) {
        free(text);
        return;
    }
    char *out = malloc(strlen(text) + strlen(to) + 1);
    memcpy(out, text, (size_t)(at - text));
    strcpy(out + (at - text), to);
    strcat(out, at + strlen(from));
    mkdir(dir, 0755);
    char *cfg = sd_path_join(dir, "config.json"), *model = sd_path_join(dir, "model.safetensors");
    write_text(cfg, out);
    snprintf(rel, sizeof rel, "%s/model.safetensors", ENC_DIR);
    unlink(model);
    char *src = realpath(fixture(rel), NULL);
    CHECK(src && symlink(src, model) == 0, "symlink %s", model);
    free(src), free(cfg), free(model), free(out), free(text);
}

static void test_errors(void) {
    expect_load_error("missing folder", "/nonexistent/text_encoder_2", SD_ERR_IO,
                      "/nonexistent/text_encoder_2");
    char *dir = tmp_path("cfg");
    write_config(dir, "\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"a-b-c\"");
    expect_load_error("bad feed_forward_proj", dir, SD_ERR_CONFIG, "a-b-c");
    write_config(dir, "\"dense_act_fn\": \"gelu_new\"", "\"dense_act_fn\": \"mish\"");
    expect_load_error("unsupported activation", dir, SD_ERR_UNSUPPORTED, "mish");
    write_config(dir, "\"num_layers\": 2", "\"num_layers\": 3");
    expect_load_error("missing block", dir, SD_ERR_TENSOR, "encoder.block.2.");
    write_config(dir, "\"d_ff\": 21", "\"d_ff\": 22");
    expect_load_error("wrong d_ff", dir, SD_ERR_TENSOR, "wi_0.weight");
    write_config(dir, "\"d_model\": 16", "\"d_model\": 0");
    expect_load_error("d_model 0", dir, SD_ERR_CONFIG, "d_model");
    write_config(dir, "\"vocab_size\": 700", "\"vocab_size\": 701");
    expect_load_error("vocab mismatch", dir, SD_ERR_TENSOR, "shared.weight");
    write_config(dir, "\"model_type\": \"t5\"", "\"model_type\": \"umt5\"");
    expect_load_error("umt5", dir, SD_ERR_UNSUPPORTED, "umt5");
    write_config(dir, "\"relative_attention_num_buckets\": 32",
                 "\"relative_attention_num_buckets\": 16");
    expect_load_error("wrong bucket count", dir, SD_ERR_TENSOR, "relative_attention_bias");

    /* Non-gated: wi_0 is then looked up as wi. */
    write_config(dir, "\"is_gated_act\": true", "\"is_gated_act\": false");
    expect_load_error("relu layout", dir, SD_ERR_TENSOR, "DenseReluDense.wi.weight");
    char *cfg = sd_path_join(dir, "config.json"), *model = sd_path_join(dir, "model.safetensors");
    unlink(cfg), unlink(model), rmdir(dir);
    free(cfg), free(model), free(dir);

    dir = tmp_path("notok");
    write_model(dir, ST_F32, "shared.weight", "shared.weight");
    expect_load_error("no token table", dir, SD_ERR_TENSOR, "shared.weight");
    free(dir);

    t5_encoder *m = NULL;
    CHECK_OK(t5_encoder_load(&m, fixture(ENC_DIR), NULL));
    if (!m) return;
    int32_t ids[4] = {5, 1, 700, 0};
    float out[4 * D];
    sd_status st = t5_encoder_encode(m, ids, 1, 4, out);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "700"), "id 700: %s %s", sd_status_name(st),
          sd_last_error());
    ids[2] = -1;
    CHECK(t5_encoder_encode(m, ids, 1, 4, out) == SD_ERR_ARG, "id -1 accepted");
    CHECK(t5_encoder_encode(m, ids, 0, 4, out) == SD_ERR_ARG, "batch 0 accepted");
    CHECK(t5_encoder_encode(m, ids, 1, 0, out) == SD_ERR_ARG, "length 0 accepted");
    ids[2] = 3;
    CHECK_OK(t5_encoder_encode(m, ids, 1, 4, out)); /* still usable after refused calls */
    const t5_encoder_config *c = t5_encoder_get_config(m);
    CHECK(c->d_model == D && c->gated && !strcmp(c->dense_act, "gelu_new"), "config d_model %d %s",
          c->d_model, c->dense_act);
    t5_encoder_free(m);
}

static void remove_tree(const char *name) {
    char *dir = tmp_path(name);
    char *cfg = sd_path_join(dir, "config.json"), *model = sd_path_join(dir, "model.safetensors");
    unlink(cfg), unlink(model), rmdir(dir);
    free(cfg), free(model), free(dir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_t5enc_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    check_model("float32", fixture(ENC_DIR), TOL);
    test_buckets();
    test_dtypes();
    test_errors();
    remove_tree("bf16");
    remove_tree("f16");
    remove_tree("notok");
    rmdir(tmpdir);
    return test_summary();
}
