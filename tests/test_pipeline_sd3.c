/* StableDiffusion3Pipeline end to end through the library: every run recorded in sd3-tiny/expected
 * and sd35-tiny/expected is generated again with the run's settings, and every intermediate the
 * fixture holds is compared as it is produced: token ids of both CLIP tokenizers (exact), prompt
 * embeddings and pooled embeddings (rel. L2 < 1e-5), the timestep of each transformer call
 * (exact), each transformer input and output and the latents after each step (< 1e-4), the final
 * 8-bit pixels (within one level on >= 99.9% of values, never more than two apart).
 *
 * Then what the recorded runs leave out, each against numbers diffusers recorded:
 * - num_images_per_prompt: a batch of 2 from the recorded noise twice gives the recorded image
 *   twice (the [uncond x B; cond x B] context and pooled batches);
 * - prompt_2 routes to the second CLIP only, and "" falls back to the prompt (Python's `or`);
 * - T5 (no SD3 fixture has one): sd3-tiny with flux-tiny's T5 tokenizer and encoder as
 *   tokenizer_3 / text_encoder_3. Its T5 rows must be flux-tiny's recorded T5 embeddings of the
 *   same prompt and length, the CLIP rows cropped to T5's width (torch's pad with a negative
 *   amount), the pooled output unchanged; generation refuses the folder (d_model 16 is not the
 *   transformer's joint_attention_dim 48) before doing any work;
 * - defaults (28 steps, guidance 7, size sample_size * 8) and settings diffusers refuses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../core/config.h"
#include "../core/fileutil.h"
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

static void on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    const sd_tensor *t = &ev->tensor;
    const size_t per_call = (size_t)t->batch * t->h * t->w * t->c;
    switch (ev->kind) {
    case SD_EVENT_PROMPT_EMBEDS:
    case SD_EVENT_NEGATIVE_EMBEDS: {
        const float *want = ev->kind == SD_EVENT_PROMPT_EMBEDS ? rc->prompt_embeds : rc->negative_embeds;
        if (want) worst(&rc->worst_embed, rel_l2(t->data, want, (size_t)t->h * t->c));
        return;
    }
    case SD_EVENT_MODEL_INPUT:
    case SD_EVENT_MODEL_OUTPUT:
        if (ev->index >= rc->n_calls) {
            rc->extra++;
            return;
        }
        if ((float)ev->timestep != rc->model_timesteps[ev->index]) rc->bad_timesteps++;
        if (ev->kind == SD_EVENT_MODEL_INPUT && rc->inputs)
            worst(&rc->worst_in, compare_nhwc(t->data, t->batch, t->h, t->w, t->c,
                                              rc->inputs + ev->index * per_call));
        if (ev->kind == SD_EVENT_MODEL_OUTPUT && rc->outputs)
            worst(&rc->worst_out, compare_nhwc(t->data, t->batch, t->h, t->w, t->c,
                                               rc->outputs + ev->index * per_call));
        return;
    case SD_EVENT_STEP: {
        if (ev->index >= rc->n_steps) {
            rc->extra++;
            return;
        }
        const size_t item = (size_t)t->h * t->w * t->c;
        for (int b = 0; b < t->batch; b++) {
            const float *want = rc->repeated ? rc->steps + ev->index * item
                                             : rc->steps + ev->index * per_call + b * item;
            worst(&rc->worst_lat, compare_nhwc(t->data + b * item, 1, t->h, t->w, t->c, want));
        }
        return;
    }
    case SD_EVENT_DECODE: return;
    }
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
    float *embeds, *negative;
    size_t n;
} embeds_capture;

static void capture(void *user, const sd_event *ev) {
    embeds_capture *c = user;
    if (ev->kind != SD_EVENT_PROMPT_EMBEDS && ev->kind != SD_EVENT_NEGATIVE_EMBEDS) return;
    float **dst = ev->kind == SD_EVENT_PROMPT_EMBEDS ? &c->embeds : &c->negative;
    c->n = (size_t)ev->tensor.h * ev->tensor.c;
    free(*dst);
    *dst = malloc(c->n * sizeof **dst);
    memcpy(*dst, ev->tensor.data, c->n * sizeof **dst);
}

/* prompt_2 feeds the second CLIP only: with the flow_euler prompt and prompt_2 "cartoon" (the
 * shift1 run's negative prompt), the first CLIP's 16 features are flow_euler's and the second's are
 * the shift1 negative's, rows and pooled alike. An empty prompt_3 and negative_prompt_2 fall back
 * (Python's `or`), so the negative stays flow_euler's. */
static void check_prompt_2(sd_pipeline *p) {
    const char *fe = "sd3-tiny/expected/flow_euler.safetensors";
    const char *sh = "sd3-tiny/expected/flow_euler_shift1.safetensors";
    float *fe_e = fixture_tensor(fe, "prompt_embeds", NULL, NULL);
    float *fe_n = fixture_tensor(fe, "negative_prompt_embeds", NULL, NULL);
    float *fe_p = fixture_tensor(fe, "pooled_prompt_embeds", NULL, NULL);
    float *sh_e = fixture_tensor(sh, "negative_prompt_embeds", NULL, NULL);
    float *sh_p = fixture_tensor(sh, "negative_pooled_prompt_embeds", NULL, NULL);
    const int tokens = 333, width = 48, pd = 32;
    float *want = calloc((size_t)tokens * width, sizeof *want), want_p[32], pooled[32];
    float *got = malloc((size_t)tokens * width * sizeof *got);
    if (fe_e && fe_n && fe_p && sh_e && sh_p) {
        for (int t = 0; t < 77; t++)
            for (int k = 0; k < 32; k++)
                want[t * width + k] = (k < 16 ? fe_e : sh_e)[t * width + k];
        for (int k = 0; k < pd; k++) want_p[k] = (k < 16 ? fe_p : sh_p)[k];
        const char *prompt = "a photo of an astronaut riding a horse on mars";
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = prompt;
        g.prompt_2 = "cartoon";
        g.prompt_3 = "";
        g.negative_prompt_2 = "";
        g.steps = 1;
        g.guidance = 5;
        embeds_capture c = {0};
        g.on_event = capture;
        g.user = &c;
        sd_result r;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "prompt_2 run: %s", sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        CHECK(c.embeds && c.negative && c.n == (size_t)tokens * width, "prompt_2 run: embeddings events");
        if (c.embeds && c.n == (size_t)tokens * width)
            check_rel("prompt_2 'cartoon': prompt embeds", c.embeds, want, c.n, 1e-5);
        if (c.negative && c.n == (size_t)tokens * width)
            check_rel("prompt_2 'cartoon': negative embeds (\"\" falls back)", c.negative, fe_n, c.n, 1e-5);
        CHECK_OK(sd_encode_prompt_sd3(p, prompt, "cartoon", prompt, 0, 256, got, pooled));
        check_rel("prompt_2 'cartoon': pooled", pooled, want_p, (size_t)pd, 1e-5);
        free(c.embeds), free(c.negative);
    }
    free(want), free(got), free(fe_e), free(fe_n), free(fe_p), free(sh_e), free(sh_p);
}

static void expect_error(sd_pipeline *p, const sd_gen_params *g, const char *what, const char *needle) {
    sd_result r;
    sd_status st = sd_generate(p, g, &r);
    CHECK(st != SD_OK, "%s: accepted", what);
    if (st == SD_OK) {
        sd_result_free(&r);
        return;
    }
    CHECK(strstr(sd_last_error(), needle) != NULL, "%s: error '%s' does not mention '%s'", what,
          sd_last_error(), needle);
}

/* The pipeline's defaults, and settings that StableDiffusion3Pipeline refuses or cannot run. */
static void check_defaults_and_errors(sd_pipeline *p) {
    int w = 0, h = 0;
    sd_pipeline_default_size(p, &w, &h);
    CHECK(sd_pipeline_family(p) == SD_FAMILY_SD3 && w == 128 && h == 128,
          "family %d, default size %dx%d (sample_size 16 * 8)", (int)sd_pipeline_family(p), w, h);
    CHECK(!strcmp(sd_pipeline_class(p), "StableDiffusion3Pipeline"), "class %s", sd_pipeline_class(p));
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x";
    g.eta = 0.5;
    sd_result r;
    CHECK(sd_generate(p, &g, &r) != SD_OK, "eta accepted");
    CHECK(strstr(sd_last_error(), "eta") != NULL, "eta error: %s", sd_last_error());
    CHECK(r.used.steps == 28 && r.used.guidance == 7.0 && r.used.width == 128 && r.used.height == 128,
          "defaults: %d steps, guidance %g, %dx%d", r.used.steps, r.used.guidance, r.used.width,
          r.used.height);
    g.eta = 0;
    g.steps = 2;
    g.width = 120;
    expect_error(p, &g, "width 120", "multiple of 16");
    g.width = 400;
    expect_error(p, &g, "width 400 (25 patches)", "pos_embed_max_size");
    g.width = 128;
    g.max_sequence_length = 513;
    expect_error(p, &g, "max_sequence_length 513", "max sequence length");
    g.max_sequence_length = 0;
    g.scheduler = "EulerDiscreteScheduler";
    expect_error(p, &g, "Euler (epsilon) scheduler", "flow-matching");
    g.scheduler = NULL;
    g.guidance_rescale = 0.5;
    expect_error(p, &g, "guidance rescale", "guidance rescale");
    g.guidance_rescale = 0;
    g.clip_skip = 3;
    expect_error(p, &g, "clip skip 3", "only 3 layers");
    g.clip_skip = 0;
    g.original_width = 512;
    expect_error(p, &g, "SDXL original size", "SDXL");
    g.original_width = 0;
    sd_image im = {0};
    g.init_image = &im;
    expect_error(p, &g, "init image", "image-to-image");
}

typedef struct {
    double t[16];
    int n;
} timestep_capture;

static void capture_timesteps(void *user, const sd_event *ev) {
    timestep_capture *c = user;
    if (ev->kind == SD_EVENT_MODEL_INPUT && c->n < 16) c->t[c->n++] = ev->timestep;
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

/* sd3-tiny with flux-tiny's T5 as tokenizer_3 / text_encoder_3 (see the header). */
static void check_t5_pipeline(void) {
    char dir[128], cmd[4096 + 128], fixtures[1024];
    snprintf(dir, sizeof dir, "/tmp/sd-test-sd3-t5-%d", (int)getpid());
    snprintf(fixtures, sizeof fixtures, "%s", fixture("")); /* fixture() reuses one buffer */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/sd3-tiny/pipeline' '%s' && "
             "cp -r '%s/flux-tiny/pipeline/tokenizer_2' '%s/tokenizer_3' && "
             "cp -r '%s/flux-tiny/pipeline/text_encoder_2' '%s/text_encoder_3'",
             dir, fixtures, dir, fixtures, dir, fixtures, dir);
    CHECK(system(cmd) == 0, "building %s", dir);
    char *mi_path = sd_path_join(dir, "model_index.json"), *text = NULL;
    CHECK_OK(sd_read_file(mi_path, &text, NULL));
    cJSON *mi = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (mi) {
        const char *t5tok[2] = {"transformers", "T5TokenizerFast"}, *t5[2] = {"transformers", "T5EncoderModel"};
        cJSON_ReplaceItemInObject(mi, "tokenizer_3", cJSON_CreateStringArray(t5tok, 2));
        cJSON_ReplaceItemInObject(mi, "text_encoder_3", cJSON_CreateStringArray(t5, 2));
        char *out = cJSON_Print(mi);
        FILE *fp = fopen(mi_path, "w");
        if (fp) fputs(out, fp), fclose(fp);
        cJSON_free(out);
        cJSON_Delete(mi);
    }
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, dir, NULL));
    const char *prompt = "a photo of an astronaut riding a horse on mars"; /* flux_dev_like's too */
    const char *flux = "flux-tiny/expected/flux_dev_like.safetensors";
    const char *sd3 = "sd3-tiny/expected/flow_euler.safetensors";
    if (p) {
        /* tokenizer_3 ids, padded to the default 256: flux_dev_like's 64, then more padding */
        char *json = NULL;
        CHECK_OK(sd_tokenize_json(p, prompt, &json));
        cJSON *j = json ? cJSON_Parse(json) : NULL;
        const cJSON *arr = cJSON_GetObjectItem(j, "tokenizer_3");
        int64_t shape[4];
        int32_t *want = fixture_ids(flux, "tokenizer_2_prompt_ids", shape, NULL);
        CHECK(cJSON_GetArraySize(arr) == 256 && cJSON_GetObjectItem(j, "tokenizer_2"),
              "--print-tokens with T5: 256 tokenizer_3 ids beside the CLIP ones: %.200s", json);
        if (want && cJSON_GetArraySize(arr) == 256 && shape[1] == 64) {
            int32_t got[256], want256[256];
            for (int i = 0; i < 256; i++) {
                got[i] = cJSON_GetArrayItem(arr, i)->valueint;
                want256[i] = want[i < 64 ? i : 63]; /* the recorded ids end in padding */
            }
            check_equal_i32("tokenizer_3 ids (flux-tiny's T5 tokenizer)", got, want256, 256);
        }
        free(want);
        cJSON_Delete(j);
        free(json);

        int tokens, width, pd;
        sd_embed_shape_sd3(p, 64, &tokens, &width, &pd);
        CHECK(tokens == 77 + 64 && width == 16 && pd == 32, "T5 embeddings shape %dx%d, pooled %d",
              tokens, width, pd);
        float *e = malloc((size_t)tokens * width * sizeof *e), pooled[32];
        float *clip = fixture_tensor(sd3, "prompt_embeds", NULL, NULL);
        float *clip_pooled = fixture_tensor(sd3, "pooled_prompt_embeds", NULL, NULL);
        float *t5 = fixture_tensor(flux, "prompt_embeds", NULL, NULL);
        CHECK_OK(sd_encode_prompt_sd3(p, prompt, prompt, prompt, 0, 64, e, pooled));
        if (clip && clip_pooled && t5 && tokens == 141 && width == 16) {
            float *want_clip = malloc(77 * 16 * sizeof *want_clip);
            for (int t = 0; t < 77; t++) memcpy(want_clip + t * 16, clip + t * 48, 16 * sizeof *clip);
            check_rel("with T5: CLIP rows cropped to T5's width", e, want_clip, 77 * 16, 1e-5);
            check_rel("with T5: T5 rows = flux-tiny's recorded T5 embeddings", e + 77 * 16, t5, 64 * 16, 1e-5);
            check_rel("with T5: pooled", pooled, clip_pooled, 32, 1e-5);
            free(want_clip);
        }
        free(e), free(clip), free(clip_pooled), free(t5);

        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = prompt;
        g.steps = 1;
        expect_error(p, &g, "T5 d_model 16 with joint_attention_dim 48", "text_encoder_3");
        sd_pipeline_free(p);
    }
    free(mi_path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
}

/* Sets model_index.json's entry `key` in `dir` to [library, cls] (cls NULL: [null, null]). */
static void set_component(const char *dir, const char *key, const char *library, const char *cls) {
    char *path = sd_path_join(dir, "model_index.json"), *text = NULL;
    CHECK_OK(sd_read_file(path, &text, NULL));
    cJSON *mi = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (mi) {
        const char *pair[2] = {library, cls};
        cJSON *v = cls ? cJSON_CreateStringArray(pair, 2) : cJSON_CreateArray();
        for (int k = 0; !cls && k < 2; k++) cJSON_AddItemToArray(v, cJSON_CreateNull());
        cJSON_ReplaceItemInObject(mi, key, v);
        char *out = cJSON_Print(mi);
        FILE *fp = fopen(path, "w");
        if (fp) fputs(out, fp), fclose(fp);
        cJSON_free(out);
        cJSON_Delete(mi);
    }
    free(path);
}

static void expect_load_error(const char *dir, const char *what, const char *needle) {
    sd_pipeline *p = NULL;
    sd_status st = sd_pipeline_load(&p, dir, NULL);
    CHECK(st != SD_OK, "%s: loaded", what);
    if (p) sd_pipeline_free(p);
    if (st != SD_OK)
        CHECK(strstr(sd_last_error(), needle) != NULL, "%s: error '%s' does not mention '%s'", what,
              sd_last_error(), needle);
}

/* Folders diffusers' StableDiffusion3Pipeline cannot run: the error names the component. */
static void check_load_errors(void) {
    char dir[128], cmd[2 * 1024 + 512], fixtures[1024];
    snprintf(dir, sizeof dir, "/tmp/sd-test-sd3-bad-%d", (int)getpid());
    snprintf(fixtures, sizeof fixtures, "%s", fixture(""));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/sd3-tiny/pipeline' '%s'", dir, fixtures, dir);
    CHECK(system(cmd) == 0, "copying sd3-tiny");
    /* the pooled output must be the projected one */
    set_component(dir, "text_encoder_2", "transformers", "CLIPTextModel");
    expect_load_error(dir, "text_encoder_2 without projection", "text_encoder_2");
    set_component(dir, "text_encoder_2", "transformers", "CLIPTextModelWithProjection");
    /* a T5 encoder without its tokenizer */
    set_component(dir, "text_encoder_3", "transformers", "T5EncoderModel");
    expect_load_error(dir, "text_encoder_3 without tokenizer_3", "tokenizer_3");
    set_component(dir, "text_encoder_3", NULL, NULL);
    /* a UNet is no SD3 transformer */
    set_component(dir, "transformer", "diffusers", "UNet2DConditionModel");
    expect_load_error(dir, "transformer of the wrong class", "UNet2DConditionModel");
    set_component(dir, "transformer", "diffusers", "SD3Transformer2DModel");
    snprintf(cmd, sizeof cmd, "rm '%s/transformer/diffusion_pytorch_model.safetensors'", dir);
    CHECK(system(cmd) == 0, "removing the transformer weights");
    expect_load_error(dir, "transformer weights missing", "transformer");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
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
            check_prompt_2(p);
            check_defaults_and_errors(p);
            check_dynamic_shift(p);
        }
        sd_pipeline_free(p);
    }
    check_t5_pipeline();
    check_load_errors();
    return test_summary();
}
