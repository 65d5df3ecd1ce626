/* Helpers shared by the image-to-image tests (test_img2img.c, test_img2img_cases.c,
 * test_inpaint9.c): the recorded runs with their images, the latent-grid mask, bin/gen runs, and
 * two statements of diffusers' rules made independently of the code under test (get_timesteps'
 * call count; the init image's latents from the VAE and the generator's first draw). */
#ifndef SD_TEST_IMG2IMG_UTIL_H
#define SD_TEST_IMG2IMG_UTIL_H

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
#include "../include/sd.h"
#include "../schedulers/scheduler.h"
#include "../vae/vae.h"
#include "test.h"
#include "tool_run.h"

/* A per-process scratch folder (the test's main makes and removes it) and bin/gen's output. */
static char tmpdir[256] __attribute__((unused));

static inline const char *tmp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* Latent pixel (y, x) is kept (not repainted) where the mask pixel (8y, 8x) is below 0.5: the
 * binarised mask brought to the latent grid by torch's nearest interpolation (exactly 1/8). */
static inline bool latent_kept(const sd_image *mask, int y, int x) {
    const uint8_t *px = mask->rgb + ((size_t)(8 * y) * mask->width + 8 * x) * 3;
    return px[0] / 255.0f < 0.5f; /* grey masks: every channel the same */
}

typedef struct {
    fixture_run fr;
    sd_image image, mask;
    char st_path[256];
} img_run;

static inline bool img_run_load(img_run *r, const char *run) {
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

static inline void img_run_free(img_run *r) {
    image_free(&r->image);
    image_free(&r->mask);
    fixture_run_free(&r->fr);
}
/* Failed cleanly: exit status 1 or 2, one line of error text containing `needle`. */
static inline void expect_error(const char *what, int rc, const char *needle) {
    int lines = 0;
    for (const char *c = tool_output; *c; c++) lines += *c == '\n';
    CHECK((rc == 1 || rc == 2) && strstr(tool_output, needle) && lines == 1,
          "%s: exit status %d, expected one line mentioning '%s', got: %s", what, rc, needle, tool_output);
}

static inline const char *expected_file(const char *name) {
    static char rel[256];
    snprintf(rel, sizeof rel, "sd15-tiny/expected/%s", name);
    return fixture(rel);
}

/* get_timesteps, stated once more: the calls that run for `strength` out of `steps` (cls NULL:
 * the model's scheduler). */
static inline int expected_calls(const char *cls, int steps, double strength) {
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
static inline float *init_latents(const sd_image *img, uint64_t seed, int *h, int *w, int *c) {
    vae *v;
    if (vae_load(&v, fixture("sd15-tiny/pipeline/vae"), NULL) != SD_OK) return NULL;
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

#endif
