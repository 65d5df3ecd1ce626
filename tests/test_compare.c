/* bin/sd-compare on the tiny SD 1.5 model: 3 schedulers x 2 step counts at 64x64. Every image must
 * have exactly the pixels of a separate bin/gen run with the same settings (same binary code, same
 * threads); the report's entries must be right (the class that ran, the model calls each
 * scheduler needs, file names, the mean absolute difference recomputed here from the files); the
 * grid must have the documented size and hold every image at its place; the texts must be encoded
 * once for the whole comparison (sd_pipeline_stats, and the report's count); and bad lists must be
 * refused with one line naming the culprit before anything is rendered. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[256], model[512];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }
/* Exit status 2, a one-line error mentioning `needle`, and no output folder made. */
static void expect_refused(const char *what, int rc, const char *needle, const char *outdir) {
    int lines = 0;
    for (const char *c = tool_output; *c; c++) lines += *c == '\n';
    CHECK(rc == 2, "%s: exit status %d, want 2 (%s)", what, rc, tool_output);
    CHECK(strstr(tool_output, needle) != NULL, "%s: '%s' does not mention '%s'", what, tool_output, needle);
    CHECK(lines == 1, "%s: a one-line error, got %d lines: %s", what, lines, tool_output);
    CHECK(!sd_dir_exists(outdir), "%s: nothing rendered, yet %s exists", what, outdir);
}

static const char *const names[3] = {"euler_a", "heun", "pndm"};
static const char *const classes[3] = {"EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                                       "PNDMScheduler"};
static const int steps[2] = {2, 3};

/* Model calls per scheduler, from diffusers: Euler ancestral one per step, Heun two per step but
 * one for the last (2n - 1), PNDM with skip_prk_steps (the model's config) n + 1. */
static int expected_calls(int k, int n) { return k == 0 ? n : k == 1 ? 2 * n - 1 : n + 1; }

static double file_diff(const sd_image *a, const sd_image *b) {
    double sum = 0;
    size_t n = (size_t)a->width * a->height * 3;
    for (size_t i = 0; i < n; i++) sum += abs((int)a->rgb[i] - (int)b->rgb[i]);
    return sum / (double)n;
}

static const cJSON *item(const cJSON *o, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static void test_comparison(void) {
    const char *out = tmp("cmp/nested"); /* the parents do not exist yet */
    int rc = tool_run("sd-compare", "-m", model, "-W", "64", "-H", "64", "-s", "7", "-t", "1", "-g",
                      "5", "-n", "blurry", "--steps", "2,3", "--schedulers", "euler_a, heun,pndm",
                      "-o", out, "-q", "a photo of a cat", NULL);
    CHECK(rc == 0, "sd-compare: exit %d: %s", rc, tool_output);
    if (rc != 0) return;
    char *text = NULL;
    CHECK_OK(sd_read_file(tmp("cmp/nested/report.json"), &text, NULL));
    cJSON *rep = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(rep != NULL, "report.json parses");
    if (!rep) return;
    const cJSON *imgs = item(rep, "images"), *v;
    CHECK((v = item(rep, "prompt")) && cJSON_IsString(v) && !strcmp(v->valuestring, "a photo of a cat"), "report prompt");
    CHECK((v = item(rep, "negative_prompt")) && cJSON_IsString(v) && !strcmp(v->valuestring, "blurry"), "report negative prompt");
    CHECK((v = item(rep, "model")) && cJSON_IsString(v) && !strcmp(v->valuestring, model), "report model");
    CHECK((v = item(rep, "seed")) && cJSON_IsNumber(v) && v->valuedouble == 7, "report seed");
    CHECK((v = item(rep, "width")) && v->valuedouble == 64 && (v = item(rep, "height")) && v->valuedouble == 64, "report size");
    CHECK((v = item(rep, "guidance")) && cJSON_IsNumber(v) && v->valuedouble == 5, "report guidance");
    /* The prompt and the negative prompt, encoded once for all six images. */
    CHECK((v = item(rep, "text_encoder_calls")) && cJSON_IsNumber(v) && v->valuedouble == 2,
          "report text_encoder_calls %g, want 2", v ? v->valuedouble : -1);
    CHECK(cJSON_GetArraySize(imgs) == 6, "6 images in the report, got %d", cJSON_GetArraySize(imgs));
    if (cJSON_GetArraySize(imgs) != 6) {
        cJSON_Delete(rep);
        return;
    }
    sd_image im[6] = {0};
    int max_label = 7; /* "euler_a", "2 steps" */
    for (int si = 0, i = 0; si < 2; si++)
        for (int k = 0; k < 3; k++, i++) {
            const cJSON *e = cJSON_GetArrayItem(imgs, i);
            char file[64], what[64];
            snprintf(file, sizeof file, "%s-%d.png", names[k], steps[si]);
            snprintf(what, sizeof what, "%s %d steps", names[k], steps[si]);
            CHECK((v = item(e, "name")) && cJSON_IsString(v) && !strcmp(v->valuestring, names[k]), "%s: name", what);
            CHECK((v = item(e, "scheduler")) && cJSON_IsString(v) && !strcmp(v->valuestring, classes[k]),
                  "%s: scheduler %s", what, v && cJSON_IsString(v) ? v->valuestring : "?");
            CHECK((v = item(e, "steps")) && v->valuedouble == steps[si], "%s: steps", what);
            CHECK((v = item(e, "model_calls")) && v->valuedouble == expected_calls(k, steps[si]),
                  "%s: model calls %g, want %d", what, v ? v->valuedouble : -1, expected_calls(k, steps[si]));
            v = item(e, "seconds");
            CHECK(cJSON_IsNumber(v) && v->valuedouble > 0, "%s: seconds", what);
            char secs[32];
            snprintf(secs, sizeof secs, "%.1fs", cJSON_IsNumber(v) ? v->valuedouble : 0);
            if ((int)strlen(secs) > max_label) max_label = (int)strlen(secs);
            CHECK((v = item(e, "file")) && cJSON_IsString(v) && !strcmp(v->valuestring, file), "%s: file", what);
            char rel[96];
            snprintf(rel, sizeof rel, "cmp/nested/%s", file);
            CHECK_OK(image_read(tmp(rel), &im[i]));
            if (!im[i].rgb) continue;
            CHECK(im[i].width == 64 && im[i].height == 64, "%s: %dx%d", what, im[i].width, im[i].height);
            /* The same settings through gen: the same pixels, byte for byte. */
            char st[8];
            snprintf(st, sizeof st, "%d", steps[si]);
            rc = tool_run("gen", "-m", model, "-W", "64", "-H", "64", "-s", "7", "-t", "1", "-g", "5",
                          "-n", "blurry", "--steps", st, "--scheduler", names[k], "-o", tmp("gen.png"),
                          "-q", "a photo of a cat", NULL);
            sd_image g = {0};
            CHECK(rc == 0 && image_read(tmp("gen.png"), &g) == SD_OK, "gen %s: %s", what, tool_output);
            int same = g.rgb && g.width == 64 && g.height == 64 && !memcmp(g.rgb, im[i].rgb, 64 * 64 * 3);
            printf("%s %s: %s the pixels of a separate gen run\n", same ? "ok  " : "FAIL", what,
                   same ? "same as" : "differs from");
            CHECK(same, "%s: sd-compare and gen differ", what);
            image_free(&g);
            double want = file_diff(&im[i], &im[0]);
            v = item(e, "mean_abs_diff");
            CHECK(cJSON_IsNumber(v) && fabs(v->valuedouble - want) < 1e-9,
                  "%s: mean_abs_diff %g, recomputed %g", what, cJSON_IsNumber(v) ? v->valuedouble : -1, want);
            CHECK(i == 0 || want > 0, "%s: differs from the first image", what);
        }
    /* The grid: documented geometry at scale 1 (pad 4, line 11, 3 label lines, a title). */
    sd_image grid = {0};
    CHECK_OK(image_read(tmp("cmp/nested/grid.png"), &grid));
    const int pad = 4, line = 11, cell_w = max_label * 6 > 64 ? max_label * 6 : 64;
    const int row_h = 3 * line + 64 + pad, want_w = pad + 3 * (cell_w + pad),
              want_h = pad + line + 2 * row_h;
    CHECK(grid.width == want_w && grid.height == want_h, "grid %dx%d, want %dx%d", grid.width,
          grid.height, want_w, want_h);
    if (grid.width == want_w && grid.height == want_h) {
        int misplaced = 0;
        for (int i = 0; i < 6; i++) {
            if (!im[i].rgb) continue;
            const int x = pad + (i % 3) * (cell_w + pad) + (cell_w - 64) / 2;
            const int y = pad + line + (i / 3) * row_h + 3 * line;
            for (int r = 0; r < 64; r++)
                misplaced += memcmp(grid.rgb + ((size_t)(y + r) * grid.width + x) * 3,
                                    im[i].rgb + (size_t)r * 64 * 3, 64 * 3) != 0;
        }
        CHECK(misplaced == 0, "grid: every image in its cell (%d rows differ)", misplaced);
    }
    image_free(&grid);
    for (int i = 0; i < 6; i++) image_free(&im[i]);
    cJSON_Delete(rep);
}

/* One step count: no suffix in the names; class names work as well as aliases. */
static void test_single_steps(void) {
    const char *out = tmp("single");
    int rc = tool_run("sd-compare", "-m", model, "-W", "64", "-H", "64", "-s", "1", "-t", "1",
                      "--steps", "1", "--schedulers", "DDIMScheduler,euler", "-o", out, "-q", "x", NULL);
    CHECK(rc == 0, "single step count: exit %d: %s", rc, tool_output);
    CHECK(sd_file_exists(tmp("single/DDIMScheduler.png")) && sd_file_exists(tmp("single/euler.png")) &&
          sd_file_exists(tmp("single/grid.png")), "single step count: files without a suffix");
}

/* The library side of "encode once": the counter moves only when a text is new. */
static void test_stats(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, model, NULL));
    if (!p) return;
    sd_stats st;
    sd_pipeline_stats(p, &st);
    CHECK(st.text_encoder_calls == 0, "no encodes after loading (%ld)", st.text_encoder_calls);
    const char *scheds[3] = {"euler", "ddim", "heun"};
    for (int i = 0; i < 3; i++) {
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = "a red bicycle";
        g.width = g.height = 64;
        g.steps = 1;
        g.scheduler = scheds[i];
        sd_result r;
        CHECK_OK(sd_generate(p, &g, &r));
        sd_result_free(&r);
        sd_pipeline_stats(p, &st);
        CHECK(st.text_encoder_calls == 2, "after %d generations: %ld encodes, want 2 (prompt and "
              "\"\")", i + 1, st.text_encoder_calls);
    }
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a blue bicycle";
    g.width = g.height = 64;
    g.steps = 1;
    sd_result r;
    CHECK_OK(sd_generate(p, &g, &r));
    sd_result_free(&r);
    sd_pipeline_stats(p, &st);
    CHECK(st.text_encoder_calls == 3, "a new prompt is encoded, \"\" is not: %ld", st.text_encoder_calls);
    sd_pipeline_free(p);
}

static void test_refusals(void) {
    const char *out = tmp("refused");
    int rc;
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler,nosuch", "-o", out, "x", NULL);
    expect_refused("unknown scheduler", rc, "nosuch", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "", "-o", out, "x", NULL);
    expect_refused("empty list", rc, "--schedulers", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler,,heun", "-o", out, "x", NULL);
    expect_refused("empty item", rc, "empty", out);
    rc = tool_run("sd-compare", "-m", model, "-o", out, "x", NULL);
    expect_refused("no --schedulers", rc, "--schedulers", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler,EULER", "-o", out, "x", NULL);
    expect_refused("listed twice", rc, "twice", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler", "--steps", "2,x", "-o", out, "x", NULL);
    expect_refused("bad step count", rc, "'x'", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler", "--steps", "0", "-o", out, "x", NULL);
    expect_refused("zero steps", rc, "'0'", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler,ddim", "--scheduler-opt",
                  "use_karras_sigmas=true", "-o", out, "x", NULL);
    expect_refused("option one scheduler lacks", rc, "DDIMScheduler has no option 'use_karras_sigmas'", out);
    rc = tool_run("sd-compare", "-m", model, "--scheduler", "euler", "-o", out, "x", NULL);
    expect_refused("--scheduler instead of --schedulers", rc, "--schedulers", out);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler", "--save-latents", "l.st", "-o", out, "x", NULL);
    expect_refused("--save-latents", rc, "--save-latents", out);
    rc = tool_run("sd-compare", "-m", tmp("no-such-model"), "--schedulers", "euler", "-o", out, "x", NULL);
    CHECK(rc == 1 && strstr(tool_output, "no-such-model") && !sd_dir_exists(out),
          "missing model: exit %d: %s", rc, tool_output);
    rc = tool_run("sd-compare", "-m", model, "--schedulers", "euler", "--init-image",
                  tmp("no-such.png"), "-o", out, "x", NULL);
    CHECK(rc == 1 && strstr(tool_output, "no-such.png") && !sd_dir_exists(out),
          "unreadable init image: exit %d, nothing created: %s", rc, tool_output);
    rc = tool_run("sd-compare", "--schedulers", "help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "EulerAncestralDiscreteScheduler") && strstr(tool_output, "dpm++2m"),
          "--schedulers help lists the schedulers: %s", tool_output);
    rc = tool_run("sd-compare", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--schedulers") && strstr(tool_output, "--steps LIST") &&
          strstr(tool_output, "--guidance"), "--help shows its options and gen's");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-compare-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    unsetenv("SD_MODEL");
    test_comparison();
    test_single_steps();
    test_stats();
    test_refusals();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
