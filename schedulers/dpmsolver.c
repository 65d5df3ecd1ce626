/* DPMSolverMultistepScheduler (Lu et al. 2022): DPM-Solver / DPM-Solver++ of order 1-3, their SDE
 * variants, midpoint or Heun second-order updates, Karras / exponential / "Lu lambda" sigmas,
 * lower_order_final and euler_at_final, final sigma zero or sigma_min.
 *
 * Every update is written as x' = A x + B0 D0 + B1 D1 + B2 D2 + C noise, with diffusers' float32
 * scalar coefficients (signs folded in, which IEEE negation leaves exact) and its term order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef enum { ALG_DPMPP, ALG_DPM, ALG_SDE_DPMPP, ALG_SDE_DPM } dpm_algo;

typedef struct {
    int order;
    dpm_algo algo;
    bool heun, lower_order_final, euler_at_final, final_zero;
    int lower_order_nums;
    int steps_seen; /* steps since set_timesteps (to catch a size change mid-run) */
    float *outputs; /* [order][n]: converted model outputs, oldest first */
    float *noise;   /* [n] */
    size_t n, noise_n;
} dpm_state;

static const sched_param dpm_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_I("solver_order", 2),
    SP_S("prediction_type", "epsilon", "epsilon|sample|v_prediction|flow_prediction"),
    SP_B("thresholding", 0),
    SP_N("dynamic_thresholding_ratio", 0.995),
    SP_N("sample_max_value", 1.0),
    SP_S("algorithm_type", "dpmsolver++",
         "dpmsolver|dpmsolver++|sde-dpmsolver|sde-dpmsolver++|deis"),
    SP_S("solver_type", "midpoint", "midpoint|heun|logrho|bh1|bh2"),
    SP_B("lower_order_final", 1),
    SP_B("euler_at_final", 0),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_B("use_lu_lambdas", 0),
    SP_B("use_flow_sigmas", 0),
    SP_N("flow_shift", 1.0),
    SP_S("final_sigmas_type", "zero", "zero|sigma_min"),
    SP_N("lambda_min_clipped", -INFINITY),
    SP_OS("variance_type", "learned|learned_range"),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_B("rescale_betas_zero_snr", 0),
    SP_B("use_dynamic_shifting", 0),
    SP_S("time_shift_type", "exponential", "exponential"),
    SP_END,
};

static void dpm_free(void *p) {
    dpm_state *st = p;
    free(st->outputs);
    free(st->noise);
    free(st);
}

static sd_status dpm_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_check_sigma_switches(s));
    dpm_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "DPMSolverMultistepScheduler: out of memory");
    s->state = st;
    st->order = sched_cfg_int(s, "solver_order");
    if (st->order < 1 || st->order > 3)
        return sched_cfg_error(s, SD_ERR_CONFIG, "solver_order %d is not supported (1, 2 or 3)",
                               st->order);
    /* diffusers maps DEIS and the UniPC solver types onto this class's own, in the config too */
    if (sched_cfg_is(s, "algorithm_type", "deis"))
        cJSON_ReplaceItemInObject(s->config, "algorithm_type", cJSON_CreateString("dpmsolver++"));
    const char *stype = sched_cfg_str(s, "solver_type");
    if (strcmp(stype, "midpoint") && strcmp(stype, "heun"))
        cJSON_ReplaceItemInObject(s->config, "solver_type", cJSON_CreateString("midpoint"));
    const char *alg = sched_cfg_str(s, "algorithm_type");
    st->algo = !strcmp(alg, "dpmsolver++")       ? ALG_DPMPP
               : !strcmp(alg, "dpmsolver")       ? ALG_DPM
               : !strcmp(alg, "sde-dpmsolver++") ? ALG_SDE_DPMPP
                                                 : ALG_SDE_DPM;
    st->heun = sched_cfg_is(s, "solver_type", "heun");
    st->lower_order_final = sched_cfg_bool(s, "lower_order_final");
    st->euler_at_final = sched_cfg_bool(s, "euler_at_final");
    st->final_zero = sched_cfg_is(s, "final_sigmas_type", "zero");
    if ((st->algo == ALG_DPM || st->algo == ALG_SDE_DPM) && st->final_zero)
        return sched_cfg_error(s, SD_ERR_CONFIG,
                               "final_sigmas_type 'zero' needs algorithm_type "
                               "dpmsolver++ or sde-dpmsolver++ (got %s)",
                               alg);
    if (st->algo == ALG_SDE_DPM && st->order == 3)
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "sde-dpmsolver has no third-order update");
    if (sched_cfg_bool(s, "thresholding"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "thresholding = true is not supported");
    if (sched_cfg_str(s, "variance_type"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED,
                               "variance_type '%s' (learned variance "
                               "channels) is not supported",
                               sched_cfg_str(s, "variance_type"));
    if (sched_cfg_bool(s, "use_flow_sigmas") || sched_cfg_bool(s, "use_dynamic_shifting"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED,
                               "use_flow_sigmas / use_dynamic_shifting "
                               "are not supported");
    return sched_build_alphas_cumprod(s, true);
}

/* Timesteps before any sigma conversion: diffusers spaces num_inference_steps + 1 points and
 * drops the last (leading, linspace), up to last_timestep (lambda_min_clipped). */
static int dpm_base_timesteps(const sd_scheduler *s, int n, int last, double *out) {
    int N = s->num_train_timesteps;
    sched_spacing sp = sched_cfg_spacing(s);
    if (sp == SPACING_LINSPACE) {
        double *lin = malloc((size_t)(n + 1) * sizeof *lin);
        if (!lin) return -1;
        np_linspace(0, last - 1, n + 1, lin);
        for (int i = 0; i < n; i++) out[i] = nearbyint(lin[n - i]);
        free(lin);
        return n;
    }
    if (sp == SPACING_LEADING) {
        int ratio = last / (n + 1), offset = sched_cfg_int(s, "steps_offset");
        for (int i = 0; i < n; i++) out[i] = (double)(n - i) * ratio + offset;
        return n;
    }
    double ratio = (double)N / n;
    int len = np_arange_len(last, 0, -ratio);
    if (len > n + 1) len = n + 1;
    np_arange(last, -ratio, len, out);
    for (int i = 0; i < len; i++) out[i] = nearbyint(out[i]) - 1;
    return len;
}

static sd_status dpm_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    dpm_state *st = s->state;
    SD_TRY(sched_plain_opts(s, opts));
    int N = s->num_train_timesteps;
    float *train = malloc((size_t)N * sizeof *train), *logs = malloc((size_t)N * sizeof *logs);
    double *ts = malloc((size_t)(n + 2) * sizeof *ts), *sig = malloc((size_t)(n + 2) * sizeof *sig);
    sd_status status = SD_OK;
    if (!train || !logs || !ts || !sig) {
        status = sd_set_error(SD_ERR_NOMEM, "DPMSolverMultistepScheduler: out of memory");
        goto done;
    }
    sched_train_sigmas(s, train);
    sched_train_log_sigmas(s, logs);
    /* searchsorted(flip(lambda_t), lambda_min_clipped): lambda_t falls with t */
    double clip = sched_cfg_num(s, "lambda_min_clipped");
    int clipped = 0;
    while (clipped < N) {
        float a = s->alphas_cumprod[N - 1 - clipped];
        float lambda = logf(sqrtf(a)) - logf(sqrtf(1.0f - a));
        if (lambda >= clip) break;
        clipped++;
    }
    int len = dpm_base_timesteps(s, n, N - clipped, ts);
    if (len < 0) {
        status = sd_set_error(SD_ERR_NOMEM, "DPMSolverMultistepScheduler: out of memory");
        goto done;
    }
    bool round_t = !sched_cfg_is(s, "beta_schedule", "squaredcos_cap_v2");
    bool karras = sched_cfg_bool(s, "use_karras_sigmas");
    if (karras ||
        (sched_cfg_bool(s, "use_exponential_sigmas") && !sched_cfg_bool(s, "use_lu_lambdas"))) {
        double in[2] = {train[N - 1], train[0]}; /* the flipped schedule's ends */
        sched_convert_sigmas(s, in, 2, n, sig);
        for (int i = 0; i < n; i++) {
            ts[i] = sched_sigma_to_t(sig[i], logs, N);
            if (karras && round_t) ts[i] = nearbyint(ts[i]);
        }
        len = n;
    } else if (sched_cfg_bool(s, "use_lu_lambdas")) {
        /* linear in log sigma between the flipped log-sigma ends (rho = 1) */
        double lmin = logs[0], lmax = logs[N - 1];
        np_linspace(0, 1, n, sig);
        for (int i = 0; i < n; i++) {
            sig[i] = exp(lmax + sig[i] * (lmin - lmax));
            ts[i] = sched_sigma_to_t(sig[i], logs, N);
            if (round_t) ts[i] = nearbyint(ts[i]);
        }
        len = n;
    } else {
        sched_interp_sigmas(train, N, ts, len, sig);
    }
    float a0 = s->alphas_cumprod[0];
    sig[len] = st->final_zero ? 0.0 : sqrtf((1.0f - a0) / a0);
    if ((status = sched_alloc_sigmas(s, len + 1)) != SD_OK) goto done;
    if ((status = sched_alloc_timesteps(s, len)) != SD_OK) goto done;
    for (int i = 0; i <= len; i++) s->sigmas[i] = (float)sig[i];
    for (int i = 0; i < len; i++) s->timesteps[i] = trunc(ts[i]); /* astype(int64) */
    st->lower_order_nums = 0;
    st->steps_seen = 0;
done:
    free(train), free(logs), free(ts), free(sig);
    return status;
}

/* alpha_t, sigma_t and lambda_t = log(alpha_t) - log(sigma_t) of a k-diffusion sigma (float32). */
static void dpm_alpha_sigma(float sigma, float *alpha, float *sig, float *lambda) {
    float a = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float sg = sigma * a;
    *alpha = a, *sig = sg;
    *lambda = logf(a) - logf(sg);
}

typedef struct {
    int terms; /* 1: D0, 2: + D1, 3: + D1 + D2 */
    bool noise;
    float A, B0, B1, B2, C;
    float inv_r0, inv_r1, r0w, inv_r01; /* for building D1, D2 */
} dpm_update;

/* Coefficients of diffusers' first/second/third-order updates at step i (order k). */
static void dpm_coefficients(const sd_scheduler *s, int i, int k, dpm_update *u) {
    const dpm_state *st = s->state;
    float at, sgt, lt, a0, s0, l0;
    dpm_alpha_sigma(s->sigmas[i + 1], &at, &sgt, &lt);
    dpm_alpha_sigma(s->sigmas[i], &a0, &s0, &l0);
    float h = lt - l0;
    memset(u, 0, sizeof *u);
    u->terms = k;
    u->noise = st->algo == ALG_SDE_DPMPP || st->algo == ALG_SDE_DPM;
    float em = expf(-h) - 1.0f, ep = expf(h) - 1.0f, e2 = 1.0f - expf(-2.0f * h);
    switch (st->algo) {
    case ALG_DPMPP:
        u->A = sgt / s0, u->B0 = -(at * em);
        break;
    case ALG_DPM:
        u->A = at / a0, u->B0 = -(sgt * ep);
        break;
    case ALG_SDE_DPMPP:
        u->A = sgt / s0 * expf(-h), u->B0 = at * e2, u->C = sgt * sqrtf(e2);
        break;
    case ALG_SDE_DPM:
        u->A = at / a0, u->B0 = -(2.0f * (sgt * ep)), u->C = sgt * sqrtf(expf(2.0f * h) - 1.0f);
        break;
    }
    if (k == 1) return;
    float a1, s1, l1;
    dpm_alpha_sigma(s->sigmas[i - 1], &a1, &s1, &l1);
    float h0 = l0 - l1, r0 = h0 / h;
    u->inv_r0 = 1.0f / r0;
    if (k == 2) {
        switch (st->algo) {
        case ALG_DPMPP:
            u->B1 = st->heun ? at * (em / h + 1.0f) : -(0.5f * (at * em));
            break;
        case ALG_DPM:
            u->B1 = st->heun ? -(sgt * (ep / h - 1.0f)) : -(0.5f * (sgt * ep));
            break;
        case ALG_SDE_DPMPP:
            u->B1 = st->heun ? at * (e2 / (-2.0f * h) + 1.0f) : 0.5f * (at * e2);
            break;
        case ALG_SDE_DPM:
            u->B1 = st->heun ? -(2.0f * (sgt * (ep / h - 1.0f))) : -(sgt * ep);
            break;
        }
        return;
    }
    float a2, s2, l2;
    dpm_alpha_sigma(s->sigmas[i - 2], &a2, &s2, &l2);
    float h1 = l1 - l2, r1 = h1 / h;
    u->inv_r1 = 1.0f / r1;
    u->r0w = r0 / (r0 + r1);
    u->inv_r01 = 1.0f / (r0 + r1);
    switch (st->algo) {
    case ALG_DPMPP:
        u->B1 = at * (em / h + 1.0f);
        u->B2 = -(at * ((expf(-h) - 1.0f + h) / (h * h) - 0.5f));
        break;
    case ALG_DPM:
        u->B1 = -(sgt * (ep / h - 1.0f));
        u->B2 = -(sgt * ((expf(h) - 1.0f - h) / (h * h) - 0.5f));
        break;
    default: /* sde-dpmsolver++ (sde-dpmsolver is refused at init) */
        u->B1 = at * (e2 / (-2.0f * h) + 1.0f);
        u->B2 = at * ((1.0f - expf(-2.0f * h) - 2.0f * h) / ((2.0f * h) * (2.0f * h)) - 0.5f);
        break;
    }
}

static sd_status dpm_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                          sched_noise_fn noise, void *ctx) {
    dpm_state *st = s->state;
    int order = st->order, len = s->n_timesteps;
    if (st->steps_seen > 0 && st->n != n)
        return sd_set_error(SD_ERR_ARG, "DPMSolverMultistepScheduler: latent size changed within "
                                        "one run");
    if (st->steps_seen == 0) SD_TRY(sched_state_buffer(&st->outputs, &st->n, n, order));
    st->steps_seen++;
    bool last = i == len - 1, second_last = i == len - 2;
    bool lower_final =
        last && (st->euler_at_final || (st->lower_order_final && len < 15) || st->final_zero);
    bool lower_second = second_last && st->lower_order_final && len < 15;

    /* convert_model_output into the newest history slot */
    memmove(st->outputs, st->outputs + n, (size_t)(order - 1) * n * sizeof *st->outputs);
    float *m0 = st->outputs + (size_t)(order - 1) * n;
    float sigma = s->sigmas[i];
    float at, sgt, lt;
    dpm_alpha_sigma(sigma, &at, &sgt, &lt);
    bool data_pred = st->algo == ALG_DPMPP || st->algo == ALG_SDE_DPMPP;
    for (size_t k = 0; k < n; k++) {
        float v = e[k];
        if (data_pred) {
            if (s->pred == PRED_EPSILON)
                v = (x[k] - sgt * e[k]) / at;
            else if (s->pred == PRED_V)
                v = at * x[k] - sgt * e[k];
            else if (s->pred == PRED_FLOW)
                v = x[k] - sigma * e[k];
        } else {
            if (s->pred == PRED_SAMPLE)
                v = (x[k] - at * e[k]) / sgt;
            else if (s->pred == PRED_V)
                v = at * e[k] + sgt * x[k];
        }
        m0[k] = v;
    }
    bool sde = st->algo == ALG_SDE_DPMPP || st->algo == ALG_SDE_DPM;
    if (sde) {
        SD_TRY(sched_state_buffer(&st->noise, &st->noise_n, n, 1));
        sched_draw_noise(noise, ctx, st->noise, n);
    }
    int k_order = order == 1 || st->lower_order_nums < 1 || lower_final    ? 1
                  : order == 2 || st->lower_order_nums < 2 || lower_second ? 2
                                                                           : 3;
    dpm_update u;
    dpm_coefficients(s, i, k_order, &u);
    const float *m1 = m0 - n, *m2 = m0 - 2 * n;
    for (size_t k = 0; k < n; k++) {
        float r = u.A * x[k] + u.B0 * m0[k];
        if (u.terms == 2) {
            float d1 = u.inv_r0 * (m0[k] - m1[k]);
            r = r + u.B1 * d1;
        } else if (u.terms == 3) {
            float d10 = u.inv_r0 * (m0[k] - m1[k]), d11 = u.inv_r1 * (m1[k] - m2[k]);
            float d1 = d10 + u.r0w * (d10 - d11), d2 = u.inv_r01 * (d10 - d11);
            r = r + u.B1 * d1;
            r = r + u.B2 * d2;
        }
        if (u.noise) r = r + u.C * st->noise[k];
        x[k] = r;
    }
    if (st->lower_order_nums < order) st->lower_order_nums++;
    return SD_OK;
}

const sched_class sched_dpm_multistep = {
    .name = "DPMSolverMultistepScheduler",
    .aliases = "dpm++2m, dpm++2m_karras, dpm++2m_sde, dpm++2m_sde_karras",
    .description = "DPM-Solver++ multistep (2M; SDE variant with noise; Karras sigmas optional)",
    .params = dpm_params,
    .order = 1,
    .init = dpm_init,
    .set_timesteps = dpm_set_timesteps,
    .step = dpm_step,
    .add_noise = sched_add_noise_vp,
    .free_state = dpm_free,
};
