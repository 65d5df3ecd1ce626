/* Step pieces shared by several schedulers. Arithmetic is float32 in the order diffusers' torch
 * expressions evaluate (a 0-d float32 tensor times a tensor rounds like a float times a float),
 * so that trajectories follow diffusers' to the last bit where the operations allow. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

void sched_draw_noise(sched_noise_fn noise, void *ctx, float *buf, size_t n) {
    if (noise) {
        noise(ctx, buf, n);
    } else {
        /* no generator given: diffusers would draw from torch's global generator, which cannot be
         * reproduced; zero noise keeps the step deterministic */
        memset(buf, 0, n * sizeof *buf);
    }
}

void sched_scale_by_sigma(sd_scheduler *s, int i, const float *x, float *out, size_t n) {
    float sigma = s->sigmas[i];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t k = 0; k < n; k++) out[k] = x[k] / d;
}

void sched_add_noise_sigma(const sd_scheduler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n) {
    float sigma = s->sigmas[i];
    for (size_t k = 0; k < n; k++) out[k] = x0[k] + noise[k] * sigma;
}

void sched_add_noise_alpha(const sd_scheduler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n) {
    int t = (int)s->timesteps[i];
    if (t < 0) t = 0;
    if (t >= s->num_train_timesteps) t = s->num_train_timesteps - 1;
    float a = s->alphas_cumprod[t];
    float sa = sqrtf(a), sb = sqrtf(1.0f - a);
    for (size_t k = 0; k < n; k++) out[k] = sa * x0[k] + sb * noise[k];
}

void sched_add_noise_vp(const sd_scheduler *s, int i, const float *x0, const float *noise,
                        float *out, size_t n) {
    float sigma = s->sigmas[i];
    float alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f), sigma_t = sigma * alpha_t;
    for (size_t k = 0; k < n; k++) out[k] = alpha_t * x0[k] + sigma_t * noise[k];
}

sd_status sched_state_buffer(float **buf, size_t *have_n, size_t n, int k) {
    if (*buf && *have_n == n) return SD_OK;
    free(*buf);
    *buf = calloc(n * (size_t)k, sizeof **buf);
    *have_n = *buf ? n : 0;
    if (!*buf) return sd_set_error(SD_ERR_NOMEM, "scheduler: out of memory for %zu floats", n * k);
    return SD_OK;
}
