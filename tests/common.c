#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/layout.h"
#include "../core/safetensors.h"
#include "test.h"

#ifndef SD_FIXTURES_DIR
#define SD_FIXTURES_DIR "tests/fixtures"
#endif

int test_passed, test_failed;

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
