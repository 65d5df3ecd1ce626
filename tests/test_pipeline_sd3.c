/* StableDiffusion3Pipeline end to end through the library: every run recorded in sd3-tiny/expected
 * and sd35-tiny/expected is generated again with the run's settings, and every intermediate the
 * fixture holds is compared as it is produced: token ids of both CLIP tokenizers (exact), prompt
 * embeddings and pooled embeddings (rel. L2 < 1e-5), the timestep of each transformer call
 * (exact), each transformer input and output and the latents after each step (< 1e-4), the final
 * 8-bit pixels (within one level on >= 99.9% of values, never more than two apart).
 *
 * Then two things the recorded runs leave out:
 * - num_images_per_prompt: a batch of 2 from the recorded noise twice gives the recorded image
 *   twice (the [uncond x B; cond x B] context and pooled batches);
 * - use_dynamic_shifting: mu from the image size in patches, as calculate_shift gives it.
 * Prompt routing, T5 and bad settings are in test_sd3_prompts.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../core/config.h"
#include "../pipeline/pipeline_internal.h"
#include "../schedulers/scheduler.h"
#include "test.h"

typedef struct {
    float *prompt_embeds, *negative_embeds, *inputs, *outputs, *steps, *model_timesteps;
    int64_t in_shape[8], lat_shape[8];
    int n_calls, n_steps, bad_timesteps, extra;
    bool repeated;        /* a batch repeating one recorded item: each compared with it */
    double worst_embed, worst_in, worst_out, worst_lat;
} run_check;

/* NHWC tensor -> NCHW, compared with `want` (n floats). */
static double compare_nhwc(const float *data, int b, int h, int w, int c, const float *want) {
    size_t n = (size_t)b * h * w * c;
    float *nchw = malloc(n * sizeof *nchw);
    nhwc_to_nchw(data, nchw, b, h, w, c);
    double e = rel_l2(nchw, want, n);
    free(nchw);
    return e;
}

static void worst(double *w, double e) {
    if (!(e <= *w)) *w = e; /* NaN counts as worst */
}

static int on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    const sd_tensor *t = &ev->tensor;
    const size_t per_call = (size_t)t->batch * t->h * t->w * t->c;
    switch (ev->kind) {
    case SD_EVENT_PROMPT_EMBEDS:
    case SD_EVENT_NEGATIVE_EMBEDS: {
        const float *want = ev->kind == SD_EVENT_PROMPT_EMBEDS ? rc->prompt_embeds : rc->negative_embeds;
        if (want) worst(&rc->worst_embed, rel_l2(t->data, want, (size_t)t->h * t->c));
        return 0;
    }
    case SD_EVENT_POOLED_EMBEDS: /* checked through sd_encode_prompt_sd3 in test_sd3_prompts */
        return 0;
    case SD_EVENT_MODEL_INPUT:
    case SD_EVENT_MODEL_OUTPUT:
        if (ev->index >= rc->n_calls) {
            rc->extra++;
            return 0;
        }
        if ((float)ev->timestep != rc->model_timesteps[ev->index]) rc->bad_timesteps++;
        if (ev->kind == SD_EVENT_MODEL_INPUT && rc->inputs)
            worst(&rc->worst_in, compare_nhwc(t->data, t->batch, t->h, t->w, t->c,
                                              rc->inputs + ev->index * per_call));
        if (ev->kind == SD_EVENT_MODEL_OUTPUT && rc->outputs)
            worst(&rc->worst_out, compare_nhwc(t->data, t->batch, t->h, t->w, t->c,
                                               rc->outputs + ev->index * per_call));
        return 0;
    case SD_EVENT_STEP: {
        if (ev->index >= rc->n_steps) {
            rc->extra++;
            return 0;
        }
        const size_t item = (size_t)t->h * t->w * t->c;
        for (int b = 0; b < t->batch; b++) {
            const float *want = rc->repeated ? rc->steps + ev->index * item
                                             : rc->steps + ev->index * per_call + b * item;
            worst(&rc->worst_lat, compare_nhwc(t->data + b * item, 1, t->h, t->w, t->c, want));
        }
        return 0;
    }
    case SD_EVENT_DECODE: return 0;
    }
    return 0;
}

/* 8-bit images against the recorded float image (NHWC in [0,1]); with same_image, every image
 * against the first recorded one. */
static void check_pixels(const char *name, const sd_result *r, const float *image, bool same_image) {
    long total = 0, differ = 0, beyond_one = 0;
    int maxd = 0;
    for (int b = 0; b < r->n_images; b++) {
        const sd_image *im = &r->images[b];
        size_t n = (size_t)im->width * im->height * 3;
        const float *want = image + (same_image ? 0 : b * n);
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)im->rgb[i] - (int)nearbyintf(want[i] * 255.0f));
            if (d > maxd) maxd = d;
            differ += d > 0;
            beyond_one += d > 1;
            total++;
        }
    }
    printf("     %s pixels: %ld of %ld values differ (%ld by more than one level), max diff %d\n",
           name, differ, total, beyond_one, maxd);
    CHECK(total > 0 && maxd <= 2 && beyond_one * 1000 <= total,
          "%s: %ld/%ld pixel values more than one level apart (max %d)", name, beyond_one, total, maxd);
}

/* The padded ids of both CLIP tokenizers, through the public sd_tokenize_json. */
static void check_tokens(sd_pipeline *p, const char *file, const char *text, const char *which) {
    char *json = NULL;
    CHECK_OK(sd_tokenize_json(p, text, &json));
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    const char *names[2] = {"tokenizer", "tokenizer_2"};
    for (int k = 0; k < 2; k++) {
        char tensor[64], what[128];
        snprintf(tensor, sizeof tensor, "%s_%s_ids", names[k], which);
        int64_t shape[4];
        int32_t *want = fixture_ids(file, tensor, shape, NULL);
        const cJSON *arr = cJSON_GetObjectItem(j, names[k]);
        int n = cJSON_GetArraySize(arr);
        int32_t got[512];
        for (int i = 0; i < n && i < 512; i++) got[i] = cJSON_GetArrayItem(arr, i)->valueint;
        snprintf(what, sizeof what, "%s %s", file, tensor);
        CHECK(want && n == shape[1], "%s: %d ids", what, n);
        if (want && n == shape[1]) check_equal_i32(what, got, want, (size_t)n);
        free(want);
    }
    CHECK(cJSON_GetObjectItem(j, "tokenizer_3") == NULL, "no T5 ids without a T5: %s", json);
    cJSON_Delete(j);
    free(json);
}

/* Pooled (and full) embeddings of a text set through the encode step, against the recorded ones. */
static void check_encode(sd_pipeline *p, const char *file, const char *text, const char *text_2,
                         const char *embeds_name, const char *pooled_name, const char *what) {
    int tokens, width, pd;
    sd_embed_shape_sd3(p, 256, &tokens, &width, &pd);
    float *e = malloc((size_t)tokens * width * sizeof *e), *pooled = malloc((size_t)pd * sizeof *pooled);
    CHECK_OK(sd_encode_prompt_sd3(p, text, text_2, text, 0, 256, e, pooled));
    float *want_e = fixture_tensor(file, embeds_name, NULL, NULL);
    float *want_p = fixture_tensor(file, pooled_name, NULL, NULL);
    char name[256];
    snprintf(name, sizeof name, "%s %s", what, pooled_name);
    if (want_p) check_rel(name, pooled, want_p, (size_t)pd, 1e-5);
    snprintf(name, sizeof name, "%s %s", what, embeds_name);
    if (want_e) check_rel(name, e, want_e, (size_t)tokens * width, 1e-5);
    free(e), free(pooled), free(want_e), free(want_p);
}

static void check_run(sd_pipeline *p, const char *model, const char *run) {
    char file[256], name[128];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", model, run);
    snprintf(name, sizeof name, "%s/%s", model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return;
    sd_gen_params g = fr.g;
    run_check rc = {0};
    rc.inputs = fixture_tensor(file, "model_inputs", rc.in_shape, NULL);
    rc.outputs = fixture_tensor(file, "model_outputs", NULL, NULL);
    rc.steps = fixture_tensor(file, "latents_steps", rc.lat_shape, NULL);
    rc.model_timesteps = fixture_tensor(file, "model_timesteps", NULL, NULL);
    rc.prompt_embeds = fixture_tensor(file, "prompt_embeds", NULL, NULL);
    rc.negative_embeds = fixture_tensor(file, "negative_prompt_embeds", NULL, NULL);
    float *image = fixture_tensor(file, "image", NULL, NULL);
    rc.n_calls = (int)rc.in_shape[0];
    rc.n_steps = (int)rc.lat_shape[0];

    const char *neg = g.negative_prompt ? g.negative_prompt : "";
    check_tokens(p, file, g.prompt, "prompt");
    check_tokens(p, file, neg, "negative");
    check_encode(p, file, g.prompt, g.prompt, "prompt_embeds", "pooled_prompt_embeds", name);
    check_encode(p, file, neg, neg, "negative_prompt_embeds", "negative_pooled_prompt_embeds", name);

    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    sd_status st = rc.inputs && rc.outputs && rc.steps && rc.model_timesteps && image
                       ? sd_generate(p, &g, &r)
                       : SD_ERR_IO;
    CHECK(st == SD_OK, "%s: %s", name, sd_last_error());
    if (st == SD_OK) {
        double traj = fmax(rc.worst_in, fmax(rc.worst_out, rc.worst_lat));
        int ok = rc.worst_embed < 1e-5 && traj < 1e-4 && r.model_calls == rc.n_calls &&
                 !rc.bad_timesteps && !rc.extra;
        printf("%s %s: %d calls, embeds %.2g, inputs %.2g, outputs %.2g, latents %.2g, %d timesteps "
               "differ (%.2f s)\n", ok ? "ok  " : "FAIL", name, r.model_calls, rc.worst_embed,
               rc.worst_in, rc.worst_out, rc.worst_lat, rc.bad_timesteps, r.seconds);
        CHECK(ok, "%s: intermediates differ (calls %d, recorded %d)", name, r.model_calls, rc.n_calls);
        CHECK(r.n_images == 1 && r.latent_shape[1] == 16, "%s: %d images, %d latent channels", name,
              r.n_images, r.latent_shape[1]);
        CHECK(!strcmp(r.scheduler_class, "FlowMatchEulerDiscreteScheduler"), "%s: scheduler %s",
              name, r.scheduler_class);
        if (r.n_images == 1) check_pixels(name, &r, image, false);
        /* the NCHW latents handed back are the last step's */
        const size_t nl = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] *
                          r.latent_shape[3];
        snprintf(name + strlen(name), sizeof name - strlen(name), " final latents");
        if (r.latents) check_rel(name, r.latents, rc.steps + (size_t)(rc.n_steps - 1) * nl, nl, 1e-4);
        sd_result_free(&r);
    }
    free(rc.inputs), free(rc.outputs), free(rc.steps), free(rc.model_timesteps);
    free(rc.prompt_embeds), free(rc.negative_embeds), free(image);
    fixture_run_free(&fr);
}

/* num_images_per_prompt = 2 from the recorded initial noise twice (as diffusers' `latents=`): both
 * items must follow the recorded single-image run, which needs each half of the CFG batch to hold
 * its own copies of the context and pooled rows, in the order [uncond x 2; cond x 2]. */
static void check_batch(sd_pipeline *p, const char *model, const char *run) {
    char file[256], name[160];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", model, run);
    snprintf(name, sizeof name, "%s/%s as a batch of 2", model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return;
    run_check rc = {0};
    int64_t in_shape[8];
    float *inputs = fixture_tensor(file, "model_inputs", in_shape, NULL);
    rc.steps = fixture_tensor(file, "latents_steps", rc.lat_shape, NULL);
    rc.model_timesteps = fixture_tensor(file, "model_timesteps", NULL, NULL);
    float *image = fixture_tensor(file, "image", NULL, NULL);
    rc.n_calls = (int)in_shape[0];
    rc.n_steps = (int)rc.lat_shape[0];
    rc.repeated = true;
    if (inputs && rc.steps && rc.model_timesteps && image) {
        /* call 0's first half is the initial noise: flow matching neither scales it nor the input */
        const size_t item = (size_t)in_shape[2] * in_shape[3] * in_shape[4];
        float *noise = malloc(2 * item * sizeof *noise);
        memcpy(noise, inputs, item * sizeof *noise);
        memcpy(noise + item, inputs, item * sizeof *noise);
        sd_gen_params g = fr.g;
        g.batch = 2;
        g.latents = noise;
        g.on_event = on_event;
        g.user = &rc;
        sd_result r;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "%s: %s", name, sd_last_error());
        if (st == SD_OK) {
            int ok = rc.worst_lat < 1e-4 && r.n_images == 2 && !rc.bad_timesteps && !rc.extra;
            printf("%s %s: latents %.2g against the recorded run, %d images\n", ok ? "ok  " : "FAIL",
                   name, rc.worst_lat, r.n_images);
            CHECK(ok, "%s: latents %.3g, %d images", name, rc.worst_lat, r.n_images);
            if (r.n_images == 2) check_pixels(name, &r, image, true);
            sd_result_free(&r);
        }
        free(noise);
    }
    free(inputs), free(rc.steps), free(rc.model_timesteps), free(image);
    fixture_run_free(&fr);
}

typedef struct {
    double t[16];
    int n;
} timestep_capture;

static int capture_timesteps(void *user, const sd_event *ev) {
    timestep_capture *c = user;
    if (ev->kind == SD_EVENT_MODEL_INPUT && c->n < 16) c->t[c->n++] = ev->timestep;
    return 0;
}

/* use_dynamic_shifting: the pipeline computes mu with calculate_shift from the image sequence
 * length in patches ((128/8/2) * (192/8/2) = 96 here) and the scheduler config (base 256 -> 0.5,
 * max 4096 -> 1.15); the transformer must be called at the timesteps of a scheduler given that mu. */
static void check_dynamic_shift(sd_pipeline *p) {
    const char *ov_text = "{\"use_dynamic_shifting\": true}";
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x";
    g.steps = 4;
    g.guidance = 1;
    g.width = 192;
    g.height = 128;
    g.scheduler_overrides = ov_text;
    timestep_capture got = {0};
    g.on_event = capture_timesteps;
    g.user = &got;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "dynamic shifting run: %s", sd_last_error());
    if (st == SD_OK) sd_result_free(&r);

    const double m = (1.15 - 0.5) / (4096 - 256), mu = 96 * m + (0.5 - m * 256);
    sd_cfg c;
    cJSON *ov = cJSON_Parse(ov_text);
    sd_scheduler *s = NULL;
    CHECK_OK(cfg_open(&c, fixture("sd3-tiny/pipeline/scheduler/scheduler_config.json")));
    CHECK_OK(sched_create(&s, NULL, c.root, ov));
    sched_timestep_opts o = {.has_mu = true, .mu = mu};
    if (s) CHECK_OK(sched_set_timesteps(s, 4, &o));
    int same = s && got.n == 4 && sched_len(s) == 4;
    for (int i = 0; same && i < 4; i++) same = got.t[i] == sched_timestep(s, i);
    CHECK(same, "dynamic shifting: timesteps %g %g %g %g, want those of mu = %.6f", got.t[0],
          got.t[1], got.t[2], got.t[3], mu);
    if (same) printf("ok   dynamic shifting: mu %.6f from 96 patches, timesteps %g ... %g\n", mu,
                     got.t[0], got.t[3]);
    if (s) sched_free(s);
    cJSON_Delete(ov);
    cfg_close(&c);
}

static const char *const runs[] = {"flow_euler", "flow_euler_nonsquare", "flow_euler_shift1",
                                   "flow_nocfg"};

int main(void) {
    const char *models[] = {"sd3-tiny", "sd35-tiny"};
    for (int m = 0; m < 2; m++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/pipeline", models[m]);
        sd_pipeline *p = NULL;
        CHECK_OK(sd_pipeline_load(&p, fixture(dir), NULL));
        if (!p) continue;
        for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) check_run(p, models[m], runs[i]);
        if (m == 0) {
            check_batch(p, "sd3-tiny", "flow_euler");
            check_dynamic_shift(p);
        }
        sd_pipeline_free(p);
    }
    return test_summary();
}
