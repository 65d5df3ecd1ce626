/* PNDMScheduler (Liu et al. 2022): Runge-Kutta warm-up steps (PRK) then linear multistep (PLMS);
 * Stable Diffusion configs skip the PRK part (skip_prk_steps), which repeats the second timestep
 * and averages the first two model outputs instead.
 *
 * The step state follows diffusers' counter / ets / cur_sample bookkeeping exactly: the counter,
 * not the step index, decides which formula applies. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef struct {
    float final_alpha_cumprod;
    bool skip_prk;
    int n_prk;          /* PRK calls at the start of the timesteps */
    int *prk_timesteps; /* [n_prk] */
    int counter;
    int n_ets;               /* model outputs kept (at most 4) */
    float *ets;              /* [4][n], oldest first */
    float *cur_model_output; /* [n]: PRK running sum */
    float *cur_sample;       /* [n] */
    bool has_cur_sample;
    float *tmp; /* [n] */
    float *buf; /* one slab for the arrays above */
    size_t n;
} pndm_state;

static const sched_param pndm_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_B("skip_prk_steps", 0),
    SP_B("set_alpha_to_one", 0),
    SP_S("prediction_type", "epsilon", "epsilon|v_prediction"),
    SP_S("timestep_spacing", "leading", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_END,
};

static void pndm_free(void *p) {
    pndm_state *st = p;
    free(st->prk_timesteps);
    free(st->buf);
    free(st);
}

static sd_status pndm_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_build_alphas_cumprod(s, false));
    pndm_state *st = calloc(1, sizeof *st);
    if (!st) return sd_set_error(SD_ERR_NOMEM, "PNDMScheduler: out of memory");
    s->state = st;
    st->final_alpha_cumprod = sched_cfg_bool(s, "set_alpha_to_one") ? 1.0f : s->alphas_cumprod[0];
    st->skip_prk = sched_cfg_bool(s, "skip_prk_steps");
    return SD_OK;
}

static sd_status pndm_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    pndm_state *st = s->state;
    SD_TRY(sched_plain_opts(s, opts));
    int N = s->num_train_timesteps, offset = sched_cfg_int(s, "steps_offset");
    double *asc = malloc((size_t)(n + 1) * sizeof *asc); /* diffusers' _timesteps, ascending */
    if (!asc) return sd_set_error(SD_ERR_NOMEM, "PNDMScheduler: out of memory");
    sched_spacing sp = sched_cfg_spacing(s);
    int len = sched_spacing_timesteps(sp, N, n, offset, asc);
    for (int i = 0; i < len / 2; i++) {
        double t = asc[i];
        asc[i] = asc[len - 1 - i], asc[len - 1 - i] = t;
    }
    if (sp == SPACING_LINSPACE)
        for (int i = 0; i < len; i++) asc[i] = nearbyint(asc[i]);

    free(st->prk_timesteps);
    st->prk_timesteps = NULL;
    st->n_prk = 0;
    sd_status status = SD_OK;
    if (st->skip_prk) {
        /* _timesteps[:-1] + _timesteps[-2:-1] + _timesteps[-1:], reversed */
        int m = len > 1 ? len + 1 : len;
        status = sched_alloc_timesteps(s, m);
        if (status == SD_OK) {
            int k = 0;
            double *seq = s->timesteps;
            for (int i = 0; i < len - 1; i++) seq[k++] = asc[i];
            if (len >= 2) seq[k++] = asc[len - 2];
            seq[k++] = asc[len - 1];
            for (int i = 0; i < m / 2; i++) {
                double t = seq[i];
                seq[i] = seq[m - 1 - i], seq[m - 1 - i] = t;
            }
        }
    } else if (len < 4) {
        /* diffusers' PRK warm-up needs the last 4 timesteps (it fails with a shape error) */
        status = sd_set_error(SD_ERR_ARG,
                              "PNDMScheduler: PRK steps need at least 4 inference "
                              "steps (got %d); set skip_prk_steps",
                              n);
    } else {
        int half = N / n / 2;
        double base[8], rep[14];
        for (int j = 0; j < 4; j++)
            base[2 * j] = asc[len - 4 + j], base[2 * j + 1] = asc[len - 4 + j] + half;
        for (int j = 0; j < 7; j++) rep[2 * j] = rep[2 * j + 1] = base[j]; /* [:-1].repeat(2) */
        int m = 12 + (len - 3);
        st->prk_timesteps = malloc(12 * sizeof *st->prk_timesteps);
        status = st->prk_timesteps ? sched_alloc_timesteps(s, m)
                                   : sd_set_error(SD_ERR_NOMEM, "PNDMScheduler: out of memory");
        if (status == SD_OK) {
            for (int j = 0; j < 12; j++) /* [1:-1], reversed */
                s->timesteps[j] = st->prk_timesteps[j] = (int)rep[12 - j];
            for (int j = 0; j < len - 3; j++) s->timesteps[12 + j] = asc[len - 4 - j];
            st->n_prk = 12;
        }
    }
    free(asc);
    s->n_sigmas = 0;
    st->counter = 0;
    st->n_ets = 0;
    st->has_cur_sample = false;
    free(st->buf);
    st->buf = NULL;
    st->n = 0;
    return status != SD_OK ? status : sched_check_timestep_range(s);
}

static float pndm_alpha(const sd_scheduler *s, int t) {
    const pndm_state *st = s->state;
    if (t < 0) return st->final_alpha_cumprod;
    return s->alphas_cumprod[t < s->num_train_timesteps ? t : s->num_train_timesteps - 1];
}

/* diffusers' _get_prev_sample: x_{t-delta} from x_t and the (combined) noise prediction e. */
static void pndm_prev_sample(const sd_scheduler *s, const float *x, int t, int prev_t,
                             const float *e, float *out, size_t n) {
    float a_t = pndm_alpha(s, t), a_prev = pndm_alpha(s, prev_t);
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float sample_coeff = sqrtf(a_prev / a_t);
    float denom = a_t * sqrtf(b_prev) + sqrtf(a_t * b_t * a_prev);
    float diff = a_prev - a_t, sa = sqrtf(a_t), sb = sqrtf(b_t);
    for (size_t k = 0; k < n; k++) {
        float ek = e[k];
        if (s->pred == PRED_V) ek = sa * ek + sb * x[k];
        out[k] = sample_coeff * x[k] - diff * ek / denom;
    }
}

static void push_ets(pndm_state *st, const float *e, size_t n) {
    if (st->n_ets == 4) {
        memmove(st->ets, st->ets + n, 3 * n * sizeof *st->ets);
        st->n_ets = 3;
    }
    memcpy(st->ets + (size_t)st->n_ets * n, e, n * sizeof *e);
    st->n_ets++;
}

static sd_status pndm_step_prk(sd_scheduler *s, int i, const float *e, float *x, size_t n) {
    pndm_state *st = s->state;
    int N = s->num_train_timesteps, c = st->counter;
    int diff_to_prev = c % 2 ? 0 : N / s->num_inference_steps / 2;
    int prev_t = (int)s->timesteps[i] - diff_to_prev;
    int t = st->prk_timesteps[c / 4 * 4];
    const float *use = e;
    if (c % 4 == 0) {
        const float w = (float)(1.0 / 6);
        for (size_t k = 0; k < n; k++) st->cur_model_output[k] = w * e[k]; /* 0 + e/6 */
        push_ets(st, e, n);
        memcpy(st->cur_sample, x, n * sizeof *x);
        st->has_cur_sample = true;
    } else if (c % 4 == 1 || c % 4 == 2) {
        const float w = (float)(1.0 / 3);
        for (size_t k = 0; k < n; k++) st->cur_model_output[k] += w * e[k];
    } else {
        const float w = (float)(1.0 / 6);
        for (size_t k = 0; k < n; k++) st->tmp[k] = st->cur_model_output[k] + w * e[k];
        use = st->tmp;
    }
    const float *from = st->has_cur_sample ? st->cur_sample : x;
    pndm_prev_sample(s, from, t, prev_t, use, x, n);
    st->counter++;
    return SD_OK;
}

static sd_status pndm_step_plms(sd_scheduler *s, int i, const float *e, float *x, size_t n) {
    pndm_state *st = s->state;
    int ratio = s->num_train_timesteps / s->num_inference_steps;
    int t = (int)s->timesteps[i], prev_t = t - ratio;
    if (!st->skip_prk && st->n_ets < 3)
        return sd_set_error(SD_ERR_ARG, "PNDMScheduler: PLMS step before the PRK warm-up");
    if (st->counter != 1) {
        push_ets(st, e, n);
    } else {
        prev_t = t;
        t = t + ratio;
    }
    const float *sample = x;
    float *m = st->tmp;
    const float *E = st->ets;
#define ET(j) (E + (size_t)(st->n_ets - (j)) * n) /* ets[-j] */
    if (st->n_ets == 1 && st->counter == 0) {
        memcpy(m, e, n * sizeof *e);
        memcpy(st->cur_sample, x, n * sizeof *x);
        st->has_cur_sample = true;
    } else if (st->n_ets == 1 && st->counter == 1) {
        for (size_t k = 0; k < n; k++) m[k] = (e[k] + ET(1)[k]) / 2;
        sample = st->cur_sample;
        st->has_cur_sample = false;
    } else if (st->n_ets == 2) {
        for (size_t k = 0; k < n; k++) m[k] = (3 * ET(1)[k] - ET(2)[k]) / 2;
    } else if (st->n_ets == 3) {
        for (size_t k = 0; k < n; k++) m[k] = (23 * ET(1)[k] - 16 * ET(2)[k] + 5 * ET(3)[k]) / 12;
    } else {
        const float w = (float)(1.0 / 24);
        for (size_t k = 0; k < n; k++)
            m[k] = w * (55 * ET(1)[k] - 59 * ET(2)[k] + 37 * ET(3)[k] - 9 * ET(4)[k]);
    }
#undef ET
    /* the averaged step restarts from the stored sample, so compute into x only at the end */
    pndm_prev_sample(s, sample, t, prev_t, m, x, n);
    st->counter++;
    return SD_OK;
}

static sd_status pndm_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                           sched_noise_fn noise, void *ctx) {
    (void)noise, (void)ctx;
    pndm_state *st = s->state;
    if (!st->buf || st->n != n) {
        if (st->buf && st->n != n && st->counter > 0)
            return sd_set_error(SD_ERR_ARG, "PNDMScheduler: latent size changed within one run");
        free(st->buf);
        st->buf = calloc(7 * n, sizeof *st->buf);
        if (!st->buf) return sd_set_error(SD_ERR_NOMEM, "PNDMScheduler: out of memory");
        st->n = n;
        st->ets = st->buf;
        st->cur_model_output = st->buf + 4 * n;
        st->cur_sample = st->buf + 5 * n;
        st->tmp = st->buf + 6 * n;
    }
    if (st->counter < st->n_prk && !st->skip_prk) return pndm_step_prk(s, i, e, x, n);
    return pndm_step_plms(s, i, e, x, n);
}

const sched_class sched_pndm = {
    .name = "PNDMScheduler",
    .aliases = "pndm, plms",
    .description = "PNDM / PLMS linear multistep (Stable Diffusion 1.x default)",
    .params = pndm_params,
    .order = 1,
    .init = pndm_init,
    .set_timesteps = pndm_set_timesteps,
    .step = pndm_step,
    .add_noise = sched_add_noise_alpha,
    .free_state = pndm_free,
};
