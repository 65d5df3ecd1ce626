/* bin/sd-regress and the project's own regression manifest (tests/regress/manifest.json):
 *
 *  - `sd-regress check` passes on the committed goldens at the manifest's tolerance (identical
 *    pixels) with --threads 1 and with --threads 2: any change that moves a pixel fails here, and
 *    the pixels do not depend on the thread count;
 *  - the goldens of cases that repeat a diffusers fixture run (their note names it; the settings
 *    are checked to be the run's) are diffusers' images within the fixture tolerance (one level on
 *    >= 99.9% of values, never more than two), so the goldens are not merely self-consistent;
 *  - a golden carries the generation parameters in its PNG text;
 *  - a tampered golden fails with a heat-map marking the tampered pixels and the render, in the
 *    folder --out names (beside the golden without it), and a non-zero exit; a per-case tolerance
 *    can admit it; a missing golden or a failing render fails that case only;
 *  - bad manifests and command lines exit 2 with one line naming the file and the key. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cli/common/options.h"
#include "../cli/common/regress_manifest.h"
#include "../cli/common/util.h"
#include "../core/fileutil.h"
#include "../core/image.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[256];
static char manifest[512];
/* Where failures of the project's manifest leave their images: the build tree, not tests/. */
static char failures[4096];
static char model_abs[4096]; /* sd15-tiny/pipeline, absolute: manifests in tmp name it */

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
    CHECK(fp != NULL, "cannot write %s", path);
}

/* Every case line of a check starts with "ok" and the summary says n passed. */
static void test_check(const char *threads, int n_cases) {
    int rc =
        tool_run("sd-regress", "check", manifest, "--threads", threads, "--out", failures, NULL);
    char summary[64];
    snprintf(summary, sizeof summary, "%d passed, 0 failed\n", n_cases);
    int lines_ok = 0;
    for (const char *l = tool_output; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        lines_ok += !strncmp(l, "ok   ", 5);
    printf("%s", tool_output);
    CHECK(rc == 0 && lines_ok == n_cases && strstr(tool_output, summary),
          "sd-regress check --threads %s: exit %d, %d ok lines of %d", threads, rc, lines_ok, n_cases);
}

/* Two JSON objects of scalar values hold the same keys and values (in any order). */
static int objects_equal(const cJSON *a, const cJSON *b) {
    if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
    for (const cJSON *e = a->child; e; e = e->next)
        if (!fixture_json_equal(e, cJSON_GetObjectItemCaseSensitive(b, e->string))) return 0;
    return 1;
}

/* The settings of a case equal those of the fixture run its note names; then its golden(s)
 * against the run's image within the fixture tolerance. Returns 1 when the case names a run. */
static int check_against_fixture(const regress_case *c) {
    cJSON *j = cJSON_Parse(c->json);
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(j, "note");
    char model[64], run[64];
    int named = cJSON_IsString(note) &&
                sscanf(note->valuestring, "fixture %63[^/]/expected/%63s", model, run) == 2;
    cJSON_Delete(j);
    if (!named) return 0;
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return 1;
    const sd_gen_params *a = &c->g, *b = &fr.g;
    cJSON *ov = c->scheduler_overrides ? cJSON_Parse(c->scheduler_overrides) : cJSON_CreateObject();
    int same = !strcmp(a->prompt, b->prompt) && !a->negative_prompt == !b->negative_prompt &&
               (!a->negative_prompt || !strcmp(a->negative_prompt, b->negative_prompt)) &&
               a->seed == b->seed && a->steps == b->steps && a->guidance == b->guidance &&
               a->width == b->width && a->height == b->height && a->batch == b->batch &&
               a->guidance_rescale == b->guidance_rescale && a->eta == b->eta &&
               a->clip_skip == b->clip_skip && a->scheduler && !strcmp(a->scheduler, b->scheduler) &&
               objects_equal(ov, fr.overrides);
    cJSON_Delete(ov);
    CHECK(same, "case %s: settings differ from the fixture run %s/%s its note names", c->name, model, run);
    char file[256];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", model, run);
    int64_t shape[8];
    float *want = fixture_tensor(file, "image", shape, NULL); /* [B][H][W][3] in [0, 1] */
    for (int i = 0; want && i < (int)shape[0]; i++) {
        char *path = cli_indexed_path(c->golden, i, (int)shape[0]);
        sd_image got;
        if (image_read(path, &got) != SD_OK) {
            CHECK(0, "%s: %s", path, sd_last_error());
            free(path);
            continue;
        }
        const size_t n = (size_t)got.width * got.height * 3;
        int maxd = 0;
        size_t differ = 0, beyond = 0;
        const int size_ok = got.height == shape[1] && got.width == shape[2];
        for (size_t k = 0; size_ok && k < n; k++) {
            const int ref = (int)rintf(want[(size_t)i * n + k] * 255.0f);
            const int d = abs((int)got.rgb[k] - ref);
            differ += d > 0, beyond += d > 1;
            if (d > maxd) maxd = d;
        }
        const int ok = size_ok && beyond * 1000 <= n && maxd <= 2;
        printf("%s golden %s vs diffusers %s/%s image %d: %zu of %zu values differ (%zu by more "
               "than one), max %d\n", ok ? "ok  " : "FAIL", path, model, run, i, differ, n, beyond, maxd);
        CHECK(ok, "golden %s is not diffusers' image of %s/%s", path, model, run);
        image_free(&got);
        free(path);
    }
    free(want);
    fixture_run_free(&fr);
    return 1;
}

static void test_manifest(void) {
    regress_manifest m;
    sd_status st = regress_manifest_load(&m, manifest);
    CHECK(st == SD_OK, "%s: %s", manifest, cli_error());
    if (st != SD_OK) return;
    /* The checks above mean "identical pixels" only while the tolerance says so. */
    int exact = 1, with_fixture = 0, models[2] = {0, 0};
    for (int i = 0; i < m.n_cases; i++) {
        const regress_case *c = &m.cases[i];
        exact &= c->tol.max_abs == 0 && isnan(c->tol.max_mean) && isnan(c->tol.min_psnr);
        models[0] += strstr(c->model, "sd15-tiny") != NULL;
        models[1] += strstr(c->model, "sd2v-tiny") != NULL;
        with_fixture += check_against_fixture(c);
    }
    CHECK(exact, "every case of %s is held to identical pixels", manifest);
    CHECK(models[0] >= 3 && models[1] >= 2 && with_fixture >= 5,
          "the manifest covers sd15-tiny (%d cases) and sd2v-tiny (%d), %d tied to fixture runs",
          models[0], models[1], with_fixture);

    test_check("1", m.n_cases);
    test_check("2", m.n_cases);

    char *text = NULL;
    const regress_case *c0 = &m.cases[0];
    CHECK_OK(image_read_png_text(c0->golden, "parameters", &text));
    char seed[64];
    snprintf(seed, sizeof seed, "Seed: %llu,", (unsigned long long)c0->g.seed);
    CHECK(text && strstr(text, c0->g.prompt) && strstr(text, seed) && strstr(text, "Steps: ") &&
              strstr(text, "Sampler: "),
          "golden %s: parameters text: %s", c0->golden, text ? text : "(none)");
    free(text);
    regress_manifest_free(&m);
}

/* A manifest in tmp with one case; `extra` adds keys to the case. */
static void write_manifest(const char *name, const char *extra) {
    char *text = sd_strfmt(
        "{\"cases\": [{\"name\": \"tiny\", \"model\": \"%s\", \"prompt\": \"a lighthouse\", "
        "\"seed\": 3, \"steps\": 2, \"width\": 64, \"height\": 64%s%s}]}",
        model_abs, extra ? ", " : "", extra ? extra : "");
    write_text(tmp(name), text);
    free(text);
}

static void test_tampered(void) {
    write_manifest("t.json", NULL);
    int rc = tool_run("sd-regress", "record", tmp("t.json"), NULL);
    CHECK(rc == 0 && strstr(tool_output, "1 recorded, 0 failed"), "record: exit %d: %s", rc, tool_output);
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 0 && strstr(tool_output, "1 passed, 0 failed"), "check after record: exit %d: %s", rc,
          tool_output);

    /* Tamper: one value off by 5 at (10, 20), a row of values off by 1 at y = 40. */
    const char *golden = tmp("golden/tiny.png");
    sd_image orig, img;
    CHECK_OK(image_read(golden, &orig));
    CHECK_OK(image_read(golden, &img));
    if (!orig.rgb || !img.rgb) return;
    uint8_t *p = img.rgb + ((size_t)20 * img.width + 10) * 3 + 1;
    *p = (uint8_t)(*p >= 128 ? *p - 5 : *p + 5);
    for (int x = 30; x < 40; x++) {
        p = img.rgb + ((size_t)40 * img.width + x) * 3;
        *p = (uint8_t)(*p ? *p - 1 : 1);
    }
    CHECK_OK(image_write(golden, &img, NULL, 0, 90));
    /* --out: the failure images go there (a folder made on demand), none beside the golden. */
    char out[600], out_diff[700], out_actual[700];
    snprintf(out, sizeof out, "%s", tmp("failures/nested"));
    snprintf(out_diff, sizeof out_diff, "%s/tiny.diff.png", out);
    snprintf(out_actual, sizeof out_actual, "%s/tiny.actual.png", out);
    rc = tool_run("sd-regress", "check", tmp("t.json"), "--out", out, NULL);
    printf("%s", tool_output);
    CHECK(rc == 1 && strstr(tool_output, "FAIL tiny: max 5,") &&
              strstr(tool_output, "0 passed, 1 failed") && strstr(tool_output, out_diff) &&
              strstr(tool_output, out_actual),
          "tampered golden: exit %d: %s", rc, tool_output);
    CHECK(!sd_file_exists(tmp("golden/tiny.diff.png")) &&
              !sd_file_exists(tmp("golden/tiny.actual.png")),
          "with --out nothing is written beside the golden");
    sd_image heat, actual;
    if (image_read(out_diff, &heat) == SD_OK) {
        const uint8_t *h5 = heat.rgb + ((size_t)20 * heat.width + 10) * 3;
        const uint8_t *h1 = heat.rgb + ((size_t)40 * heat.width + 35) * 3;
        const uint8_t *h0 = heat.rgb + ((size_t)5 * heat.width + 5) * 3;
        CHECK(heat.width == img.width && heat.height == img.height, "heat-map size");
        CHECK(h5[0] == 255 && h5[1] == 255 && h5[2] == 0, "largest difference is yellow: %d %d %d", h5[0], h5[1], h5[2]);
        CHECK(h1[0] == 128 && h1[1] == 0 && h1[2] == 0, "a difference of 1 is dark red: %d %d %d", h1[0], h1[1], h1[2]);
        CHECK(h0[0] == h0[1] && h0[1] == h0[2] && h0[0] < 64, "agreement is dim grey: %d %d %d", h0[0], h0[1], h0[2]);
        size_t marked = 0;
        for (size_t k = 0; k < (size_t)heat.width * heat.height; k++)
            marked += heat.rgb[k * 3] != heat.rgb[k * 3 + 1] || heat.rgb[k * 3] != heat.rgb[k * 3 + 2];
        CHECK(marked == 11, "the heat-map marks the 11 tampered pixels, not %zu", marked);
        image_free(&heat);
    } else {
        CHECK(0, "no heat-map: %s", sd_last_error());
    }
    CHECK(image_read(out_actual, &actual) == SD_OK &&
              !memcmp(actual.rgb, orig.rgb, (size_t)orig.width * orig.height * 3),
          "the render in --out's folder is the original image");
    image_free(&actual);
    /* Without --out (by hand): beside the golden. */
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 1 && strstr(tool_output, tmp("golden/tiny.diff.png")) &&
              sd_file_exists(tmp("golden/tiny.diff.png")) &&
              sd_file_exists(tmp("golden/tiny.actual.png")),
          "without --out the heat-map and render are beside the golden: %d %s", rc, tool_output);

    /* A case's own tolerance replaces the manifest's; passing removes the stale heat-map and
     * render, where that check would have written them. */
    write_manifest("t.json", "\"tolerance\": {\"max_abs\": 5}");
    rc = tool_run("sd-regress", "check", tmp("t.json"), "--out", out, NULL);
    CHECK(rc == 0 && strstr(tool_output, "ok   tiny: max 5,"), "max_abs 5 admits it: %d %s", rc, tool_output);
    CHECK(!sd_file_exists(out_diff) && !sd_file_exists(out_actual) &&
              sd_file_exists(tmp("golden/tiny.diff.png")),
          "a passing check with --out removes the stale images there (only)");
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 0 && !sd_file_exists(tmp("golden/tiny.diff.png")) &&
              !sd_file_exists(tmp("golden/tiny.actual.png")),
          "a passing check removes the stale images beside the golden: %d %s", rc, tool_output);
    write_manifest("t.json", "\"tolerance\": {\"max_abs\": 5, \"min_psnr\": 100}");
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 1 && strstr(tool_output, "min_psnr 100"), "min_psnr 100 rejects it: %d %s", rc, tool_output);
    write_manifest("t.json", "\"tolerance\": {\"max_mean\": 0.0001}");
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 1, "max_mean 0.0001 rejects it: %d %s", rc, tool_output);
    image_free(&img), image_free(&orig);

    /* No golden: that case fails, pointing at record. A render that fails: that case fails. */
    write_manifest("t.json", "\"golden\": \"elsewhere/none.png\"");
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 1 && strstr(tool_output, "no golden") && strstr(tool_output, "elsewhere/none.png"),
          "missing golden: %d %s", rc, tool_output);
    write_manifest("t.json", "\"scheduler\": \"NoSuchScheduler\"");
    rc = tool_run("sd-regress", "check", tmp("t.json"), NULL);
    CHECK(rc == 1 && strstr(tool_output, "FAIL tiny:") && strstr(tool_output, "NoSuchScheduler"),
          "failing render: %d %s", rc, tool_output);
}

/* exit 2 and one line containing each needle */
static void expect_bad(const char *what, const char *text, const char *needle, const char *needle2) {
    if (text) write_text(tmp("bad.json"), text);
    int rc = tool_run("sd-regress", "check", tmp("bad.json"), NULL);
    CHECK(rc == 2 && tool_output_lines() == 1 && strstr(tool_output, needle) &&
              (!needle2 || strstr(tool_output, needle2)),
          "%s: exit %d, output: %s", what, rc, tool_output);
}

static void test_bad_manifests(void) {
    const char *case_ok = "\"name\": \"a\", \"model\": \"m\", \"prompt\": \"p\"";
    char buf[1024];
    expect_bad("invalid JSON", "{\"cases\": [\n{\"name\": \"a\",,}]}", "bad.json", "line 2");
    expect_bad("no cases", "{\"cases\": []}", "bad.json", "'cases'");
    snprintf(buf, sizeof buf, "{\"cases\": [{%s, \"stpes\": 8}]}", case_ok);
    expect_bad("misspelt key", buf, "'stpes'", "cases[0] \"a\"");
    snprintf(buf, sizeof buf, "{\"cases\": [{%s, \"steps\": \"8\"}]}", case_ok);
    expect_bad("steps as a string", buf, "'steps'", "integer");
    expect_bad("no prompt", "{\"cases\": [{\"name\": \"a\", \"model\": \"m\"}]}", "'prompt' is missing", NULL);
    snprintf(buf, sizeof buf, "{\"tolerance\": {\"max_abs\": -1}, \"cases\": [{%s}]}", case_ok);
    expect_bad("negative tolerance", buf, "tolerance.max_abs", NULL);
    snprintf(buf, sizeof buf, "{\"cases\": [{%s, \"tolerance\": {\"max_diff\": 1}}]}", case_ok);
    expect_bad("unknown tolerance", buf, "tolerance.max_diff", NULL);
    snprintf(buf, sizeof buf, "{\"cases\": [{%s}, {%s}]}", case_ok, case_ok);
    expect_bad("repeated name", buf, "cases[1] \"a\"", "'name'");
    snprintf(buf, sizeof buf, "{\"cases\": [{%s, \"golden\": \"g.jpg\"}]}", case_ok);
    expect_bad("JPEG golden", buf, "'golden'", ".png");
    snprintf(buf, sizeof buf, "{\"defaults\": {\"name\": \"x\"}, \"cases\": [{%s}]}", case_ok);
    expect_bad("name in defaults", buf, "defaults", "'name'");
    snprintf(buf, sizeof buf, "{\"case\": [{%s}]}", case_ok);
    expect_bad("unknown top-level key", buf, "'case'", NULL);
    snprintf(buf, sizeof buf, "{\"cases\": [{%s, \"seed\": -3}]}", case_ok);
    expect_bad("negative seed", buf, "'seed'", NULL);

    int rc = tool_run("sd-regress", "check", tmp("no-such.json"), NULL);
    CHECK(rc == 2 && strstr(tool_output, "no-such.json"), "missing manifest: %d %s", rc, tool_output);
    rc = tool_run("sd-regress", "verify", manifest, NULL);
    CHECK(rc == 2 && tool_output_lines() == 1, "unknown command: %d %s", rc, tool_output);
    rc = tool_run("sd-regress", "check", manifest, "--threads", "x", NULL);
    CHECK(rc == 2 && strstr(tool_output, "--threads"), "bad --threads: %d %s", rc, tool_output);
    rc = tool_run("sd-regress", "check", manifest, "--only", "no-such-case", NULL);
    CHECK(rc == 2 && strstr(tool_output, "no-such-case"), "--only unknown: %d %s", rc, tool_output);
    rc = tool_run("sd-regress", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "record") && strstr(tool_output, "--threads") &&
              strstr(tool_output, "--out") && strstr(tool_output, "max_abs") &&
              strstr(tool_output, "scheduler_opts"),
          "--help");
    rc = tool_run("sd-regress", "check", manifest, "--out", NULL);
    CHECK(rc == 2 && strstr(tool_output, "--out"), "--out without a folder: %d %s", rc,
          tool_output);
    rc = tool_run("sd-regress", "--version", NULL);
    CHECK(rc == 0 && strstr(tool_output, "sd-regress "), "--version: %s", tool_output);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-regress-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    snprintf(manifest, sizeof manifest, "%s", fixture("../regress/manifest.json"));
    snprintf(failures, sizeof failures, "%s", test_output_dir("regress-failures"));
    if (!realpath(fixture("sd15-tiny/pipeline"), model_abs)) CHECK(0, "no sd15-tiny fixture");
    test_manifest();
    test_tampered();
    test_bad_manifests();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
