/* End to end through the library: every text-to-image run recorded in sd15-tiny/expected and
 * sd2v-tiny/expected is generated again with the run's settings, and every intermediate the
 * fixture holds is compared as it is produced: prompt embeddings (rel. L2 < 1e-5), each denoiser
 * input and output and the latents after each step (< 1e-4, trajectory tolerance), the final
 * 8-bit pixels (within one level on >= 99.9% of values, never more than two apart).
 *
 * One caveat, measured rather than assumed: a run can amplify float32 rounding exponentially (the
 * sd15 ddim run, clip_sample with guidance 5, doubles any difference at every step: perturbing
 * its initial noise by 1e-7 moves its end state by ~2e-4 in our own pipeline). No float32
 * implementation that is not bit-identical to torch can follow such a run to 1e-4. For a run whose
 * error exceeds 1e-4 the test therefore measures that sensitivity (the same run from noise
 * perturbed by 1e-7 relative) and accepts at most 4x the divergence the run shows against itself;
 * a real defect (a wrong coefficient, a missing term) gives errors orders of magnitude above it. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "test.h"

typedef struct {
    const char *file; /* fixture-relative .safetensors */
    float *model_inputs, *model_outputs, *latents_steps, *prompt_embeds, *negative_embeds;
    int64_t in_shape[8], lat_shape[8];
    int n_calls, n_steps;
    double worst_embed, worst_in, worst_out, worst_lat;
    int events_seen;
    /* Recorded tensors hold the calls that ran, in order: an img2img run starts at a later call
     * index, so events are matched by their position, not by their index. */
    int inputs_seen, outputs_seen, steps_seen;
    float *own_steps; /* our latents after each step, NCHW, for the sensitivity measurement */
} run_check;

/* NHWC event tensor -> NCHW, compared with the k-th slice of a recorded [K][B][C][H][W] tensor. */
static double compare_slice(const sd_tensor *t, const float *rec, int k) {
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float *nchw = malloc(n * sizeof *nchw);
    nhwc_to_nchw(t->data, nchw, t->batch, t->h, t->w, t->c);
    double e = rel_l2(nchw, rec + (size_t)k * n, n);
    free(nchw);
    return e;
}

static void on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    rc->events_seen++;
    double e;
    switch (ev->kind) {
    case SD_EVENT_PROMPT_EMBEDS:
    case SD_EVENT_NEGATIVE_EMBEDS: {
        const float *want = ev->kind == SD_EVENT_PROMPT_EMBEDS ? rc->prompt_embeds : rc->negative_embeds;
        if (!want) return;
        e = rel_l2(ev->tensor.data, want, (size_t)ev->tensor.h * ev->tensor.c);
        if (e > rc->worst_embed) rc->worst_embed = e;
        return;
    }
    case SD_EVENT_MODEL_INPUT:
        if (!rc->model_inputs) return;
        if (rc->inputs_seen >= rc->n_calls) break;
        e = compare_slice(&ev->tensor, rc->model_inputs, rc->inputs_seen++);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d t=%g input err %.3g\n", ev->index, ev->timestep, e);
        if (e > rc->worst_in) rc->worst_in = e;
        return;
    case SD_EVENT_MODEL_OUTPUT:
        if (!rc->model_outputs) return;
        if (rc->outputs_seen >= rc->n_calls) break;
        e = compare_slice(&ev->tensor, rc->model_outputs, rc->outputs_seen++);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d output err %.3g\n", ev->index, e);
        if (e > rc->worst_out) rc->worst_out = e;
        return;
    case SD_EVENT_STEP:
        if (rc->steps_seen >= rc->n_steps) break;
        const int k = rc->steps_seen++;
        if (rc->own_steps) {
            size_t n = (size_t)ev->tensor.batch * ev->tensor.h * ev->tensor.w * ev->tensor.c;
            nhwc_to_nchw(ev->tensor.data, rc->own_steps + (size_t)k * n, ev->tensor.batch,
                         ev->tensor.h, ev->tensor.w, ev->tensor.c);
        }
        if (!rc->latents_steps) return; /* a sensitivity run: nothing to compare */
        e = compare_slice(&ev->tensor, rc->latents_steps, k);
        if (e > rc->worst_lat) rc->worst_lat = e;
        return;
    case SD_EVENT_DECODE:
    case SD_EVENT_POOLED_EMBEDS: return;
    }
    rc->worst_in = INFINITY; /* more calls or steps than recorded */
}

/* Compares 8-bit images with the recorded float image (NHWC in [0,1], PNG = round(x * 255)). */
static void check_pixels(const char *name, const sd_result *r, const float *image, int b_count) {
    long total = 0, differ = 0, beyond_one = 0;
    int maxd = 0;
    for (int b = 0; b < b_count; b++) {
        const sd_image *im = &r->images[b];
        size_t n = (size_t)im->width * im->height * 3;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)im->rgb[i] - (int)nearbyintf(image[b * n + i] * 255.0f));
            if (d > maxd) maxd = d;
            differ += d > 0;
            beyond_one += d > 1;
            total++;
        }
    }
    printf("     %s pixels: %ld of %ld values differ (%ld by more than one level), max diff %d\n",
           name, differ, total, beyond_one, maxd);
    CHECK(maxd <= 2 && beyond_one * 1000 <= total, "%s: %ld/%ld pixel values more than one level "
          "apart (max %d)", name, beyond_one, total, maxd);
}

/* The largest relative difference between two recorded trajectories, step by step. */
static double trajectory_divergence(const float *a, const float *b, int steps, size_t per_step) {
    double worst = 0;
    for (int k = 0; k < steps; k++) {
        double e = rel_l2(a + (size_t)k * per_step, b + (size_t)k * per_step, per_step);
        if (e > worst) worst = e;
    }
    return worst;
}

/* How far the run drifts from itself when its initial noise moves by 1e-7 relative: the floor
 * below which no float32 implementation can be expected to follow the recorded trajectory. */
static double run_sensitivity(sd_pipeline *p, const sd_gen_params *base, const float *own_steps,
                              int n_steps, size_t per_step) {
    sd_gen_params g = *base;
    size_t n = per_step; /* latents hold the same count as one step */
    float *noise = malloc(n * sizeof *noise);
    sd_rng rng;
    rng_seed(&rng, g.seed);
    rng_randn(&rng, noise, n);
    for (size_t i = 0; i < n; i++) noise[i] *= 1.0f + 1e-7f * (float)((long)(i * 7919 % 101) - 50) / 50.0f;
    run_check rc = {0};
    rc.n_steps = rc.n_calls = n_steps;
    rc.own_steps = calloc((size_t)n_steps * per_step, sizeof(float));
    g.latents = noise;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    double s = INFINITY;
    if (sd_generate(p, &g, &r) == SD_OK) {
        s = trajectory_divergence(own_steps, rc.own_steps, n_steps, per_step);
        sd_result_free(&r);
    }
    free(rc.own_steps);
    free(noise);
    return s;
}

/* Fixture tensor `prefix + name` (the extra runs share one file, prefixed by run). */
static float *run_tensor(const char *file, const char *prefix, const char *name, int64_t *shape) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return fixture_tensor(file, full, shape, NULL);
}

static int has_tensor(const char *file, const char *prefix, const char *name) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    st_file f;
    int found = 0;
    if (st_open(&f, fixture(file)) == SD_OK) {
        found = st_find(&f, full) != NULL;
        st_close(&f);
    }
    return found;
}

/* Generates one recorded run and compares it as it goes; `name` is for messages, the tensors are
 * `prefix + name` in `st_path`. */
static void check_run(sd_pipeline *p, const char *name, fixture_run *fr, const char *st_path,
                      const char *prefix) {
    sd_gen_params g = fr->g;

    run_check rc = {0};
    rc.file = st_path;
    rc.model_inputs = run_tensor(st_path, prefix, "model_inputs", rc.in_shape);
    rc.model_outputs = run_tensor(st_path, prefix, "model_outputs", NULL);
    rc.latents_steps = run_tensor(st_path, prefix, "latents_steps", rc.lat_shape);
    rc.n_calls = (int)rc.in_shape[0];
    rc.n_steps = (int)rc.lat_shape[0];
    const size_t per_step = (size_t)rc.lat_shape[1] * rc.lat_shape[2] * rc.lat_shape[3] * rc.lat_shape[4];
    rc.own_steps = calloc((size_t)rc.n_steps * per_step, sizeof(float));
    /* Not every run records embeddings (sd2v euler_v_zsnr does not). */
    if (has_tensor(st_path, prefix, "prompt_embeds"))
        rc.prompt_embeds = run_tensor(st_path, prefix, "prompt_embeds", NULL);
    if (has_tensor(st_path, prefix, "negative_prompt_embeds"))
        rc.negative_embeds = run_tensor(st_path, prefix, "negative_prompt_embeds", NULL);
    /* Runs recorded by the denoiser hook keep its first call's context [uncond; cond] instead. */
    float *context = NULL;
    if (!rc.prompt_embeds && g.batch == 1 && has_tensor(st_path, prefix, "context")) {
        int64_t cs[3];
        context = run_tensor(st_path, prefix, "context", cs);
        if (context && cs[0] == 2) rc.negative_embeds = context, rc.prompt_embeds = context + cs[1] * cs[2];
        else if (context && cs[0] == 1) rc.prompt_embeds = context;
    }
    float *image = run_tensor(st_path, prefix, "image", NULL);
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "%s: %s", name, sd_last_error());
    if (st == SD_OK) {
        double trajectory = rc.worst_in > rc.worst_lat ? rc.worst_in : rc.worst_lat;
        if (rc.worst_out > trajectory) trajectory = rc.worst_out;
        double tol = 1e-4, sensitivity = 0;
        if (trajectory >= tol) {
            sensitivity = run_sensitivity(p, &g, rc.own_steps, rc.n_steps, per_step);
            if (4 * sensitivity > tol) tol = 4 * sensitivity;
        }
        int ok = rc.worst_embed < 1e-5 && trajectory < tol && r.model_calls == rc.n_calls;
        printf("%s %s: %d calls, embeds %.2g, inputs %.2g, outputs %.2g, latents %.2g (tol %.2g", ok ? "ok  " : "FAIL",
               name, r.model_calls, rc.worst_embed, rc.worst_in, rc.worst_out, rc.worst_lat, tol);
        if (sensitivity > 0) printf("; the run's own divergence from 1e-7 noise: %.2g", sensitivity);
        printf(", %.2f s)\n", r.seconds);
        CHECK(ok, "%s: intermediates differ (calls %d, recorded %d)", name, r.model_calls, rc.n_calls);
        CHECK(r.n_images == g.batch, "%s: %d images", name, r.n_images);
        if (image && r.n_images == g.batch) check_pixels(name, &r, image, g.batch);
        sd_result_free(&r);
    }
    free(rc.model_inputs), free(rc.model_outputs), free(rc.latents_steps), free(rc.own_steps);
    if (context) free(context);
    else free(rc.prompt_embeds), free(rc.negative_embeds);
    free(image);
}

static void run_one(sd_pipeline *p, const char *model, const char *run) {
    char st_path[512], name[128];
    snprintf(st_path, sizeof st_path, "%s/expected/%s.safetensors", model, run);
    snprintf(name, sizeof name, "%.20s/%s", model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return;
    check_run(p, name, &fr, st_path, "");
    fixture_run_free(&fr);
}

/* Runs recorded by tools/reference/extra_refs.py: latent sizes that are not multiples of 8, clip
 * skip, DDIM eta > 0 and SDE noise with a batch (noise drawn in the pipeline's order). */
static void extra_runs(sd_pipeline *p, const char *model) {
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fixture("extra/extra_runs.json")));
    if (!c.root) return;
    int seen = 0;
    for (const cJSON *run = c.root->child; run; run = run->next) {
        const cJSON *m = cJSON_GetObjectItem(run, "model");
        if (!cJSON_IsString(m) || strcmp(m->valuestring, model)) continue;
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s.", run->string);
        fixture_run fr;
        fixture_run_from_json(&fr, run);
        check_run(p, run->string, &fr, "extra/extra_runs.safetensors", prefix);
        fixture_run_free(&fr);
        seen++;
    }
    CHECK(seen >= 1, "%d extra runs for %s", seen, model);
    cfg_close(&c);
}

static const char *const sd15_runs[] = {"pndm", "ddim", "euler", "euler_a", "dpmpp2m",
                                        "dpmpp2m_karras", "heun", "unipc", "lcm_nocfg", "batch2"};
static const char *const sd2v_runs[] = {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v",
                                        "euler_v_zsnr"};

int main(void) {
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof sd15_runs / sizeof *sd15_runs; i++) run_one(p, "sd15-tiny", sd15_runs[i]);
        extra_runs(p, "sd15-tiny");
        sd_pipeline_free(p);
    }
    CHECK_OK(sd_pipeline_load(&p, fixture("sd2v-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof sd2v_runs / sizeof *sd2v_runs; i++) run_one(p, "sd2v-tiny", sd2v_runs[i]);
        extra_runs(p, "sd2v-tiny");
        sd_pipeline_free(p);
    }
    /* SD3 with a T5 text_encoder_3 (sd3-tiny plus a T5, recorded by extra_refs.py). */
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3t5-tiny/pipeline"), NULL));
    if (p) {
        extra_runs(p, "sd3t5-tiny");
        sd_pipeline_free(p);
    }
    return test_summary();
}
