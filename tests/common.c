#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/layout.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "test.h"

#ifndef SD_FIXTURES_DIR
#define SD_FIXTURES_DIR "tests/fixtures"
#endif

int test_passed, test_failed;

/* The suite's settings come from the environment as the tools' do (the library reads none):
 * `make test-isa` runs every test program with SD_KERNEL_ISA=avx2 and =generic. A constructor,
 * so that every program linking this file honours it before its main runs anything. */
__attribute__((constructor)) static void settings_from_env(void) {
    const char *isa = getenv("SD_KERNEL_ISA");
    if (isa && *isa && sd_set_kernel_isa(isa) != SD_OK) {
        fprintf(stderr, "SD_KERNEL_ISA: %s\n", sd_last_error());
        exit(2);
    }
}

int test_summary(void) {
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}

double rel_l2(const float *got, const float *want, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    if (isnan(num)) return INFINITY;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int check_rel(const char *what, const float *got, const float *want, size_t n, double tol) {
    double err = rel_l2(got, want, n), maxd = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= maxd)) maxd = d, at = i; /* NaN counts as the largest */
    }
    int ok = err < tol;
    printf("%s %s: rel err %.3g (tol %.0e), max abs diff %.3g at %zu", ok ? "ok  " : "FAIL", what,
           err, tol, maxd, at);
    if (!ok && n) printf(" (got %.7g, want %.7g; first: got %.7g want %.7g)", got[at], want[at], got[0], want[0]);
    printf("\n");
    CHECK(ok, "%s: relative error %.3g >= %.0e", what, err, tol);
    return ok;
}

int check_equal_i32(const char *what, const int32_t *got, const int32_t *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            CHECK(0, "%s: element %zu is %d, expected %d", what, i, got[i], want[i]);
            return 0;
        }
    CHECK(1, "%s", what);
    return 1;
}

const char *fixture(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", SD_FIXTURES_DIR, rel);
    return buf;
}

const char *tool_path(const char *name) {
    static char buf[4096];
    const char *dir = getenv("SD_BIN_DIR");
    snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : "bin", name);
    return buf;
}

const char *test_output_dir(const char *name) {
    static char buf[4096];
    char exe[3072]; /* shorter than buf, so the name fits after it */
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = NULL;
    if (len > 0) {
        exe[len] = '\0';
        slash = strrchr(exe, '/');
    }
    if (slash) {
        *slash = '\0';
        snprintf(buf, sizeof buf, "%s/%s", exe, name);
    } else { /* no /proc: the default build folder, relative to the repository root */
        snprintf(buf, sizeof buf, "build/tests/%s", name);
    }
    mkdir(buf, 0755); /* may exist already */
    return buf;
}

void nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w) {
    layout_nchw_to_nhwc(src, dst, n, c, h, w);
}

void nhwc_to_nchw(const float *src, float *dst, int n, int h, int w, int c) {
    layout_nhwc_to_nchw(src, dst, n, h, w, c);
}

void fill_random(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

static void *read_fixture_tensor(const char *file, const char *name, int64_t *shape, int *ndim,
                                 int as_ids) {
    st_file f;
    if (st_open(&f, fixture(file)) != SD_OK) {
        CHECK(0, "fixture %s: %s", file, sd_last_error());
        return NULL;
    }
    const st_tensor *t = st_find(&f, name);
    void *out = NULL;
    if (!t) {
        CHECK(0, "fixture %s has no tensor '%s'", file, name);
    } else {
        int64_t n = st_numel(t);
        if (shape) memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape); /* caller sized for ndim */
        if (ndim) *ndim = t->ndim;
        out = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t i = 0; i < n; i++) {
            double v;
            if (t->dtype == ST_I32) { int32_t x; memcpy(&x, (const char *)t->data + 4 * i, 4); v = x; }
            else if (t->dtype == ST_I64) { int64_t x; memcpy(&x, (const char *)t->data + 8 * i, 8); v = (double)x; }
            else { v = NAN; }
            if (st_is_float(t->dtype)) break;
            if (as_ids) ((int32_t *)out)[i] = (int32_t)v;
            else ((float *)out)[i] = (float)v;
        }
        if (st_is_float(t->dtype)) {
            if (as_ids) {
                float *tmpf = malloc((size_t)(n ? n : 1) * 4);
                st_to_f32(t, tmpf);
                for (int64_t i = 0; i < n; i++) ((int32_t *)out)[i] = (int32_t)tmpf[i];
                free(tmpf);
            } else {
                st_to_f32(t, out);
            }
        }
    }
    st_close(&f);
    return out;
}

float *fixture_tensor(const char *file, const char *name, int64_t *shape, int *ndim) {
    return read_fixture_tensor(file, name, shape, ndim, 0);
}

int32_t *fixture_ids(const char *file, const char *name, int64_t *shape, int *ndim) {
    return read_fixture_tensor(file, name, shape, ndim, 1);
}

/* Exact JSON equality (numbers compared as doubles, so -inf == -inf). */
bool fixture_link_parts(const char *model, const char *dir, const char *const *parts, int n) {
    for (int i = 0; i < n; i++) {
        char src[512], path[1024];
        snprintf(src, sizeof src, "%s/%s", model, parts[i]);
        snprintf(path, sizeof path, "%s/%s", dir, parts[i]);
        char *abs = realpath(fixture(src), NULL); /* the fixtures' path may be relative */
        const bool linked = abs && symlink(abs, path) == 0;
        free(abs);
        if (!linked) return false;
    }
    return true;
}

bool fixture_json_equal(const cJSON *a, const cJSON *b) {
    if (!a || !b) return a == b;
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return a->valuedouble == b->valuedouble;
    if (cJSON_IsBool(a) && cJSON_IsBool(b)) return cJSON_IsTrue(a) == cJSON_IsTrue(b);
    if (cJSON_IsNull(a) || cJSON_IsNull(b)) return cJSON_IsNull(a) && cJSON_IsNull(b);
    if (cJSON_IsString(a) && cJSON_IsString(b)) return !strcmp(a->valuestring, b->valuestring);
    if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return false;
        for (const cJSON *x = a->child, *y = b->child; x; x = x->next, y = y->next)
            if (!fixture_json_equal(x, y)) return false;
        return true;
    }
    return false;
}

bool fixture_json_in_list(const cJSON *array, const char *s) {
    for (const cJSON *e = array ? array->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && !strcmp(e->valuestring, s)) return true;
    return false;
}

/* The options a run passed to from_config: recorded keys the class set explicitly (not in
 * _use_default_values) whose value the pipeline config does not already give. */
cJSON *fixture_run_overrides(const cJSON *recorded, const cJSON *pipeline) {
    cJSON *ov = cJSON_CreateObject();
    const cJSON *defaults = cJSON_GetObjectItem(recorded, "_use_default_values");
    for (const cJSON *e = recorded->child; e; e = e->next) {
        if (e->string[0] == '_' || fixture_json_in_list(defaults, e->string)) continue;
        if (!fixture_json_equal(e, cJSON_GetObjectItem(pipeline, e->string)))
            cJSON_AddItemToObject(ov, e->string, cJSON_Duplicate(e, 1));
    }
    return ov;
}


/* Generation settings from a run's JSON object (the shared fixtures' expected/<run>.json and the
 * entries of extra/extra_runs.json have the same keys). */
static void run_params(fixture_run *r) {
    const cJSON *j = r->json, *v;
    sd_gen_params *g = &r->g;
    sd_gen_params_init(g);
    g->prompt = cJSON_GetObjectItem(j, "prompt")->valuestring;
    v = cJSON_GetObjectItem(j, "negative_prompt");
    g->negative_prompt = cJSON_IsString(v) ? v->valuestring : NULL;
    g->seed = (uint64_t)cJSON_GetObjectItem(j, "seed")->valuedouble;
    g->steps = cJSON_GetObjectItem(j, "num_inference_steps")->valueint;
    g->guidance = cJSON_GetObjectItem(j, "guidance_scale")->valuedouble;
    /* Image-to-image runs take their size from the image and record none. */
    if ((v = cJSON_GetObjectItem(j, "width")) && cJSON_IsNumber(v)) g->width = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "height")) && cJSON_IsNumber(v)) g->height = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "strength")) && cJSON_IsNumber(v)) g->strength = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "guidance_rescale")) && cJSON_IsNumber(v)) g->guidance_rescale = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "num_images_per_prompt")) && cJSON_IsNumber(v)) g->batch = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "eta")) && cJSON_IsNumber(v)) g->eta = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "clip_skip")) && cJSON_IsNumber(v)) g->clip_skip = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "max_sequence_length")) && cJSON_IsNumber(v))
        g->max_sequence_length = v->valueint;
    g->scheduler = cJSON_GetObjectItem(j, "scheduler_class")->valuestring;
    if ((v = cJSON_GetObjectItem(j, "image_file")) && cJSON_IsString(v)) {
        CHECK_OK(image_read(fixture(v->valuestring), &r->init));
        g->init_image = &r->init;
    }
    if ((v = cJSON_GetObjectItem(j, "mask_file")) && cJSON_IsString(v)) {
        CHECK_OK(image_read(fixture(v->valuestring), &r->mask));
        g->mask_image = &r->mask;
    }
    r->overrides_text = cJSON_PrintUnformatted(r->overrides);
    g->scheduler_overrides = r->overrides_text;
}

bool fixture_run_load(fixture_run *r, const char *model, const char *run) {
    memset(r, 0, sizeof *r);
    char rel[512], sched_rel[512];
    snprintf(rel, sizeof rel, "%s/expected/%s.json", model, run);
    snprintf(sched_rel, sizeof sched_rel, "%s/pipeline/scheduler/scheduler_config.json", model);
    char *text;
    sd_cfg pc;
    if (sd_read_file(fixture(rel), &text, NULL) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return false;
    }
    sd_status st = sd_json_parse(text, rel, &r->json); /* Python writes -Infinity */
    free(text);
    if (st != SD_OK || cfg_open(&pc, fixture(sched_rel)) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        cJSON_Delete(r->json);
        r->json = NULL;
        return false;
    }
    /* The run built its scheduler as CLASS.from_config(pipeline config, **overrides). */
    r->overrides = fixture_run_overrides(cJSON_GetObjectItem(r->json, "scheduler_config"), pc.root);
    cfg_close(&pc);
    run_params(r);
    return true;
}

void fixture_run_from_json(fixture_run *r, const cJSON *run) {
    memset(r, 0, sizeof *r);
    r->json = cJSON_Duplicate(run, 1);
    const cJSON *ov = cJSON_GetObjectItem(run, "scheduler_overrides");
    r->overrides = ov ? cJSON_Duplicate(ov, 1) : cJSON_CreateObject();
    run_params(r);
}

void fixture_run_free(fixture_run *r) {
    image_free(&r->init), image_free(&r->mask);
    cJSON_free(r->overrides_text);
    cJSON_Delete(r->overrides);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* ---- A recorded run generated again, every intermediate compared as it is produced ---- */

typedef struct {
    float *model_inputs, *model_outputs, *latents_steps, *prompt_embeds, *negative_embeds;
    float *pooled; /* [uncond; cond] rows of the first call's text_embeds (SDXL), or NULL */
    int64_t pooled_shape[2];
    int n_calls, n_steps;
    double worst_embed, worst_in, worst_out, worst_lat;
    /* Recorded tensors hold the calls that ran, in order: an img2img run starts at a later call
     * index, so events are matched by their position, not by their index. */
    int inputs_seen, outputs_seen, steps_seen, pooled_seen;
    float *own_steps; /* our latents after each step, NCHW, for the sensitivity measurement */
} run_check;

double fixture_compare_slice(const sd_tensor *t, const float *rec, int k) {
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float *nchw = malloc(n * sizeof *nchw);
    nhwc_to_nchw(t->data, nchw, t->batch, t->h, t->w, t->c);
    double e = rel_l2(nchw, rec + (size_t)k * n, n);
    free(nchw);
    return e;
}

static void compare_embeds(run_check *rc, const sd_event *ev) {
    const bool negative = ev->kind == SD_EVENT_NEGATIVE_EMBEDS;
    const size_t n = (size_t)ev->tensor.h * ev->tensor.w * ev->tensor.c;
    const float *want;
    if (ev->total == 2 && ev->index == 1) { /* a pooled embedding (SDXL) */
        if (!rc->pooled) return;
        rc->pooled_seen++;
        const int row = negative ? 0 : (int)rc->pooled_shape[0] - 1;
        if ((int64_t)n != rc->pooled_shape[1]) {
            rc->worst_embed = INFINITY;
            return;
        }
        want = rc->pooled + (size_t)row * n;
    } else {
        want = negative ? rc->negative_embeds : rc->prompt_embeds;
        if (!want) return;
    }
    double e = rel_l2(ev->tensor.data, want, n);
    if (e > rc->worst_embed) rc->worst_embed = e;
}

static int on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    double e;
    switch (ev->kind) {
    case SD_EVENT_PROMPT_EMBEDS:
    case SD_EVENT_NEGATIVE_EMBEDS: compare_embeds(rc, ev); return 0;
    case SD_EVENT_MODEL_INPUT:
        if (!rc->model_inputs) return 0;
        if (rc->inputs_seen >= rc->n_calls) break;
        e = fixture_compare_slice(&ev->tensor, rc->model_inputs, rc->inputs_seen++);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d t=%g input err %.3g\n", ev->index, ev->timestep, e);
        if (e > rc->worst_in) rc->worst_in = e;
        return 0;
    case SD_EVENT_MODEL_OUTPUT:
        if (!rc->model_outputs) return 0;
        if (rc->outputs_seen >= rc->n_calls) break;
        e = fixture_compare_slice(&ev->tensor, rc->model_outputs, rc->outputs_seen++);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d output err %.3g\n", ev->index, e);
        if (e > rc->worst_out) rc->worst_out = e;
        return 0;
    case SD_EVENT_STEP:
        if (rc->steps_seen >= rc->n_steps) break;
        const int k = rc->steps_seen++;
        if (rc->own_steps) {
            size_t n = (size_t)ev->tensor.batch * ev->tensor.h * ev->tensor.w * ev->tensor.c;
            nhwc_to_nchw(ev->tensor.data, rc->own_steps + (size_t)k * n, ev->tensor.batch,
                         ev->tensor.h, ev->tensor.w, ev->tensor.c);
        }
        if (!rc->latents_steps) return 0; /* a sensitivity run: nothing to compare */
        e = fixture_compare_slice(&ev->tensor, rc->latents_steps, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   step %d latents err %.3g\n", ev->index, e);
        if (e > rc->worst_lat) rc->worst_lat = e;
        return 0;
    case SD_EVENT_DECODE:
    case SD_EVENT_POOLED_EMBEDS: return 0;
    }
    rc->worst_in = INFINITY; /* more calls or steps than recorded */
    return 0;
}

void fixture_check_pixels(const char *name, const sd_result *r, const float *image, int b_count) {
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

/* How far the run drifts from itself when the noise of its start moves by 1e-7 relative: the
 * floor below which no float32 implementation can be expected to follow the recorded trajectory.
 * The noise is given as sd_gen_params.latents: the generator's first draw for text-to-image, its
 * second for img2img (the first is the init image's VAE sample). Inpainting takes latents= as the
 * whole start (diffusers' meaning), a different run: no measurement (0). */
static double run_sensitivity(sd_pipeline *p, const sd_gen_params *base, const float *own_steps,
                              int n_steps, size_t per_step) {
    if (base->mask_image) return 0;
    sd_gen_params g = *base;
    const size_t skip = g.init_image ? per_step / (size_t)g.batch : 0, n = per_step;
    float *draw = malloc((skip + n) * sizeof *draw), *noise = draw + skip;
    sd_rng rng;
    rng_seed(&rng, g.seed);
    rng_randn(&rng, draw, skip + n);
    for (size_t i = 0; i < n; i++) noise[i] *= 1.0f + 1e-7f * (float)((long)(i * 7919 % 101) - 50) / 50.0f;
    run_check rc = {0};
    rc.n_steps = rc.n_calls = n_steps;
    rc.own_steps = calloc((size_t)n_steps * per_step, sizeof(float));
    g.latents = noise;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    double s = 0; /* a failed measurement relaxes nothing */
    if (sd_generate(p, &g, &r) == SD_OK) {
        s = trajectory_divergence(own_steps, rc.own_steps, n_steps, per_step);
        sd_result_free(&r);
    }
    free(rc.own_steps);
    free(draw);
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

void fixture_check_run(sd_pipeline *p, const char *name, fixture_run *fr, const char *st_path,
                       const char *prefix) {
    sd_gen_params g = fr->g;

    run_check rc = {0};
    int64_t in_shape[8] = {0}, lat_shape[8] = {0};
    rc.model_inputs = run_tensor(st_path, prefix, "model_inputs", in_shape);
    rc.model_outputs = run_tensor(st_path, prefix, "model_outputs", NULL);
    rc.latents_steps = run_tensor(st_path, prefix, "latents_steps", lat_shape);
    rc.n_calls = (int)in_shape[0];
    rc.n_steps = (int)lat_shape[0];
    const size_t per_step = (size_t)lat_shape[1] * lat_shape[2] * lat_shape[3] * lat_shape[4];
    rc.own_steps = calloc((size_t)rc.n_steps * per_step, sizeof(float));
    /* Not every run records embeddings (sd2v euler_v_zsnr does not). */
    if (has_tensor(st_path, prefix, "prompt_embeds"))
        rc.prompt_embeds = run_tensor(st_path, prefix, "prompt_embeds", NULL);
    if (has_tensor(st_path, prefix, "negative_prompt_embeds"))
        rc.negative_embeds = run_tensor(st_path, prefix, "negative_prompt_embeds", NULL);
    /* Runs recorded by the denoiser hook keep its first call's context [uncond; cond] instead
     * (and SDXL's pooled text_embeds likewise). */
    float *context = NULL;
    if (!rc.prompt_embeds && g.batch == 1 && has_tensor(st_path, prefix, "context")) {
        int64_t cs[3];
        context = run_tensor(st_path, prefix, "context", cs);
        if (context && cs[0] == 2) rc.negative_embeds = context, rc.prompt_embeds = context + cs[1] * cs[2];
        else if (context && cs[0] == 1) rc.prompt_embeds = context;
        if (has_tensor(st_path, prefix, "pooled"))
            rc.pooled = run_tensor(st_path, prefix, "pooled", rc.pooled_shape);
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
        /* SDXL sends its pooled embeddings as events (SD3 does not): both must have been
         * compared (cond, and uncond with CFG). */
        const bool pooled_ok = !rc.pooled || sd_pipeline_family(p) != SD_FAMILY_SDXL ||
                               rc.pooled_seen == (g.guidance > 1.0 ? 2 : 1);
        int ok = rc.worst_embed < 1e-5 && pooled_ok && trajectory < tol && r.model_calls == rc.n_calls;
        printf("%s %s: %d calls, embeds %.2g%s, inputs %.2g, outputs %.2g, latents %.2g (tol %.2g",
               ok ? "ok  " : "FAIL", name, r.model_calls, rc.worst_embed,
               rc.pooled_seen ? " (with pooled)" : "", rc.worst_in, rc.worst_out, rc.worst_lat, tol);
        if (sensitivity > 0) printf("; the run's own divergence from 1e-7 noise: %.2g", sensitivity);
        printf(", %.2f s)\n", r.seconds);
        CHECK(ok, "%s: intermediates differ (calls %d, recorded %d)", name, r.model_calls, rc.n_calls);
        CHECK(r.n_images == g.batch, "%s: %d images", name, r.n_images);
        if (image && r.n_images == g.batch) fixture_check_pixels(name, &r, image, g.batch);
        sd_result_free(&r);
    }
    free(rc.model_inputs), free(rc.model_outputs), free(rc.latents_steps), free(rc.own_steps);
    if (context) free(context);
    else free(rc.prompt_embeds), free(rc.negative_embeds);
    free(rc.pooled);
    free(image);
}

const char *test_path(const char *dir, const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}
