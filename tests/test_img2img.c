/* Image-to-image and inpainting against diffusers' StableDiffusionImg2ImgPipeline and
 * StableDiffusionInpaintPipeline (sd15-tiny runs img2img, img2img_euler_nonsquare, inpaint):
 * every denoiser input and output and the latents after every step (relative L2 < 1e-4, the
 * trajectory tolerance, or 4x the run's own measured sensitivity as test_pipeline.c explains),
 * and the final pixels (within one level on >= 99.9% of values, never more than two apart),
 * through the library and through bin/gen. Then a 9-channel inpainting UNet (random weights,
 * written next to a copy of sd15-tiny): runs, finite output, and a white-box check that the mask
 * and the masked image's latents reach the UNet on the right channels. Then the bad inputs. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "../schedulers/scheduler.h"
#include "../unet/unet.h"
#include "../vae/vae.h"
#include "test.h"

static char tmpdir[256];
static char output[65536];

static const char *tmp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

typedef struct {
    float *model_inputs, *model_outputs, *latents_steps;
    int n_calls, n_steps;
    size_t per_step; /* one step's latents */
    double worst_in, worst_out, worst_lat;
    int calls_seen, first_call;
    float *own_steps; /* our latents after each recorded step, NCHW */
} run_check;

/* NHWC event tensor -> NCHW, against slice k of a recorded [K][B][C][H][W] tensor. */
static double compare_slice(const sd_tensor *t, const float *rec, int k) {
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float *nchw = malloc(n * sizeof *nchw);
    nhwc_to_nchw(t->data, nchw, t->batch, t->h, t->w, t->c);
    double e = rel_l2(nchw, rec + (size_t)k * n, n);
    free(nchw);
    return e;
}

/* The fixture records only the calls that ran: call index i of the full schedule is record
 * i - (total - recorded). */
static void on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    if (ev->kind != SD_EVENT_MODEL_INPUT && ev->kind != SD_EVENT_MODEL_OUTPUT &&
        ev->kind != SD_EVENT_STEP)
        return;
    int k = ev->index - (ev->total - rc->n_calls);
    if (k < 0 || k >= rc->n_calls) {
        rc->worst_in = INFINITY; /* a call the reference did not make */
        return;
    }
    if (ev->kind == SD_EVENT_MODEL_INPUT) {
        if (rc->calls_seen++ == 0) rc->first_call = ev->index;
        if (!rc->model_inputs) return;
        double e = compare_slice(&ev->tensor, rc->model_inputs, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d t=%g input err %.3g\n", ev->index, ev->timestep, e);
        if (e > rc->worst_in) rc->worst_in = e;
    } else if (ev->kind == SD_EVENT_MODEL_OUTPUT) {
        if (!rc->model_outputs) return;
        double e = compare_slice(&ev->tensor, rc->model_outputs, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d output err %.3g\n", ev->index, e);
        if (e > rc->worst_out) rc->worst_out = e;
    } else {
        nhwc_to_nchw(ev->tensor.data, rc->own_steps + (size_t)k * rc->per_step, ev->tensor.batch,
                     ev->tensor.h, ev->tensor.w, ev->tensor.c);
        if (!rc->latents_steps) return;
        double e = compare_slice(&ev->tensor, rc->latents_steps, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   step %d latents err %.3g\n", ev->index, e);
        if (e > rc->worst_lat) rc->worst_lat = e;
    }
}

/* Pixels of `got` against the recorded float image (PNG = round(x * 255)). */
static void check_pixels(const char *name, const sd_image *got, const float *want, size_t n) {
    long differ = 0, beyond_one = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got->rgb[i] - (int)nearbyintf(want[i] * 255.0f));
        if (d > maxd) maxd = d;
        differ += d > 0;
        beyond_one += d > 1;
    }
    printf("     %s pixels: %ld of %zu values differ (%ld by more than one level), max diff %d\n",
           name, differ, n, beyond_one, maxd);
    CHECK(maxd <= 2 && (size_t)beyond_one * 1000 <= n, "%s: %ld/%zu pixel values more than one "
          "level apart (max %d)", name, beyond_one, n, maxd);
}

typedef struct {
    fixture_run fr;
    sd_image image, mask;
    char st_path[256];
} img_run;

static bool img_run_load(img_run *r, const char *run) {
    memset(r, 0, sizeof *r);
    if (!fixture_run_load(&r->fr, "sd15-tiny", run)) return false;
    char rel[256];
    snprintf(r->st_path, sizeof r->st_path, "sd15-tiny/expected/%s.safetensors", run);
    const cJSON *im = cJSON_GetObjectItem(r->fr.json, "image");
    const cJSON *mk = cJSON_GetObjectItem(r->fr.json, "mask_image");
    snprintf(rel, sizeof rel, "sd15-tiny/expected/%s", cJSON_IsString(im) ? im->valuestring : "?");
    CHECK_OK(image_read(fixture(rel), &r->image));
    r->fr.g.init_image = &r->image;
    if (cJSON_IsString(mk)) {
        snprintf(rel, sizeof rel, "sd15-tiny/expected/%s", mk->valuestring);
        CHECK_OK(image_read(fixture(rel), &r->mask));
        r->fr.g.mask_image = &r->mask;
    }
    return r->image.rgb != NULL;
}

static void img_run_free(img_run *r) {
    image_free(&r->image);
    image_free(&r->mask);
    fixture_run_free(&r->fr);
}

/* The run again from its start noise perturbed by 1e-7 relative (the noise the generator would
 * draw after the image's posterior sample, passed as latents): how far it drifts from itself. */
static double run_sensitivity(sd_pipeline *p, const sd_gen_params *base, const run_check *ref,
                              int c, int h, int w) {
    sd_gen_params g = *base;
    const size_t n = (size_t)g.batch * c * h * w, n1 = (size_t)c * h * w;
    float *noise = malloc(n * sizeof *noise);
    sd_rng rng;
    rng_seed(&rng, g.seed);
    rng_randn(&rng, noise, n1); /* the posterior sample comes first */
    rng_randn(&rng, noise, n);
    for (size_t i = 0; i < n; i++) noise[i] *= 1.0f + 1e-7f * (float)((long)(i * 7919 % 101) - 50) / 50.0f;
    run_check rc = *ref;
    rc.model_inputs = rc.model_outputs = rc.latents_steps = NULL;
    rc.own_steps = calloc((size_t)rc.n_steps * rc.per_step, sizeof(float));
    g.latents = noise;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    double worst = INFINITY;
    if (sd_generate(p, &g, &r) == SD_OK) {
        worst = 0;
        for (int k = 0; k < rc.n_steps; k++) {
            double e = rel_l2(rc.own_steps + k * rc.per_step, ref->own_steps + k * ref->per_step, rc.per_step);
            if (e > worst) worst = e;
        }
        sd_result_free(&r);
    }
    free(rc.own_steps);
    free(noise);
    return worst;
}

/* Latent pixel (y, x) is kept (not repainted) where the mask pixel (8y, 8x) is below 0.5: the
 * binarised mask brought to the latent grid by torch's nearest interpolation (exactly 1/8). */
static bool latent_kept(const sd_image *mask, int y, int x) {
    const uint8_t *px = mask->rgb + ((size_t)(8 * y) * mask->width + 8 * x) * 3;
    return px[0] / 255.0f < 0.5f; /* grey masks: every channel the same */
}

/* 4-channel inpainting ends with the unmasked region holding the init image's latents, which are
 * not chaotic: there the final latents must match diffusers' to the single-call tolerance,
 * whatever the denoised region does. */
static void known_region(const char *run, const sd_image *mask, const run_check *rc, int h, int w) {
    const int c = (int)(rc->per_step / ((size_t)h * w)), last = rc->n_steps - 1;
    const float *got = rc->own_steps + (size_t)last * rc->per_step;
    const float *want = rc->latents_steps + (size_t)last * rc->per_step;
    float *a = malloc(rc->per_step * sizeof *a), *b = malloc(rc->per_step * sizeof *b);
    size_t n = 0;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (latent_kept(mask, y, x)) {
                    a[n] = got[((size_t)ch * h + y) * w + x];
                    b[n++] = want[((size_t)ch * h + y) * w + x];
                }
    char what[160];
    snprintf(what, sizeof what, "%s: final latents in the kept region (%zu values)", run, n);
    CHECK(n > 0 && n < rc->per_step, "%s: the mask keeps %zu of %zu latents", run, n, rc->per_step);
    check_rel(what, a, b, n, 1e-5);
    free(a), free(b);
}

static void library_run(sd_pipeline *p, const char *run) {
    img_run ir;
    if (!img_run_load(&ir, run)) {
        img_run_free(&ir);
        return;
    }
    run_check rc = {0};
    int64_t in_shape[8], lat_shape[8], img_shape[8];
    rc.model_inputs = fixture_tensor(ir.st_path, "model_inputs", in_shape, NULL);
    rc.model_outputs = fixture_tensor(ir.st_path, "model_outputs", NULL, NULL);
    rc.latents_steps = fixture_tensor(ir.st_path, "latents_steps", lat_shape, NULL);
    float *image = fixture_tensor(ir.st_path, "image", img_shape, NULL);
    if (!rc.model_inputs || !rc.model_outputs || !rc.latents_steps || !image) goto done;
    rc.n_calls = (int)in_shape[0];
    rc.n_steps = (int)lat_shape[0];
    rc.per_step = (size_t)lat_shape[1] * lat_shape[2] * lat_shape[3] * lat_shape[4];
    rc.own_steps = calloc((size_t)rc.n_steps * rc.per_step, sizeof(float));
    sd_gen_params g = ir.fr.g;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "%s: %s", run, sd_last_error());
    if (st != SD_OK) goto done;
    double traj = fmax(rc.worst_in, fmax(rc.worst_out, rc.worst_lat)), tol = 1e-4, sens = 0;
    if (traj >= tol) {
        sens = run_sensitivity(p, &ir.fr.g, &rc, (int)lat_shape[2], (int)lat_shape[3], (int)lat_shape[4]);
        if (4 * sens > tol) tol = 4 * sens;
    }
    bool ok = traj < tol && r.model_calls == rc.n_calls && rc.calls_seen == rc.n_calls;
    printf("%s sd15-tiny/%s: calls %d..%d of %d, inputs %.2g, outputs %.2g, latents %.2g (tol %.2g",
           ok ? "ok  " : "FAIL", run, rc.first_call, rc.first_call + r.model_calls - 1,
           rc.first_call + rc.n_calls, rc.worst_in, rc.worst_out, rc.worst_lat, tol);
    if (sens > 0) printf("; the run's own divergence from 1e-7 noise: %.2g", sens);
    printf(", %.2f s)\n", r.seconds);
    CHECK(ok, "%s: intermediates differ (%d calls, recorded %d)", run, r.model_calls, rc.n_calls);
    CHECK(r.n_images == 1 && r.images[0].width == img_shape[2] && r.images[0].height == img_shape[1],
          "%s: image size %dx%d, recorded %dx%d", run, r.n_images ? r.images[0].width : 0,
          r.n_images ? r.images[0].height : 0, (int)img_shape[2], (int)img_shape[1]);
    CHECK(r.used.width == img_shape[2] && r.used.height == img_shape[1] &&
          r.used.strength == ir.fr.g.strength, "%s: used settings %dx%d strength %g", run,
          r.used.width, r.used.height, r.used.strength);
    if (r.n_images == 1 && r.images[0].width == img_shape[2] && r.images[0].height == img_shape[1])
        check_pixels(run, &r.images[0], image, (size_t)img_shape[1] * img_shape[2] * 3);
    if (ir.fr.g.mask_image) known_region(run, &ir.mask, &rc, (int)lat_shape[3], (int)lat_shape[4]);
    sd_result_free(&r);
done:
    free(rc.model_inputs), free(rc.model_outputs), free(rc.latents_steps), free(rc.own_steps);
    free(image);
    img_run_free(&ir);
}


/* ---- through bin/gen -------------------------------------------------------------------------- */

/* Runs bin/gen with `args` (NULL-terminated), stdout and stderr into `output`; the exit status, or
 * 128 + signal when it crashed. */
static int run_gen(const char *const *args) {
    const char *argv[64];
    int n = 0;
    argv[n++] = tool_path("gen");
    for (; *args && n < 63; args++) argv[n++] = *args;
    argv[n] = NULL;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(fds[0], output + used, sizeof output - 1 - used)) > 0) used += (size_t)got;
    output[used] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Failed cleanly: exit status 1 or 2, one line of error text containing `needle`. */
static void expect_error(const char *what, int rc, const char *needle) {
    int lines = 0;
    for (const char *c = output; *c; c++) lines += *c == '\n';
    CHECK((rc == 1 || rc == 2) && strstr(output, needle) && lines == 1,
          "%s: exit status %d, expected one line mentioning '%s', got: %s", what, rc, needle, output);
}

static const char *expected_file(const char *name) {
    static char rel[256];
    snprintf(rel, sizeof rel, "sd15-tiny/expected/%s", name);
    return fixture(rel);
}

/* A recorded run as a user types it; the written PNG against the recorded one. */
static void cli_run(const char *run) {
    img_run ir;
    if (!img_run_load(&ir, run)) {
        img_run_free(&ir);
        return;
    }
    const sd_gen_params *g = &ir.fr.g;
    char model[512], seed[32], steps[16], guidance[32], strength[32], w[16], h[16], image[512],
        mask[512], want[512];
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    snprintf(steps, sizeof steps, "%d", g->steps);
    snprintf(guidance, sizeof guidance, "%.17g", g->guidance);
    snprintf(strength, sizeof strength, "%.17g", g->strength);
    snprintf(w, sizeof w, "%d", g->width);
    snprintf(h, sizeof h, "%d", g->height);
    snprintf(image, sizeof image, "%s",
             expected_file(cJSON_GetObjectItem(ir.fr.json, "image")->valuestring));
    const cJSON *mk = cJSON_GetObjectItem(ir.fr.json, "mask_image");
    if (cJSON_IsString(mk)) snprintf(mask, sizeof mask, "%s", expected_file(mk->valuestring));
    char name[160];
    snprintf(name, sizeof name, "%s-0.png", run);
    snprintf(want, sizeof want, "%s", expected_file(name));
    const char *out = tmp("run.png");
    const char *args[64];
    char *owned[16];
    int na = 0, no = 0;
    const char *fixed[] = {"-m", model, "-s", seed, "--steps", steps, "-g", guidance, "--scheduler",
                           g->scheduler, "--init-image", image, "--strength", strength, "-o", out,
                           "-q"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) args[na++] = fixed[i];
    if (g->width) args[na++] = "-W", args[na++] = w;
    if (g->height) args[na++] = "-H", args[na++] = h;
    if (cJSON_IsString(mk)) args[na++] = "--mask", args[na++] = mask;
    for (const cJSON *e = ir.fr.overrides->child; e && no < 16; e = e->next) {
        char *value = cJSON_PrintUnformatted(e);
        owned[no++] = sd_strfmt("%s=%s", e->string, value);
        cJSON_free(value);
        args[na++] = "--scheduler-opt";
        args[na++] = owned[no - 1];
    }
    if (g->negative_prompt) args[na++] = "-n", args[na++] = g->negative_prompt;
    args[na++] = g->prompt;
    args[na] = NULL;
    int rc = run_gen(args);
    CHECK(rc == 0, "gen %s: exit %d: %s", run, rc, output);
    sd_image got = {0}, ref = {0};
    if (rc == 0 && image_read(out, &got) == SD_OK && image_read(want, &ref) == SD_OK) {
        CHECK(got.width == ref.width && got.height == ref.height, "gen %s: %dx%d, recorded %dx%d",
              run, got.width, got.height, ref.width, ref.height);
        if (got.width == ref.width && got.height == ref.height) {
            size_t n = (size_t)got.width * got.height * 3;
            float *f = malloc(n * sizeof *f);
            for (size_t i = 0; i < n; i++) f[i] = ref.rgb[i] / 255.0f;
            char what[160];
            snprintf(what, sizeof what, "gen %s", run);
            check_pixels(what, &got, f, n);
            free(f);
        }
    }
    image_free(&got), image_free(&ref);
    char *params = NULL, want_text[64];
    snprintf(want_text, sizeof want_text, "Denoising strength: %g", g->strength);
    if (rc == 0) CHECK_OK(image_read_png_text(out, "parameters", &params));
    CHECK(rc != 0 || (params && strstr(params, want_text)), "gen %s: parameters '%s' lack '%s'",
          run, params ? params : "", want_text);
    free(params);
    for (int i = 0; i < no; i++) free(owned[i]);
    img_run_free(&ir);
}

/* ---- every scheduler --------------------------------------------------------------------------- */

/* get_timesteps, stated once more: the calls that run for `strength` out of `steps` (cls NULL:
 * the model's scheduler). */
static int expected_calls(const char *cls, int steps, double strength) {
    sd_cfg c;
    sd_scheduler *s = NULL;
    int calls = -1;
    if (cfg_open(&c, fixture("sd15-tiny/pipeline/scheduler/scheduler_config.json")) != SD_OK) return -1;
    if (sched_create(&s, cls, c.root, NULL) == SD_OK && sched_set_timesteps(s, steps, NULL) == SD_OK) {
        int run = (int)(steps * strength);
        calls = sched_len(s) - (steps - run) * sched_order(s);
    }
    if (s) sched_free(s);
    cfg_close(&c);
    return calls;
}

/* The init image's latents as the pipeline draws them first: (mean + std * randn) * scale. */
static float *init_latents(const sd_image *img, uint64_t seed, int *h, int *w, int *c) {
    vae *v;
    if (vae_load(&v, fixture("sd15-tiny/pipeline/vae")) != SD_OK) return NULL;
    const vae_config *vc = vae_get_config(v);
    *h = img->height / 8, *w = img->width / 8, *c = vc->latent_channels;
    size_t n = (size_t)*h * *w * *c;
    float *x = malloc((size_t)img->width * img->height * 3 * sizeof *x);
    float *mean = malloc(n * sizeof *mean), *logvar = malloc(n * sizeof *logvar);
    float *draw = malloc(n * sizeof *draw), *out = malloc(n * sizeof *out);
    for (size_t i = 0; i < (size_t)img->width * img->height * 3; i++) x[i] = img->rgb[i] / 255.0f * 2 - 1;
    CHECK_OK(vae_encode(v, x, 1, img->height, img->width, mean, logvar));
    sd_rng rng;
    rng_seed(&rng, seed);
    rng_randn(&rng, draw, n);
    nchw_to_nhwc(draw, out, 1, *c, *h, *w);
    for (size_t i = 0; i < n; i++) out[i] = (mean[i] + expf(0.5f * logvar[i]) * out[i]) * vc->scaling_factor;
    free(x), free(mean), free(logvar), free(draw);
    vae_free(v);
    return out;
}

static void every_scheduler(sd_pipeline *p) {
    img_run ir;
    if (!img_run_load(&ir, "inpaint")) {
        img_run_free(&ir);
        return;
    }
    int h, w, c;
    const uint64_t seed = 11;
    float *want = init_latents(&ir.image, seed, &h, &w, &c);
    const sched_info *info;
    int n_classes = sched_list(&info), ran = 0;
    for (int k = 0; k < n_classes && want; k++) {
        for (int inpaint = 0; inpaint < 2; inpaint++) {
            sd_gen_params g;
            sd_gen_params_init(&g);
            g.prompt = "a lighthouse";
            g.seed = seed, g.steps = 4, g.strength = 0.5, g.guidance = 5;
            g.scheduler = info[k].class_name;
            g.init_image = &ir.image;
            g.mask_image = inpaint ? &ir.mask : NULL;
            g.width = 128, g.height = 128;
            sd_result r;
            sd_status st = sd_generate(p, &g, &r);
            CHECK(st == SD_OK, "%s %s: %s", inpaint ? "inpaint" : "img2img", g.scheduler, sd_last_error());
            if (st != SD_OK) continue;
            ran++;
            int calls = expected_calls(g.scheduler, g.steps, g.strength);
            CHECK(r.model_calls == calls, "%s %s: %d model calls, get_timesteps gives %d",
                  inpaint ? "inpaint" : "img2img", g.scheduler, r.model_calls, calls);
            size_t n = (size_t)c * h * w, finite = 0;
            for (size_t i = 0; i < n; i++) finite += isfinite(r.latents[i]);
            CHECK(finite == n, "%s: %zu of %zu final latents finite", g.scheduler, finite, n);
            if (inpaint) { /* the kept region ends exactly on the init latents */
                double worst = 0;
                for (int ch = 0; ch < c; ch++)
                    for (int y = 0; y < h; y++)
                        for (int x = 0; x < w; x++)
                            if (latent_kept(&ir.mask, y, x)) {
                                double d = fabs(r.latents[((size_t)ch * h + y) * w + x] -
                                                want[((size_t)y * w + x) * c + ch]);
                                if (d > worst) worst = d;
                            }
                CHECK(worst < 1e-5, "inpaint %s: kept region off the init latents by %g",
                      g.scheduler, worst);
            }
            sd_result_free(&r);
        }
    }
    printf("ok   img2img and 4-channel inpainting ran with %d scheduler classes (%d runs)\n",
           n_classes, ran);
    free(want);
    img_run_free(&ir);
}

/* ---- sizes ------------------------------------------------------------------------------------- */

static void sizes(sd_pipeline *p) {
    sd_image img;
    if (image_alloc(&img, 133, 77) != SD_OK) return;
    for (size_t i = 0; i < (size_t)133 * 77 * 3; i++) img.rgb[i] = (uint8_t)(i * 37 % 251);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x", g.steps = 2, g.strength = 0.5, g.init_image = &img;
    sd_result r;
    const struct {
        int w, h, want_w, want_h;
    } cases[] = {{0, 0, 128, 72}, {64, 96, 64, 96}, {64, 0, 64, 72}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        g.width = cases[k].w, g.height = cases[k].h;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "img2img %dx%d from 133x77: %s", g.width, g.height, sd_last_error());
        if (st != SD_OK) continue;
        CHECK(r.images[0].width == cases[k].want_w && r.images[0].height == cases[k].want_h &&
              r.used.width == cases[k].want_w && r.used.height == cases[k].want_h,
              "img2img -W %d -H %d from 133x77: %dx%d, diffusers makes %dx%d", g.width, g.height,
              r.images[0].width, r.images[0].height, cases[k].want_w, cases[k].want_h);
        sd_result_free(&r);
    }
    /* Inpainting without a size takes the model's (sample_size 16 * 8), whatever the image's. */
    sd_image mask;
    if (image_alloc(&mask, 133, 77) == SD_OK) {
        memset(mask.rgb, 255, (size_t)133 * 77 * 3);
        g.mask_image = &mask, g.width = g.height = 0;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK && r.images[0].width == 128 && r.images[0].height == 128,
              "inpainting size from the model: %s", st == SD_OK ? "wrong size" : sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        image_free(&mask);
    }
    image_free(&img);
}

/* ---- a 9-channel inpainting UNet ---------------------------------------------------------------- */

static bool write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (!fp) return false;
    fputs(text, fp);
    return fclose(fp) == 0;
}

/* sd15-tiny with its UNet's conv_in widened to 9 input channels (random weights), the other
 * components linked. Returns the folder, or NULL. */
static const char *make_inpaint_model(void) {
    const char *dir = tmp("inpaint9");
    char path[600], cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/unet'", dir, dir);
    if (system(cmd) != 0) return NULL;
    const char *parts[] = {"tokenizer", "text_encoder", "vae", "scheduler"};
    for (int i = 0; i < 4; i++) {
        char src[512];
        snprintf(src, sizeof src, "sd15-tiny/pipeline/%s", parts[i]);
        snprintf(path, sizeof path, "%s/%s", dir, parts[i]);
        char *abs = realpath(fixture(src), NULL); /* the fixtures' path may be relative */
        bool linked = abs && symlink(abs, path) == 0;
        free(abs);
        if (!linked) return NULL;
    }
    char *text;
    if (sd_read_file(fixture("sd15-tiny/pipeline/model_index.json"), &text, NULL) != SD_OK) return NULL;
    cJSON *mi = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(mi, "_class_name", cJSON_CreateString("StableDiffusionInpaintPipeline"));
    text = cJSON_Print(mi);
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    bool ok = write_file(path, text);
    cJSON_free(text), cJSON_Delete(mi);
    if (!ok || sd_read_file(fixture("sd15-tiny/pipeline/unet/config.json"), &text, NULL) != SD_OK)
        return NULL;
    cJSON *uc = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(uc, "in_channels", cJSON_CreateNumber(9));
    text = cJSON_Print(uc);
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    ok = write_file(path, text);
    cJSON_free(text), cJSON_Delete(uc);
    st_file f;
    if (!ok || st_open(&f, fixture("sd15-tiny/pipeline/unet/diffusion_pytorch_model.safetensors")) != SD_OK)
        return NULL;
    st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
    float *conv_in = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(es[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "conv_in.weight")) { /* [out][in][3][3] */
            es[i].shape[1] = 9;
            size_t n = (size_t)t->shape[0] * 9 * t->shape[2] * t->shape[3];
            conv_in = malloc(n * sizeof *conv_in);
            fill_random(conv_in, n, 909);
            for (size_t k = 0; k < n; k++) conv_in[k] *= 0.2f;
            es[i].dtype = ST_F32;
            es[i].data = conv_in;
        }
    }
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    sd_status st = conv_in ? st_write(path, es, f.n_tensors, NULL, 0) : SD_ERR_TENSOR;
    st_close(&f);
    free(es), free(conv_in);
    return st == SD_OK ? dir : NULL;
}

typedef struct {
    int h, w, c, tokens, dim;
    float *input0, *output0, *cond, *uncond; /* call 0 and the prompt embeddings, NHWC */
    double t0;
} capture;

static void capture_event(void *user, const sd_event *ev) {
    capture *cp = user;
    const sd_tensor *t = &ev->tensor;
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float **slot = NULL;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS) slot = &cp->cond, cp->tokens = t->h, cp->dim = t->c;
    if (ev->kind == SD_EVENT_NEGATIVE_EMBEDS) slot = &cp->uncond;
    if (ev->kind == SD_EVENT_MODEL_INPUT && !cp->input0) {
        slot = &cp->input0;
        cp->h = t->h, cp->w = t->w, cp->c = t->c, cp->t0 = ev->timestep;
    }
    if (ev->kind == SD_EVENT_MODEL_OUTPUT && !cp->output0) slot = &cp->output0;
    if (!slot || *slot) return;
    *slot = malloc(n * sizeof(float));
    memcpy(*slot, t->data, n * sizeof(float));
}

/* The first call of a 9-channel run again, with the UNet input built here from its pieces:
 * the run's (scaled) latents, the mask on the latent grid, and the masked image's latents drawn
 * after the noise (strength 1: the image itself is not encoded). Equal outputs mean the pieces
 * reach the UNet in diffusers' channel order; the same input with the mask and the masked latents
 * swapped shows that the comparison can tell. */
static void nine_channel_call(const char *model, const capture *cp, const img_run *ir, uint64_t seed) {
    const int h = cp->h, w = cp->w, c = cp->c, mb = 2, oc = 2 * c + 1;
    const size_t hw = (size_t)h * w, n1 = hw * c, W = (size_t)ir->image.width, H = (size_t)ir->image.height;
    vae *v = NULL;
    unet *u = NULL;
    char *dir = sd_path_join(model, "unet");
    CHECK_OK(vae_load(&v, fixture("sd15-tiny/pipeline/vae")));
    CHECK_OK(unet_load(&u, dir));
    if (!v || !u) goto out;
    float *img = malloc(W * H * 3 * sizeof *img), *mean = malloc(n1 * sizeof *mean);
    float *logvar = malloc(n1 * sizeof *logvar), *draw = malloc(n1 * sizeof *draw);
    float *masked = malloc(n1 * sizeof *masked), *mask = malloc(hw * sizeof *mask);
    float *x = malloc(mb * hw * oc * sizeof *x), *ctx = malloc((size_t)mb * cp->tokens * cp->dim * sizeof *ctx);
    float *y = malloc(mb * n1 * sizeof *y);
    for (size_t i = 0; i < W * H; i++) {
        bool keep = ir->mask.rgb[3 * i] / 255.0f < 0.5f;
        for (int k = 0; k < 3; k++) img[3 * i + k] = keep ? ir->image.rgb[3 * i + k] / 255.0f * 2 - 1 : 0;
    }
    CHECK_OK(vae_encode(v, img, 1, (int)H, (int)W, mean, logvar));
    sd_rng rng;
    rng_seed(&rng, seed);
    rng_randn(&rng, draw, n1); /* the noise (batch 1) */
    rng_randn(&rng, draw, n1);     /* the masked image's posterior sample */
    nchw_to_nhwc(draw, masked, 1, c, h, w);
    const float sf = vae_get_config(v)->scaling_factor;
    for (size_t i = 0; i < n1; i++) masked[i] = (mean[i] + expf(0.5f * logvar[i]) * masked[i]) * sf;
    for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++) mask[(size_t)yy * w + xx] = latent_kept(&ir->mask, yy, xx) ? 0.0f : 1.0f;
    memcpy(ctx, cp->uncond, (size_t)cp->tokens * cp->dim * sizeof *ctx);
    memcpy(ctx + (size_t)cp->tokens * cp->dim, cp->cond, (size_t)cp->tokens * cp->dim * sizeof *ctx);
    for (int swapped = 0; swapped < 2; swapped++) {
        for (int b = 0; b < mb; b++)
            for (size_t p = 0; p < hw; p++) {
                float *o = x + ((size_t)b * hw + p) * oc;
                memcpy(o, cp->input0 + ((size_t)b * hw + p) * c, c * sizeof *o);
                if (!swapped) {
                    o[c] = mask[p];
                    memcpy(o + c + 1, masked + p * c, c * sizeof *o);
                } else {
                    memcpy(o + c, masked + p * c, c * sizeof *o);
                    o[2 * c] = mask[p];
                }
            }
        CHECK_OK(unet_forward(u, x, mb, h, w, (float)cp->t0, ctx, cp->tokens, NULL, y));
        double e = rel_l2(cp->output0, y, mb * n1);
        if (!swapped) {
            printf("%s 9-channel UNet input [latents, mask, masked-image latents]: call 0 output "
                   "rel err %.2g against the input built here\n", e < 1e-6 ? "ok  " : "FAIL", e);
            CHECK(e < 1e-6, "9-channel model input differs from [latents, mask, masked latents]: %g", e);
        } else {
            CHECK(e > 1e-3, "the mask / masked-latents order does not change the output (%g)", e);
        }
    }
    free(img), free(mean), free(logvar), free(draw), free(masked), free(mask), free(x), free(ctx), free(y);
out:
    free(dir);
    if (v) vae_free(v);
    if (u) unet_free(u);
}

static void nine_channel(void) {
    const char *model = make_inpaint_model();
    CHECK(model != NULL, "building the 9-channel model in %s", tmpdir);
    if (!model) return;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", model);
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, dir, NULL));
    if (!p) return;
    img_run ir;
    if (img_run_load(&ir, "inpaint")) {
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = "a red door", g.negative_prompt = "blurry";
        g.seed = 21, g.steps = 3, g.guidance = 7.5;
        g.init_image = &ir.image, g.mask_image = &ir.mask;
        capture cp = {0};
        g.on_event = capture_event, g.user = &cp;
        sd_result r;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "9-channel inpainting: %s", sd_last_error());
        if (st == SD_OK) {
            size_t n = (size_t)r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3], finite = 0;
            for (size_t i = 0; i < n; i++) finite += isfinite(r.latents[i]);
            CHECK(r.n_images == 1 && r.images[0].width == 128 && r.images[0].height == 128 &&
                  r.latent_shape[1] == 4 && finite == n && cp.c == 4 &&
                  r.model_calls == expected_calls(NULL, g.steps, 1.0),
                  "9-channel inpainting: %d images %dx%d, latents [%d][%d][%d][%d] (%zu finite), "
                  "%d calls", r.n_images, r.images[0].width, r.images[0].height, r.latent_shape[0],
                  r.latent_shape[1], r.latent_shape[2], r.latent_shape[3], finite, r.model_calls);
            sd_result_free(&r);
            if (cp.input0 && cp.output0 && cp.cond && cp.uncond) nine_channel_call(dir, &cp, &ir, g.seed);
        }
        free(cp.input0), free(cp.output0), free(cp.cond), free(cp.uncond);
        /* strength < 1: the image is encoded too, and the schedule starts later */
        g.on_event = NULL, g.strength = 0.7, g.steps = 4;
        st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK && r.model_calls == expected_calls(NULL, g.steps, g.strength),
              "9-channel inpainting at strength 0.7: %s",
              st == SD_OK ? "wrong call count" : sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        /* an inpainting UNet has nothing to work from without a mask (or an image) */
        g.strength = NAN, g.mask_image = NULL;
        st = sd_generate(p, &g, &r);
        CHECK(st != SD_OK && strstr(sd_last_error(), "needs a mask"), "9-channel without a mask: %s",
              st == SD_OK ? "accepted" : sd_last_error());
        g.init_image = NULL;
        st = sd_generate(p, &g, &r);
        CHECK(st != SD_OK && strstr(sd_last_error(), "init image and a mask"),
              "9-channel text-to-image: %s", st == SD_OK ? "accepted" : sd_last_error());
    }
    img_run_free(&ir);
    sd_pipeline_free(p);
}

/* ---- bad input --------------------------------------------------------------------------------- */

static void expect_lib_error(sd_pipeline *p, const sd_gen_params *g, const char *what,
                             const char *needle) {
    sd_result r;
    sd_status st = sd_generate(p, g, &r);
    CHECK(st != SD_OK && strstr(sd_last_error(), needle), "%s: %s", what,
          st == SD_OK ? "accepted" : sd_last_error());
    if (st == SD_OK) sd_result_free(&r);
}

static void bad_inputs(sd_pipeline *p) {
    img_run ir;
    if (!img_run_load(&ir, "inpaint")) {
        img_run_free(&ir);
        return;
    }
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x", g.steps = 4;
    g.mask_image = &ir.mask;
    expect_lib_error(p, &g, "mask without an init image", "needs an init image");
    g.mask_image = NULL, g.strength = 0.5;
    expect_lib_error(p, &g, "strength without an init image", "init image");
    g.init_image = &ir.image;
    const double bad[] = {0, -0.5, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        g.strength = bad[i];
        expect_lib_error(p, &g, "strength out of range", "outside (0, 1]");
    }
    g.strength = 0.2; /* int(4 * 0.2) = 0 steps */
    expect_lib_error(p, &g, "strength that runs no step", "runs no denoising step");
    g.strength = NAN;
    sd_image small, other;
    if (image_alloc(&small, 5, 64) == SD_OK) {
        g.init_image = &small;
        expect_lib_error(p, &g, "image narrower than 8 pixels", "smaller than 8");
        image_free(&small);
    }
    g.init_image = &ir.image;
    if (image_alloc(&other, 128, 120) == SD_OK) {
        g.mask_image = &other;
        expect_lib_error(p, &g, "mask of another size", "must be the same size");
        image_free(&other);
    }
    g.mask_image = NULL, g.width = 100;
    expect_lib_error(p, &g, "width not a multiple of 8", "multiple of 8");

    /* the same through bin/gen */
    char model[512], image[512], mask[512], small_mask[512];
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(image, sizeof image, "%s", expected_file("inpaint-image.png"));
    snprintf(mask, sizeof mask, "%s", expected_file("inpaint-mask_image.png"));
    snprintf(small_mask, sizeof small_mask, "%s", expected_file("img2img_euler_nonsquare-image.png"));
    const char *out = tmp("bad.png");
    int rc;
    const char *a1[] = {"-m", model, "--init-image", tmp("no-such-image.png"), "-o", out, "x", NULL};
    rc = run_gen(a1);
    expect_error("unreadable init image", rc, "no-such-image.png");
    const char *a2[] = {"-m", model, "--mask", mask, "-o", out, "x", NULL};
    rc = run_gen(a2);
    expect_error("--mask without --init-image", rc, "--init-image");
    const char *a3[] = {"-m", model, "--init-image", image, "--strength", "1.5", "-o", out, "x", NULL};
    rc = run_gen(a3);
    expect_error("--strength 1.5", rc, "strength");
    const char *a4[] = {"-m", model, "--init-image", image, "--mask", small_mask, "-o", out, "x", NULL};
    rc = run_gen(a4);
    expect_error("mask of another size", rc, "same size");
    const char *a5[] = {"-m", model, "--init-image", image, "--mask", tmp("no-such-mask.png"), "-o", out, "x", NULL};
    rc = run_gen(a5);
    expect_error("unreadable mask", rc, "no-such-mask.png");
    img_run_free(&ir);
}

static const char *const runs[] = {"img2img", "img2img_euler_nonsquare", "inpaint"};

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-img2img-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) library_run(p, runs[i]);
        every_scheduler(p);
        sizes(p);
        bad_inputs(p);
        sd_pipeline_free(p);
    }
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) cli_run(runs[i]);
    nine_channel();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
