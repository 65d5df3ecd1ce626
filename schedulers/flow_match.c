/* FlowMatchEulerDiscreteScheduler (SD3, Flux): Euler steps of a rectified flow,
 * x' = x + (sigma_next - sigma) v, with a static shift or dynamic shifting by mu (Flux computes mu
 * from the image sequence length, sched_flux_mu), custom sigmas, shift_terminal, inverted sigmas,
 * Karras / exponential sigmas and stochastic sampling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef struct {
    double sigma_min, sigma_max; /* of the training schedule, as Python floats */
    float *noise;
    size_t n;
} flow_state;

static const sched_param flow_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("shift", 1.0),
    SP_B("use_dynamic_shifting", 0),
    SP_N("base_shift", 0.5),
    SP_N("max_shift", 1.15),
    SP_I("base_image_seq_len", 256),
    SP_I("max_image_seq_len", 4096),
    SP_B("invert_sigmas", 0),
    SP_ON("shift_terminal"),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_S("time_shift_type", "exponential", "exponential|linear"),
    SP_B("stochastic_sampling", 0),
    SP_END,
};

static void flow_free(void *p) {
    flow_state *st = p;
    free(st->noise);
    free(st);
}

static sd_status flow_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    s->pred = PRED_FLOW;
    SD_TRY(sched_check_sigma_switches(s));
    flow_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "FlowMatchEulerDiscreteScheduler: out of memory");
    s->state = st;
    /* the training sigmas t / N for t = N..1, statically shifted unless shifting dynamically
     * (float32 tensors in diffusers); only their ends are used later */
    int N = s->num_train_timesteps;
    float shift = (float)sched_cfg_num(s, "shift");
    float shift_m1 = (float)(sched_cfg_num(s, "shift") - 1);
    float ends[2] = {(float)N / (float)N, 1.0f / (float)N};
    if (!sched_cfg_bool(s, "use_dynamic_shifting"))
        for (int i = 0; i < 2; i++) ends[i] = shift * ends[i] / (1.0f + shift_m1 * ends[i]);
    st->sigma_max = ends[0];
    st->sigma_min = ends[1];
    return SD_OK;
}

/* time_shift(mu, 1.0, t) in double (numpy float64). */
static double time_shift(bool linear, double mu, double t) {
    return linear ? mu / (mu + (1 / t - 1)) : exp(mu) / (exp(mu) + (1 / t - 1));
}

static sd_status flow_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    flow_state *st = s->state;
    int N = s->num_train_timesteps;
    bool dynamic = sched_cfg_bool(s, "use_dynamic_shifting");
    bool linear = sched_cfg_is(s, "time_shift_type", "linear");
    if (dynamic && !opts->has_mu)
        return sd_set_error(SD_ERR_ARG, "FlowMatchEulerDiscreteScheduler: mu must be given when "
                                        "use_dynamic_shifting is true");
    bool custom = opts->sigmas && opts->n_sigmas > 0;
    if (custom && n > 0 && n != opts->n_sigmas)
        return sd_set_error(SD_ERR_ARG,
                            "FlowMatchEulerDiscreteScheduler: %d custom sigmas for %d "
                            "steps",
                            opts->n_sigmas, n);
    if (custom) n = s->num_inference_steps = opts->n_sigmas;
    double *sig = malloc((size_t)n * sizeof *sig), *conv = malloc((size_t)n * sizeof *conv);
    if (!sig || !conv) {
        free(sig), free(conv);
        return sd_set_error(SD_ERR_NOMEM, "FlowMatchEulerDiscreteScheduler: out of memory");
    }
    double shift = sched_cfg_num(s, "shift"), terminal = sched_cfg_num(s, "shift_terminal");
    if (custom) {
        /* np.array(sigmas).astype(float32): numpy then stays in float32 */
        float e_mu = (float)(linear ? opts->mu : exp(opts->mu)), fs = (float)shift;
        float fs_m1 = (float)(shift - 1);
        for (int i = 0; i < n; i++) {
            float t = (float)opts->sigmas[i];
            if (dynamic)
                t = e_mu / (e_mu + (1.0f / t - 1.0f));
            else
                t = fs * t / (1.0f + fs_m1 * t);
            sig[i] = t;
        }
        if (!isnan(terminal) && terminal != 0) {
            float scale = (1.0f - (float)sig[n - 1]) / (float)(1 - terminal);
            if (!(scale != 0)) { /* diffusers divides by zero here and fails at the first step */
                free(sig), free(conv);
                return sd_set_error(SD_ERR_ARG, "FlowMatchEulerDiscreteScheduler: shift_terminal "
                                    "cannot stretch a schedule whose last sigma is 1 (too few steps)");
            }
            for (int i = 0; i < n; i++) sig[i] = 1.0f - (1.0f - (float)sig[i]) / scale;
        }
    } else {
        np_linspace(st->sigma_max * N, st->sigma_min * N, n, sig);
        for (int i = 0; i < n; i++) {
            double t = sig[i] / N;
            sig[i] = dynamic ? time_shift(linear, opts->mu, t) : shift * t / (1 + (shift - 1) * t);
        }
        if (!isnan(terminal) && terminal != 0) {
            double scale = (1 - sig[n - 1]) / (1 - terminal);
            if (!(scale != 0)) { /* one step: diffusers divides by zero and fails at its step */
                free(sig), free(conv);
                return sd_set_error(SD_ERR_ARG, "FlowMatchEulerDiscreteScheduler: shift_terminal "
                                    "needs at least 2 steps (got %d)", n);
            }
            for (int i = 0; i < n; i++) sig[i] = 1 - (1 - sig[i]) / scale;
        }
    }
    if (sched_convert_sigmas(s, sig, n, n, conv)) memcpy(sig, conv, (size_t)n * sizeof *sig);
    free(conv);
    sd_status status = sched_alloc_sigmas(s, n + 1);
    if (status == SD_OK) status = sched_alloc_timesteps(s, n);
    if (status == SD_OK) {
        bool invert = sched_cfg_bool(s, "invert_sigmas");
        for (int i = 0; i < n; i++) {
            float f = (float)sig[i];
            if (invert) f = 1.0f - f;
            s->sigmas[i] = f;
            s->timesteps[i] = f * (float)N;
        }
        s->sigmas[n] = invert ? 1.0f : 0.0f;
        s->init_noise_sigma = 1.0;
    }
    free(sig);
    return status;
}

static sd_status flow_step(sd_scheduler *s, int i, const float *v, float *x, size_t n,
                           sched_noise_fn noise, void *ctx) {
    flow_state *st = s->state;
    float sigma = s->sigmas[i], sigma_next = s->sigmas[i + 1];
    if (sched_cfg_bool(s, "stochastic_sampling")) {
        SD_TRY(sched_state_buffer(&st->noise, &st->n, n, 1));
        sched_draw_noise(noise, ctx, st->noise, n);
        for (size_t k = 0; k < n; k++) {
            float x0 = x[k] - sigma * v[k];
            x[k] = (1.0f - sigma_next) * x0 + sigma_next * st->noise[k];
        }
        return SD_OK;
    }
    float dt = sigma_next - sigma;
    for (size_t k = 0; k < n; k++) x[k] = x[k] + dt * v[k];
    return SD_OK;
}

/* scale_noise: sigma * noise + (1 - sigma) * x0. */
static void flow_add_noise(const sd_scheduler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n) {
    float sigma = s->sigmas[i], keep = 1.0f - sigma;
    for (size_t k = 0; k < n; k++) out[k] = sigma * noise[k] + keep * x0[k];
}

const sched_class sched_flow_euler = {
    .name = "FlowMatchEulerDiscreteScheduler",
    .aliases = "flow_euler",
    .description = "Flow-matching Euler (SD3, Flux); static or dynamic (mu) shift",
    .params = flow_params,
    .order = 1,
    .init = flow_init,
    .set_timesteps = flow_set_timesteps,
    .step = flow_step,
    .add_noise = flow_add_noise,
    .free_state = flow_free,
};
