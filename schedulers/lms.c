/* LMSDiscreteScheduler: linear multistep over sigma (k-diffusion's sample_lms, order 4). Each
 * coefficient integrates a Lagrange basis polynomial over [sigma_i, sigma_{i+1}]; diffusers does
 * this with scipy.integrate.quad on an integrand that torch evaluates in float32. quad's first
 * 21-point Gauss-Kronrod estimate is accepted for these polynomials (no sign change inside the
 * interval, so no cancellation), so the same rule on the same float32 integrand values gives the
 * same doubles; should QUADPACK's acceptance test fail, an exact Gauss-Legendre rule stands in. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

typedef struct {
    int n_derivs;  /* kept derivatives (at most 4) */
    float *derivs; /* [4][n], oldest first */
    size_t n;
    int steps_seen;
} lms_state;

static const sched_param lms_params[] = {
    SP_I("num_train_timesteps", 1000),
    SP_N("beta_start", 0.0001),
    SP_N("beta_end", 0.02),
    SP_S("beta_schedule", "linear", "linear|scaled_linear|squaredcos_cap_v2"),
    SP_J("trained_betas", "null"),
    SP_B("use_karras_sigmas", 0),
    SP_B("use_exponential_sigmas", 0),
    SP_B("use_beta_sigmas", 0),
    SP_S("prediction_type", "epsilon", "epsilon|sample|v_prediction"),
    SP_S("timestep_spacing", "linspace", "leading|trailing|linspace"),
    SP_I("steps_offset", 0),
    SP_END,
};

static void lms_free(void *p) {
    lms_state *st = p;
    free(st->derivs);
    free(st);
}

static sd_status lms_init(sd_scheduler *s) {
    SD_TRY(sched_read_common(s));
    SD_TRY(sched_check_sigma_switches(s));
    SD_TRY(sched_build_alphas_cumprod(s, false));
    s->state = calloc(1, sizeof(lms_state));
    if (!s->state) return sd_set_error(SD_ERR_NOMEM, "LMSDiscreteScheduler: out of memory");
    return SD_OK;
}

static sd_status lms_set_timesteps(sd_scheduler *s, int n, const sched_timestep_opts *opts) {
    lms_state *st = s->state;
    SD_TRY(sched_plain_opts(s, opts));
    double *ts, *sig;
    /* LMS's own _convert_to_karras ignores any configured sigma_min / sigma_max */
    const int len = sched_kdiff_schedule(s, n, true, &ts, &sig);
    if (len < 0) return SD_ERR_NOMEM;
    sd_status status = sched_alloc_sigmas(s, len + 1);
    if (status == SD_OK) status = sched_alloc_timesteps(s, len);
    if (status == SD_OK) {
        for (int i = 0; i <= len; i++) s->sigmas[i] = (float)sig[i];
        for (int i = 0; i < len; i++) s->timesteps[i] = (float)ts[i];
        s->init_noise_sigma = sched_max_sigma_noise(s);
        st->n_derivs = 0;
        st->steps_seen = 0;
    }
    free(ts), free(sig);
    return status;
}

/* ---- the coefficient integral ---------------------------------------------------------------- */

typedef struct {
    const float *sigmas;
    int order, t, cur;
} lms_basis;

/* diffusers' lms_derivative(tau), evaluated as torch does: tau rounded to float32, then float32
 * products of (tau - sigma_{t-k}) / (sigma_{t-cur} - sigma_{t-k}). */
static double lms_basis_at(const lms_basis *b, double tau) {
    if (b->order == 1) return 1.0;
    float prod = 1.0f, ft = (float)tau;
    for (int k = 0; k < b->order; k++) {
        if (k == b->cur) continue;
        float sk = b->sigmas[b->t - k];
        prod = prod * ((ft - sk) / (b->sigmas[b->t - b->cur] - sk));
    }
    return prod;
}

/* QUADPACK's 21-point Gauss-Kronrod rule (dqk21), with its error estimate, the integral of |f|
 * (resabs) and of |f - mean| (resasc). */
static double qk21(const lms_basis *bs, double a, double b, double *abserr, double *resabs,
                   double *resasc_out) {
    static const double xgk[11] = {0.995657163025808080735527280689003,
                                   0.973906528517171720077964012084452,
                                   0.930157491355708226001207180059508,
                                   0.865063366688984510732096688423493,
                                   0.780817726586416897063717578345042,
                                   0.679409568299024406234327365114874,
                                   0.562757134668604683339000099272694,
                                   0.433395394129247190799265943165784,
                                   0.294392862701460198131126603103866,
                                   0.148874338981631210884826001129720,
                                   0.0};
    static const double wgk[11] = {
        0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
        0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
        0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
        0.123491976262065851077208977408160, 0.134709217311473325928054001771707,
        0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
        0.149445554002916905664936468389821};
    static const double wg[5] = {
        0.066671344308688137593568809893332, 0.149451349150580593145776339657697,
        0.219086362515982043995534934228163, 0.269266719309996355091226921569469,
        0.295524224714752870173892994651338};
    double centr = 0.5 * (a + b), hlgth = 0.5 * (b - a), dhlgth = fabs(hlgth);
    double fv1[10], fv2[10];
    double resg = 0, fc = lms_basis_at(bs, centr), resk = wgk[10] * fc;
    *resabs = fabs(resk);
    for (int j = 0; j < 5; j++) { /* Gauss nodes */
        int jtw = 2 * j + 1;
        double absc = hlgth * xgk[jtw];
        double f1 = lms_basis_at(bs, centr - absc), f2 = lms_basis_at(bs, centr + absc);
        fv1[jtw] = f1, fv2[jtw] = f2;
        double fsum = f1 + f2;
        resg = resg + wg[j] * fsum;
        resk = resk + wgk[jtw] * fsum;
        *resabs = *resabs + wgk[jtw] * (fabs(f1) + fabs(f2));
    }
    for (int j = 0; j < 5; j++) { /* Kronrod extension nodes */
        int jtwm1 = 2 * j;
        double absc = hlgth * xgk[jtwm1];
        double f1 = lms_basis_at(bs, centr - absc), f2 = lms_basis_at(bs, centr + absc);
        fv1[jtwm1] = f1, fv2[jtwm1] = f2;
        double fsum = f1 + f2;
        resk = resk + wgk[jtwm1] * fsum;
        *resabs = *resabs + wgk[jtwm1] * (fabs(f1) + fabs(f2));
    }
    double reskh = resk * 0.5, resasc = wgk[10] * fabs(fc - reskh);
    for (int j = 0; j < 10; j++)
        resasc = resasc + wgk[j] * (fabs(fv1[j] - reskh) + fabs(fv2[j] - reskh));
    double result = resk * hlgth;
    *resabs = *resabs * dhlgth;
    resasc = resasc * dhlgth;
    *abserr = fabs((resk - resg) * hlgth);
    if (resasc != 0 && *abserr != 0) *abserr = resasc * fmin(1.0, pow(200 * *abserr / resasc, 1.5));
    const double epmach = 2.220446049250313e-16, uflow = 2.2250738585072014e-308;
    if (*resabs > uflow / (50 * epmach)) *abserr = fmax(epmach * 50 * *resabs, *abserr);
    *resasc_out = resasc;
    return result;
}

/* Exact for the (degree <= 3) basis polynomial: 4-point Gauss-Legendre in double. */
static double gauss4(const lms_basis *bs, double a, double b) {
    static const double x[2] = {0.3399810435848562648026658, 0.8611363115940525752239465};
    static const double w[2] = {0.6521451548625461426269361, 0.3478548451374538573730639};
    double c = 0.5 * (a + b), h = 0.5 * (b - a), sum = 0;
    for (int j = 0; j < 2; j++)
        sum += w[j] * (lms_basis_at(bs, c - h * x[j]) + lms_basis_at(bs, c + h * x[j]));
    return sum * h;
}

/* scipy.integrate.quad(lms_derivative, sigma_t, sigma_{t+1}, epsrel=1e-4). */
static double lms_coefficient(const float *sigmas, int order, int t, int cur) {
    lms_basis b = {sigmas, order, t, cur};
    double lo = sigmas[t], hi = sigmas[t + 1], abserr, resabs, resasc;
    double result = qk21(&b, lo, hi, &abserr, &resabs, &resasc);
    /* dqagse's first test: done on roundoff (ier 2), on meeting the tolerance, or exactly */
    double errbnd = fmax(1.49e-8, 1e-4 * fabs(result));
    const double epmach = 2.220446049250313e-16;
    bool roundoff = abserr <= 100 * epmach * resabs && abserr > errbnd;
    if (roundoff || (abserr <= errbnd && abserr != resasc) || abserr == 0) return result;
    return gauss4(&b, lo, hi);
}

/* ---- step ------------------------------------------------------------------------------------ */

static sd_status lms_step(sd_scheduler *s, int i, const float *e, float *x, size_t n,
                          sched_noise_fn noise, void *ctx) {
    (void)noise, (void)ctx;
    lms_state *st = s->state;
    if (st->steps_seen > 0 && st->n != n)
        return sd_set_error(SD_ERR_ARG, "LMSDiscreteScheduler: latent size changed within one run");
    if (st->steps_seen == 0) SD_TRY(sched_state_buffer(&st->derivs, &st->n, n, 4));
    st->steps_seen++;
    float sigma = s->sigmas[i];
    float v_c1 = -sigma / sqrtf(sigma * sigma + 1.0f), v_c2 = sigma * sigma + 1.0f;
    if (st->n_derivs == 4) {
        memmove(st->derivs, st->derivs + n, 3 * n * sizeof *st->derivs);
        st->n_derivs = 3;
    }
    float *d = st->derivs + (size_t)st->n_derivs * n;
    st->n_derivs++;
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = x[k] - sigma * e[k];
        else if (s->pred == PRED_V)
            x0 = e[k] * v_c1 + x[k] / v_c2;
        else
            x0 = e[k];
        d[k] = (x[k] - x0) / sigma;
    }
    int order = i + 1 < 4 ? i + 1 : 4;
    int used = order < st->n_derivs ? order : st->n_derivs; /* zip() stops at the shorter */
    float coeff[4];
    for (int c = 0; c < used; c++) coeff[c] = (float)lms_coefficient(s->sigmas, order, i, c);
    for (size_t k = 0; k < n; k++) {
        float sum = coeff[0] * st->derivs[(size_t)(st->n_derivs - 1) * n + k];
        for (int c = 1; c < used; c++)
            sum = sum + coeff[c] * st->derivs[(size_t)(st->n_derivs - 1 - c) * n + k];
        x[k] = x[k] + sum;
    }
    return SD_OK;
}

const sched_class sched_lms = {
    .name = "LMSDiscreteScheduler",
    .aliases = "lms, lms_karras",
    .description = "Linear multistep (k-diffusion LMS, order 4)",
    .params = lms_params,
    .order = 1,
    .init = lms_init,
    .set_timesteps = lms_set_timesteps,
    .scale_model_input = sched_scale_by_sigma,
    .step = lms_step,
    .add_noise = sched_add_noise_sigma,
    .free_state = lms_free,
};
