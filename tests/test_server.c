/* sd-server's pure pieces (server/): base64, the A1111 sampler names, model name resolution inside
 * the models folder, request validation, the PNG "parameters" chunk read back. The HTTP side runs
 * in tests/server/ against a live server. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cli/common/util.h"
#include "../core/safetensors.h"
#include "../server/app.h"
#include "../server/base64.h"
#include "../server/images.h"
#include "../server/models.h"
#include "../server/multipart.h"
#include "../server/request.h"
#include "../server/samplers.h"
#include "test.h"
/* The LoRA writer of tests/test_lora.c; this test uses only part of it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "lora_ref.h"
#pragma GCC diagnostic pop

static void test_base64(void) {
    /* RFC 4648 section 10 */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = srv_base64_encode((const uint8_t *)plain[i], strlen(plain[i]));
        CHECK(e && !strcmp(e, coded[i]), "encode '%s' -> '%s', want '%s'", plain[i], e, coded[i]);
        free(e);
        uint8_t *d;
        size_t n;
        bool ok = srv_base64_decode(coded[i], strlen(coded[i]), &d, &n);
        CHECK(ok && n == strlen(plain[i]) && !memcmp(d, plain[i], n), "decode '%s'", coded[i]);
        free(d);
    }
    uint8_t *d;
    size_t n;
    const char *url = "data:image/png;base64,Zm9v\nYmE";
    CHECK(srv_base64_decode(url, strlen(url), &d, &n) && n == 5 && !memcmp(d, "fooba", 5),
          "a data URL with a line break and no padding decodes");
    free(d);
    CHECK(!srv_base64_decode("Zm9v!", 5, &d, &n) && !d, "a foreign character is refused");
    CHECK(!srv_base64_decode("Zm9vY", 5, &d, &n), "a dangling sixth of a group is refused");
    CHECK(!srv_base64_decode("Zg==Zg", 6, &d, &n), "data after padding is refused");
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)(255 - i);
    char *e = srv_base64_encode(all, 256);
    CHECK(e && srv_base64_decode(e, strlen(e), &d, &n) && n == 256 && !memcmp(d, all, 256),
          "every byte value round-trips");
    free(e), free(d);
}

static void check_map(const char *sampler, const char *schedule, const char *want) {
    const char *alias;
    char err[200] = "";
    bool ok = srv_sampler_map(sampler, schedule, &alias, err, sizeof err);
    CHECK(ok && (want ? alias && !strcmp(alias, want) : !alias),
          "sampler '%s' + '%s' -> %s (%s), want %s", sampler, schedule,
          ok ? (alias ? alias : "(model's)") : "error", err, want ? want : "(model's)");
    if (ok && alias)
        CHECK(sd_scheduler_check(alias, NULL) == SD_OK, "'%s' is a scheduler of the engine", alias);
}

static void check_map_fails(const char *sampler, const char *schedule, const char *named) {
    const char *alias;
    char err[200] = "";
    bool ok = srv_sampler_map(sampler, schedule, &alias, err, sizeof err);
    CHECK(!ok && strstr(err, named), "sampler '%s' + '%s' refused naming '%s': %s", sampler,
          schedule ? schedule : "", named, err);
}

static void test_samplers(void) {
    check_map("Euler a", NULL, "euler_a");
    check_map("Euler", "Automatic", "euler");
    check_map("Euler", "Karras", "euler_karras");
    check_map("DPM++ 2M", NULL, "dpm++2m");
    check_map("DPM++ 2M", "Karras", "dpm++2m_karras");
    check_map("DPM++ 2M Karras", NULL, "dpm++2m_karras");
    check_map("DPM++ 2M SDE", "karras", "dpm++2m_sde_karras");
    check_map("DDIM", "", "ddim");
    check_map("PLMS", NULL, "pndm");
    check_map("LMS", NULL, "lms");
    check_map("Heun", NULL, "heun");
    check_map("UniPC", NULL, "unipc");
    check_map("LCM", NULL, "lcm");
    check_map(NULL, NULL, NULL);
    check_map("", "Automatic", NULL);
    check_map("dpm++2m_karras", NULL, "dpm++2m_karras"); /* gen's own names */
    check_map("EulerDiscreteScheduler", NULL, "EulerDiscreteScheduler");
    check_map_fails("DPM2", NULL, "DPM2");
    check_map_fails("Euler a", "Karras", "Euler a");
    check_map_fails("Euler", "Exponential", "Exponential");
    for (int i = 0; i < srv_sampler_count(); i++) {
        const srv_sampler *s = srv_sampler_get(i);
        CHECK(sd_scheduler_check(s->alias, NULL) == SD_OK, "listed sampler %s -> %s exists",
              s->name, s->alias);
        if (s->karras)
            CHECK(sd_scheduler_check(s->karras, NULL) == SD_OK, "%s Karras -> %s exists", s->name,
                  s->karras);
    }
}

static void touch(const char *path) {
    FILE *fp = fopen(path, "w");
    if (fp) fclose(fp);
}

static void test_models(void) {
    CHECK(srv_model_name_ok("sd15") && srv_model_name_ok("v1-5.safetensors"), "plain names pass");
    CHECK(!srv_model_name_ok("../sd15") && !srv_model_name_ok("/etc") &&
              !srv_model_name_ok("a/b") && !srv_model_name_ok("..") &&
              !srv_model_name_ok(".hidden") && !srv_model_name_ok(""),
          "names that could leave the folder are refused");
    const char *dir = test_output_dir("server_models");
    const char *inside = test_path(dir, "inside"), *out = test_path(dir, "out");
    mkdir(inside, 0755);
    touch(test_path(inside, "model_index.json"));
    touch(test_path(dir, "single.safetensors"));
    touch(test_path(dir, "notes.txt"));
    unlink(out);
    CHECK(symlink(fixture("sd15-tiny/pipeline"), out) == 0, "symlink %s", out);
    srv_config cfg = {.models_dir = dir, .model = "inside", .max_models = 1};
    srv_models *m;
    char err[300];
    bool ok = srv_models_open(&m, &cfg, err, sizeof err);
    CHECK(ok, "open %s: %s", dir, ok ? "" : err);
    if (!ok) return;
    char **names;
    int n = srv_models_list(m, &names);
    CHECK(
        n == 2 && !strcmp(names[0], "inside") && !strcmp(names[1], "single.safetensors"),
        "listed: a diffusers folder and a .safetensors file, not the link out nor other files (%d)",
        n);
    srv_models_list_free(names, n);
    srv_error e = {0};
    char *path = NULL;
    CHECK(!srv_models_resolve(m, "out", &path, &e) && e.status == 404,
          "a symbolic link out of the folder: %d %s", e.status, e.message);
    CHECK(!srv_models_resolve(m, "../server_models/inside", &path, &e) && e.status == 400 &&
              strstr(e.message, "../"),
          "'..' in a name: %d %s", e.status, e.message);
    CHECK(!srv_models_resolve(m, "nothing", &path, &e) && e.status == 404 &&
              strstr(e.message, "nothing"),
          "an unknown name: %d %s", e.status, e.message);
    CHECK(srv_models_resolve(m, "single", &path, &e) && path && strstr(path, "single.safetensors"),
          "a file by its name without the extension");
    free(path);
    CHECK(srv_models_set_current(m, "single.safetensors", &e), "set the default");
    char *cur = srv_models_current(m);
    CHECK(cur && !strcmp(cur, "single.safetensors"), "the default is %s", cur);
    free(cur);
    CHECK(!srv_models_set_current(m, "../x", &e) && e.status == 400, "the default stays inside");
    srv_models_close(m);
}

/* A model folder `name` in dir: the fixture's model_index.json copied, its components linked. */
static bool make_model(const char *dir, const char *name) {
    const char *m = test_path(dir, name);
    mkdir(m, 0755);
    static const char *const parts[] = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"};
    char *index = NULL;
    FILE *fp = fopen(test_path(m, "model_index.json"), "w");
    bool ok = fp &&
              cli_read_file(fixture("sd15-tiny/pipeline/model_index.json"), &index) == SD_OK &&
              fputs(index, fp) >= 0;
    if (fp) ok = fclose(fp) == 0 && ok;
    free(index);
    for (int i = 0; i < 5; i++) unlink(test_path(m, parts[i]));
    return ok && fixture_link_parts("sd15-tiny/pipeline", m, parts, 5);
}

static sd_pipeline *acquire(srv_models *m, const char *name, const srv_request *r, double *loaded) {
    srv_error e = {0};
    sd_pipeline *p =
        srv_models_acquire(m, name, r ? r->loras : NULL, r ? r->n_loras : 0, loaded, &e);
    CHECK(p, "acquire %s: %s", name, e.message);
    return p;
}

/* 64x64, 2 steps: the first pixel bytes, to tell two models' images apart. */
static uint32_t image_hash(sd_pipeline *p) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a cat", g.width = 64, g.height = 64, g.steps = 2, g.seed = 1;
    sd_result r;
    if (sd_generate(p, &g, &r) != SD_OK) return 0;
    uint32_t h = 2166136261u;
    for (int i = 0; i < 64 * 64 * 3; i++) h = (h ^ r.images[0].rgb[i]) * 16777619u;
    sd_result_free(&r);
    return h;
}

/* Resident pipelines: a second request loads nothing, --max-models evicts the least recently used,
 * a different LoRA set is merged into the resident model (and back); a refused one changes nothing. */
static void test_resident(void) {
    const char *dir = test_output_dir("server_resident"), *loras = test_output_dir("server_loras");
    CHECK(make_model(dir, "a") && make_model(dir, "b"), "model folders in %s", dir);
    static ref_lora style;
    ref_lora_pick(&style, fixture("sd15-tiny/pipeline"), "unet",
                  "diffusion_pytorch_model.safetensors",
                  (const char *const[]){"attn1.to_", "attn2.to_", NULL}, false, 4, 4.0f, true, 21);
    CHECK(ref_lora_write(&style, test_path(loras, "style.safetensors"), REF_KOHYA, false),
          "write a LoRA");
    ref_lora_free(&style);
    srv_config cfg = {
        .models_dir = dir, .model = "a", .max_models = 1, .lora_dir = loras, .threads = 2};
    srv_models *m;
    char err[300];
    if (!srv_models_open(&m, &cfg, err, sizeof err)) {
        CHECK(false, "open: %s", err);
        return;
    }
    double loaded;
    sd_pipeline *a = acquire(m, "a", NULL, &loaded);
    CHECK(loaded > 0, "the first use loads");
    CHECK(acquire(m, "a", NULL, &loaded) == a && loaded == 0, "the second finds it resident");
    uint32_t plain = a ? image_hash(a) : 0;
    acquire(m, "b", NULL, &loaded);
    CHECK(loaded > 0, "another model loads");
    a = acquire(m, "a", NULL, &loaded);
    CHECK(loaded > 0, "--max-models 1: the first was freed for it");
    srv_request r;
    srv_request_init(&r);
    r.prompt = strdup("a cat <lora:style:0.9>");
    srv_error e = {0};
    CHECK(srv_request_take_loras(&r, loras, &e) && r.n_loras == 1 && !strcmp(r.prompt, "a cat "),
          "the tag taken: '%s' %s", r.prompt, e.message);
    sd_pipeline *with = acquire(m, "a", &r, &loaded);
    CHECK(loaded > 0 && with == a, "another LoRA set is merged into the resident model "
          "(sd_pipeline_set_loras), not a reload");
    CHECK(acquire(m, "a", &r, &loaded) == with && loaded == 0, "the same set does nothing");
    CHECK(with && image_hash(with) != plain, "the LoRA changes the image");
    sd_pipeline *back = acquire(m, "a", NULL, &loaded);
    CHECK(loaded > 0 && back == a && back && image_hash(back) == plain,
          "no LoRA again: the plain model back");
    srv_request_free(&r);
    /* A LoRA the library refuses: a 400, and the model stays resident as it was. */
    FILE *bad = fopen(test_path(loras, "broken.safetensors"), "wb");
    if (bad) fputs("not a safetensors file", bad), fclose(bad);
    srv_request_init(&r);
    r.prompt = strdup("a cat <lora:broken>");
    CHECK(srv_request_take_loras(&r, loras, &e), "the broken tag taken: %s", e.message);
    e = (srv_error){0};
    CHECK(!srv_models_acquire(m, "a", r.loras, r.n_loras, &loaded, &e) && e.status == 400 &&
              strstr(e.message, "broken"),
          "a refused LoRA: %d %s", e.status, e.message);
    back = acquire(m, "a", NULL, &loaded);
    CHECK(back == a && loaded == 0 && image_hash(back) == plain,
          "after the refusal the plain model is still resident");
    srv_request_free(&r);
    srv_models_close(m);

    cfg.max_models = 2;
    if (!srv_models_open(&m, &cfg, err, sizeof err)) return;
    acquire(m, "a", NULL, &loaded), acquire(m, "b", NULL, &loaded);
    acquire(m, "a", NULL, &loaded);
    CHECK(loaded == 0, "--max-models 2: both stay");
    acquire(m, "b", NULL, &loaded);
    CHECK(loaded == 0, "--max-models 2: both stay (b)");
    srv_models_close(m);
}

/* 64x64, 2 steps of `prompt` in A1111's syntax: the first pixel bytes. */
static uint32_t prompt_hash(sd_pipeline *p, const char *prompt) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = prompt, g.width = 64, g.height = 64, g.steps = 2, g.seed = 1;
    g.prompt_syntax = SD_PROMPT_A1111;
    sd_result r;
    if (sd_generate(p, &g, &r) != SD_OK) return 0;
    uint32_t h = 2166136261u;
    for (int i = 0; i < 64 * 64 * 3; i++) h = (h ^ r.images[0].rgb[i]) * 16777619u;
    sd_result_free(&r);
    return h;
}

/* Writes an A1111 embedding file: emb_params [vectors][width] of small distinct values. */
static bool write_embedding(const char *path, int vectors, int width) {
    float v[4 * 64];
    for (int i = 0; i < vectors * width; i++) v[i] = 0.05f * (float)((i * 7) % 13) - 0.3f;
    st_entry e = {"emb_params", ST_F32, 2, {vectors, width}, v};
    return st_write(path, &e, 1, NULL, 0) == SD_OK;
}

/* --embeddings-dir: every model loaded gets the folder's embeddings (the trigger changes the
 * image); a file the library refuses (wrong width) fails the load with a 500 naming it. */
static void test_embeddings_dir(void) {
    const char *dir = test_output_dir("server_emb_models"), *emb = test_output_dir("server_emb");
    CHECK(make_model(dir, "a"), "model folder in %s", dir);
    unlink(test_path(emb, "wide.safetensors")); /* a previous run's */
    CHECK(write_embedding(test_path(emb, "mytrig.safetensors"), 2, 16), "write an embedding");
    /* srv_models keeps a pointer to its config: one each */
    static srv_config plain_cfg, cfg;
    plain_cfg = (srv_config){.models_dir = dir, .model = "a", .max_models = 1, .threads = 2};
    cfg = plain_cfg;
    cfg.embeddings_dir = emb;
    srv_models *plain_m, *emb_m;
    char err[300];
    if (!srv_models_open(&plain_m, &plain_cfg, err, sizeof err)) {
        CHECK(false, "open: %s", err);
        return;
    }
    if (!srv_models_open(&emb_m, &cfg, err, sizeof err)) {
        CHECK(false, "open: %s", err);
        srv_models_close(plain_m);
        return;
    }
    double loaded;
    sd_pipeline *plain = acquire(plain_m, "a", NULL, &loaded), *with = acquire(emb_m, "a", NULL, &loaded);
    if (plain && with) {
        CHECK(prompt_hash(plain, "a cat") == prompt_hash(with, "a cat"),
              "a prompt without the trigger: the same image");
        CHECK(prompt_hash(plain, "a mytrig cat") != prompt_hash(with, "a mytrig cat"),
              "the trigger word uses the folder's embedding");
    }
    srv_models_close(emb_m);
    CHECK(write_embedding(test_path(emb, "wide.safetensors"), 1, 24), "write a too-wide embedding");
    if (srv_models_open(&emb_m, &cfg, err, sizeof err)) {
        srv_error e = {0};
        CHECK(!srv_models_acquire(emb_m, "a", NULL, 0, &loaded, &e) && e.status == 500 &&
                  strstr(e.message, "wide.safetensors"),
              "a refused embedding fails the load: %d %s", e.status, e.message);
        srv_models_close(emb_m);
    }
    srv_models_close(plain_m);
}

static const srv_limits limits = {256, 192, 30, 4};

/* Parses body (A1111 txt2img, or OpenAI when openai) and checks the status and the field named. */
static void check_bad(bool openai, const char *body, int status, const char *param) {
    cJSON *j = cJSON_Parse(body);
    srv_request r;
    srv_request_init(&r);
    srv_error e = {0};
    bool ok = j && (openai ? srv_request_from_openai(j, false, &limits, &r, &e)
                           : srv_request_from_a1111(j, false, &limits, &r, &e));
    CHECK(!ok && e.status == status && !strcmp(e.param, param) && e.message[0],
          "%s %s -> %d '%s' %s; want %d '%s'", openai ? "openai" : "a1111", body, e.status, e.param,
          e.message, status, param);
    srv_request_free(&r);
    cJSON_Delete(j);
}

static void test_requests(void) {
    cJSON *j = cJSON_Parse(
        "{\"prompt\": \"a cat\", \"negative_prompt\": \"dog\", \"seed\": 42, "
        "\"steps\": 8, \"cfg_scale\": 6.5, \"width\": 128, \"height\": 64, "
        "\"sampler_name\": \"DPM++ 2M\", \"scheduler\": \"Karras\", \"batch_size\": 2, "
        "\"n_iter\": 2, \"override_settings\": {\"sd_model_checkpoint\": \"sd15 [abc123]\"}, "
        "\"send_images\": true}");
    srv_request r;
    srv_request_init(&r);
    srv_error e = {0};
    bool ok = srv_request_from_a1111(j, false, &limits, &r, &e);
    CHECK(ok, "a full A1111 request: %s", e.message);
    if (ok)
        CHECK(!strcmp(r.prompt, "a cat") && !strcmp(r.negative_prompt, "dog") && r.seed == 42 &&
                  r.steps == 8 && r.guidance == 6.5 && r.width == 128 && r.height == 64 &&
                  r.batch == 2 && r.n_iter == 2 && !strcmp(r.scheduler, "dpm++2m_karras") &&
                  !strcmp(r.model, "sd15") && r.syntax == SD_PROMPT_A1111,
              "fields taken; the prompt read in A1111's syntax");
    srv_request_free(&r);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"prompt\": \"a cat\"}");
    srv_request_init(&r);
    CHECK(srv_request_from_a1111(j, false, &limits, &r, &e) && r.seed == -1 && r.width == 0 &&
              r.steps == 0 && isnan(r.guidance) && !r.scheduler && !r.model,
          "absent fields are the model's defaults");
    srv_request_free(&r);
    cJSON_Delete(j);
    j = cJSON_Parse(
        "{\"prompt\": \"a cat\", \"n\": 2, \"size\": \"128x64\", \"response_format\": \"url\", "
        "\"seed\": 7, \"steps\": 5, \"guidance_scale\": 3, \"scheduler\": \"euler\", "
        "\"output_format\": \"jpeg\", \"model\": \"m\"}");
    srv_request_init(&r);
    ok = srv_request_from_openai(j, false, &limits, &r, &e);
    CHECK(ok && r.batch == 2 && r.width == 128 && r.height == 64 && r.url && r.jpeg &&
              r.seed == 7 && r.steps == 5 && r.guidance == 3 && !strcmp(r.scheduler, "euler") &&
              !strcmp(r.model, "m") && r.syntax == SD_PROMPT_PLAIN,
          "a full OpenAI request (plain prompt syntax): %s", e.message);
    srv_request_free(&r);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"prompt\": \"a cat\", \"n\": \"2\", \"seed\": \"9\"}");
    srv_request_init(&r);
    CHECK(srv_request_from_openai(j, true, &limits, &r, &e) && r.batch == 2 && r.seed == 9,
          "form fields give numbers as text");
    srv_request_free(&r);
    cJSON_Delete(j);

    check_bad(false, "{}", 400, "prompt");
    check_bad(false, "[1]", 400, "");
    check_bad(false, "{\"prompt\": 5}", 400, "prompt");
    check_bad(false, "{\"prompt\": \"x\", \"steps\": \"20\"}", 400, "steps");
    check_bad(false, "{\"prompt\": \"x\", \"steps\": 2.5}", 400, "steps");
    check_bad(false, "{\"prompt\": \"x\", \"steps\": 31}", 400, "steps");
    check_bad(false, "{\"prompt\": \"x\", \"width\": 0}", 400, "width");
    check_bad(false, "{\"prompt\": \"x\", \"width\": 100000}", 400, "width");
    check_bad(false, "{\"prompt\": \"x\", \"height\": 193}", 400, "height");
    check_bad(false, "{\"prompt\": \"x\", \"cfg_scale\": true}", 400, "cfg_scale");
    check_bad(false, "{\"prompt\": \"x\", \"sampler_name\": \"Nope\"}", 400, "sampler_name");
    check_bad(false, "{\"prompt\": \"x\", \"batch_size\": 2, \"n_iter\": 3}", 400, "batch_size");
    check_bad(false, "{\"prompt\": \"x\", \"override_settings\": 3}", 400, "override_settings");
    check_bad(false, "{\"prompt\": \"x\", \"seed\": -2}", 400, "seed");
    check_bad(true, "{\"n\": 1}", 400, "prompt");
    check_bad(true, "{\"prompt\": \"x\", \"size\": \"0x0\"}", 400, "size");
    check_bad(true, "{\"prompt\": \"x\", \"size\": \"100000x100000\"}", 400, "size");
    check_bad(true, "{\"prompt\": \"x\", \"size\": \"big\"}", 400, "size");
    check_bad(true, "{\"prompt\": \"x\", \"n\": 5}", 400, "n");
    check_bad(true, "{\"prompt\": \"x\", \"response_format\": \"gif\"}", 400, "response_format");
    check_bad(true, "{\"prompt\": \"x\", \"output_format\": \"webp\"}", 400, "output_format");
    check_bad(true, "{\"prompt\": \"x\", \"scheduler\": \"DPM2\"}", 400, "scheduler");
    check_bad(true, "{\"prompt\": \"x\", \"model\": 3}", 400, "model");

    /* img2img: the init image decodes through the library; garbage is a 400 naming the field. */
    j = cJSON_Parse("{\"prompt\": \"x\", \"init_images\": [\"AAAA\"]}");
    srv_request_init(&r);
    CHECK(!srv_request_from_a1111(j, true, &limits, &r, &e) && e.status == 400 &&
              !strcmp(e.param, "init_images"),
          "an init image that is no image: %d %s", e.status, e.message);
    srv_request_free(&r);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"prompt\": \"x\"}");
    srv_request_init(&r);
    CHECK(!srv_request_from_a1111(j, true, &limits, &r, &e) && !strcmp(e.param, "init_images"),
          "img2img without init_images");
    srv_request_free(&r);
    cJSON_Delete(j);

    srv_request_init(&r);
    r.prompt = strdup("a <lora:x:0.5> cat");
    CHECK(!srv_request_take_loras(&r, NULL, &e) && e.status == 400 &&
              strstr(e.message, "--lora-dir"),
          "a LoRA tag without --lora-dir: %s", e.message);
    srv_request_free(&r);
}

static void test_png_text(void) {
    sd_image img;
    CHECK_OK(sd_image_alloc(&img, 4, 3));
    uint8_t *png = NULL;
    size_t len = 0;
    CHECK_OK(srv_image_encode(&img, false, 90, "a cat\nSteps: 4, Sampler: Euler", &png, &len));
    char *text = png ? srv_png_text(png, len, "parameters") : NULL;
    CHECK(text && !strcmp(text, "a cat\nSteps: 4, Sampler: Euler"), "parameters read back: %s",
          text);
    free(text);
    CHECK(png && !srv_png_text(png, len, "Comment"), "no such chunk");
    CHECK(png && !srv_png_text(png, 40, "parameters"), "a truncated PNG gives nothing");
    sd_image back;
    CHECK_OK(srv_image_decode(png, len, &back));
    CHECK(back.width == 4 && back.height == 3, "decoded %dx%d", back.width, back.height);
    sd_image_free(&back);
    CHECK(srv_image_decode((const uint8_t *)"nope", 4, &back) != SD_OK, "garbage does not decode");
    free(png);
    sd_image_free(&img);
}

/* Issue 22's limits on sd-server's bodies: a 10 MB prompt (either API, prompt or negative prompt)
 * is a 400 naming the field before it is queued, a prompt of exactly SD_PROMPT_MAX_BYTES passes;
 * a JSON body nested 10^5 deep is a 400 saying so (srv_body_json: every JSON handler calls it). */
static void test_body_limits(void) {
    const size_t big = 10u << 20;
    char *body = malloc(big + 64);
    const char *const keys[] = {"prompt", "negative_prompt"};
    for (int api = 0; api < 2; api++) {
        for (int k = 0; k < 2; k++) {
            int at = sprintf(body, k ? "{\"prompt\": \"a\", \"%s\": \"" : "{\"%s\": \"", keys[k]);
            memset(body + at, 'a', big);
            strcpy(body + at + big, "\"}");
            check_bad(api == 1, body, 400, keys[k]);
            /* the limit itself */
            strcpy(body + at + SD_PROMPT_MAX_BYTES, "\"}");
            cJSON *j = cJSON_Parse(body);
            srv_request r;
            srv_request_init(&r);
            srv_error e = {0};
            bool ok = j && (api ? srv_request_from_openai(j, false, &limits, &r, &e)
                                : srv_request_from_a1111(j, false, &limits, &r, &e));
            CHECK(ok, "a %s of %d bytes: %s", keys[k], SD_PROMPT_MAX_BYTES, e.message);
            srv_request_free(&r);
            cJSON_Delete(j);
        }
    }
    const size_t depth = 100000;
    body[0] = '{';
    memcpy(body + 1, "\"a\":", 4);
    memset(body + 5, '[', depth);
    memset(body + 5 + depth, ']', depth);
    strcpy(body + 5 + 2 * depth, "}");
    srv_http_req req = {.body = body, .body_len = strlen(body)};
    srv_error e = {0};
    cJSON *j = srv_body_json(&req, &e);
    CHECK(!j && e.status == 400 && strstr(e.message, "nested deeper"),
          "a body nested 10^5 deep: %d %s", e.status, e.message);
    cJSON_Delete(j);
    free(body);
}

/* Multipart bodies as clients write them (curl -F, the openai npm client's FormData: CRLF line
 * ends, a quoted or bare boundary, a CRLF after the closing one), and the malformed ones. */
static bool form_of(const char *ct, const char *body, srv_form *f, srv_error *e) {
    memset(e, 0, sizeof *e);
    return srv_form_parse(ct, (const uint8_t *)body, strlen(body), f, e);
}

static const char *field(const srv_form *f, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->fields, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_form(void) {
    srv_form f;
    srv_error e;
    const char *curl = /* curl -F prompt='a dog' -F n=2 -F image=@x.png -F mask=@m.png */
        "--------------------------d74496d66958873e\r\n"
        "Content-Disposition: form-data; name=\"prompt\"\r\n\r\n"
        "a dog\r\n"
        "--------------------------d74496d66958873e\r\n"
        "Content-Disposition: form-data; name=\"n\"\r\n\r\n"
        "2\r\n"
        "--------------------------d74496d66958873e\r\n"
        "Content-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
        "Content-Type: image/png\r\n\r\n"
        "PNG\r\nbytes\r\n-- not a boundary\r\n"
        "--------------------------d74496d66958873e\r\n"
        "content-disposition: form-data; name=mask; filename=\"m.png\"\r\n\r\n"
        "M\r\n"
        "--------------------------d74496d66958873e--\r\n";
    const char *ct = "multipart/form-data; boundary=------------------------d74496d66958873e";
    CHECK(form_of(ct, curl, &f, &e), "curl's form: %s", e.message);
    CHECK(field(&f, "prompt") && !strcmp(field(&f, "prompt"), "a dog"), "prompt '%s'",
          field(&f, "prompt"));
    CHECK(field(&f, "n") && !strcmp(field(&f, "n"), "2"), "n");
    static const char png[] = "PNG\r\nbytes\r\n-- not a boundary";
    CHECK(f.image_len == sizeof png - 1 && !memcmp(f.image, png, sizeof png - 1),
          "image: the bytes between the headers and the next boundary (%zu)", f.image_len);
    CHECK(f.mask_len == 1 && f.mask[0] == 'M', "mask (bare name, lower-case header)");
    CHECK(!field(&f, "image") && !field(&f, "mask"), "files are not text fields");
    srv_form_free(&f);

    /* Quoted boundary, a preamble, image[] twice (the first is used), a repeated text field (the
     * last), padding after a boundary, an empty field, and an epilogue. */
    const char *b2 = "preamble\r\n--XyZ\r\n"
                     "Content-Disposition: form-data; name=\"image[]\"\r\n\r\nA\r\n--XyZ  \r\n"
                     "Content-Disposition: form-data; name=\"image[]\"\r\n\r\nB\r\n--XyZ\r\n"
                     "Content-Disposition: form-data; name=\"size\"\r\n\r\n1x1\r\n--XyZ\r\n"
                     "Content-Disposition: form-data; name=\"size\"\r\n\r\n64x64\r\n--XyZ\r\n"
                     "Content-Disposition: form-data; name=\"user\"\r\n\r\n\r\n--XyZ--\r\nepilogue";
    CHECK(form_of("Multipart/Form-Data; charset=utf-8; boundary=\"XyZ\"", b2, &f, &e), "%s",
          e.message);
    CHECK(f.image_len == 1 && f.image[0] == 'A', "image[]: the first");
    CHECK(field(&f, "size") && !strcmp(field(&f, "size"), "64x64"), "repeated field: the last");
    CHECK(field(&f, "user") && !field(&f, "user")[0], "an empty field");
    CHECK(!f.mask, "no mask");
    srv_form_free(&f);

    CHECK(form_of("multipart/form-data; boundary=b", "--b--", &f, &e) && !f.fields && !f.image,
          "an empty form");
    srv_form_free(&f);

    /* Refused, each with its reason. */
    static const struct {
        const char *ct, *body, *want;
        int status;
    } bad[] = {
        {"multipart/form-data", "--b--", "boundary", 400},
        {"multipart/form-data; boundary=", "--b--", "boundary", 400},
        {"multipart/form-data; boundary=\"b", "--b--", "boundary", 400},
        {"application/json; boundary=b", "--b--", "multipart/form-data", 400},
        {"multipart/form-data; boundary=b", "no boundary here", "no boundary", 400},
        {"multipart/form-data; boundary=b", "", "no boundary", 400},
        {"multipart/form-data; boundary=b",
         "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx", "runs to the end", 400},
        {"multipart/form-data; boundary=b",
         "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b", "closing", 400},
        {"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"p\"",
         "headers do not end", 400},
        {"multipart/form-data; boundary=b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
         "no Content-Disposition name", 400},
        {"multipart/form-data; boundary=b", "--b\r\n\r\nx\r\n--b--", "no Content-Disposition", 400},
        {"multipart/form-data; boundary=b",
         "--b\r\nContent-Disposition: attachment; name=\"p\"\r\n\r\nx\r\n--b--", "not form-data",
         400},
        {"multipart/form-data; boundary=b",
         "--b\r\nContent-Disposition: form-data; "
         "name=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaa\"\r\n\r\nx\r\n--b--",
         "longer than 64", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool ok = form_of(bad[i].ct, bad[i].body, &f, &e);
        CHECK(!ok && e.status == bad[i].status && strstr(e.message, bad[i].want),
              "bad form %zu: %s (%d), want '%s'", i, ok ? "accepted" : e.message, e.status,
              bad[i].want);
        CHECK(!f.fields && !f.image && !f.mask, "bad form %zu leaves the form empty", i);
    }
    /* A NUL inside a text field (not inside a file), a text field over 1 MiB, too many parts. */
    const char nul[] =
        "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na\0b\r\n--b--";
    CHECK(!srv_form_parse("multipart/form-data; boundary=b", (const uint8_t *)nul, sizeof nul - 1,
                          &f, &e) &&
              strstr(e.message, "NUL") && !strcmp(e.param, "prompt"),
          "a NUL byte in a text field: %s", e.message);
    const char head[] = "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n";
    size_t big = SRV_FORM_TEXT_MAX + 1, n = strlen(head) + big + 7;
    char *body = malloc(n + 1);
    memcpy(body, head, strlen(head));
    memset(body + strlen(head), 'a', big);
    memcpy(body + strlen(head) + big, "\r\n--b--", 8);
    CHECK(!form_of("multipart/form-data; boundary=b", body, &f, &e) && e.status == 413,
          "a text field over 1 MiB: 413 (%d %s)", e.status, e.message);
    free(body);
    const char part[] = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n";
    n = (SRV_FORM_MAX_PARTS + 1) * strlen(part) + 6;
    body = malloc(n);
    body[0] = 0;
    for (int i = 0; i <= SRV_FORM_MAX_PARTS; i++) strcat(body, part);
    strcat(body, "--b--");
    CHECK(!form_of("multipart/form-data; boundary=b", body, &f, &e) && strstr(e.message, "parts"),
          "more than %d parts: %s", SRV_FORM_MAX_PARTS, e.message);
    free(body);
}

int main(void) {
    char err[200];
    CHECK(srv_images_init(err, sizeof err), "%s", err);
    test_base64();
    test_samplers();
    test_models();
    test_resident();
    test_embeddings_dir();
    test_requests();
    test_png_text();
    test_form();
    test_body_limits();
    srv_images_cleanup();
    return test_summary();
}
