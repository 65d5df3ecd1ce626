/* --precision int8 end to end: every recorded run of the UNet families (SD 1.x, SD 2.x v-prediction,
 * SDXL) generated with the int8 kernels (the UNet's convolutions and Linear layers; text encoders,
 * attention, norms and the VAE stay fp32), measured against the diffusers reference (final
 * latents, 8-bit pixels) and against our own fp32 run.
 *
 * The documented int8 tolerance (README "int8 compute"), asserted per run, set from the measured
 * errors with margin:
 *   final latents vs diffusers: relative L2 error < 0.11 (bf16: 3e-2),
 *   pixels vs diffusers: mean absolute difference < 6 levels, at most 100 on any value.
 * SD3 and FLUX fall back to fp32 with the reason reported; --precision auto never picks int8.
 * The int8 arithmetic is exact integer arithmetic plus the same fp32 operations on every
 * instruction set level, so these runs give the same bits under make test-isa (test_cross_isa.c
 * compares them byte for byte). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../include/sd.h"
#include "test.h"

/* Measured 2026-12-07 over the 19 asserted runs (README "int8 compute"): latents 0.015 - 0.079,
 * pixel mean 0.78 - 4.11 levels, max 7 - 72 levels; bounds about 1.4x the worst. */
enum { TOL_LEVELS_MAX = 100 };
#define TOL_LATENTS 0.11
#define TOL_MEAN_LEVELS 6.0

typedef struct {
    const char *model, *dir;
    const char *runs[12];
} family_runs;

static const family_runs families[] = {
    {"sd15-tiny", "sd15-tiny/pipeline",
     {"pndm", "euler", "ddim", "euler_a", "dpmpp2m", "dpmpp2m_karras", "heun", "unipc", "lcm_nocfg",
      "batch2", NULL}},
    {"sd2v-tiny", "sd2v-tiny/pipeline",
     {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v", "euler_v_zsnr", NULL}},
    {"sdxl-tiny", "sdxl-tiny/pipeline",
     {"euler", "euler_neg_nonsquare", "dpmpp2m_karras", "prompt2", "turbo_like", NULL}},
};
static const char *const fp32_families[][2] = {{"sd3-tiny", "sd3-tiny/pipeline"},
                                               {"flux-tiny", "flux-tiny/pipeline"}};

typedef struct {
    double mean, lat_ref;
    int max;
} pixel_stats;

static pixel_stats pixel_diff(const sd_result *r, const float *ref_image, const sd_result *other) {
    pixel_stats s = {0, 0, 0};
    long n_all = 0;
    for (int b = 0; b < r->n_images; b++) {
        const sd_image *im = &r->images[b];
        const size_t n = (size_t)im->width * im->height * 3;
        for (size_t i = 0; i < n; i++) {
            const int want = other ? other->images[b].rgb[i] : (int)nearbyintf(ref_image[b * n + i] * 255.0f);
            const int d = abs((int)im->rgb[i] - want);
            s.mean += d;
            if (d > s.max) s.max = d;
        }
        n_all += (long)n;
    }
    s.mean /= (double)(n_all ? n_all : 1);
    return s;
}

/* The recorded final latents as NCHW; FLUX records them packed [B][(H/2)(W/2)][C*4]. */
static float *reference_latents(const char *file, const sd_result *r) {
    int64_t sh[8] = {0};
    int nd = 0;
    float *steps = fixture_tensor(file, "latents_steps", sh, &nd);
    if (!steps) return NULL;
    const int b = r->latent_shape[0], c = r->latent_shape[1], h = r->latent_shape[2], w = r->latent_shape[3];
    const size_t n = (size_t)b * c * h * w;
    int64_t per = 1;
    for (int i = 1; i < nd; i++) per *= sh[i];
    float *out = malloc(n * sizeof *out);
    if ((size_t)per != n) {
        CHECK(0, "%s: latents_steps hold %lld values per step, the result %zu", file, (long long)per, n);
        free(steps), free(out);
        return NULL;
    }
    const float *last = steps + (size_t)(sh[0] - 1) * n;
    if (nd == 4) { /* packed 2x2 patches */
        const int c4 = (int)sh[3], w2 = w / 2;
        for (int bb = 0; bb < b; bb++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int ch = 0; ch < c; ch++)
                        out[(((size_t)bb * c + ch) * h + y) * w + x] =
                            last[((size_t)bb * (h / 2) * w2 + (y / 2) * w2 + x / 2) * c4 + ch * 4 + (y % 2) * 2 + x % 2];
    } else {
        memcpy(out, last, n * sizeof *out);
    }
    free(steps);
    return out;
}

/* sd15-tiny ddim (clip_sample, guidance 5) doubles any difference at every step: test_pipeline.c
 * measures that a 1e-7 change of its noise moves its end state by ~2e-4, so int8's rounding
 * ends in another image (as bf16's does). Measured and reported, not asserted. */
static int chaotic(const char *model, const char *run) {
    return !strcmp(model, "sd15-tiny") && !strcmp(run, "ddim");
}

static void run_one(sd_pipeline *p32, sd_pipeline *p8, const family_runs *f, const char *run) {
    const int asserted = !chaotic(f->model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, f->model, run)) return;
    char file[256];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", f->model, run);
    const cJSON *p2 = cJSON_GetObjectItem(fr.json, "prompt_2");
    if (cJSON_IsString(p2)) fr.g.prompt_2 = p2->valuestring;
    sd_result r32, r8;
    sd_status s32 = sd_generate(p32, &fr.g, &r32);
    CHECK(s32 == SD_OK, "%s/%s fp32: %s", f->model, run, sd_last_error());
    sd_status s8 = sd_generate(p8, &fr.g, &r8);
    CHECK(s8 == SD_OK, "%s/%s int8: %s", f->model, run, sd_last_error());
    if (s32 == SD_OK && s8 == SD_OK) {
        float *image = fixture_tensor(file, "image", NULL, NULL);
        float *lat = reference_latents(file, &r8);
        const size_t nl = (size_t)r8.latent_shape[0] * r8.latent_shape[1] * r8.latent_shape[2] *
                          r8.latent_shape[3];
        const double e8 = lat ? rel_l2(r8.latents, lat, nl) : INFINITY;
        const double e32 = lat ? rel_l2(r32.latents, lat, nl) : INFINITY;
        const pixel_stats ref = image ? pixel_diff(&r8, image, NULL) : (pixel_stats){INFINITY, 0, 999};
        const pixel_stats own = pixel_diff(&r8, NULL, &r32);
        const int ok = e8 < TOL_LATENTS && ref.mean < TOL_MEAN_LEVELS && ref.max <= TOL_LEVELS_MAX;
        printf("%s %s/%s: latents vs diffusers int8 %.2g (fp32 %.2g); pixels vs diffusers mean %.3f "
               "max %d; vs our fp32 mean %.3f max %d (%.2f s int8, %.2f s fp32)\n",
               !asserted ? "info" : ok ? "ok  " : "FAIL", f->model, run, e8, e32, ref.mean, ref.max,
               own.mean, own.max, r8.seconds, r32.seconds);
        if (asserted)
            CHECK(ok, "%s/%s: int8 outside the documented tolerance (latents %.3g, mean %.3f, max %d)",
                  f->model, run, e8, ref.mean, ref.max);
        free(image), free(lat);
    }
    if (s32 == SD_OK) sd_result_free(&r32);
    if (s8 == SD_OK) sd_result_free(&r8);
    fixture_run_free(&fr);
}

int main(void) {
    sd_load_params lp8;
    sd_load_params_init(&lp8);
    lp8.precision = SD_PRECISION_INT8;
    for (size_t i = 0; i < sizeof families / sizeof *families; i++) {
        const family_runs *f = &families[i];
        sd_pipeline *p32 = NULL, *p8 = NULL;
        CHECK_OK(sd_pipeline_load(&p32, fixture(f->dir), NULL));
        CHECK_OK(sd_pipeline_load(&p8, fixture(f->dir), &lp8));
        if (p32 && p8) {
            CHECK(sd_pipeline_precision(p8, NULL) == SD_PRECISION_INT8, "%s: int8 taken", f->model);
            sd_load_params lpa = lp8;
            lpa.precision = SD_PRECISION_AUTO;
            sd_pipeline *pa = NULL;
            CHECK_OK(sd_pipeline_load(&pa, fixture(f->dir), &lpa));
            CHECK(pa && sd_pipeline_precision(pa, NULL) != SD_PRECISION_INT8, "%s: auto never picks int8",
                  f->model);
            sd_pipeline_free(pa);
            for (int r = 0; f->runs[r]; r++) run_one(p32, p8, f, f->runs[r]);
        }
        sd_pipeline_free(p32);
        sd_pipeline_free(p8);
    }
    for (size_t i = 0; i < sizeof fp32_families / sizeof *fp32_families; i++) {
        sd_pipeline *p8 = NULL;
        CHECK_OK(sd_pipeline_load(&p8, fixture(fp32_families[i][1]), &lp8));
        const char *note = NULL;
        CHECK(p8 && sd_pipeline_precision(p8, &note) == SD_PRECISION_FP32 && note,
              "%s: int8 falls back to fp32 with a reason", fp32_families[i][0]);
        if (note) printf("note %s: --precision int8 runs fp32: %s\n", fp32_families[i][0], note);
        sd_pipeline_free(p8);
    }
    return test_summary();
}
