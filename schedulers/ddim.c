/* DDIMScheduler (Song et al. 2020): deterministic with eta = 0, DDPM-like noise with eta > 0. */
#include <math.h>
#include <stdlib.h>

#include "sched_internal.h"

typedef struct {
    float final_alpha_cumprod;
    float *noise; /* [n] */
    size_t n;
} ddim_state;

static const sched_param ddim_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_B("clip_sample", 1),
    SP_B("set_alpha_to_one", 1),
    SP_I("steps_offset", 0),
    SP_S("prediction_type", "epsilon", "epsilon|sample|v_prediction"),
    SP_B("thresholding", 0),
    SP_N("dynamic_thresholding_ratio", 0.995),
    SP_N("clip_sample_range", 1.0),
    SP_N("sample_max_value", 1.0),
    SP_S("timestep_spacing", "leading", "leading|trailing|linspace"),
    SP_B("rescale_betas_zero_snr", 0),
    SP_END,
};

static void ddim_free(void *p) {
    ddim_state *st = p;
    free(st->noise);
    free(st);
}

static sd_status ddim_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    if (sched_cfg_bool(s, "thresholding"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "thresholding = true is not supported");
    SD_TRY(sched_build_alphas_cumprod(s, false));
    ddim_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "DDIMScheduler: out of memory");
    s->state = st;
    st->final_alpha_cumprod = sched_cfg_bool(s, "set_alpha_to_one") ? 1.0f : s->alphas_cumprod[0];
    return SD_OK;
}

static sd_status ddim_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    SD_TRY(sched_plain_opts(s, opts));
    SD_TRY(sched_alloc_timesteps(s, n + 1));
    sched_spacing sp = sched_cfg_spacing(s);
    int len = sched_spacing_timesteps(sp, s->num_train_timesteps, n,
                                      sched_cfg_int(s, "steps_offset"), s->timesteps);
    /* linspace timesteps are rounded half to even (numpy's round), then int64 */
    if (sp == SPACING_LINSPACE)
        for (int i = 0; i < len; i++) s->timesteps[i] = nearbyint(s->timesteps[i]);
    s->n_timesteps = len;
    s->n_sigmas = 0;
    return sched_check_timestep_range(s);
}

/* alphas_cumprod at a (possibly out of range) training timestep. */
static float ddim_alpha(const sd_scheduler *s, int t, float final) {
    if (t < 0) return final;
    return s->alphas_cumprod[t < s->num_train_timesteps ? t : s->num_train_timesteps - 1];
}

static sd_status ddim_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                           sched_noise_fn noise, void *ctx) {
    ddim_state *st = s->state;
    int t = (int)s->timesteps[i];
    int prev_t = t - s->num_train_timesteps / s->num_inference_steps;
    float a_t = ddim_alpha(s, t, st->final_alpha_cumprod);
    float a_prev = ddim_alpha(s, prev_t, st->final_alpha_cumprod);
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float sa = sqrtf(a_t), sb = sqrtf(b_t), sa_prev = sqrtf(a_prev);
    bool clip = sched_cfg_bool(s, "clip_sample");
    float range = (float)sched_cfg_num(s, "clip_sample_range");

    float variance = (b_prev / b_t) * (1.0f - a_t / a_prev);
    float std_dev = (float)s->eta * sqrtf(variance);
    float dir_coef = sqrtf(1.0f - a_prev - std_dev * std_dev);

    if (s->eta > 0) {
        SD_TRY(sched_state_buffer(&st->noise, &st->n, n, 1));
        sched_draw_noise(noise, ctx, st->noise, n);
    }
    for (size_t k = 0; k < n; k++) {
        float x0, eps;
        if (s->pred == PRED_EPSILON) {
            x0 = (x[k] - sb * e[k]) / sa;
            eps = e[k];
        } else if (s->pred == PRED_SAMPLE) {
            x0 = e[k];
            eps = (x[k] - sa * x0) / sb;
        } else {
            x0 = sa * x[k] - sb * e[k];
            eps = sa * e[k] + sb * x[k];
        }
        if (clip) x0 = x0 < -range ? -range : x0 > range ? range : x0;
        float prev = sa_prev * x0 + dir_coef * eps;
        if (s->eta > 0) prev = prev + std_dev * st->noise[k];
        x[k] = prev;
    }
    return SD_OK;
}

const sched_class sched_ddim = {
    .name = "DDIMScheduler",
    .aliases = "ddim",
    .description = "DDIM: deterministic (eta 0) or stochastic (eta > 0) implicit sampler",
    .params = ddim_params,
    .order = 1,
    .init = ddim_init,
    .set_timesteps = ddim_set_timesteps,
    .step = ddim_step,
    .add_noise = sched_add_noise_alpha,
    .free_state = ddim_free,
};
