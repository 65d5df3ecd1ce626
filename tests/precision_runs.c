/* The recorded runs of a reduced-precision mode (--precision bf16, int8) measured against
 * diffusers' references (final latents, 8-bit pixels) and our own fp32 run: precision_runs.h. */
#include "precision_runs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

const precision_family precision_families[PRECISION_N_FAMILIES] = {
    {"sd15-tiny", "sd15-tiny/pipeline",
     {"pndm", "euler", "ddim", "euler_a", "dpmpp2m", "dpmpp2m_karras", "heun", "unipc", "lcm_nocfg",
      "batch2", NULL}},
    {"sd2v-tiny", "sd2v-tiny/pipeline",
     {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v", "euler_v_zsnr", NULL}},
    {"sdxl-tiny", "sdxl-tiny/pipeline",
     {"euler", "euler_neg_nonsquare", "dpmpp2m_karras", "prompt2", "turbo_like", NULL}},
    {"sd3-tiny", "sd3-tiny/pipeline",
     {"flow_euler", "flow_euler_nonsquare", "flow_euler_shift1", "flow_nocfg", NULL}},
    {"flux-tiny", "flux-tiny/pipeline", {"flux_dev_like", "flux_nonsquare", NULL}},
};

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
 * measures that a 1e-7 change of its noise moves its end state by ~2e-4, so bf16's 2^-9 rounding
 * (and int8's coarser one) ends in another image. Measured and reported, not asserted. */
static int chaotic(const char *model, const char *run) {
    return !strcmp(model, "sd15-tiny") && !strcmp(run, "ddim");
}

void precision_run_one(const precision_contract *c, sd_pipeline *p32, sd_pipeline *p16,
                       const precision_family *f, const char *run) {
    const int asserted = !chaotic(f->model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, f->model, run)) return;
    char file[256];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", f->model, run);
    const cJSON *p2 = cJSON_GetObjectItem(fr.json, "prompt_2");
    if (cJSON_IsString(p2)) fr.g.prompt_2 = p2->valuestring;
    sd_result r32, r16;
    sd_status s32 = sd_generate(p32, &fr.g, &r32);
    CHECK(s32 == SD_OK, "%s/%s fp32: %s", f->model, run, sd_last_error());
    sd_status s16 = sd_generate(p16, &fr.g, &r16);
    CHECK(s16 == SD_OK, "%s/%s %s: %s", f->model, run, c->name, sd_last_error());
    if (s32 == SD_OK && s16 == SD_OK) {
        float *image = fixture_tensor(file, "image", NULL, NULL);
        float *lat = reference_latents(file, &r16);
        const size_t nl = (size_t)r16.latent_shape[0] * r16.latent_shape[1] * r16.latent_shape[2] *
                          r16.latent_shape[3];
        const double e16 = lat ? rel_l2(r16.latents, lat, nl) : INFINITY;
        const double e32 = lat ? rel_l2(r32.latents, lat, nl) : INFINITY;
        const pixel_stats ref = image ? pixel_diff(&r16, image, NULL) : (pixel_stats){INFINITY, 0, 999};
        const pixel_stats own = pixel_diff(&r16, NULL, &r32);
        const int ok = e16 < c->latents && ref.mean < c->mean_levels && ref.max <= c->max_levels;
        printf("%s %s/%s: latents vs diffusers %s %.2g (fp32 %.2g); pixels vs diffusers mean %.3f "
               "max %d; vs our fp32 mean %.3f max %d (%.2f s %s, %.2f s fp32)\n",
               !asserted ? "info" : ok ? "ok  " : "FAIL", f->model, run, c->name, e16, e32, ref.mean,
               ref.max, own.mean, own.max, r16.seconds, c->name, r32.seconds);
        if (asserted)
            CHECK(ok, "%s/%s: %s outside the documented tolerance (latents %.3g, mean %.3f, max %d)",
                  f->model, run, c->name, e16, ref.mean, ref.max);
        free(image), free(lat);
    }
    if (s32 == SD_OK) sd_result_free(&r32);
    if (s16 == SD_OK) sd_result_free(&r16);
    fixture_run_free(&fr);
}

