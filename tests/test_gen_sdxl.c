/* SDXL through bin/gen, as a user runs it: --print-tokens shows both tokenizers (tokenizer_2 pads
 * with "!"), the recorded prompt2 run reproduced with --prompt-2 (pixels of the written PNG within
 * one level of the fixture's on >= 99.9% of values, never more than two apart), and
 * --original-size / --crop / --target-size each change the output, which equals the library's run
 * with the same setting (latents written by --save-latents, compared bit for bit). The fixtures
 * hold no diffusers run with non-default micro-conditioning; tests/test_pipeline_sdxl.c checks
 * the time ids by value and the recorded runs through the library. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/image.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "test.h"
#include "tool_run.h"

#define MODEL "sdxl-tiny"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }
static void test_gen_print_tokens(const char *model_dir) {
    const char *args[] = {"-m", model_dir, "--print-tokens", "a photo of a cat", NULL};
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "--print-tokens: exit %d: %s", rc, tool_output);
    cJSON *j = cJSON_Parse(tool_output);
    /* tokenizer_cases.json's "a photo of a cat": pad <|endoftext|> (49407) for tokenizer, "!" (0)
     * for tokenizer_2. */
    const int want[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    const char *names[2] = {"tokenizer", "tokenizer_2"};
    const int pad[2] = {49407, 0};
    for (int k = 0; k < 2; k++) {
        const cJSON *ids = cJSON_GetObjectItem(j, names[k]);
        int ok = cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 77;
        for (int i = 0; ok && i < 77; i++)
            ok &= cJSON_GetArrayItem(ids, i)->valueint == (i < 7 ? want[i] : pad[k]);
        CHECK(ok, "--print-tokens: \"%s\" holds the 77 padded ids: %s", names[k], tool_output);
    }
    cJSON_Delete(j);
}

/* Compares a written PNG with the fixture's; returns whether within the pixel rule. */
static int png_matches(const char *got_path, const char *want_rel, const char *what) {
    sd_image got, want;
    int ok = 0;
    if (image_read(got_path, &got) != SD_OK) return 0;
    if (image_read(fixture(want_rel), &want) == SD_OK) {
        size_t n = (size_t)got.width * got.height * 3;
        long beyond = 0, differ = 0;
        int maxd = 0;
        if (got.width == want.width && got.height == want.height) {
            for (size_t i = 0; i < n; i++) {
                int d = abs((int)got.rgb[i] - want.rgb[i]);
                differ += d > 0, beyond += d > 1;
                if (d > maxd) maxd = d;
            }
            ok = maxd <= 2 && (size_t)beyond * 1000 <= n;
        }
        printf("%s %s: %ld of %zu values differ from the fixture PNG (%ld by more than one), max %d\n",
               ok ? "ok  " : "FAIL", what, differ, n, beyond, maxd);
        image_free(&want);
    }
    image_free(&got);
    return ok;
}

static float *read_latents(const char *path, size_t *n) {
    st_file f;
    *n = 0;
    if (st_open(&f, path) != SD_OK) return NULL;
    const st_tensor *t = st_find(&f, "latents");
    float *x = NULL;
    if (t && t->dtype == ST_F32) {
        *n = (size_t)st_numel(t);
        x = malloc(*n * sizeof *x);
        memcpy(x, t->data, *n * sizeof *x);
    }
    st_close(&f);
    return x;
}

/* The prompt2 run through the binary, with --prompt-2. */
static void test_gen_prompt2(const char *model_dir) {
    const char *args[] = {"-m", model_dir, "-s", "42", "--steps", "6", "-g", "5", "-W", "128", "-H",
                          "128", "--scheduler", "EulerDiscreteScheduler", "-n", "blurry, low quality",
                          "--prompt-2", "portrait of an old sailor, (dramatic lighting:1.2), 35mm",
                          "-o", tmp("p2.png"), "-q",
                          "a watercolor painting of a lighthouse at dawn, highly detailed", NULL};
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "gen prompt2: exit %d: %s", rc, tool_output);
    CHECK(rc == 0 && png_matches(tmp("p2.png"), MODEL "/expected/prompt2-0.png", "gen " MODEL "/prompt2"),
          "gen --prompt-2 reproduces the prompt2 run");
}

/* Micro-conditioning through the binary: each option changes the latents, and they equal the
 * library's run with the same settings. */
static void test_gen_micro_conditioning(sd_pipeline *p, const char *model_dir) {
    const char *base[] = {"-m", model_dir, "-s", "42", "--steps", "3", "-g", "5", "-q", NULL};
    const char *extra[4][3] = {{NULL}, {"--original-size", "256x192", NULL}, {"--crop", "16,8", NULL},
                               {"--target-size", "64x96", NULL}};
    float *lat[4] = {NULL};
    size_t n[4] = {0};
    for (int k = 0; k < 4; k++) {
        const char *args[32];
        int na = 0;
        for (int i = 0; base[i]; i++) args[na++] = base[i];
        for (int i = 0; extra[k][i]; i++) args[na++] = extra[k][i];
        args[na++] = "-o", args[na++] = tmp("mc.png");
        args[na++] = "--save-latents", args[na++] = tmp("mc.safetensors");
        args[na++] = "a photo of an astronaut riding a horse on mars";
        args[na] = NULL;
        int rc = tool_run_args("gen", args);
        CHECK(rc == 0, "gen %s: exit %d: %s", extra[k][0] ? extra[k][0] : "(defaults)", rc, tool_output);
        if (rc == 0) lat[k] = read_latents(tmp("mc.safetensors"), &n[k]);
    }
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a photo of an astronaut riding a horse on mars";
    g.seed = 42, g.steps = 3, g.guidance = 5;
    for (int k = 1; k < 4; k++) {
        CHECK(lat[k] && lat[0] && n[k] == n[0] && n[0] == 4 * 16 * 16 &&
                  memcmp(lat[k], lat[0], n[0] * sizeof(float)) != 0,
              "gen %s changes the output", extra[k][0]);
        sd_gen_params gk = g;
        if (k == 1) gk.original_width = 256, gk.original_height = 192;
        if (k == 2) gk.crop_top = 16, gk.crop_left = 8;
        if (k == 3) gk.target_width = 64, gk.target_height = 96;
        sd_result r;
        sd_status st = sd_generate(p, &gk, &r);
        CHECK(st == SD_OK && lat[k] && n[k] == 4 * 16 * 16 &&
                  !memcmp(r.latents, lat[k], n[k] * sizeof(float)),
              "gen %s: latents equal the library's run with the same setting", extra[k][0]);
        if (st == SD_OK) sd_result_free(&r);
    }
    for (int k = 0; k < 4; k++) free(lat[k]);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-gen-sdxl-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s", fixture(MODEL "/pipeline"));
    test_gen_print_tokens(model_dir);
    test_gen_prompt2(model_dir);
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, model_dir, NULL));
    if (p) test_gen_micro_conditioning(p, model_dir);
    sd_pipeline_free(p);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
