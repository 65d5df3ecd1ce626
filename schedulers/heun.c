/* HeunDiscreteScheduler (Karras et al. 2022, Algorithm 2): second order, two model calls per
 * step. diffusers repeats every timestep but the first (and every sigma but the first and the
 * last), and each model call gets its own step() call: the first of a pair takes an Euler step
 * and remembers its derivative, the second averages the two derivatives and redoes the step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef struct {
    bool pending; /* diffusers' `dt is not None`: the next call is a correction */
    float dt;
    float *prev_derivative, *sample; /* [n] each, one slab */
    size_t n;
} heun_state;

static const sched_param heun_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.00085),
    SP_N("beta_end", 0.012),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2|exp"),
    SP_J("trained_betas", "null"),
    SP_S("prediction_type", "epsilon", "epsilon|v_prediction|sample"),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_B("clip_sample", 0),
    SP_N("clip_sample_range", 1.0),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_END,
};

static void heun_free(void *p) {
    heun_state *st = p;
    free(st->prev_derivative);
    free(st);
}

static sd_status heun_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_check_sigma_switches(s));
    SD_TRY(sched_build_alphas_cumprod(s, false));
    s->state = calloc(1, sizeof(heun_state));
    if (!s->state) return sd_set_error(SD_ERR_NOMEM, "HeunDiscreteScheduler: out of memory");
    return SD_OK;
}

static sd_status heun_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    heun_state *st = s->state;
    SD_TRY(sched_plain_opts(s, opts));
    double *ts, *sig;
    const int len = sched_kdiff_schedule(s, n, false, &ts, &sig);
    if (len < 0) return SD_ERR_NOMEM;
    /* sigmas: s0, s1, s1, ..., s_{len-1}, s_{len-1}, 0; timesteps: t0, t1, t1, ... */
    sd_status status = sched_alloc_sigmas(s, 2 * len);
    if (status == SD_OK) status = sched_alloc_timesteps(s, 2 * len - 1);
    if (status == SD_OK) {
        s->sigmas[0] = (float)sig[0];
        for (int i = 1; i < len; i++) s->sigmas[2 * i - 1] = s->sigmas[2 * i] = (float)sig[i];
        s->sigmas[2 * len - 1] = (float)sig[len];
        s->timesteps[0] = (float)ts[0];
        for (int i = 1; i < len; i++) s->timesteps[2 * i - 1] = s->timesteps[2 * i] = (float)ts[i];
        s->init_noise_sigma = sched_max_sigma_noise(s);
        st->pending = false;
    }
    free(ts), free(sig);
    return status;
}

static sd_status heun_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                           sched_noise_fn noise, void *ctx) {
    (void)noise, (void)ctx;
    heun_state *st = s->state;
    if (st->pending && st->n != n)
        return sd_set_error(SD_ERR_ARG, "HeunDiscreteScheduler: latent size changed mid-step");
    if (!st->prev_derivative || st->n != n) {
        free(st->prev_derivative);
        st->prev_derivative = malloc(2 * n * sizeof *st->prev_derivative);
        if (!st->prev_derivative)
            return sd_set_error(SD_ERR_NOMEM, "HeunDiscreteScheduler: out of memory");
        st->sample = st->prev_derivative + n;
        st->n = n;
    }
    bool first = !st->pending;
    if (first ? i + 1 >= s->n_sigmas : i < 1)
        return sd_set_error(SD_ERR_ARG, "HeunDiscreteScheduler: step %d out of sequence", i);
    float sigma = first ? s->sigmas[i] : s->sigmas[i - 1];
    float sigma_next = first ? s->sigmas[i + 1] : s->sigmas[i];
    float sigma_hat = sigma * (0 + 1);
    float si = first ? sigma_hat : sigma_next;
    float v_c1 = -si / sqrtf(si * si + 1.0f), v_c2 = si * si + 1.0f;
    bool clip = sched_cfg_bool(s, "clip_sample");
    float range = (float)sched_cfg_num(s, "clip_sample_range");
    float dt = first ? sigma_next - sigma_hat : st->dt;
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = x[k] - si * e[k];
        else if (s->pred == PRED_V)
            x0 = e[k] * v_c1 + x[k] / v_c2;
        else
            x0 = e[k];
        if (clip) x0 = x0 < -range ? -range : x0 > range ? range : x0;
        if (first) {
            float d = (x[k] - x0) / sigma_hat;
            st->prev_derivative[k] = d;
            st->sample[k] = x[k];
            x[k] = x[k] + d * dt;
        } else {
            float d = (x[k] - x0) / sigma_next;
            d = (st->prev_derivative[k] + d) / 2;
            x[k] = st->sample[k] + d * dt;
        }
    }
    st->pending = first;
    st->dt = dt;
    return SD_OK;
}

const sched_class sched_heun = {
    .name = "HeunDiscreteScheduler",
    .aliases = "heun",
    .description = "Heun (k-diffusion), second order: two model calls per step",
    .params = heun_params,
    .order = 2,
    .init = heun_init,
    .set_timesteps = heun_set_timesteps,
    .scale_model_input = sched_scale_by_sigma,
    .step = heun_step,
    .add_noise = sched_add_noise_sigma,
    .free_state = heun_free,
};
