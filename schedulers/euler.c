/* EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2 without churn): the k-diffusion Euler
 * sampler over sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod), with diffusers' spacing,
 * Karras / exponential sigmas, log-linear interpolation, continuous timesteps for v-prediction,
 * zero-terminal-SNR schedules and custom sigmas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

static const sched_param euler_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_S("prediction_type", "epsilon", "epsilon|v_prediction|sample|original_sample"),
    SP_S("interpolation_type", "linear", "linear|log_linear"),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_ON("sigma_min"),
    SP_ON("sigma_max"),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_S("timestep_type", "discrete", "discrete|continuous"),
    SP_I("steps_offset", 0),
    SP_B("rescale_betas_zero_snr", 0),
    SP_S("final_sigmas_type", "zero", "zero|sigma_min"),
    SP_END,
};

static sd_status euler_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_check_sigma_switches(s));
    SD_TRY(sched_build_alphas_cumprod(s, true));
    /* before set_timesteps diffusers' sigmas are the whole training schedule */
    int N = s->num_train_timesteps;
    SD_TRY(sched_alloc_sigmas(s, N + 1));
    sched_train_sigmas(s, s->sigmas);
    s->init_noise_sigma = sched_max_sigma_noise(s);
    s->n_sigmas = 0;
    return SD_OK;
}

static sd_status euler_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    if (opts->has_mu) return sched_plain_opts(s, opts);
    int N = s->num_train_timesteps;
    bool custom = opts->sigmas && opts->n_sigmas > 0;
    int cap = (custom ? opts->n_sigmas : n) + 2;
    float *train = malloc((size_t)N * sizeof *train), *logs = malloc((size_t)N * sizeof *logs);
    double *ts = malloc((size_t)cap * sizeof *ts), *sig = malloc((size_t)cap * sizeof *sig);
    sd_status st = SD_OK;
    if (!train || !logs || !ts || !sig) {
        st = sd_set_error(SD_ERR_NOMEM, "EulerDiscreteScheduler: out of memory");
        goto done;
    }
    sched_train_sigmas(s, train);
    sched_train_log_sigmas(s, logs);
    int n_ts, n_sig;
    if (custom) {
        n_sig = opts->n_sigmas;
        if (n_sig < 2 || (n > 0 && n != n_sig - 1)) {
            st = sd_set_error(SD_ERR_ARG,
                              "EulerDiscreteScheduler: custom sigmas need steps + 1 "
                              "values (got %d for %d steps)",
                              n_sig, n);
            goto done;
        }
        s->num_inference_steps = n_sig - 1;
        for (int i = 0; i < n_sig; i++) sig[i] = (float)opts->sigmas[i];
        n_ts = n_sig - 1;
        for (int i = 0; i < n_ts; i++) ts[i] = sched_sigma_to_t_f32((float)sig[i], logs, N);
    } else {
        n_ts = sched_kdiff_timesteps(s, n, ts);
        int n_body = n_ts;
        if (sched_cfg_is(s, "interpolation_type", "log_linear")) {
            /* torch.linspace(log(sigma_max), log(sigma_min), n + 1).exp(), in float32 */
            float *tmp = malloc((size_t)(n + 1) * sizeof *tmp);
            if (!tmp) {
                st = sd_set_error(SD_ERR_NOMEM, "EulerDiscreteScheduler: out of memory");
                goto done;
            }
            torch_linspace_f32(logs[N - 1], logs[0], n + 1, tmp); /* np.log of the ends */
            for (int i = 0; i <= n; i++) sig[i] = expf(tmp[i]);
            free(tmp);
            n_body = n + 1;
        } else {
            sched_interp_sigmas(train, N, ts, n_ts, sig);
        }
        double *conv = malloc((size_t)cap * sizeof *conv);
        if (!conv) {
            st = sd_set_error(SD_ERR_NOMEM, "EulerDiscreteScheduler: out of memory");
            goto done;
        }
        if (sched_convert_sigmas(s, sig, n_body, n, conv)) {
            memcpy(sig, conv, (size_t)n * sizeof *sig);
            n_body = n_ts = n;
            for (int i = 0; i < n; i++) ts[i] = sched_sigma_to_t(sig[i], logs, N);
        }
        free(conv);
        if (sched_cfg_is(s, "final_sigmas_type", "sigma_min")) {
            float a = s->alphas_cumprod[0];
            sig[n_body] = sqrtf((1.0f - a) / a);
        } else {
            sig[n_body] = 0;
        }
        n_sig = n_body + 1;
    }
    if ((st = sched_alloc_sigmas(s, n_sig)) != SD_OK) goto done;
    for (int i = 0; i < n_sig; i++) s->sigmas[i] = (float)sig[i];
    if (sched_cfg_is(s, "timestep_type", "continuous") && s->pred == PRED_V) {
        n_ts = n_sig - 1;
        for (int i = 0; i < n_ts; i++) ts[i] = 0.25f * logf(s->sigmas[i]);
    }
    if ((st = sched_alloc_timesteps(s, n_ts)) != SD_OK) goto done;
    for (int i = 0; i < n_ts; i++) s->timesteps[i] = (float)ts[i];
    s->init_noise_sigma = sched_max_sigma_noise(s);
done:
    free(train), free(logs), free(ts), free(sig);
    return st;
}

static sd_status euler_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                            sched_noise_fn noise, void *ctx) {
    (void)noise, (void)ctx; /* s_churn = 0: diffusers draws no noise */
    if (i + 1 >= s->n_sigmas)
        return sd_set_error(SD_ERR_ARG, "EulerDiscreteScheduler: step %d has no next sigma", i);
    float sigma = s->sigmas[i];
    float sigma_hat = sigma * (0.0f + 1.0f);
    float dt = s->sigmas[i + 1] - sigma_hat;
    float v_c1 = -sigma / sqrtf(sigma * sigma + 1.0f), v_c2 = sigma * sigma + 1.0f;
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = x[k] - sigma_hat * e[k];
        else if (s->pred == PRED_V)
            x0 = e[k] * v_c1 + x[k] / v_c2;
        else
            x0 = e[k];
        float derivative = (x[k] - x0) / sigma_hat;
        x[k] = x[k] + derivative * dt;
    }
    return SD_OK;
}

const sched_class sched_euler = {
    .name = "EulerDiscreteScheduler",
    .aliases = "euler, euler_karras",
    .description = "Euler (k-diffusion), deterministic; Karras sigmas optional",
    .params = euler_params,
    .order = 1,
    .init = euler_init,
    .set_timesteps = euler_set_timesteps,
    .scale_model_input = sched_scale_by_sigma,
    .step = euler_step,
    .add_noise = sched_add_noise_sigma,
    .free_state = NULL,
};
