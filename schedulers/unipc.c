/* UniPCMultistepScheduler (Zhao et al. 2023): a multistep predictor (UniP) followed, at the next
 * call, by a corrector (UniC) that reuses the new model output; B(h) variants bh1 / bh2, data or
 * noise prediction, lower_order_final, disable_corrector, Karras / exponential sigmas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef struct {
    int order;
    bool bh2, predict_x0, lower_order_final, final_zero;
    int *disable_corrector, n_disable;
    int lower_order_nums, this_order;
    bool has_last;
    int steps_seen;
    float *outputs;            /* [order][n], oldest first */
    float *last_sample, *conv; /* [n] each (one slab with outputs) */
    size_t n;
} unipc_state;

static const sched_param unipc_params[] = {
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
    SP_B("predict_x0", 1),
    SP_S("solver_type", "bh2", "bh1|bh2|midpoint|heun|logrho"),
    SP_B("lower_order_final", 1),
    SP_J("disable_corrector", "[]"),
    SP_J("solver_p", "null"),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_B("use_flow_sigmas", 0),
    SP_N("flow_shift", 1.0),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_S("final_sigmas_type", "zero", "zero|sigma_min"),
    SP_B("rescale_betas_zero_snr", 0),
    SP_B("use_dynamic_shifting", 0),
    SP_S("time_shift_type", "exponential", "exponential|linear"),
    SP_ON("sigma_min"),
    SP_ON("sigma_max"),
    SP_ON("shift_terminal"),
    SP_END,
};

static void unipc_free(void *p) {
    unipc_state *st = p;
    free(st->disable_corrector);
    free(st->outputs);
    free(st);
}

static sd_status unipc_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_check_sigma_switches(s));
    unipc_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "UniPCMultistepScheduler: out of memory");
    s->state = st;
    st->order = sched_cfg_int(s, "solver_order");
    if (st->order < 1 || st->order > 3)
        return sched_cfg_error(s, SD_ERR_CONFIG, "solver_order %d is not supported (1, 2 or 3)",
                               st->order);
    const char *stype = sched_cfg_str(s, "solver_type");
    if (strcmp(stype, "bh1") && strcmp(stype, "bh2")) /* diffusers maps the others to bh2 */
        cJSON_ReplaceItemInObject(s->config, "solver_type", cJSON_CreateString("bh2"));
    st->bh2 = !sched_cfg_is(s, "solver_type", "bh1");
    st->predict_x0 = sched_cfg_bool(s, "predict_x0");
    st->lower_order_final = sched_cfg_bool(s, "lower_order_final");
    st->final_zero = sched_cfg_is(s, "final_sigmas_type", "zero");
    const cJSON *dc = sched_cfg_item(s, "disable_corrector");
    if (!cJSON_IsArray(dc))
        return sched_cfg_error(s, SD_ERR_CONFIG,
                               "disable_corrector should be a list of step "
                               "indices");
    st->n_disable = cJSON_GetArraySize(dc);
    st->disable_corrector = calloc((size_t)st->n_disable + 1, sizeof *st->disable_corrector);
    if (!st->disable_corrector)
        return sd_set_error(SD_ERR_NOMEM, "UniPCMultistepScheduler: out of memory");
    int j = 0;
    for (const cJSON *e = dc->child; e; e = e->next, j++) {
        if (!cJSON_IsNumber(e))
            return sched_cfg_error(s, SD_ERR_CONFIG, "disable_corrector[%d] is not a number", j);
        st->disable_corrector[j] = (int)e->valuedouble;
    }
    if (!cJSON_IsNull(sched_cfg_item(s, "solver_p")))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "solver_p is not supported");
    if (sched_cfg_bool(s, "thresholding"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED, "thresholding = true is not supported");
    if (sched_cfg_bool(s, "use_flow_sigmas") || sched_cfg_bool(s, "use_dynamic_shifting"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED,
                               "use_flow_sigmas / use_dynamic_shifting "
                               "are not supported");
    if (!isnan(sched_cfg_num(s, "shift_terminal")))
        return sched_cfg_error(s, SD_ERR_CONFIG,
                               "shift_terminal is only supported with "
                               "use_flow_sigmas");
    return sched_build_alphas_cumprod(s, true);
}

static sd_status unipc_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    unipc_state *st = s->state;
    SD_TRY(sched_plain_opts(s, opts));
    int N = s->num_train_timesteps;
    float *train = malloc((size_t)N * sizeof *train), *logs = malloc((size_t)N * sizeof *logs);
    double *ts = malloc((size_t)(n + 2) * sizeof *ts), *sig = malloc((size_t)(n + 2) * sizeof *sig);
    sd_status status = SD_OK;
    if (!train || !logs || !ts || !sig) {
        status = sd_set_error(SD_ERR_NOMEM, "UniPCMultistepScheduler: out of memory");
        goto done;
    }
    sched_train_sigmas(s, train);
    sched_train_log_sigmas(s, logs);
    /* n + 1 points, the last dropped (leading, linspace), as in DPM-Solver */
    int len;
    sched_spacing sp = sched_cfg_spacing(s);
    if (sp == SPACING_LINSPACE) {
        np_linspace(0, N - 1, n + 1, sig);
        for (int i = 0; i < n; i++) ts[i] = nearbyint(sig[n - i]);
        len = n;
    } else if (sp == SPACING_LEADING) {
        int ratio = N / (n + 1), offset = sched_cfg_int(s, "steps_offset");
        for (int i = 0; i < n; i++) ts[i] = (double)(n - i) * ratio + offset;
        len = n;
    } else {
        len = sched_spacing_timesteps(SPACING_TRAILING, N, n, 0, ts);
    }
    double in[2] = {train[N - 1], train[0]}; /* the flipped schedule's ends */
    bool karras = sched_cfg_bool(s, "use_karras_sigmas");
    double last;
    if (sched_convert_sigmas(s, in, 2, n, sig)) {
        len = n;
        for (int i = 0; i < n; i++) {
            ts[i] = sched_sigma_to_t(sig[i], logs, N);
            if (karras) ts[i] = nearbyint(ts[i]);
        }
        last = st->final_zero ? 0.0 : sig[n - 1];
    } else {
        sched_interp_sigmas(train, N, ts, len, sig);
        float a0 = s->alphas_cumprod[0];
        last = st->final_zero ? 0.0 : sqrtf((1.0f - a0) / a0);
    }
    sig[len] = last;
    if ((status = sched_alloc_sigmas(s, len + 1)) != SD_OK) goto done;
    if ((status = sched_alloc_timesteps(s, len)) != SD_OK) goto done;
    for (int i = 0; i <= len; i++) s->sigmas[i] = (float)sig[i];
    for (int i = 0; i < len; i++) s->timesteps[i] = trunc(ts[i]);
    st->lower_order_nums = 0;
    st->has_last = false;
    st->steps_seen = 0;
done:
    free(train), free(logs), free(ts), free(sig);
    return status;
}

static void unipc_alpha_sigma(float sigma, float *alpha, float *sig, float *lambda) {
    float a = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float sg = sigma * a;
    *alpha = a, *sig = sg;
    *lambda = logf(a) - logf(sg);
}

/* Solves the k x k system R rho = b (k <= 3) by Gaussian elimination with partial pivoting. */
static void solve_small(int k, double R[3][3], double *b, double *rho) {
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(R[r][c]) > fabs(R[p][c])) p = r;
        for (int j = 0; j < k; j++) {
            double t = R[c][j];
            R[c][j] = R[p][j], R[p][j] = t;
        }
        double t = b[c];
        b[c] = b[p], b[p] = t;
        for (int r = c + 1; r < k; r++) {
            double f = R[r][c] / R[c][c];
            for (int j = c; j < k; j++) R[r][j] -= f * R[c][j];
            b[r] -= f * b[c];
        }
    }
    for (int c = k - 1; c >= 0; c--) {
        double v = b[c];
        for (int j = c + 1; j < k; j++) v -= R[c][j] * rho[j];
        rho[c] = v / R[c][c];
    }
}

/* The shared coefficient set of UniP / UniC: rks (order - 1 of them, then 1), h_phi_1, B_h and
 * the vector b of diffusers' loop, in float32. */
typedef struct {
    float rk[3];
    float h_phi_1, B_h, hh;
    float b[3];
} unipc_coef;

static void unipc_coefficients(const unipc_state *st, int order, const float *rks, float h,
                               unipc_coef *c) {
    c->hh = st->predict_x0 ? -h : h;
    c->h_phi_1 = expm1f(c->hh);
    float h_phi_k = c->h_phi_1 / c->hh - 1.0f;
    c->B_h = st->bh2 ? expm1f(c->hh) : c->hh;
    int factorial = 1;
    for (int i = 1; i <= order; i++) {
        c->rk[i - 1] = i < order ? rks[i - 1] : 1.0f;
        c->b[i - 1] = h_phi_k * (float)factorial / c->B_h;
        factorial *= i + 1;
        h_phi_k = h_phi_k / c->hh - (float)(1.0 / factorial);
    }
}

/* rho = solve(R[:k, :k], b[:k]) with R[i][j] = rk[j]^i. */
static void unipc_rhos(const unipc_coef *c, int k, float *rho) {
    double R[3][3], b[3], r[3];
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < k; j++) {
            float p = 1.0f;
            for (int e = 0; e < i; e++) p *= c->rk[j];
            R[i][j] = p;
        }
        b[i] = c->b[i];
    }
    solve_small(k, R, b, r);
    for (int i = 0; i < k; i++) rho[i] = (float)r[i];
}

/* UniC: corrects this_sample (the previous prediction) with the new converted output m_t. */
static void unipc_corrector(const sd_scheduler *s, int i, const float *m_t, float *x_t, size_t n) {
    const unipc_state *st = s->state;
    int order = st->this_order;
    const float *m0 = st->outputs + (size_t)(st->order - 1) * n;
    float at, sgt, lt, a0, s0, l0;
    unipc_alpha_sigma(s->sigmas[i], &at, &sgt, &lt);
    unipc_alpha_sigma(s->sigmas[i - 1], &a0, &s0, &l0);
    float h = lt - l0, rks[2] = {0, 0};
    for (int k = 1; k < order; k++) {
        float ak, sk, lk;
        unipc_alpha_sigma(s->sigmas[i - (k + 1)], &ak, &sk, &lk);
        rks[k - 1] = (lk - l0) / h;
    }
    unipc_coef c;
    unipc_coefficients(st, order, rks, h, &c);
    float rho[3];
    if (order == 1)
        rho[0] = 0.5f;
    else
        unipc_rhos(&c, order, rho);
    float A = st->predict_x0 ? sgt / s0 : at / a0;
    float Bm = st->predict_x0 ? at * c.h_phi_1 : sgt * c.h_phi_1;
    float Bc = st->predict_x0 ? at * c.B_h : sgt * c.B_h;
    const float *x = st->last_sample;
    for (size_t k = 0; k < n; k++) {
        float base = A * x[k] - Bm * m0[k];
        float corr = 0;
        for (int j = 1; j < order; j++) {
            const float *mj = m0 - (size_t)j * n;
            float d = (mj[k] - m0[k]) / rks[j - 1];
            corr = j == 1 ? rho[0] * d : corr + rho[j - 1] * d;
        }
        float d1t = m_t[k] - m0[k];
        x_t[k] = base - Bc * (corr + rho[order - 1] * d1t);
    }
}

/* UniP: predicts the sample at step i + 1 from the history. */
static void unipc_predictor(const sd_scheduler *s, int i, float *x, size_t n) {
    const unipc_state *st = s->state;
    int order = st->this_order;
    const float *m0 = st->outputs + (size_t)(st->order - 1) * n;
    float at, sgt, lt, a0, s0, l0;
    unipc_alpha_sigma(s->sigmas[i + 1], &at, &sgt, &lt);
    unipc_alpha_sigma(s->sigmas[i], &a0, &s0, &l0);
    float h = lt - l0, rks[2] = {0, 0};
    for (int k = 1; k < order; k++) {
        float ak, sk, lk;
        unipc_alpha_sigma(s->sigmas[i - k], &ak, &sk, &lk);
        rks[k - 1] = (lk - l0) / h;
    }
    unipc_coef c;
    unipc_coefficients(st, order, rks, h, &c);
    float rho[2] = {0.5f, 0};
    if (order == 3) unipc_rhos(&c, 2, rho);
    float A = st->predict_x0 ? sgt / s0 : at / a0;
    float Bm = st->predict_x0 ? at * c.h_phi_1 : sgt * c.h_phi_1;
    float Bc = st->predict_x0 ? at * c.B_h : sgt * c.B_h;
    for (size_t k = 0; k < n; k++) {
        float r = A * x[k] - Bm * m0[k];
        /* diffusers subtracts alpha_t * B_h * pred_res even when pred_res is 0 (order 1): with
         * bh1 at a zero final sigma B_h is infinite and the result NaN, which we reproduce. */
        float res = 0;
        for (int j = 1; j < order; j++) {
            const float *mj = m0 - (size_t)j * n;
            float d = (mj[k] - m0[k]) / rks[j - 1];
            res = j == 1 ? rho[0] * d : res + rho[j - 1] * d;
        }
        x[k] = r - Bc * res;
    }
}

static sd_status unipc_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                            sched_noise_fn noise, void *ctx) {
    (void)noise, (void)ctx;
    unipc_state *st = s->state;
    if (st->steps_seen > 0 && st->n != n)
        return sd_set_error(SD_ERR_ARG, "UniPCMultistepScheduler: latent size changed within one "
                                        "run");
    if (st->steps_seen == 0) {
        SD_TRY(sched_state_buffer(&st->outputs, &st->n, n, st->order + 2));
        st->last_sample = st->outputs + (size_t)st->order * n;
        st->conv = st->last_sample + n;
    }
    st->steps_seen++;
    bool corrector_off = false;
    for (int j = 0; j < st->n_disable; j++) corrector_off |= st->disable_corrector[j] == i - 1;
    bool use_corrector = i > 0 && !corrector_off && st->has_last;

    /* convert_model_output */
    float sigma = s->sigmas[i], at, sgt, lt;
    unipc_alpha_sigma(sigma, &at, &sgt, &lt);
    for (size_t k = 0; k < n; k++) {
        float v = e[k];
        if (st->predict_x0) {
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
        st->conv[k] = v;
    }
    if (use_corrector) unipc_corrector(s, i, st->conv, x, n);
    memmove(st->outputs, st->outputs + n, (size_t)(st->order - 1) * n * sizeof *st->outputs);
    memcpy(st->outputs + (size_t)(st->order - 1) * n, st->conv, n * sizeof *st->conv);

    int this_order = st->order;
    if (st->lower_order_final && s->n_timesteps - i < this_order) this_order = s->n_timesteps - i;
    st->this_order = this_order < st->lower_order_nums + 1 ? this_order : st->lower_order_nums + 1;
    memcpy(st->last_sample, x, n * sizeof *x);
    st->has_last = true;
    unipc_predictor(s, i, x, n);
    if (st->lower_order_nums < st->order) st->lower_order_nums++;
    return SD_OK;
}

const sched_class sched_unipc = {
    .name = "UniPCMultistepScheduler",
    .aliases = "unipc",
    .description = "UniPC multistep predictor-corrector (bh1 / bh2)",
    .params = unipc_params,
    .order = 1,
    .init = unipc_init,
    .set_timesteps = unipc_set_timesteps,
    .step = unipc_step,
    .add_noise = sched_add_noise_vp,
    .free_state = unipc_free,
};
