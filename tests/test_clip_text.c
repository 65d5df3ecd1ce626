/* CLIP text encoder against transformers: every hidden state of sd15-tiny's encoder, the prompt
 * embeddings of every recorded SD1.x/2.x run, SDXL's two encoders (penultimate states and the
 * projected pooled output), both pooling rules, and load errors. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../text_encoder/clip_text.h"
#include "test.h"

#define TOL 1e-5
enum { SEQ = 77 };

static char tmpdir[256];

/* ---- helpers ---- */

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

static char *tmp_path(const char *name) {
    return sd_path_join(tmpdir, name);
}

static clip_text *load_or_fail(const char *rel) {
    clip_text *m = NULL;
    CHECK_OK(clip_text_load(&m, fixture(rel), NULL));
    return m;
}

/* A fixture tensor that must have n elements (NULL, after a recorded failure, otherwise). */
static float *want_tensor(const char *file, const char *name, size_t n) {
    int64_t shape[8];
    int nd = 0;
    float *t = fixture_tensor(file, name, shape, &nd);
    if (!t) return NULL;
    size_t numel = 1;
    for (int i = 0; i < nd; i++) numel *= (size_t)shape[i];
    CHECK(numel == n, "%s %s: %zu elements, expected %zu", file, name, numel, n);
    if (numel != n) {
        free(t);
        return NULL;
    }
    return t;
}

static int32_t *want_ids(const char *file, const char *name) {
    int64_t shape[8];
    int nd = 0;
    int32_t *ids = fixture_ids(file, name, shape, &nd);
    if (ids && (nd != 2 || shape[0] != 1 || shape[1] != SEQ)) {
        CHECK(0, "%s %s: expected shape [1, %d]", file, name, SEQ);
        free(ids);
        return NULL;
    }
    return ids;
}

static int has_tensor(const char *rel, const char *name) {
    st_file f;
    if (st_open(&f, fixture(rel)) != SD_OK) return 0;
    int found = st_find(&f, name) != NULL;
    st_close(&f);
    return found;
}

/* ---- sd15-tiny: every hidden state ---- */

static void test_direct(void) {
    const char *file = "sd15-tiny/expected/text_encoder_direct.safetensors";
    clip_text *m = load_or_fail("sd15-tiny/pipeline/text_encoder");
    int32_t *ids = want_ids(file, "input_ids");
    if (!m || !ids) goto done;
    const clip_text_config *c = clip_text_get_config(m);
    CHECK(c->num_layers == 3 && c->hidden_size == 16 && !c->with_projection &&
              !strcmp(c->hidden_act, "quick_gelu"),
          "sd15-tiny config: %d layers, hidden %d, projection %d, act %s", c->num_layers,
          c->hidden_size, c->with_projection, c->hidden_act);
    const int h = c->hidden_size;
    float got[SEQ * 16], pooled[16], again[SEQ * 16];
    for (int k = 0; k <= c->num_layers; k++)
        for (int norm = 0; norm <= 1; norm++) {
            char name[64], what[96];
            snprintf(name, sizeof name, "hidden_state_%d%s", k, norm ? "_final_norm" : "");
            snprintf(what, sizeof what, "sd15 direct %s", name);
            float *want = want_tensor(file, name, SEQ * h);
            CHECK_OK(clip_text_encode(m, ids, 1, SEQ, k, norm, got, NULL));
            if (want) check_rel(what, got, want, SEQ * h, TOL);
            free(want);
        }
    float *want_last = want_tensor(file, "last_hidden_state", SEQ * h);
    float *want_pool = want_tensor(file, "pooler_output", h);
    CHECK_OK(clip_text_encode(m, ids, 1, SEQ, c->num_layers, true, got, pooled));
    if (want_last) check_rel("sd15 direct last_hidden_state", got, want_last, SEQ * h, TOL);
    if (want_pool) check_rel("sd15 direct pooler_output", pooled, want_pool, h, TOL);
    /* Pooled alone (hidden_out NULL), and a second pass at the same size on reused scratch. */
    memset(pooled, 0, sizeof pooled);
    CHECK_OK(clip_text_encode(m, ids, 1, SEQ, c->num_layers, true, NULL, pooled));
    if (want_pool) check_rel("sd15 direct pooler_output (no hidden)", pooled, want_pool, h, TOL);
    CHECK_OK(clip_text_encode(m, ids, 1, SEQ, c->num_layers, true, again, NULL));
    CHECK(!memcmp(got, again, sizeof got), "a repeated encode differs");
    /* Shorter sequences: the encoder is causal, so the first n states equal the full run's. */
    CHECK_OK(clip_text_encode(m, ids, 1, 20, c->num_layers, true, got, NULL));
    if (want_last) check_rel("sd15 direct first 20 tokens alone", got, want_last, 20 * h, TOL);
    free(want_last);
    free(want_pool);
done:
    free(ids);
    clip_text_free(m);
}

/* ---- pooling rules, on a copy of sd15-tiny's encoder with eos_token_id changed ---- */

static clip_text *load_with_eos(int eos) {
    char *dir = tmp_path("eos"), *cfg = sd_path_join(dir, "config.json");
    char *model = sd_path_join(dir, "model.safetensors");
    mkdir(dir, 0755);
    char text[512];
    snprintf(text, sizeof text,
             "{\"architectures\": [\"CLIPTextModel\"], \"eos_token_id\": %d, \"hidden_act\": "
             "\"quick_gelu\", \"hidden_size\": 16, \"intermediate_size\": 37, "
             "\"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"projection_dim\": 16}",
             eos);
    write_text(cfg, text);
    char *src = realpath(fixture("sd15-tiny/pipeline/text_encoder/model.safetensors"), NULL);
    unlink(model);
    CHECK(src && symlink(src, model) == 0, "symlink %s", model);
    free(src);
    clip_text *m = NULL;
    CHECK_OK(clip_text_load(&m, dir, NULL));
    free(dir);
    free(cfg);
    free(model);
    return m;
}

static void test_pooling_rules(void) {
    const char *file = "sd15-tiny/expected/text_encoder_direct.safetensors";
    int32_t *ids = want_ids(file, "input_ids");
    float *last = want_tensor(file, "last_hidden_state", SEQ * 16);
    /* The recorded ids: BOS, "a" (320) at positions 1 and 5, first EOS (49407) at 12, no id 2.
     * Causality makes the recorded final-norm states the truth for any prefix of them. */
    if (!ids || !last || ids[1] != 320 || ids[12] != 49407 || ids[11] == 49407) {
        CHECK(0, "text_encoder_direct input_ids are not the ones this test was written for");
        goto done;
    }
    float pooled[16];
    /* openai's original configs (eos_token_id 2): the largest id, here the first EOS; the
     * first-match rule would have pooled position 0. */
    clip_text *m = load_with_eos(2);
    if (m) {
        CHECK_OK(clip_text_encode(m, ids, 1, SEQ, 3, true, NULL, pooled));
        check_rel("pool, eos_token_id 2 -> argmax of ids (12)", pooled, last + 12 * 16, 16, TOL);
    }
    clip_text_free(m);
    /* Any other eos_token_id: its first occurrence; argmax would have pooled position 12. */
    m = load_with_eos(320);
    if (m) {
        CHECK_OK(clip_text_encode(m, ids, 1, SEQ, 3, true, NULL, pooled));
        check_rel("pool, eos_token_id 320 -> first match (1)", pooled, last + 1 * 16, 16, TOL);
    }
    clip_text_free(m);
    /* No EOS in the ids (the first 12): position 0, torch's argmax of an all-false mask. */
    m = load_with_eos(49407);
    if (m) {
        CHECK_OK(clip_text_encode(m, ids, 1, 12, 3, true, NULL, pooled));
        check_rel("pool, no EOS present -> position 0", pooled, last, 16, TOL);
    }
    clip_text_free(m);
done:
    free(ids);
    free(last);
}

/* ---- every recorded SD1.x / SD2.x run ---- */

/* Encodes [negative; prompt] as one batch of 2 and compares both with the recorded embeds. */
static void check_run(clip_text *m, const char *family, const char *run) {
    char file[256], json[256], what[256];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", family, run);
    snprintf(json, sizeof json, "%s/expected/%s.json", family, run);
    const int h = clip_text_get_config(m)->hidden_size, L = clip_text_get_config(m)->num_layers;
    int32_t *pos = want_ids(file, "tokenizer_prompt_ids");
    int32_t *neg = want_ids(file, "tokenizer_negative_ids");
    float *want_pos = want_tensor(file, "prompt_embeds", SEQ * h);
    float *want_neg = want_tensor(file, "negative_prompt_embeds", SEQ * h);
    int32_t ids[2 * SEQ];
    float *got = malloc(2 * SEQ * h * sizeof *got);
    if (!pos || !neg || !want_pos || !want_neg || !got) goto done;
    memcpy(ids, neg, SEQ * sizeof *ids);
    memcpy(ids + SEQ, pos, SEQ * sizeof *ids);
    CHECK_OK(clip_text_encode(m, ids, 2, SEQ, L, true, got, NULL));
    snprintf(what, sizeof what, "%s %s prompt_embeds", family, run);
    check_rel(what, got + SEQ * h, want_pos, SEQ * h, TOL);
    /* Name what the negative side was made from in the output: the recorded negative prompt
     * (null in the JSON when none was passed) and whether diffusers returned zeros for it. */
    int all_zero = 1;
    for (int i = 0; i < SEQ * h; i++) all_zero &= want_neg[i] == 0.0f;
    sd_cfg c;
    char neg_text[96] = "?";
    if (cfg_open(&c, fixture(json)) == SD_OK) {
        const cJSON *v = cJSON_GetObjectItem(c.root, "negative_prompt");
        if (cJSON_IsString(v))
            snprintf(neg_text, sizeof neg_text, "'%s'", v->valuestring);
        else if (cJSON_IsNull(v))
            snprintf(neg_text, sizeof neg_text, "null");
        cfg_close(&c);
    }
    snprintf(what, sizeof what, "%s %s negative_prompt_embeds (negative_prompt %s, recorded %s)",
             family, run, neg_text, all_zero ? "zeros" : "an encoding");
    check_rel(what, got, want_neg, SEQ * h, TOL);
done:
    free(pos);
    free(neg);
    free(want_pos);
    free(want_neg);
    free(got);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_runs(const char *family, int expected) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/pipeline/text_encoder", family);
    clip_text *m = load_or_fail(rel);
    snprintf(rel, sizeof rel, "%s/expected", family);
    DIR *d = opendir(fixture(rel));
    CHECK(d != NULL, "cannot list %s", fixture(rel));
    if (!m || !d) {
        if (d) closedir(d);
        clip_text_free(m);
        return;
    }
    char *names[128];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 128;) {
        size_t len = strlen(e->d_name);
        const char *ext = ".safetensors";
        if (len <= strlen(ext) || strcmp(e->d_name + len - strlen(ext), ext)) continue;
        char file[512];
        snprintf(file, sizeof file, "%s/%s", rel, e->d_name);
        if (!has_tensor(file, "prompt_embeds")) continue;
        names[n++] = strndup(e->d_name, len - strlen(ext));
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    CHECK(n == expected, "%s: %d runs record prompt_embeds, expected %d", family, n, expected);
    for (int i = 0; i < n; i++) {
        check_run(m, family, names[i]);
        free(names[i]);
    }
    clip_text_free(m);
}

/* sd2v-tiny's runs record no prompt_embeds, so its encoder (BF16, keys without `text_model.`,
 * gelu) has no reference here: this checks that it loads as configured and gives finite states. */
static void test_sd2v(void) {
    const char *file = "sd2v-tiny/expected/ddim_v.safetensors";
    CHECK(!has_tensor(file, "prompt_embeds"), "sd2v-tiny now records prompt_embeds: compare them");
    clip_text *m = load_or_fail("sd2v-tiny/pipeline/text_encoder");
    int32_t *ids = want_ids(file, "tokenizer_prompt_ids");
    if (m && ids) {
        const clip_text_config *c = clip_text_get_config(m);
        CHECK(c->num_layers == 4 && c->num_heads == 2 && !c->with_projection &&
                  !strcmp(c->hidden_act, "gelu"),
              "sd2v-tiny config: %d layers, %d heads, act %s", c->num_layers, c->num_heads,
              c->hidden_act);
        float got[SEQ * 16];
        CHECK_OK(clip_text_encode(m, ids, 1, SEQ, c->num_layers, true, got, NULL));
        int finite = 1;
        for (int i = 0; i < SEQ * 16; i++) finite &= isfinite(got[i]);
        CHECK(finite, "sd2v-tiny: non-finite prompt embeddings");
    }
    free(ids);
    clip_text_free(m);
}

/* ---- SDXL: penultimate states of both encoders, projected pooled output of the second ---- */

static void test_sdxl(void) {
    /* A run without prompt_2: prompt2's recorded tokenizer_2 ids are those of `prompt`, while the
     * pipeline encoded `prompt_2` with text_encoder_2 (see the report), so they cannot be used. */
    const char *file = "sdxl-tiny/expected/dpmpp2m_karras.safetensors";
    clip_text *te1 = load_or_fail("sdxl-tiny/pipeline/text_encoder"), *te2 = NULL;
    /* The class as the pipeline passes it from model_index.json. */
    CHECK_OK(clip_text_load_class(&te2, fixture("sdxl-tiny/pipeline/text_encoder_2"),
                                  "CLIPTextModelWithProjection", NULL));
    int32_t *ids1[2] = {want_ids(file, "tokenizer_prompt_ids"),
                        want_ids(file, "tokenizer_negative_ids")};
    int32_t *ids2[2] = {want_ids(file, "tokenizer_2_prompt_ids"),
                        want_ids(file, "tokenizer_2_negative_ids")};
    float *embeds[2] = {want_tensor(file, "prompt_embeds", SEQ * 32),
                        want_tensor(file, "negative_prompt_embeds", SEQ * 32)};
    float *pooled[2] = {want_tensor(file, "pooled_prompt_embeds", 16),
                        want_tensor(file, "negative_pooled_prompt_embeds", 16)};
    if (!te1 || !te2) goto done;
    const clip_text_config *c1 = clip_text_get_config(te1), *c2 = clip_text_get_config(te2);
    CHECK(!c1->with_projection && c2->with_projection && c2->projection_dim == 16 &&
              !strcmp(c2->hidden_act, "gelu"),
          "sdxl-tiny configs: projection %d/%d, act %s", c1->with_projection, c2->with_projection,
          c2->hidden_act);
    for (int s = 0; s < 2; s++) {
        const char *side = s ? "negative" : "prompt";
        if (!ids1[s] || !ids2[s] || !embeds[s] || !pooled[s]) continue;
        float h1[SEQ * 16], h2[SEQ * 16], p2[16], half[SEQ * 16];
        char what[128];
        CHECK_OK(clip_text_encode(te1, ids1[s], 1, SEQ, c1->num_layers - 1, false, h1, NULL));
        CHECK_OK(clip_text_encode(te2, ids2[s], 1, SEQ, c2->num_layers - 1, false, h2, p2));
        for (int t = 0; t < SEQ; t++) memcpy(half + t * 16, embeds[s] + t * 32, 16 * sizeof *half);
        snprintf(what, sizeof what, "sdxl %s_embeds[..., :16] (text_encoder penultimate)", side);
        check_rel(what, h1, half, SEQ * 16, TOL);
        for (int t = 0; t < SEQ; t++)
            memcpy(half + t * 16, embeds[s] + t * 32 + 16, 16 * sizeof *half);
        snprintf(what, sizeof what, "sdxl %s_embeds[..., 16:] (text_encoder_2 penultimate)", side);
        check_rel(what, h2, half, SEQ * 16, TOL);
        snprintf(what, sizeof what, "sdxl %s pooled (text_encoder_2 projection)", side);
        check_rel(what, p2, pooled[s], 16, TOL);
    }
done:
    for (int s = 0; s < 2; s++) {
        free(ids1[s]);
        free(ids2[s]);
        free(embeds[s]);
        free(pooled[s]);
    }
    clip_text_free(te1);
    clip_text_free(te2);
}

/* ---- errors, on a tiny synthetic encoder: hidden 4, 2 heads, MLP 6, 1 layer, 10 ids, 5 positions,
 * projection 3 ---- */

typedef struct {
    const char *prefix; /* "text_model." or "" */
    bool projection;    /* writes text_projection.weight */
    const char *skip;   /* a tensor left out (name without prefix), or NULL */
    const char *bad;    /* a tensor written one row too many, or NULL */
} tiny_spec;

static const char *const tiny_config =
    "{\"hidden_size\": 4, \"num_attention_heads\": %d, \"intermediate_size\": 6, "
    "\"num_hidden_layers\": 1, \"vocab_size\": 10, \"max_position_embeddings\": 5, "
    "\"projection_dim\": 3, \"hidden_act\": %s%s}";

/* Writes config.json (`heads` heads, hidden_act `act` as a JSON value, `extra` appended to the
 * object) and model.safetensors into a fresh folder tmpdir/name; returns the folder (malloc'd). */
static char *write_tiny(const char *name, int heads, const char *act, const char *extra,
                        tiny_spec spec) {
    static const struct {
        const char *name;
        int rows, cols; /* cols 0: a vector */
    } tensors[] = {
        {"embeddings.token_embedding.weight", 10, 4},
        {"embeddings.position_embedding.weight", 5, 4},
        {"encoder.layers.0.layer_norm1.weight", 4, 0},
        {"encoder.layers.0.layer_norm1.bias", 4, 0},
        {"encoder.layers.0.self_attn.q_proj.weight", 4, 4},
        {"encoder.layers.0.self_attn.q_proj.bias", 4, 0},
        {"encoder.layers.0.self_attn.k_proj.weight", 4, 4},
        {"encoder.layers.0.self_attn.k_proj.bias", 4, 0},
        {"encoder.layers.0.self_attn.v_proj.weight", 4, 4},
        {"encoder.layers.0.self_attn.v_proj.bias", 4, 0},
        {"encoder.layers.0.self_attn.out_proj.weight", 4, 4},
        {"encoder.layers.0.self_attn.out_proj.bias", 4, 0},
        {"encoder.layers.0.layer_norm2.weight", 4, 0},
        {"encoder.layers.0.layer_norm2.bias", 4, 0},
        {"encoder.layers.0.mlp.fc1.weight", 6, 4},
        {"encoder.layers.0.mlp.fc1.bias", 6, 0},
        {"encoder.layers.0.mlp.fc2.weight", 4, 6},
        {"encoder.layers.0.mlp.fc2.bias", 4, 0},
        {"final_layer_norm.weight", 4, 0},
        {"final_layer_norm.bias", 4, 0},
    };
    enum { NT = sizeof tensors / sizeof tensors[0] };
    static float data[64];
    for (int i = 0; i < 64; i++) data[i] = 0.05f * (float)((i * 7) % 13) - 0.3f;
    char names[NT + 1][96];
    st_entry e[NT + 1];
    int n = 0;
    for (int i = 0; i < NT; i++) {
        if (spec.skip && !strcmp(spec.skip, tensors[i].name)) continue;
        int rows = tensors[i].rows + (spec.bad && !strcmp(spec.bad, tensors[i].name));
        snprintf(names[n], sizeof names[n], "%s%s", spec.prefix, tensors[i].name);
        e[n] = (st_entry){names[n], ST_F32, tensors[i].cols ? 2 : 1, {rows, tensors[i].cols}, data};
        n++;
    }
    if (spec.projection) {
        snprintf(names[n], sizeof names[n], "text_projection.weight");
        e[n] = (st_entry){names[n], ST_F32, 2, {3, 4}, data};
        n++;
    }
    char *dir = tmp_path(name), *cfg = sd_path_join(dir, "config.json");
    char *model = sd_path_join(dir, "model.safetensors");
    mkdir(dir, 0755);
    char text[1024];
    snprintf(text, sizeof text, tiny_config, heads, act, extra);
    write_text(cfg, text);
    CHECK_OK(st_write(model, e, n, NULL, 0));
    free(cfg);
    free(model);
    return dir;
}

/* A load that must fail with `status` and a message containing `needle`. */
static void expect_load_error(const char *what, const char *dir, const char *class_name,
                              sd_status status, const char *needle) {
    clip_text *m = NULL;
    sd_status st = clip_text_load_class(&m, dir, class_name, NULL);
    CHECK(st == status, "%s: status %s, expected %s (%s)", what, sd_status_name(st),
          sd_status_name(status), sd_last_error());
    CHECK(m == NULL, "%s: a model was returned", what);
    if (st != SD_OK)
        CHECK(strstr(sd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
              sd_last_error(), needle);
    printf("ok   %s: %s\n", what, sd_last_error());
    clip_text_free(m);
}

static void test_tiny_models(void) {
    tiny_spec plain = {"", true, NULL, NULL};
    char *dir = write_tiny("tiny", 2, "\"gelu\"", "", plain);
    clip_text *m = NULL;
    CHECK_OK(clip_text_load(&m, dir, NULL));
    if (m) {
        /* No architectures key: the text_projection tensor decides the class. */
        CHECK(clip_text_get_config(m)->with_projection, "tiny: projection not detected");
        int32_t ids[10] = {0, 3, 9, 1, 2, 4, 5, 6, 7, 8};
        float hidden[10 * 4], pooled[2 * 3];
        CHECK_OK(clip_text_encode(m, ids, 2, 5, 1, true, hidden, pooled));
        int finite = 1;
        for (int i = 0; i < 40; i++) finite &= isfinite(hidden[i]);
        for (int i = 0; i < 6; i++) finite &= isfinite(pooled[i]);
        CHECK(finite, "tiny: non-finite output");
        int32_t bad_id[5] = {0, 1, 10, 2, 3};
        sd_status st = clip_text_encode(m, bad_id, 1, 5, 1, true, hidden, NULL);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "token id 10"),
              "id outside the vocabulary: %s", sd_last_error());
        st = clip_text_encode(m, ids, 1, 6, 1, true, hidden, NULL);
        CHECK(st == SD_ERR_ARG, "6 ids with 5 positions: %s", sd_status_name(st));
        st = clip_text_encode(m, ids, 1, 5, 2, true, hidden, NULL);
        CHECK(st == SD_ERR_ARG, "hidden state 2 of a 1-layer model: %s", sd_status_name(st));
        st = clip_text_encode(m, ids, 0, 5, 1, true, hidden, NULL);
        CHECK(st == SD_ERR_ARG, "batch 0: %s", sd_status_name(st));
    }
    clip_text_free(m);
    m = NULL;
    /* model_index.json's class overrides the tensor: a plain model ignores text_projection. */
    CHECK_OK(clip_text_load_class(&m, dir, "CLIPTextModel", NULL));
    if (m) CHECK(!clip_text_get_config(m)->with_projection, "tiny: class CLIPTextModel ignored");
    clip_text_free(m);
    expect_load_error("unknown class", dir, "T5EncoderModel", SD_ERR_UNSUPPORTED, "T5EncoderModel");
    free(dir);

    dir = write_tiny("tiny_prefix", 2, "\"gelu_pytorch_tanh\"",
                     ", \"architectures\": [\"CLIPTextModel\"]",
                     (tiny_spec){"text_model.", false, NULL, NULL});
    m = NULL;
    CHECK_OK(clip_text_load(&m, dir, NULL));
    if (m) CHECK(!clip_text_get_config(m)->with_projection, "tiny_prefix: unexpected projection");
    clip_text_free(m);
    expect_load_error("WithProjection class without the tensor", dir, "CLIPTextModelWithProjection",
                      SD_ERR_TENSOR, "text_projection.weight");
    free(dir);

    dir = write_tiny("tiny_badshape", 2, "\"quick_gelu\"", "",
                     (tiny_spec){"text_model.", false, NULL, "encoder.layers.0.mlp.fc1.weight"});
    expect_load_error("wrong shape", dir, NULL, SD_ERR_TENSOR,
                      "text_model.encoder.layers.0.mlp.fc1.weight");
    free(dir);
    dir = write_tiny("tiny_badqkv", 2, "\"quick_gelu\"", "",
                     (tiny_spec){"", false, NULL, "encoder.layers.0.self_attn.v_proj.weight"});
    expect_load_error("wrong shape (v_proj)", dir, NULL, SD_ERR_TENSOR,
                      "encoder.layers.0.self_attn.v_proj.weight");
    free(dir);
    dir = write_tiny("tiny_badtok", 2, "\"quick_gelu\"", "",
                     (tiny_spec){"", false, NULL, "embeddings.token_embedding.weight"});
    expect_load_error("wrong shape (token table)", dir, NULL, SD_ERR_TENSOR,
                      "embeddings.token_embedding.weight");
    free(dir);
    dir = write_tiny("tiny_missing", 2, "\"quick_gelu\"", "",
                     (tiny_spec){"", false, "final_layer_norm.bias", NULL});
    expect_load_error("missing tensor", dir, NULL, SD_ERR_TENSOR, "final_layer_norm.bias");
    free(dir);
    dir = write_tiny("tiny_notok", 2, "\"quick_gelu\"", "",
                     (tiny_spec){"", false, "embeddings.token_embedding.weight", NULL});
    expect_load_error("missing token table", dir, NULL, SD_ERR_TENSOR,
                      "embeddings.token_embedding.weight");
    free(dir);
    dir = write_tiny("tiny_relu", 2, "\"relu\"", "", plain);
    expect_load_error("unknown hidden_act", dir, NULL, SD_ERR_UNSUPPORTED, "hidden_act 'relu'");
    free(dir);
    dir = write_tiny("tiny_heads", 3, "\"gelu\"", "", plain);
    expect_load_error("heads do not divide hidden", dir, NULL, SD_ERR_CONFIG,
                      "num_attention_heads");
    free(dir);
    dir = write_tiny("tiny_actnum", 2, "5", "", plain);
    expect_load_error("hidden_act not a string", dir, NULL, SD_ERR_CONFIG, "hidden_act");
    free(dir);

    /* A folder with config.json and no weights, one without config.json, and no folder. */
    dir = tmp_path("noweights");
    mkdir(dir, 0755);
    char *cfg = sd_path_join(dir, "config.json");
    char text[1024];
    snprintf(text, sizeof text, tiny_config, 2, "\"gelu\"", "");
    write_text(cfg, text);
    expect_load_error("folder without weights", dir, NULL, SD_ERR_IO, "model.safetensors");
    unlink(cfg);
    expect_load_error("folder without config.json", dir, NULL, SD_ERR_IO, "config.json");
    free(cfg);
    free(dir);
    dir = tmp_path("does_not_exist");
    expect_load_error("no such folder", dir, NULL, SD_ERR_IO, "does_not_exist");
    free(dir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_test_clip_text_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("cannot create a temporary folder\n");
        return 1;
    }
    test_direct();
    test_pooling_rules();
    test_runs("sd15-tiny", 10); /* img2img, img2img_euler_nonsquare and inpaint record none */
    test_sd2v();
    test_sdxl();
    test_tiny_models();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
