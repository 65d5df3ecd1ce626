/* UNet2DConditionModel against diffusers: single calls (unet_direct), every denoiser call of the
 * recorded pipeline runs, and load errors (missing tensor, wrong shape, unsupported config). */
#include <dirent.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/safetensors.h"
#include "../unet/unet.h"
#include "test.h"

static const double TOL = 1e-5;

/* snprintf that records a failure instead of silently truncating a path or a label. */
static void fmt(char *buf, size_t size, const char *format, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t size, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, size, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) CHECK(0, "name too long: %s", buf);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One UNet call on NCHW input, compared (NCHW) with the recorded output. */
static int check_call(unet *m, const char *what, const float *x_nchw, int n, int c, int h, int w, float t,
                      const float *ctx, int ctx_len, const unet_added_cond *added, const float *want_nchw) {
    const unet_config *cfg = unet_get_config(m);
    size_t in_n = (size_t)n * c * h * w, out_n = (size_t)n * cfg->out_channels * h * w;
    float *x = malloc(in_n * sizeof *x), *y = malloc(out_n * sizeof *y), *y_nchw = malloc(out_n * sizeof *y);
    nchw_to_nhwc(x_nchw, x, n, c, h, w);
    sd_status st = unet_forward(m, x, n, h, w, t, ctx, ctx_len, added, y);
    CHECK(st == SD_OK, "%s: unet_forward: %s", what, sd_last_error());
    int ok = 0;
    if (st == SD_OK) {
        nhwc_to_nchw(y, y_nchw, n, h, w, cfg->out_channels);
        ok = check_rel(what, y_nchw, want_nchw, out_n, TOL);
    }
    free(x), free(y), free(y_nchw);
    return ok;
}

static void test_direct(unet *m) {
    const char *file = "sd15-tiny/expected/unet_direct.safetensors";
    int64_t xs[8], cs[8];
    float *sample = fixture_tensor(file, "sample", xs, NULL);
    float *ehs = fixture_tensor(file, "encoder_hidden_states", cs, NULL);
    static const float ts[] = {0.0f, 1.0f, 500.5f, 999.0f};
    for (int i = 0; sample && ehs && i < 4; i++) {
        char name[64], what[96];
        fmt(name, sizeof name, "out_t%.1f", ts[i]);
        float *want = fixture_tensor(file, name, NULL, NULL);
        fmt(what, sizeof what, "sd15-tiny unet_direct t=%g", ts[i]);
        if (want)
            check_call(m, what, sample, (int)xs[0], (int)xs[1], (int)xs[2], (int)xs[3], ts[i], ehs, (int)cs[1],
                       NULL, want);
        free(want);
    }
    free(sample);
    free(ehs);
}

/* The conditioning diffusers builds for a run: with CFG, [negative; positive], each half holding
 * every prompt's embeddings repeated num_images_per_prompt times in a row (encode_prompt's
 * repeat + view); without CFG, the positive half alone. */
static float *run_context(const float *pos, const float *neg, int n_prompts, int per_prompt, int len, int dim,
                          int cfg) {
    const size_t one = (size_t)len * dim;
    const int half = n_prompts * per_prompt;
    float *ctx = malloc((size_t)(cfg ? 2 : 1) * half * one * sizeof *ctx);
    float *p = ctx;
    for (int part = cfg ? 0 : 1; part < 2; part++)
        for (int i = 0; i < n_prompts; i++)
            for (int r = 0; r < per_prompt; r++, p += one)
                memcpy(p, (part == 0 ? neg : pos) + i * one, one * sizeof *p);
    return ctx;
}

/* The run's JSON: guidance scale and images per prompt. */
static int read_run_json(const char *rel, double *guidance, int *per_prompt) {
    sd_cfg c;
    if (cfg_open(&c, fixture(rel)) != SD_OK) {
        CHECK(0, "%s: %s", rel, sd_last_error());
        return 0;
    }
    *guidance = cfg_num(&c, "guidance_scale", 7.5);
    *per_prompt = cfg_int(&c, "num_images_per_prompt", 1);
    int ok = cfg_status(&c) == SD_OK;
    CHECK(ok, "%s: %s", rel, sd_last_error());
    cfg_close(&c);
    return ok;
}

static int has_tensor(const char *rel, const char *name) {
    st_file f;
    if (st_open(&f, fixture(rel)) != SD_OK) return 0;
    int has = st_find(&f, name) != NULL;
    st_close(&f);
    return has;
}

/* Every call k of one run: unet(model_inputs[k], model_timesteps[k], context) vs model_outputs[k].
 * `context_pos`/`context_neg` override the recorded prompt embeddings (NULL: read them). */
static void test_run(unet *m, const char *model, const char *run, const float *ctx_pos, const float *ctx_neg,
                     int *calls) {
    char rel[256], json[256], what[160];
    fmt(rel, sizeof rel, "%s/expected/%s.safetensors", model, run);
    fmt(json, sizeof json, "%s/expected/%s.json", model, run);
    double guidance;
    int per_prompt;
    if (!read_run_json(json, &guidance, &per_prompt)) return;
    const int cfg = guidance > 1.0;
    int64_t is[8], es[8];
    float *inputs = fixture_tensor(rel, "model_inputs", is, NULL);
    float *outputs = fixture_tensor(rel, "model_outputs", NULL, NULL);
    float *steps = fixture_tensor(rel, "model_timesteps", NULL, NULL);
    float *pos = NULL, *neg = NULL;
    if (!ctx_pos) {
        pos = fixture_tensor(rel, "prompt_embeds", es, NULL);
        neg = fixture_tensor(rel, "negative_prompt_embeds", NULL, NULL);
    } else {
        es[0] = 1, es[1] = 77, es[2] = unet_get_config(m)->cross_attention_dim;
    }
    const float *p = ctx_pos ? ctx_pos : pos, *ng = ctx_neg ? ctx_neg : neg;
    if (inputs && outputs && steps && p && ng) {
        const int k_calls = (int)is[0], nb = (int)is[1], c = (int)is[2], h = (int)is[3], w = (int)is[4];
        const int n_prompts = (int)es[0];
        CHECK(nb == (cfg ? 2 : 1) * n_prompts * per_prompt, "%s/%s: batch %d does not match cfg=%d x %d x %d",
              model, run, nb, cfg, n_prompts, per_prompt);
        float *ctx = run_context(p, ng, n_prompts, per_prompt, (int)es[1], (int)es[2], cfg);
        const size_t per_call = (size_t)nb * c * h * w;
        for (int k = 0; k < k_calls; k++) {
            fmt(what, sizeof what, "%s/%s call %d/%d (t=%g, batch %d, %dx%d)", model, run, k + 1, k_calls,
                     steps[k], nb, h, w);
            check_call(m, what, inputs + k * per_call, nb, c, h, w, steps[k], ctx, (int)es[1], NULL,
                       outputs + k * per_call);
            (*calls)++;
        }
        free(ctx);
    }
    free(inputs), free(outputs), free(steps), free(pos), free(neg);
}

/* Every run of <model>/expected that records prompt embeddings and denoiser calls. */
static void test_runs_with_embeddings(unet *m, const char *model) {
    char dir[256];
    fmt(dir, sizeof dir, "%s/expected", model);
    DIR *d = opendir(fixture(dir));
    CHECK(d != NULL, "cannot list %s", fixture(dir));
    if (!d) return;
    char names[64][128];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 64;) {
        size_t len = strlen(e->d_name);
        if (len > 5 && len < 120 && !strcmp(e->d_name + len - 5, ".json")) {
            memcpy(names[n], e->d_name, len - 5);
            names[n++][len - 5] = '\0';
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    int runs = 0, calls = 0;
    for (int i = 0; i < n; i++) {
        char rel[256];
        fmt(rel, sizeof rel, "%s/expected/%s.safetensors", model, names[i]);
        if (!has_tensor(rel, "prompt_embeds") || !has_tensor(rel, "model_outputs")) continue;
        test_run(m, model, names[i], NULL, NULL, &calls);
        runs++;
    }
    printf("%s: %d runs with prompt embeddings, %d denoiser calls checked\n", model, runs, calls);
    CHECK(runs > 0, "%s: no run records prompt embeddings", model);
}

/* After one call at a size, later calls at that size must not grow the arena; prints the time of
 * one forward (information only, not asserted). */
static void test_scratch_and_time(unet *m) {
    const unet_config *c = unet_get_config(m);
    const int n = 2, h = 16, w = 16, len = 77;
    float *x = malloc(sizeof(float) * n * h * w * c->in_channels);
    float *ctx = malloc(sizeof(float) * n * len * c->cross_attention_dim);
    float *y = malloc(sizeof(float) * n * h * w * c->out_channels);
    fill_random(x, (size_t)n * h * w * c->in_channels, 1);
    fill_random(ctx, (size_t)n * len * c->cross_attention_dim, 2);
    size_t bytes = 0, grew = 0;
    CHECK_OK(unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y));
    CHECK_OK(unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y));
    unet_scratch_stats(m, &bytes, &grew);
    CHECK(grew == 0, "second forward at the same size grew the arena %zu times", grew);
    const int reps = 20;
    double t0 = now_s();
    for (int i = 0; i < reps; i++) unet_forward(m, x, n, h, w, 500.0f, ctx, len, NULL, y);
    double per = (now_s() - t0) / reps;
    unet_scratch_stats(m, &bytes, &grew);
    CHECK(grew == 0, "repeated forwards grew the arena %zu times", grew);
    printf("sd15-tiny forward, batch %d, %dx%d latents: %.2f ms; scratch %.1f KiB\n", n, h, w, per * 1e3,
           bytes / 1024.0);
    free(x), free(ctx), free(y);
}

int main(void) {
    unet *m = NULL;
    CHECK_OK(unet_load(&m, fixture("sd15-tiny/pipeline/unet")));
    if (m) {
        test_direct(m);
        test_runs_with_embeddings(m, "sd15-tiny");
        test_scratch_and_time(m);
        unet_free(m);
    }
    return test_summary();
}
