/* DDPMScheduler (Ho et al. 2020): ancestral sampling of the posterior q(x_{t-1} | x_t, x_0) with
 * the fixed variances; noise at every step whose timestep is above 0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef enum { VAR_FIXED_SMALL, VAR_FIXED_SMALL_LOG, VAR_FIXED_LARGE } ddpm_variance;

typedef struct {
    ddpm_variance variance;
    float *noise;
    size_t n;
} ddpm_state;

static const sched_param ddpm_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2|sigmoid|laplace"),
    SP_J("trained_betas", "null"),
    SP_S("variance_type", "fixed_small",
         "fixed_small|fixed_small_log|fixed_large|fixed_large_log|learned|learned_range"),
    SP_B("clip_sample", 1),
    SP_S("prediction_type", "epsilon", "epsilon|sample|v_prediction"),
    SP_B("thresholding", 0),
    SP_N("dynamic_thresholding_ratio", 0.995),
    SP_N("clip_sample_range", 1.0),
    SP_N("sample_max_value", 1.0),
    SP_S("timestep_spacing", "leading", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_B("rescale_betas_zero_snr", 0),
    SP_END,
};

static void ddpm_free(void *p) {
    ddpm_state *st = p;
    free(st->noise);
    free(st);
}

static sd_status ddpm_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    if (sched_cfg_bool(s, "thresholding"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "thresholding = true is not supported");
    const char *vt = sched_cfg_str(s, "variance_type");
    ddpm_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "DDPMScheduler: out of memory");
    s->state = st;
    if (!strcmp(vt, "fixed_small"))
        st->variance = VAR_FIXED_SMALL;
    else if (!strcmp(vt, "fixed_small_log"))
        st->variance = VAR_FIXED_SMALL_LOG;
    else if (!strcmp(vt, "fixed_large"))
        st->variance = VAR_FIXED_LARGE;
    else
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED,
                               "variance_type '%s' is not supported (learned variances need "
                               "the model's extra channels)",
                               vt);
    return sched_build_alphas_cumprod(s, false);
}

static sd_status ddpm_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    SD_TRY(sched_plain_opts(s, opts));
    SD_TRY(sched_alloc_timesteps(s, n + 1));
    sched_spacing sp = sched_cfg_spacing(s);
    int len = sched_spacing_timesteps(sp, s->num_train_timesteps, n,
                                      sched_cfg_int(s, "steps_offset"), s->timesteps);
    if (sp == SPACING_LINSPACE)
        for (int i = 0; i < len; i++) s->timesteps[i] = nearbyint(s->timesteps[i]);
    s->n_timesteps = len;
    s->n_sigmas = 0;
    return sched_check_timestep_range(s);
}

static sd_status ddpm_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                           sched_noise_fn noise, void *ctx) {
    ddpm_state *st = s->state;
    int t = (int)s->timesteps[i];
    int prev_t = i + 1 < s->n_timesteps ? (int)s->timesteps[i + 1] : -1;
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : 1.0f;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float cur_alpha = a_t / a_prev, cur_beta = 1.0f - cur_alpha;
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float c_x0 = sqrtf(a_prev) * cur_beta / b_t;
    float c_x = sqrtf(cur_alpha) * b_prev / b_t;
    bool clip = sched_cfg_bool(s, "clip_sample");
    float range = (float)sched_cfg_num(s, "clip_sample_range");

    float std = 0;
    if (t > 0) {
        /* _get_variance: the posterior variance, clamped away from 0 */
        float var = (1.0f - a_prev) / (1.0f - a_t) * (1.0f - a_t / a_prev);
        if (var < 1e-20f) var = 1e-20f;
        if (st->variance == VAR_FIXED_SMALL)
            std = sqrtf(var);
        else if (st->variance == VAR_FIXED_SMALL_LOG)
            std = expf(0.5f * logf(var));
        else
            std = sqrtf(cur_beta);
        SD_TRY(sched_state_buffer(&st->noise, &st->n, n, 1));
        sched_draw_noise(noise, ctx, st->noise, n);
    }
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = (x[k] - sb * e[k]) / sa;
        else if (s->pred == PRED_SAMPLE)
            x0 = e[k];
        else
            x0 = sa * x[k] - sb * e[k];
        if (clip) x0 = x0 < -range ? -range : x0 > range ? range : x0;
        float prev = c_x0 * x0 + c_x * x[k];
        if (t > 0) prev = prev + std * st->noise[k];
        x[k] = prev;
    }
    return SD_OK;
}

const sched_class sched_ddpm = {
    .name = "DDPMScheduler",
    .aliases = "ddpm",
    .description = "DDPM ancestral sampling (needs many steps)",
    .params = ddpm_params,
    .order = 1,
    .init = ddpm_init,
    .set_timesteps = ddpm_set_timesteps,
    .step = ddpm_step,
    .add_noise = sched_add_noise_alpha,
    .free_state = ddpm_free,
};
