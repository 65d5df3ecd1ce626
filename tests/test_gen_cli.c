/* bin/gen as a user runs it: every recorded text-to-image run reproduced through the binary
 * (pixels of the written PNG against the fixture's PNG, latents written by --save-latents against
 * the recorded final latents), --print-tokens, batches, JPEG output, and the bad inputs the
 * issue lists: each must give a one-line error naming the culprit and a non-zero exit, never a
 * crash, and never damage a file the user already has. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* The command failed cleanly: exit status 1 or 2, one line of error text containing `needle`. */
static void expect_error(const char *what, int rc, const char *needle) {
    int lines = 0;
    for (const char *c = tool_output; *c; c++) lines += *c == '\n';
    CHECK(rc == 1 || rc == 2, "%s: exit status %d (output: %s)", what, rc, tool_output);
    CHECK(strstr(tool_output, needle) != NULL, "%s: error '%s' does not mention '%s'", what, tool_output, needle);
    CHECK(lines == 1, "%s: expected a one-line error, got %d lines: %s", what, lines, tool_output);
}

/* Returns how many 8-bit values differ (-1 when unreadable or of another size); sets the largest
 * difference and the number of values compared. */
static int compare_png(const char *got_path, const char *want_rel, int *maxd_out, int *total,
                       int *beyond_one) {
    sd_image got, want;
    int differ = -1;
    if (image_read(got_path, &got) != SD_OK) return -1;
    if (image_read(fixture(want_rel), &want) == SD_OK) {
        if (got.width == want.width && got.height == want.height) {
            differ = 0;
            int maxd = 0;
            for (size_t i = 0; i < (size_t)got.width * got.height * 3; i++) {
                int d = abs((int)got.rgb[i] - want.rgb[i]);
                differ += d > 0;
                *beyond_one += d > 1;
                if (d > maxd) maxd = d;
            }
            *maxd_out = maxd;
            *total = got.width * got.height * 3;
        }
        image_free(&want);
    }
    image_free(&got);
    return differ;
}

/* One recorded run through bin/gen: its PNG against the fixture's (the rule: within one
 * level on >= 99.9% of values, never more than two apart), and the latents it saves against the
 * same settings run in this process through the library, which must be identical: the binary
 * passes every setting through exactly. test_pipeline checks the library against the fixture. */
static void reproduce_run(sd_pipeline *lib, const char *model, const char *run) {
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return;
    const sd_gen_params *g = &fr.g;
    char model_dir[512], seed[32], steps[16], guidance[32], w[16], h[16], batch[16], rescale[32];
    snprintf(model_dir, sizeof model_dir, "%s/pipeline", fixture(model));
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    snprintf(steps, sizeof steps, "%d", g->steps);
    snprintf(guidance, sizeof guidance, "%.17g", g->guidance);
    snprintf(w, sizeof w, "%d", g->width);
    snprintf(h, sizeof h, "%d", g->height);
    snprintf(batch, sizeof batch, "%d", g->batch);
    snprintf(rescale, sizeof rescale, "%.17g", g->guidance_rescale);
    const char *out = tmp("run.png"), *lat = tmp("run.safetensors");
    const char *args[64];
    char *owned[16];
    int na = 0, no = 0;
    const char *fixed[] = {"-m", model_dir, "-s", seed, "--steps", steps, "-g", guidance, "-W", w,
                           "-H", h, "--batch", batch, "--guidance-rescale", rescale, "--scheduler",
                           g->scheduler, "-o", out, "--save-latents", lat, "-q"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) args[na++] = fixed[i];
    /* The run's scheduler overrides, as a user passes them: --scheduler-opt KEY=VALUE. */
    for (const cJSON *e = fr.overrides->child; e && no < 16; e = e->next) {
        char *value = cJSON_PrintUnformatted(e);
        owned[no++] = sd_strfmt("%s=%s", e->string, value);
        cJSON_free(value);
        args[na++] = "--scheduler-opt";
        args[na++] = owned[no - 1];
    }
    if (g->negative_prompt) args[na++] = "-n", args[na++] = g->negative_prompt;
    char seq[16];
    snprintf(seq, sizeof seq, "%d", g->max_sequence_length);
    if (g->max_sequence_length) args[na++] = "--max-sequence-length", args[na++] = seq;
    args[na++] = g->prompt;
    args[na] = NULL;
    int rc = tool_run_args("gen", args);
    for (int i = 0; i < no; i++) free(owned[i]);
    CHECK(rc == 0, "gen %s/%s: exit %d: %s", model, run, rc, tool_output);
    for (int b = 0; b < g->batch && rc == 0; b++) {
        char name[64], png[256];
        snprintf(name, sizeof name, g->batch > 1 ? "run-%d.png" : "run.png", b);
        snprintf(png, sizeof png, "%s/expected/%s-%d.png", model, run, b);
        int beyond_one = 0, maxd = 99, total = 0, differ = compare_png(tmp(name), png, &maxd, &total, &beyond_one);
        int ok = differ >= 0 && beyond_one * 1000 <= total && maxd <= 2;
        printf("%s gen %s/%s image %d: %d of %d pixel values differ from the fixture PNG (%d by "
               "more than one), max %d\n", ok ? "ok  " : "FAIL", model, run, b, differ, total,
               beyond_one, maxd);
        CHECK(ok, "gen %s/%s image %d: %d values differ, max %d", model, run, b, differ, maxd);
    }
    sd_result r;
    if (rc == 0 && lib && sd_generate(lib, g, &r) == SD_OK) {
        st_file f;
        CHECK_OK(st_open(&f, lat));
        const st_tensor *t = st_find(&f, "latents");
        size_t n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
        int same = t && t->dtype == ST_F32 && (size_t)st_numel(t) == n && t->ndim == 4 &&
                   t->shape[1] == r.latent_shape[1] && !memcmp(t->data, r.latents, n * sizeof(float));
        CHECK(same, "gen %s/%s: --save-latents differs from the library's run of the same settings",
              model, run);
        st_close(&f);
        sd_result_free(&r);
    } else if (rc == 0) {
        CHECK(0, "library run of %s/%s failed: %s", model, run, sd_last_error());
    }
    fixture_run_free(&fr);
}

static void test_print_tokens(void) {
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s", fixture("sd2v-tiny/pipeline"));
    int rc = tool_run("gen", "-m", model_dir, "--print-tokens", "a photo of a cat", NULL);
    CHECK(rc == 0, "--print-tokens: exit %d: %s", rc, tool_output);
    cJSON *j = cJSON_Parse(tool_output);
    const cJSON *ids = cJSON_GetObjectItem(j, "tokenizer");
    CHECK(cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 77, "--print-tokens: 77 ids under \"tokenizer\": %s", tool_output);
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 77) {
        /* From tokenizer_cases.json: "a photo of a cat", padded with "!" (id 0) in SD2. */
        const int want[8] = {49406, 320, 1125, 539, 320, 2368, 49407, 0};
        int ok = 1;
        for (int i = 0; i < 8; i++) ok &= cJSON_GetArrayItem(ids, i)->valueint == want[i];
        ok &= cJSON_GetArrayItem(ids, 76)->valueint == 0;
        CHECK(ok, "--print-tokens ids: %s", tool_output);
    }
    cJSON_Delete(j);
}

/* Flux: the CLIP ids (77) and the T5 ids (tokenizer_2, padded to Flux's default 512), against
 * the records of the same prompt (sd15-tiny's pndm run for CLIP, same tokenizer files; flux-tiny's
 * flux_dev_like for T5, recorded at max_sequence_length 64). */
static void test_print_tokens_flux(void) {
    const char *prompt = "a photo of an astronaut riding a horse on mars";
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s", fixture("flux-tiny/pipeline"));
    int rc = tool_run("gen", "-m", model_dir, "--print-tokens", prompt, NULL);
    CHECK(rc == 0, "flux --print-tokens: exit %d: %s", rc, tool_output);
    cJSON *j = cJSON_Parse(tool_output);
    const cJSON *clip = cJSON_GetObjectItem(j, "tokenizer"), *t5 = cJSON_GetObjectItem(j, "tokenizer_2");
    int32_t *want_clip = fixture_ids("sd15-tiny/expected/pndm.safetensors", "tokenizer_prompt_ids", NULL, NULL);
    int32_t *want_t5 = fixture_ids("flux-tiny/expected/flux_dev_like.safetensors", "tokenizer_2_prompt_ids", NULL, NULL);
    int ok = cJSON_IsArray(clip) && cJSON_GetArraySize(clip) == 77 && cJSON_IsArray(t5) &&
             cJSON_GetArraySize(t5) == 512 && want_clip && want_t5;
    for (int i = 0; ok && i < 77; i++) ok = cJSON_GetArrayItem(clip, i)->valueint == want_clip[i];
    for (int i = 0; ok && i < 512; i++)
        ok = cJSON_GetArrayItem(t5, i)->valueint == (i < 64 ? want_t5[i] : 0);
    CHECK(ok, "flux --print-tokens: CLIP and T5 ids as recorded: %.300s", tool_output);
    cJSON_Delete(j);
    free(want_clip), free(want_t5);
}

/* A copy of sd15-tiny in tmp that a test may break. */
static const char *copy_model(const char *name) {
    const char *dst = tmp(name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -rL '%s' '%s'", dst, fixture("sd15-tiny/pipeline"), dst);
    CHECK(system(cmd) == 0, "copying the model failed");
    return dst;
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
}

static void test_bad_inputs(void) {
    const char *model = fixture("sd15-tiny/pipeline");
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s", model);
    const char *out = tmp("bad.png");
    int rc;

    rc = tool_run("gen", "-m", tmp("no-such-model"), "-o", out, "x", NULL);
    expect_error("missing model folder", rc, "no-such-model");

    const char *m = copy_model("unsupported");
    char path[600];
    snprintf(path, sizeof path, "%s/model_index.json", m);
    write_text(path, "{\"_class_name\": \"KandinskyPipeline\", \"unet\": [\"diffusers\", \"UNet2DConditionModel\"]}");
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("unsupported pipeline class", rc, "KandinskyPipeline");

    write_text(path, "{\"_class_name\": \"StableDiffusionPipeline\",");
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("bad model_index JSON", rc, "model_index.json");

    m = copy_model("badconfig");
    snprintf(path, sizeof path, "%s/unet/config.json", m);
    write_text(path, "{\"in_channels\": 4, \"block_out_channels\": [16, 16, 32, 32],}");
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("bad unet config JSON", rc, "unet/config.json");

    m = copy_model("truncated");
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", m);
    CHECK(truncate(path, 1000000) == 0, "truncate");
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("truncated safetensors", rc, "diffusion_pytorch_model.safetensors");

    /* A header whose offsets point past the end of the file. */
    m = copy_model("lying");
    snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors", m);
    {
        float x[4] = {0};
        st_entry e = {"decoder.conv_in.weight", ST_F32, 1, {4}, x};
        CHECK_OK(st_write(path, &e, 1, NULL, 0));
        /* rewrite the header's end offset from 16 to 1600 (same length: pad with a space) */
        char *data;
        size_t len;
        CHECK_OK(sd_read_file(path, &data, &len));
        char *at = memmem(data, len, "[0,16]", 6); /* the length prefix holds NUL bytes */
        CHECK(at != NULL, "offsets [0,16] in the header");
        if (at) memcpy(at, "[0,99]", 6); /* same length, so the header stays valid JSON */
        FILE *fp = fopen(path, "wb");
        fwrite(data, 1, len, fp);
        fclose(fp);
        free(data);
    }
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("offsets past the end", rc, "vae");

    /* A tensor of the wrong shape. */
    m = copy_model("wrongshape");
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", m);
    {
        st_file f;
        CHECK_OK(st_open(&f, path));
        st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
        float *bad = calloc(17, sizeof *bad);
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
            memcpy(es[i].shape, t->shape, sizeof t->shape);
            if (!strcmp(t->name, "text_model.final_layer_norm.weight")) {
                es[i].shape[0] = 17;
                es[i].data = bad;
            }
        }
        char *tmp_path = sd_strfmt("%s.new", path);
        CHECK_OK(st_write(tmp_path, es, f.n_tensors, NULL, 0));
        st_close(&f);
        rename(tmp_path, path);
        free(tmp_path), free(es), free(bad);
    }
    rc = tool_run("gen", "-m", m, "-o", out, "x", NULL);
    expect_error("wrong tensor shape", rc, "final_layer_norm.weight");

    rc = tool_run("gen", "-m", model_dir, "--scheduler", "NoSuchScheduler", "-o", out, "x", NULL);
    expect_error("unknown scheduler", rc, "NoSuchScheduler");
    rc = tool_run("gen", "-m", model_dir, "--scheduler-opt", "timestep_spacing=sideways", "--steps", "2", "-o", out, "x", NULL);
    expect_error("bad scheduler option value", rc, "sideways");
    rc = tool_run("gen", "-m", model_dir, "--no-such-flag", "x", NULL);
    expect_error("unknown option", rc, "--no-such-flag");
    rc = tool_run("gen", "-m", model_dir, "-W", "100", "-o", out, "x", NULL);
    expect_error("width not a multiple of 8", rc, "multiple of 8");
    rc = tool_run("gen", "-m", model_dir, "--steps", "0", "-o", out, "x", NULL);
    expect_error("steps 0", rc, "--steps");
    rc = tool_run("gen", "-m", model_dir, "--steps", "abc", "-o", out, "x", NULL);
    expect_error("steps not a number", rc, "abc");
    rc = tool_run("gen", "-m", model_dir, "-o", tmp("out.bmp"), "--steps", "1", "x", NULL);
    expect_error("unsupported output extension", rc, "out.bmp");
    rc = tool_run("gen", "-m", model_dir, "-o", tmp("no-such-dir/out.png"), "--steps", "1", "x", NULL);
    expect_error("output folder missing", rc, "no-such-dir");

    /* An existing file survives a failed run, and a successful one replaces it whole. */
    const char *keep = tmp("keep.png");
    write_text(keep, "precious");
    rc = tool_run("gen", "-m", tmp("no-such-model"), "-o", keep, "x", NULL);
    char *content;
    CHECK(sd_read_file(keep, &content, NULL) == SD_OK && !strcmp(content, "precious"),
          "a failed run left the existing output alone");
    free(content);
    rc = tool_run("gen", "-m", model_dir, "-o", keep, "--steps", "1", "-s", "1", "x", NULL);
    sd_image im;
    CHECK(rc == 0 && image_read(keep, &im) == SD_OK, "overwrite: %s", tool_output);
    if (rc == 0) image_free(&im);
    /* no temporary files left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp-", tmpdir);
    CHECK(system(cmd) != 0, "temporary files left in %s", tmpdir);

    rc = tool_run("gen", "-m", model_dir, NULL);
    expect_error("no prompt", rc, "prompt");
}

/* SD3: both CLIP tokenizers (the second pads with "!", id 0), and T5's ids under tokenizer_3 when
 * the folder has one: sd3-tiny with flux-tiny's T5 tokenizer and encoder added, whose ids for the
 * prompt flux_dev_like recorded (padded to 64; the SD3 default pads to 256). */
static void test_print_tokens_sd3(void) {
    char model_dir[512], fixtures[512], cmd[2048];
    snprintf(model_dir, sizeof model_dir, "%s", fixture("sd3-tiny/pipeline"));
    int rc = tool_run("gen", "-m", model_dir, "--print-tokens", "a photo of a cat", NULL);
    CHECK(rc == 0, "sd3 --print-tokens: exit %d: %s", rc, tool_output);
    cJSON *j = cJSON_Parse(tool_output);
    const cJSON *t1 = cJSON_GetObjectItem(j, "tokenizer"), *t2 = cJSON_GetObjectItem(j, "tokenizer_2");
    const int want[8] = {49406, 320, 1125, 539, 320, 2368, 49407, 49407}; /* then pad: 49407 / 0 */
    int ok = cJSON_GetArraySize(t1) == 77 && cJSON_GetArraySize(t2) == 77 &&
             !cJSON_GetObjectItem(j, "tokenizer_3");
    for (int i = 0; ok && i < 8; i++) {
        ok &= cJSON_GetArrayItem(t1, i)->valueint == want[i];
        ok &= cJSON_GetArrayItem(t2, i)->valueint == (i < 7 ? want[i] : 0);
    }
    CHECK(ok, "sd3 --print-tokens: both CLIP tokenizers, no T5: %.300s", tool_output);
    cJSON_Delete(j);

    const char *dir = tmp("sd3-t5");
    snprintf(fixtures, sizeof fixtures, "%s", fixture("")); /* fixture() reuses one buffer */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -rL '%s/sd3-tiny/pipeline' '%s' && "
             "cp -rL '%s/flux-tiny/pipeline/tokenizer_2' '%s/tokenizer_3' && "
             "cp -rL '%s/flux-tiny/pipeline/text_encoder_2' '%s/text_encoder_3'", dir, fixtures, dir,
             fixtures, dir, fixtures, dir);
    CHECK(system(cmd) == 0, "building %s", dir);
    char mi_path[600], *text = NULL;
    snprintf(mi_path, sizeof mi_path, "%s/model_index.json", dir);
    CHECK_OK(sd_read_file(mi_path, &text, NULL));
    j = text ? cJSON_Parse(text) : NULL;
    free(text);
    const char *t5tok[2] = {"transformers", "T5TokenizerFast"}, *t5[2] = {"transformers", "T5EncoderModel"};
    cJSON_ReplaceItemInObject(j, "tokenizer_3", cJSON_CreateStringArray(t5tok, 2));
    cJSON_ReplaceItemInObject(j, "text_encoder_3", cJSON_CreateStringArray(t5, 2));
    char *mi = cJSON_Print(j);
    write_text(mi_path, mi ? mi : "");
    cJSON_free(mi);
    cJSON_Delete(j);
    const char *prompt = "a photo of an astronaut riding a horse on mars";
    rc = tool_run("gen", "-m", dir, "--print-tokens", prompt, NULL);
    CHECK(rc == 0, "sd3 + T5 --print-tokens: exit %d: %s", rc, tool_output);
    j = cJSON_Parse(tool_output);
    const cJSON *t3 = cJSON_GetObjectItem(j, "tokenizer_3");
    int64_t shape[4] = {0};
    int32_t *rec = fixture_ids("flux-tiny/expected/flux_dev_like.safetensors", "tokenizer_2_prompt_ids",
                               shape, NULL);
    ok = rec && shape[1] == 64 && cJSON_GetArraySize(t3) == 256 && cJSON_GetObjectItem(j, "tokenizer_2");
    for (int i = 0; ok && i < 256; i++) ok &= cJSON_GetArrayItem(t3, i)->valueint == rec[i < 64 ? i : 63];
    CHECK(ok, "sd3 + T5 --print-tokens: 256 tokenizer_3 ids as recorded: %.300s", tool_output);
    free(rec);
    cJSON_Delete(j);
    /* --prompt-3 / --negative-3 reach the library (which refuses this folder's T5 width) */
    rc = tool_run("gen", "-m", dir, "--prompt-3", "x", "--negative-3", "y", "--steps", "1", "-o", tmp("t5.png"), prompt, NULL);
    expect_error("sd3 + 16-wide T5", rc, "text_encoder_3");
}

static void test_no_model_message(void) {
    unsetenv("SD_MODEL");
    int rc = tool_run("gen", "a cat", NULL);
    CHECK(rc == 2 && strstr(tool_output, "SD_MODEL") && strstr(tool_output, "-m"),
          "no model: the message says how to get one: %s", tool_output);
    CHECK(strstr(tool_output, "1.x") != NULL, "no model: the message lists the supported families");
}

static void test_help_version_jpeg_batch(void) {
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s", fixture("sd15-tiny/pipeline"));
    int rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--scheduler") && strstr(tool_output, "--save-latents"), "--help");
    rc = tool_run("gen", "--version", NULL);
    CHECK(rc == 0 && strstr(tool_output, "gen "), "--version: %s", tool_output);
    rc = tool_run("gen", "--scheduler", "help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "EulerDiscreteScheduler") && strstr(tool_output, "DDIMScheduler"),
          "--scheduler help lists schedulers");
    rc = tool_run("gen", "-m", model_dir, "-o", tmp("j.jpg"), "--steps", "2", "-s", "3", "--quality", "95",
                 "-q", "a cat", NULL);
    sd_image im;
    CHECK(rc == 0 && image_read(tmp("j.jpg"), &im) == SD_OK, "JPEG output: %s", tool_output);
    if (rc == 0) {
        CHECK(im.width == 128 && im.height == 128, "JPEG size %dx%d", im.width, im.height);
        image_free(&im);
    }
    rc = tool_run("gen", "-m", model_dir, "-o", tmp("b.png"), "--steps", "2", "-s", "3", "--batch", "2",
                 "-q", "a cat", NULL);
    CHECK(rc == 0 && sd_file_exists(tmp("b-0.png")) && sd_file_exists(tmp("b-1.png")),
          "--batch 2 writes b-0.png and b-1.png: %s", tool_output);
}

static const char *const sd15_runs[] = {"pndm", "ddim", "euler", "euler_a", "dpmpp2m",
                                        "dpmpp2m_karras", "heun", "unipc", "lcm_nocfg", "batch2"};
static const char *const sd2v_runs[] = {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v",
                                        "euler_v_zsnr"};

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-gen-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    sd_pipeline *lib = NULL;
    CHECK_OK(sd_pipeline_load(&lib, fixture("sd15-tiny/pipeline"), NULL));
    for (size_t i = 0; i < sizeof sd15_runs / sizeof *sd15_runs; i++) reproduce_run(lib, "sd15-tiny", sd15_runs[i]);
    sd_pipeline_free(lib);
    lib = NULL;
    CHECK_OK(sd_pipeline_load(&lib, fixture("sd2v-tiny/pipeline"), NULL));
    for (size_t i = 0; i < sizeof sd2v_runs / sizeof *sd2v_runs; i++) reproduce_run(lib, "sd2v-tiny", sd2v_runs[i]);
    sd_pipeline_free(lib);
    lib = NULL;
    CHECK_OK(sd_pipeline_load(&lib, fixture("flux-tiny/pipeline"), NULL));
    reproduce_run(lib, "flux-tiny", "flux_dev_like");
    sd_pipeline_free(lib);
    lib = NULL;
    CHECK_OK(sd_pipeline_load(&lib, fixture("sd3-tiny/pipeline"), NULL));
    reproduce_run(lib, "sd3-tiny", "flow_euler_shift1"); /* shift 1 through --scheduler-opt */
    sd_pipeline_free(lib);
    lib = NULL;
    CHECK_OK(sd_pipeline_load(&lib, fixture("sd35-tiny/pipeline"), NULL));
    reproduce_run(lib, "sd35-tiny", "flow_euler_nonsquare");
    sd_pipeline_free(lib);
    test_print_tokens();
    test_print_tokens_sd3();
    test_print_tokens_flux();
    test_bad_inputs();
    test_no_model_message();
    test_help_version_jpeg_batch();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
