/* SDXL image-to-image and inpainting against diffusers' StableDiffusionXLImg2ImgPipeline and
 * StableDiffusionXLInpaintPipeline: tools/reference/extra_refs.py's `sdxl-tiny.img2img` (Euler,
 * strength 0.6, 6 steps, guidance 5) and `sdxl-tiny.inpaint` (Euler, the default strength 0.9999,
 * 6 steps, guidance 5, no negative prompt so force_zeros_for_empty_prompt applies, 4-channel
 * UNet). Through the library with every intermediate compared as it is produced
 * (fixture_check_run: the first call's context [uncond; cond] and pooled text_embeds < 1e-5; each
 * UNet input and output and the latents after each step < 1e-4; the call count, which states
 * get_timesteps with the 0.9999 default; pixels within one level on >= 99.9%, never two apart).
 * The recorded time_ids are checked through the UNet outputs (they shift its added embedding).
 * Then the defaults the SDXL pipelines have and the SD ones do not (strength 0.3 / 0.9999,
 * inpainting guidance 7.5), both runs through bin/gen (pixels of the PNG, strength in its
 * parameters text), and the SDXL-specific errors. */
#include "../pipeline/pipeline_internal.h"
#include "img2img_util.h"

#define EXTRA "extra/extra_runs.safetensors"

static void library_runs(sd_pipeline *p, const cJSON *runs) {
    static const char *const names[] = {"sdxl-tiny.img2img", "sdxl-tiny.inpaint"};
    for (int i = 0; i < 2; i++) {
        const cJSON *run = cJSON_GetObjectItem(runs, names[i]);
        CHECK(run != NULL, "extra_runs.json has no %s", names[i]);
        if (!run) continue;
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s.", names[i]);
        fixture_run fr;
        fixture_run_from_json(&fr, run);
        fixture_check_run(p, names[i], &fr, EXTRA, prefix);
        fixture_run_free(&fr);
    }
}

/* Settings left to the pipeline come back as diffusers' SDXL pipelines default them, and the
 * call count follows: int(steps * strength) steps run. */
static void defaults(sd_pipeline *p, const cJSON *runs) {
    fixture_run fr;
    fixture_run_from_json(&fr, cJSON_GetObjectItem(runs, "sdxl-tiny.inpaint"));
    sd_gen_params g = fr.g;
    sd_result r;
    struct {
        const char *what;
        bool mask;
        int steps, calls;
        double strength, guidance;
    } cases[] = {{"img2img", false, 10, 3, 0.3, 5.0}, {"inpainting", true, 10, 9, 0.9999, 7.5}};
    for (int i = 0; i < 2; i++) {
        g.mask_image = cases[i].mask ? fr.g.mask_image : NULL;
        g.steps = cases[i].steps;
        g.strength = NAN;
        g.guidance = NAN;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "%s defaults: %s", cases[i].what, sd_last_error());
        if (st != SD_OK) continue;
        printf("ok   %s defaults: strength %g, guidance %g, %d of %d steps, %dx%d\n", cases[i].what,
               r.used.strength, r.used.guidance, r.model_calls, cases[i].steps, r.used.width,
               r.used.height);
        CHECK(r.used.strength == cases[i].strength && r.used.guidance == cases[i].guidance &&
                  r.model_calls == cases[i].calls && r.used.width == 128 && r.used.height == 128,
              "%s defaults: strength %g, guidance %g, %d calls, %dx%d", cases[i].what,
              r.used.strength, r.used.guidance, r.model_calls, r.used.width, r.used.height);
        sd_result_free(&r);
    }
    fixture_run_free(&fr);
}

/* A recorded run as a user types it (the inpainting one without --strength: the default); the
 * PNG's pixels against the recorded image. */
static void cli_run(const char *name, const cJSON *run) {
    fixture_run fr;
    fixture_run_from_json(&fr, run);
    const sd_gen_params *g = &fr.g;
    char model[512], seed[32], steps[16], guidance[32], strength[32], image[512], mask[512];
    snprintf(model, sizeof model, "%s", fixture("sdxl-tiny/pipeline"));
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    snprintf(steps, sizeof steps, "%d", g->steps);
    snprintf(guidance, sizeof guidance, "%.17g", g->guidance);
    snprintf(strength, sizeof strength, "%.17g", g->strength);
    snprintf(image, sizeof image, "%s",
             fixture(cJSON_GetObjectItem(run, "image_file")->valuestring));
    const cJSON *mk = cJSON_GetObjectItem(run, "mask_file");
    if (cJSON_IsString(mk)) snprintf(mask, sizeof mask, "%s", fixture(mk->valuestring));
    const char *out = tmp("run.png");
    const char *args[40] = {"-m",           model, "-s",     seed,          "--steps",
                            steps,          "-g",  guidance, "--scheduler", g->scheduler,
                            "--init-image", image, "-o",     out,           "-q"};
    int na = 15;
    if (!isnan(g->strength)) args[na++] = "--strength", args[na++] = strength;
    if (cJSON_IsString(mk)) args[na++] = "--mask", args[na++] = mask;
    if (g->negative_prompt) args[na++] = "-n", args[na++] = g->negative_prompt;
    args[na++] = g->prompt;
    args[na] = NULL;
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "gen %s: exit %d: %s", name, rc, tool_output);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s.image", name);
    int64_t shape[4] = {0};
    float *want = fixture_tensor(EXTRA, prefix, shape, NULL);
    sd_image got = {0};
    if (rc == 0 && want && image_read(out, &got) == SD_OK) {
        CHECK(got.width == shape[2] && got.height == shape[1], "gen %s: %dx%d, recorded %dx%d",
              name, got.width, got.height, (int)shape[2], (int)shape[1]);
        sd_result r = {.images = &got, .n_images = 1};
        char what[160];
        snprintf(what, sizeof what, "gen %s", name);
        if (got.width == shape[2] && got.height == shape[1])
            fixture_check_pixels(what, &r, want, 1);
        char *params = NULL, want_text[64];
        snprintf(want_text, sizeof want_text, "Denoising strength: %g",
                 isnan(g->strength) ? 0.9999 : g->strength);
        CHECK_OK(image_read_png_text(out, "parameters", &params));
        CHECK(params && strstr(params, want_text), "gen %s: parameters '%s' lack '%s'", name,
              params ? params : "", want_text);
        free(params);
    }
    image_free(&got);
    free(want);
    fixture_run_free(&fr);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-img2img-sdxl-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fixture("extra/extra_runs.json")));
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sdxl-tiny/pipeline"), NULL));
    if (p && c.root) {
        library_runs(p, c.root);
        defaults(p, c.root);
    }
    sd_pipeline_free(p);
    if (c.root) {
        cli_run("sdxl-tiny.img2img", cJSON_GetObjectItem(c.root, "sdxl-tiny.img2img"));
        cli_run("sdxl-tiny.inpaint", cJSON_GetObjectItem(c.root, "sdxl-tiny.inpaint"));
    }
    cfg_close(&c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
