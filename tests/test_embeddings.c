/* Textual-inversion embeddings (pipeline/embeddings.c), against an independent equivalent model:
 * a copy of the tiny pipeline saved as diffusers would save it after load_textual_inversion, the
 * trigger tokens added to its tokenizers (added_tokens_decoder) and the vectors written into its
 * text encoders' token tables at the new ids. A prompt with the trigger must give exactly (bit for
 * bit: embeddings, pooled, latents) what that model gives: in the plain syntax (added tokens,
 * multi-vector spelled out), in A1111's, for SD 1.x (A1111's one-tensor file, diffusers'
 * learned_embeds.safetensors) and SDXL (clip_l + clip_g). The embedding files are written here.
 * Then what bad files get, and gen end to end. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "tool_run.h"

enum { H = 16 }; /* the tiny text encoders' width */

/* Vectors exactly representable in fp16 (sdxl-tiny's text_encoder_2 table is fp16). */
static void make_vectors(float *v, int n, int seed) {
    for (int i = 0; i < n; i++) v[i] = (float)(((i * 37 + seed * 11) % 129) - 64) / 128.0f;
}

static bool write_tensors(const char *path, const char *const *names, const float *const *data,
                          const int *rows, int n) {
    st_entry e[2];
    for (int i = 0; i < n; i++) {
        e[i] = (st_entry){names[i], ST_F32, rows[i] ? 2 : 1, {0}, data[i]};
        if (rows[i]) e[i].shape[0] = rows[i], e[i].shape[1] = H;
        else e[i].shape[0] = H;
    }
    return st_write(path, e, n, NULL, 0) == SD_OK;
}

/* dir/<tok>: the vocabulary linked, tokenizer_config.json with `tokens` in added_tokens_decoder
 * at ids 49408... (as transformers saves a tokenizer after add_tokens). */
static bool write_tokenizer(const char *model, const char *dir, const char *name,
                            const char *const *tokens, int n) {
    char src[512], path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (mkdir(path, 0755) != 0) return false;
    snprintf(src, sizeof src, "%s/%s", model, name);
    const char *vocab[] = {"vocab.json", "merges.txt"};
    if (!fixture_link_parts(src, path, vocab, 2)) return false;
    snprintf(src, sizeof src, "%s/%s/tokenizer_config.json", model, name);
    char *text = NULL;
    if (sd_read_file(fixture(src), &text, NULL) != SD_OK) return false;
    cJSON *cfg = cJSON_Parse(text), *dec = cJSON_CreateObject();
    free(text);
    for (int k = 0; k < n; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "content", tokens[k]);
        cJSON_AddBoolToObject(e, "lstrip", false);
        cJSON_AddBoolToObject(e, "normalized", true);
        cJSON_AddBoolToObject(e, "rstrip", false);
        cJSON_AddBoolToObject(e, "single_word", false);
        cJSON_AddBoolToObject(e, "special", false);
        char id[16];
        snprintf(id, sizeof id, "%d", 49408 + k);
        cJSON_AddItemToObject(dec, id, e);
    }
    cJSON_AddItemToObject(cfg, "added_tokens_decoder", dec);
    text = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    snprintf(path, sizeof path, "%s/%s/tokenizer_config.json", dir, name);
    FILE *fp = fopen(path, "w");
    const bool ok = fp && text && fputs(text, fp) >= 0;
    if (fp) fclose(fp);
    free(text);
    return ok;
}

/* dir/<enc>: vocab_size + n in config.json, the token table grown by `vecs` [n][H] at the new ids
 * (resize_token_embeddings, then the vectors written in). */
static bool write_encoder(const char *model, const char *dir, const char *enc, const float *vecs,
                          int n) {
    char src[512], path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, enc);
    if (mkdir(path, 0755) != 0) return false;
    snprintf(src, sizeof src, "%s/%s/config.json", model, enc);
    char *text = NULL;
    if (sd_read_file(fixture(src), &text, NULL) != SD_OK) return false;
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(cfg, "vocab_size", cJSON_CreateNumber(49408 + n));
    text = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    snprintf(path, sizeof path, "%s/%s/config.json", dir, enc);
    FILE *fp = fopen(path, "w");
    bool ok = fp && text && fputs(text, fp) >= 0;
    if (fp) fclose(fp);
    free(text);
    snprintf(src, sizeof src, "%s/%s/model.safetensors", model, enc);
    st_file f;
    if (!ok || st_open(&f, fixture(src)) != SD_OK) return false;
    st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
    float *table = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(es[i].shape, t->shape, sizeof t->shape);
        const size_t len = strlen(t->name), tail = strlen("embeddings.token_embedding.weight");
        if (len >= tail && !strcmp(t->name + len - tail, "embeddings.token_embedding.weight")) {
            const size_t rows = (size_t)t->shape[0];
            table = malloc((rows + (size_t)n) * H * sizeof *table); /* float32, rows appended */
            st_to_f32(t, table);
            memcpy(table + rows * H, vecs, (size_t)n * H * sizeof *table);
            es[i].dtype = ST_F32, es[i].data = table, es[i].shape[0] = (int64_t)rows + n;
        }
    }
    snprintf(path, sizeof path, "%s/%s/model.safetensors", dir, enc);
    ok = table && st_write(path, es, f.n_tensors, NULL, 0) == SD_OK;
    free(table), free(es);
    st_close(&f);
    return ok;
}

/* The equivalent model of `model` ("sd15-tiny/pipeline"): tokens[k] added at id 49408 + k in its
 * tokenizer(s), vecs[e][k] the new rows of text encoder e. */
static const char *make_model(const char *model, const char *name, int n_enc,
                              const char *const *tokens, const float *const *vecs, int n) {
    const char *dir = test_path(test_output_dir("embeddings"), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) return NULL;
    const char *common[] = {"model_index.json", "scheduler", "unet", "vae"};
    if (!fixture_link_parts(model, dir, common, 4)) return NULL;
    const char *toks[2] = {"tokenizer", "tokenizer_2"}, *encs[2] = {"text_encoder", "text_encoder_2"};
    for (int e = 0; e < n_enc; e++)
        if (!write_tokenizer(model, dir, toks[e], tokens, n) ||
            !write_encoder(model, dir, encs[e], vecs[e], n))
            return NULL;
    return dir;
}

typedef struct {
    float *pos, *neg, *pooled, *latents;
    size_t n_pos, n_neg, n_pooled, n_latents;
    bool full; /* the whole run; otherwise cancelled at the first model call */
} result;

static void keep(float **dst, size_t *n, const sd_tensor *t) {
    free(*dst);
    *n = (size_t)t->batch * t->h * t->w * t->c;
    *dst = malloc(*n * sizeof **dst);
    memcpy(*dst, t->data, *n * sizeof **dst);
}

static int on_event(void *user, const sd_event *e) {
    result *r = user;
    if (e->kind == SD_EVENT_PROMPT_EMBEDS && e->index == 0) keep(&r->pos, &r->n_pos, &e->tensor);
    if (e->kind == SD_EVENT_PROMPT_EMBEDS && e->index == 1) keep(&r->pooled, &r->n_pooled, &e->tensor);
    if (e->kind == SD_EVENT_NEGATIVE_EMBEDS && e->index == 0) keep(&r->neg, &r->n_neg, &e->tensor);
    if (e->kind == SD_EVENT_DECODE) keep(&r->latents, &r->n_latents, &e->tensor);
    return e->kind == SD_EVENT_MODEL_INPUT && !r->full;
}

static void result_free(result *r) {
    free(r->pos), free(r->neg), free(r->pooled), free(r->latents);
    memset(r, 0, sizeof *r);
}

static sd_status run(sd_pipeline *p, const char *prompt, const char *neg, sd_prompt_syntax syn,
                     result *r) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = prompt, g.negative_prompt = neg, g.prompt_syntax = syn;
    g.width = g.height = 64, g.steps = 2, g.seed = 3;
    g.on_event = on_event, g.user = r;
    sd_result out;
    const sd_status st = sd_generate(p, &g, &out);
    if (st == SD_OK) sd_result_free(&out);
    return st == SD_ERR_CANCELLED && !r->full ? SD_OK : st;
}

static bool eq(const float *a, size_t na, const float *b, size_t nb) {
    return a && b && na == nb && !memcmp(a, b, na * sizeof *a);
}

/* The trigger run on `with` against the word run on `equiv`: embeddings, pooled, final latents. */
static void compare(sd_pipeline *with, sd_pipeline *equiv, const char *what, sd_prompt_syntax syn,
                    const char *prompt, const char *neg, const char *prompt_eq, const char *neg_eq) {
    static int n_full = 0; /* the first two comparisons run whole (latents too), the rest stop
                            * at the first model call: equal embeddings make equal runs */
    result a = {.full = n_full < 2}, b = {.full = n_full < 2};
    n_full++;
    CHECK_OK(run(with, prompt, neg, syn, &a));
    CHECK_OK(run(equiv, prompt_eq, neg_eq, syn, &b));
    CHECK(a.n_pos && eq(a.pos, a.n_pos, b.pos, b.n_pos) && eq(a.neg, a.n_neg, b.neg, b.n_neg) &&
              (!b.pooled || eq(a.pooled, a.n_pooled, b.pooled, b.n_pooled)) &&
              (!a.full || eq(a.latents, a.n_latents, b.latents, b.n_latents)),
          "%s (%s): \"%s\" equals the equivalent model's \"%s\" bit for bit", what,
          syn == SD_PROMPT_A1111 ? "a1111" : "plain", prompt, prompt_eq);
    result_free(&a), result_free(&b);
}

static char warned[2048]; /* every warning since it was last emptied */
static void on_log(void *user, sd_log_level level, const char *msg) {
    (void)user;
    const size_t n = strlen(warned);
    if (level == SD_LOG_WARN) snprintf(warned + n, sizeof warned - n, "%s\n", msg);
}

static void test_sd15(void) {
    const char *out = test_output_dir("embeddings");
    sd_pipeline *base = NULL, *p = NULL, *eqv = NULL;
    CHECK_OK(sd_pipeline_load(&base, fixture("sd15-tiny/pipeline"), NULL));
    if (!base) return;
    float v[3 * H], d[H]; /* mytrig's two vectors, then <cat-toy>'s */
    make_vectors(v, 3 * H, 1), make_vectors(d, H, 2);
    const char *emb = test_path(out, "mytrig.safetensors");
    const char *names[1] = {"emb_params"};
    const float *data[1] = {v};
    const int rows[1] = {2};
    CHECK(write_tensors(emb, names, data, rows, 1), "wrote %s", emb);
    const float *vecs[1] = {v};
    const char *tokens[3] = {"mytrig", "mytrig_1", "<cat-toy>"};
    const char *dir = make_model("sd15-tiny/pipeline", "sd15-equiv", 1, tokens, vecs, 3);
    CHECK(dir != NULL, "equivalent sd15 model written");
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (dir) CHECK_OK(sd_pipeline_load(&eqv, dir, NULL));
    if (!p || !eqv) goto done;
    CHECK_OK(sd_pipeline_add_embedding(p, emb, NULL));
    /* diffusers' maybe_convert_prompt spells "mytrig" out as "mytrig mytrig_1"; the equivalent
     * model, a saved pipeline, is given the spelled-out prompt */
    compare(p, eqv, "A1111 file, 2 vectors", SD_PROMPT_PLAIN, "a mytrig photo", "ugly mytrig",
            "a mytrig mytrig_1 photo", "ugly mytrig mytrig_1");
    compare(p, eqv, "A1111 file, 2 vectors", SD_PROMPT_A1111, "a (mytrig:1.3) photo, [mytrig]",
            "mytrig", "a (mytrig mytrig_1:1.3) photo, [mytrig mytrig_1]", "mytrig mytrig_1");
    /* diffusers' learned_embeds.safetensors: one vector keyed by its token */
    const char *dir2 = test_path(out, "cat-toy");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir2, dir2);
    CHECK(system(cmd) == 0, "made %s", dir2);
    const char *learned = test_path(dir2, "learned_embeds.safetensors");
    const char *tok_name[1] = {"<cat-toy>"};
    const float *one[1] = {v + 2 * H}; /* the row "<cat-toy>" has in the equivalent model */
    const int vec_rows[1] = {0};
    CHECK(write_tensors(learned, tok_name, one, vec_rows, 1), "wrote %s", learned);
    CHECK_OK(sd_pipeline_add_embedding(p, learned, NULL));
    compare(p, eqv, "diffusers learned_embeds", SD_PROMPT_PLAIN, "a <cat-toy> photo", NULL,
            "a <cat-toy> photo", NULL);
    compare(p, eqv, "diffusers learned_embeds", SD_PROMPT_A1111, "a <cat-toy> photo", NULL,
            "a <cat-toy> photo", NULL);

    /* What bad files get. */
    const char *narrow = test_path(out, "narrow.safetensors");
    const float *dd[1] = {d};
    st_entry e = {"emb_params", ST_F32, 2, {2, 8}, dd[0]};
    CHECK(st_write(narrow, &e, 1, NULL, 0) == SD_OK, "wrote %s", narrow);
    sd_status st = sd_pipeline_add_embedding(p, narrow, NULL);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "narrow.safetensors") &&
              strstr(sd_last_error(), "8 wide") && strstr(sd_last_error(), "16"),
          "a width mismatch names the file and the widths: %s", sd_last_error());
    const char *pt = test_path(out, "badhandv4.pt");
    FILE *fp = fopen(pt, "wb");
    if (fp) fputs("PK\x03\x04 not unpickled", fp), fclose(fp);
    st = sd_pipeline_add_embedding(p, pt, NULL);
    CHECK(st == SD_ERR_UNSUPPORTED && strstr(sd_last_error(), "unpickled") &&
              strstr(sd_last_error(), "safetensors"),
          "a pickled embedding is refused with how to convert it: %s", sd_last_error());
    st = sd_pipeline_add_embedding(p, emb, NULL);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "already loaded"), "a second \"mytrig\": %s",
          sd_last_error());
    sd_set_log_callback(on_log, NULL);
    warned[0] = '\0';
    CHECK_OK(sd_pipeline_add_embedding(p, emb, "cat"));
    CHECK(strstr(warned, "is also the vocabulary token \"cat</w>\"") &&
              strstr(warned, "cannot add it"),
          "a trigger that is a vocabulary word warns (and is A1111's only): %s", warned);
    /* A folder of embeddings, A1111's way: each file's name is its trigger; .pt named, skipped. */
    warned[0] = '\0';
    sd_pipeline *q = NULL;
    CHECK_OK(sd_pipeline_load(&q, fixture("sd15-tiny/pipeline"), NULL));
    snprintf(cmd, sizeof cmd, "rm -rf '%s/dir' && mkdir '%s/dir' && cp '%s' '%s' '%s/dir/'", out,
             out, emb, pt, out);
    CHECK(system(cmd) == 0, "embeddings folder");
    char folder[600];
    snprintf(folder, sizeof folder, "%s/dir", out);
    if (q) CHECK_OK(sd_pipeline_add_embeddings_dir(q, folder));
    CHECK(strstr(warned, "badhandv4.pt") != NULL, "the folder's pickled file is named: %s", warned);
    if (q) compare(q, eqv, "from --embeddings-dir", SD_PROMPT_A1111, "a mytrig photo", NULL,
                   "a mytrig mytrig_1 photo", NULL);
    sd_set_log_callback(NULL, NULL);
    sd_pipeline_free(q);
done:
    sd_pipeline_free(base), sd_pipeline_free(p), sd_pipeline_free(eqv);
}

static void test_sdxl(void) {
    const char *out = test_output_dir("embeddings");
    sd_pipeline *p = NULL, *eqv = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sdxl-tiny/pipeline"), NULL));
    if (!p) return;
    float l[H], g[H];
    make_vectors(l, H, 3), make_vectors(g, H, 4);
    const char *emb = test_path(out, "xlemb.safetensors");
    const char *names[2] = {"clip_g", "clip_l"};
    const float *data[2] = {g, l};
    const int rows[2] = {1, 1};
    CHECK(write_tensors(emb, names, data, rows, 2), "wrote %s", emb);
    const float *vecs[2] = {l, g};
    const char *tokens[1] = {"xlemb"};
    const char *dir = make_model("sdxl-tiny/pipeline", "sdxl-equiv", 2, tokens, vecs, 1);
    CHECK(dir != NULL, "equivalent sdxl model written");
    if (dir) CHECK_OK(sd_pipeline_load(&eqv, dir, NULL));
    CHECK_OK(sd_pipeline_add_embedding(p, emb, NULL));
    if (eqv) {
        compare(p, eqv, "SDXL clip_l + clip_g", SD_PROMPT_PLAIN, "a xlemb photo", "xlemb",
                "a xlemb photo", "xlemb");
        compare(p, eqv, "SDXL clip_l + clip_g", SD_PROMPT_A1111, "a (xlemb:0.8) photo", "xlemb",
                "a (xlemb:0.8) photo", "xlemb");
    }
    sd_status st = sd_pipeline_add_embedding(p, test_path(out, "mytrig.safetensors"), NULL);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "clip_g"),
          "an SD 1.x embedding on SDXL: %s", sd_last_error());
    sd_pipeline_free(p), sd_pipeline_free(eqv);
}

/* What the issue asks of gen: a long weighted prompt with an embedding in the negative prompt runs
 * on the tiny models, and the PNG's parameters keep the prompt as typed. */
static void test_gen_cli(void) {
    const char *out = test_output_dir("embeddings");
    char prompt[1600], png[600];
    int n = snprintf(prompt, sizeof prompt, "a (red:1.3) fox, ((masterpiece)), [blurry]");
    for (int i = 0; i < 40; i++) n += snprintf(prompt + n, sizeof prompt - (size_t)n, ", word%d", i);
    snprintf(prompt + n, sizeof prompt - (size_t)n, " BREAK [cat|dog] [spring:winter:0.5]");
    snprintf(png, sizeof png, "%s/cli.png", out);
    const char *models[2] = {"sd15-tiny/pipeline", "sdxl-tiny/pipeline"};
    const char *embs[2] = {"mytrig.safetensors", "xlemb.safetensors"};
    const char *negs[2] = {"(mytrig:1.2), lowres", "(xlemb:1.2), lowres"};
    for (int k = 0; k < 2; k++) {
        char model[512];
        snprintf(model, sizeof model, "%s", fixture(models[k]));
        const int rc = tool_run("gen", "-m", model, "--prompt-syntax", "a1111", "--embedding",
                                test_path(out, embs[k]), "-n", negs[k], "--steps", "3", "-W", "64",
                                "-H", "64", "-s", "5", "-q", "-o", png, prompt, NULL);
        CHECK(rc == 0, "gen --prompt-syntax a1111 on %s: exit %d: %s", models[k], rc, tool_output);
        char *params = NULL;
        if (rc == 0) CHECK_OK(image_read_png_text(png, "parameters", &params));
        CHECK(params && !strncmp(params, prompt, strlen(prompt)) && strstr(params, negs[k]),
              "the PNG parameters keep the typed prompt and negative prompt");
        free(params);
    }
}

/* diffusers' load_textual_inversion on the device (tools/reference/a1111_device_refs.py writes
 * extra/a1111_refs.* and the embedding files it loaded); until then, nothing to compare. */
static void test_device_refs(void) {
    char *text = NULL;
    /* Recorded on the device (tools/reference/a1111_device_refs.py): missing is a failure. */
    CHECK(sd_file_exists(fixture("extra/a1111_refs.json")), "extra/a1111_refs.json present");
    if (!sd_file_exists(fixture("extra/a1111_refs.json"))) return;
    CHECK_OK(sd_read_file(fixture("extra/a1111_refs.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItem(root, "embeddings");
    CHECK(cJSON_GetArraySize(cases) > 0, "a1111_refs.json has embedding cases");
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        char dir[512], file[512], tname[600];
        snprintf(dir, sizeof dir, "%s/pipeline", cJSON_GetObjectItem(c, "model")->valuestring);
        snprintf(file, sizeof file, "extra/a1111_refs_files/%s",
                 cJSON_GetObjectItem(c, "file")->valuestring);
        sd_pipeline *p = NULL;
        CHECK_OK(sd_pipeline_load(&p, fixture(dir), NULL));
        result r = {0};
        if (p) CHECK_OK(sd_pipeline_add_embedding(p, fixture(file), NULL));
        if (p) CHECK_OK(run(p, cJSON_GetObjectItem(c, "prompt")->valuestring, NULL,
                            SD_PROMPT_PLAIN, &r));
        const char *parts[2] = {"prompt_embeds", "pooled_prompt_embeds"};
        float *got[2] = {r.pos, r.pooled};
        size_t n_got[2] = {r.n_pos, r.n_pooled};
        for (int k = 0; k < 2; k++) {
            snprintf(tname, sizeof tname, "%s.%s", name, parts[k]);
            if (k == 1 && !r.pooled) continue;
            int64_t shape[3];
            int nd = 0;
            float *want = fixture_tensor("extra/a1111_refs.safetensors", tname, shape, &nd);
            size_t n = 1;
            for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
            CHECK(want && n == n_got[k], "%s: shape", tname);
            if (want && n == n_got[k]) check_rel(tname, got[k], want, n, 1e-5);
            free(want);
        }
        result_free(&r);
        sd_pipeline_free(p);
    }
    cJSON_Delete(root);
}

int main(void) {
    test_sd15();
    test_sdxl();
    test_gen_cli();
    test_device_refs();
    return test_summary();
}
