/* LCMScheduler (Luo et al. 2023): latent consistency sampling. Timesteps are picked from the
 * original_inference_steps skipping schedule; each step predicts the clean latents through the
 * consistency boundary-condition scalings and re-noises them to the next timestep with fresh
 * noise (all but the last step). */
#include <math.h>
#include <stdlib.h>

#include "sched_internal.h"

typedef struct {
    float final_alpha_cumprod;
    float *noise;
    size_t n;
} lcm_state;

static const sched_param lcm_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.00085),
    SP_N("beta_end", 0.012),
    SP_S("beta_schedule", "scaled_linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_I("original_inference_steps", 50),
    SP_B("clip_sample", 0),
    SP_N("clip_sample_range", 1.0),
    SP_B("set_alpha_to_one", 1),
    SP_I("steps_offset", 0),
    SP_S("prediction_type", "epsilon", "epsilon|sample|v_prediction"),
    SP_B("thresholding", 0),
    SP_N("dynamic_thresholding_ratio", 0.995),
    SP_N("sample_max_value", 1.0),
    SP_S("timestep_spacing", "leading", "leading|trailing|linspace"),
    SP_N("timestep_scaling", 10.0),
    SP_B("rescale_betas_zero_snr", 0),
    SP_END,
};

static void lcm_free(void *p) {
    lcm_state *st = p;
    free(st->noise);
    free(st);
}

static sd_status lcm_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    if (sched_cfg_bool(s, "thresholding"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "thresholding = true is not supported");
    SD_TRY(sched_build_alphas_cumprod(s, false));
    lcm_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "LCMScheduler: out of memory");
    s->state = st;
    st->final_alpha_cumprod = sched_cfg_bool(s, "set_alpha_to_one") ? 1.0f : s->alphas_cumprod[0];
    return SD_OK;
}

static sd_status lcm_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    SD_TRY(sched_plain_opts(s, opts));
    int N = s->num_train_timesteps, orig = sched_cfg_int(s, "original_inference_steps");
    if (orig < 1 || orig > N)
        return sched_cfg_error(s, SD_ERR_CONFIG, "original_inference_steps %d must be in 1..%d",
                               orig, N);
    if (n > orig)
        return sd_set_error(SD_ERR_ARG,
                            "LCMScheduler: num_inference_steps %d exceeds "
                            "original_inference_steps %d",
                            n, orig);
    /* the LCM training schedule k-1, 2k-1, ..., L*k - 1 (L = original steps times strength),
     * sampled from the top at floor(linspace(0, L, n, endpoint=False)) */
    double strength = opts->strength > 0 ? opts->strength : 1.0;
    int k = N / orig, L = (int)(orig * strength);
    if (L / n < 1)
        return sd_set_error(SD_ERR_ARG,
                            "LCMScheduler: %d steps need at least as many of the %d "
                            "original steps kept by strength %g",
                            n, L, strength);
    SD_TRY(sched_alloc_timesteps(s, n));
    double step = (double)L / n;
    for (int i = 0; i < n; i++) {
        int idx = (int)floor(i * step);
        s->timesteps[i] = (double)(L - idx) * k - 1;
    }
    s->n_sigmas = 0;
    return SD_OK;
}

static sd_status lcm_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                          sched_noise_fn noise, void *ctx) {
    lcm_state *st = s->state;
    int t = (int)s->timesteps[i];
    int prev_t = i + 1 < s->n_timesteps ? (int)s->timesteps[i + 1] : t;
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : st->final_alpha_cumprod;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    /* consistency boundary condition (sigma_data = 0.5) at t * timestep_scaling, float32 */
    float scaled = (float)t * (float)sched_cfg_num(s, "timestep_scaling");
    float c_skip = 0.25f / (scaled * scaled + 0.25f);
    float c_out = scaled / sqrtf(scaled * scaled + 0.25f);
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    bool clip = sched_cfg_bool(s, "clip_sample");
    float range = (float)sched_cfg_num(s, "clip_sample_range");
    bool renoise = i != s->num_inference_steps - 1;
    if (renoise) {
        SD_TRY(sched_state_buffer(&st->noise, &st->n, n, 1));
        sched_draw_noise(noise, ctx, st->noise, n);
    }
    float sa_prev = sqrtf(a_prev), sb_prev = sqrtf(b_prev);
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = (x[k] - sb * e[k]) / sa;
        else if (s->pred == PRED_SAMPLE)
            x0 = e[k];
        else
            x0 = sa * x[k] - sb * e[k];
        if (clip) x0 = x0 < -range ? -range : x0 > range ? range : x0;
        float denoised = c_out * x0 + c_skip * x[k];
        x[k] = renoise ? sa_prev * denoised + sb_prev * st->noise[k] : denoised;
    }
    return SD_OK;
}

const sched_class sched_lcm = {
    .name = "LCMScheduler",
    .aliases = "lcm",
    .description = "Latent Consistency Model sampler (few steps, guidance baked in)",
    .params = lcm_params,
    .order = 1,
    .init = lcm_init,
    .set_timesteps = lcm_set_timesteps,
    .step = lcm_step,
    .add_noise = sched_add_noise_alpha,
    .free_state = lcm_free,
};
