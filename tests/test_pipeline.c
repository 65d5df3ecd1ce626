/* End to end through the library: every text-to-image run recorded in sd15-tiny/expected and
 * sd2v-tiny/expected is generated again with the run's settings, and every intermediate the
 * fixture holds is compared as it is produced: prompt embeddings (rel. L2 < 1e-5), each denoiser
 * input and output and the latents after each step (< 1e-4, trajectory tolerance), the final
 * 8-bit pixels (within one level on >= 99.9% of pixels, never more than two apart). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
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
        if (ev->index >= rc->n_calls) break;
        e = compare_slice(&ev->tensor, rc->model_inputs, ev->index);
        if (e > rc->worst_in) rc->worst_in = e;
        return;
    case SD_EVENT_MODEL_OUTPUT:
        if (ev->index >= rc->n_calls) break;
        e = compare_slice(&ev->tensor, rc->model_outputs, ev->index);
        if (e > rc->worst_out) rc->worst_out = e;
        return;
    case SD_EVENT_STEP:
        if (ev->index >= rc->n_steps) break;
        e = compare_slice(&ev->tensor, rc->latents_steps, ev->index);
        if (e > rc->worst_lat) rc->worst_lat = e;
        return;
    case SD_EVENT_DECODE: return;
    }
    rc->worst_in = INFINITY; /* more calls or steps than recorded */
}

/* Compares 8-bit images with the recorded float image (NHWC in [0,1], PNG = round(x * 255)). */
static void check_pixels(const char *name, const sd_result *r, const float *image, int b_count) {
    long total = 0, differ = 0;
    int maxd = 0;
    for (int b = 0; b < b_count; b++) {
        const sd_image *im = &r->images[b];
        size_t n = (size_t)im->width * im->height * 3;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)im->rgb[i] - (int)nearbyintf(image[b * n + i] * 255.0f));
            if (d > maxd) maxd = d;
            differ += d > 0;
            total++;
        }
    }
    printf("     %s pixels: %ld of %ld values differ, max diff %d\n", name, differ, total, maxd);
    CHECK(maxd <= 2 && differ * 1000 <= total, "%s: %ld/%ld pixel values differ (max %d)", name,
          differ, total, maxd);
}

static void run_one(sd_pipeline *p, const char *model, const char *run) {
    char path[512], st_path[512];
    snprintf(path, sizeof path, "%s/expected/%s.json", model, run);
    snprintf(st_path, sizeof st_path, "%s/expected/%s.safetensors", model, run);
    char *text;
    if (sd_read_file(fixture(path), &text, NULL) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return;
    }
    cJSON *j = NULL;
    sd_status parsed = sd_json_parse(text, path, &j); /* Python's -Infinity needs this */
    free(text);
    if (parsed != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return;
    }
    sd_gen_params g;
    sd_gen_params_init(&g);
    const cJSON *v;
    g.prompt = cJSON_GetObjectItem(j, "prompt")->valuestring;
    v = cJSON_GetObjectItem(j, "negative_prompt");
    g.negative_prompt = cJSON_IsString(v) ? v->valuestring : NULL;
    g.seed = (uint64_t)cJSON_GetObjectItem(j, "seed")->valuedouble;
    g.steps = cJSON_GetObjectItem(j, "num_inference_steps")->valueint;
    g.guidance = cJSON_GetObjectItem(j, "guidance_scale")->valuedouble;
    g.width = cJSON_GetObjectItem(j, "width")->valueint;
    g.height = cJSON_GetObjectItem(j, "height")->valueint;
    if ((v = cJSON_GetObjectItem(j, "guidance_rescale")) && cJSON_IsNumber(v)) g.guidance_rescale = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "num_images_per_prompt")) && cJSON_IsNumber(v)) g.batch = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "eta")) && cJSON_IsNumber(v)) g.eta = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "clip_skip")) && cJSON_IsNumber(v)) g.clip_skip = v->valueint;
    g.scheduler = cJSON_GetObjectItem(j, "scheduler_class")->valuestring;

    run_check rc = {0};
    rc.file = st_path;
    int nd;
    rc.model_inputs = fixture_tensor(st_path, "model_inputs", rc.in_shape, &nd);
    rc.model_outputs = fixture_tensor(st_path, "model_outputs", NULL, NULL);
    rc.latents_steps = fixture_tensor(st_path, "latents_steps", rc.lat_shape, &nd);
    rc.n_calls = (int)rc.in_shape[0];
    rc.n_steps = (int)rc.lat_shape[0];
    /* Not every run records embeddings (sd2v euler_v_zsnr does not). */
    st_file f;
    if (st_open(&f, fixture(st_path)) == SD_OK) {
        if (st_find(&f, "prompt_embeds")) rc.prompt_embeds = fixture_tensor(st_path, "prompt_embeds", NULL, NULL);
        if (st_find(&f, "negative_prompt_embeds"))
            rc.negative_embeds = fixture_tensor(st_path, "negative_prompt_embeds", NULL, NULL);
        st_close(&f);
    }
    float *image = fixture_tensor(st_path, "image", NULL, NULL);
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    char name[128];
    snprintf(name, sizeof name, "%.20s/%s", model, run);
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "%s: %s", name, sd_last_error());
    if (st == SD_OK) {
        int ok = rc.worst_embed < 1e-5 && rc.worst_in < 1e-4 && rc.worst_out < 1e-4 && rc.worst_lat < 1e-4 &&
                 r.model_calls == rc.n_calls;
        printf("%s %s: %d calls, embeds %.2g, inputs %.2g, outputs %.2g, latents %.2g (%.2f s)\n",
               ok ? "ok  " : "FAIL", name, r.model_calls, rc.worst_embed, rc.worst_in, rc.worst_out,
               rc.worst_lat, r.seconds);
        CHECK(ok, "%s: intermediates differ (calls %d, recorded %d)", name, r.model_calls, rc.n_calls);
        CHECK(r.n_images == g.batch, "%s: %d images", name, r.n_images);
        if (image && r.n_images == g.batch) check_pixels(name, &r, image, g.batch);
        sd_result_free(&r);
    }
    free(rc.model_inputs), free(rc.model_outputs), free(rc.latents_steps);
    free(rc.prompt_embeds), free(rc.negative_embeds), free(image);
    cJSON_Delete(j);
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
        sd_pipeline_free(p);
    }
    CHECK_OK(sd_pipeline_load(&p, fixture("sd2v-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof sd2v_runs / sizeof *sd2v_runs; i++) run_one(p, "sd2v-tiny", sd2v_runs[i]);
        sd_pipeline_free(p);
    }
    return test_summary();
}
