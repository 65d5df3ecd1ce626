/* EulerAncestralDiscreteScheduler: Euler down to sigma_down, then fresh noise scaled by sigma_up
 * (k-diffusion's sample_euler_ancestral with eta 1). Noise is drawn at every step, the last one
 * included (where sigma_up is 0), exactly as diffusers draws it. */
#include <math.h>
#include <stdlib.h>

#include "sched_internal.h"

typedef struct {
    float *noise;
    size_t n;
} euler_a_state;

static const sched_param euler_a_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    /* diffusers accepts "sample" here but fails at the first step */
    SP_S("prediction_type", "epsilon", "epsilon|v_prediction"),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_B("rescale_betas_zero_snr", 0),
    SP_END,
};

static void euler_a_free(void *p) {
    euler_a_state *st = p;
    free(st->noise);
    free(st);
}

static sd_status euler_a_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_build_alphas_cumprod(s, true));
    s->state = calloc(1, sizeof(euler_a_state));
    if (!s->state)
        return sd_set_error(SD_ERR_NOMEM, "EulerAncestralDiscreteScheduler: out of memory");
    int N = s->num_train_timesteps;
    SD_TRY(sched_alloc_sigmas(s, N + 1));
    sched_train_sigmas(s, s->sigmas);
    s->init_noise_sigma = sched_max_sigma_noise(s);
    s->n_sigmas = 0;
    return SD_OK;
}

static sd_status euler_a_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    SD_TRY(sched_plain_opts(s, opts));
    int N = s->num_train_timesteps;
    float *train = malloc((size_t)N * sizeof *train);
    double *ts = malloc((size_t)(n + 2) * sizeof *ts), *sig = malloc((size_t)(n + 2) * sizeof *sig);
    sd_status st = SD_OK;
    if (!train || !ts || !sig) {
        st = sd_set_error(SD_ERR_NOMEM, "EulerAncestralDiscreteScheduler: out of memory");
    } else {
        sched_train_sigmas(s, train);
        int len = sched_kdiff_timesteps(s, n, ts);
        sched_interp_sigmas(train, N, ts, len, sig);
        st = sched_alloc_sigmas(s, len + 1);
        if (st == SD_OK) st = sched_alloc_timesteps(s, len);
        if (st == SD_OK) {
            for (int i = 0; i < len; i++) s->sigmas[i] = (float)sig[i], s->timesteps[i] = ts[i];
            s->sigmas[len] = 0;
            s->init_noise_sigma = sched_max_sigma_noise(s);
        }
    }
    free(train), free(ts), free(sig);
    return st;
}

static sd_status euler_a_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                              sched_noise_fn noise, void *ctx) {
    euler_a_state *st = s->state;
    SD_TRY(sched_state_buffer(&st->noise, &st->n, n, 1));
    float sigma = s->sigmas[i], sigma_to = s->sigmas[i + 1];
    float from2 = sigma * sigma, to2 = sigma_to * sigma_to;
    float sigma_up = sqrtf(to2 * (from2 - to2) / from2);
    float sigma_down = sqrtf(to2 - sigma_up * sigma_up);
    float dt = sigma_down - sigma;
    float v_c1 = -sigma / sqrtf(sigma * sigma + 1.0f), v_c2 = sigma * sigma + 1.0f;
    for (size_t k = 0; k < n; k++) {
        float x0 = s->pred == PRED_V ? e[k] * v_c1 + x[k] / v_c2 : x[k] - sigma * e[k];
        float derivative = (x[k] - x0) / sigma;
        x[k] = x[k] + derivative * dt;
    }
    sched_draw_noise(noise, ctx, st->noise, n);
    for (size_t k = 0; k < n; k++) x[k] = x[k] + st->noise[k] * sigma_up;
    return SD_OK;
}

const sched_class sched_euler_ancestral = {
    .name = "EulerAncestralDiscreteScheduler",
    .aliases = "euler_a",
    .description = "Euler ancestral (k-diffusion), stochastic: fresh noise every step",
    .params = euler_a_params,
    .order = 1,
    .init = euler_a_init,
    .set_timesteps = euler_a_set_timesteps,
    .scale_model_input = sched_scale_by_sigma,
    .step = euler_a_step,
    .add_noise = sched_add_noise_sigma,
    .free_state = euler_a_free,
};
