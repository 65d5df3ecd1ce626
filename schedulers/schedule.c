/* The training schedule (betas, alphas_cumprod, sigmas) and the timestep/sigma grids, computed
 * the way diffusers computes them: torch float32 where diffusers uses torch tensors, numpy float64
 * where it uses numpy, with numpy's own formulas for linspace, arange and interp. Timesteps must
 * come out exact, so every cast and rounding happens where diffusers does it. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"

/* ---- numpy / torch replicas ------------------------------------------------------------------ */

void np_linspace(double start, double stop, int num, double *out) {
    if (num <= 0) return;
    if (num == 1) {
        out[0] = start;
        return;
    }
    double delta = stop - start, step = delta / (num - 1);
    for (int i = 0; i < num; i++)
        out[i] = step != 0 ? i * step + start : i / (double)(num - 1) * delta + start;
    out[num - 1] = stop;
}

int np_arange_len(double start, double stop, double step) {
    double len = ceil((stop - start) / step);
    return len > 0 ? (int)len : 0;
}

void np_arange(double start, double step, int len, double *out) {
    if (len <= 0) return;
    out[0] = start;
    if (len == 1) return;
    out[1] = start + step;
    double delta = out[1] - out[0];
    for (int i = 2; i < len; i++) out[i] = start + i * delta;
}

double np_interp_index(double x, const float *fp, int n) {
    if (isnan(x)) return x;
    if (x < 0) return fp[0];
    if (x >= n - 1) return fp[n - 1];
    int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    double slope = ((double)fp[j + 1] - fp[j]) / 1.0;
    return slope * (x - j) + fp[j];
}

float np_logf(float x) {
    /* numpy's AVX2/AVX-512 float32 log (loops_exponent_log): a P5/Q5 rational approximation of
     * log(1 + y) on the mantissa normalised to (sqrt(1/2), sqrt(2)], with fused multiply-adds; it
     * is up to ~4 ulp away from the correctly rounded log, and diffusers' Karras timesteps see the
     * difference. Positive finite normal x only (sigmas). */
    static const float p[6] = {0.0f,
                               9.999999999999998702752e-01f,
                               2.112677543073053063722e+00f,
                               1.480000633576506585156e+00f,
                               3.808837741388407920751e-01f,
                               2.589979117907922693523e-02f};
    static const float q[6] = {1.0f,
                               2.612677543073109236779e+00f,
                               2.453006071784736363091e+00f,
                               9.864942958519418960339e-01f,
                               1.546476374983906719538e-01f,
                               5.875095403124574342950e-03f};
    if (!(x > 0) || isinf(x) || x < 0x1p-126f) return logf(x);
    uint32_t bits;
    memcpy(&bits, &x, 4);
    float e = (float)((int)(bits >> 23) - 126);
    uint32_t mbits = (bits & 0x7fffffu) | (126u << 23);
    float m;
    memcpy(&m, &mbits, 4);
    if (m <= 0.707106781186547524400844362104849039f) {
        m = m + m;
        e = e - 1.0f;
    }
    float y = m - 1.0f;
    float num = fmaf(p[5], y, p[4]);
    num = fmaf(num, y, p[3]);
    num = fmaf(num, y, p[2]);
    num = fmaf(num, y, p[1]);
    num = fmaf(num, y, p[0]);
    float den = fmaf(q[5], y, q[4]);
    den = fmaf(den, y, q[3]);
    den = fmaf(den, y, q[2]);
    den = fmaf(den, y, q[1]);
    den = fmaf(den, y, q[0]);
    return fmaf(e, 0.693147180559945309417232121458176568f, num / den);
}

void torch_linspace_f32(double start, double end, int n, float *out) {
    float fs = (float)start, fe = (float)end;
    if (n == 1) {
        out[0] = fs;
        return;
    }
    /* torch fills the first half forward from start and the second half backward from end; its
     * kernel is compiled with FMA contraction (start + step * i is one fused operation), which the
     * alphas_cumprod of the fixtures confirm to the last bit */
    float step = (fe - fs) / (float)(n - 1);
    int halfway = n / 2;
    for (int i = 0; i < n; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, fs) : fmaf(-step, (float)(n - i - 1), fe);
}

/* ---- betas and alphas_cumprod ---------------------------------------------------------------- */

static double alpha_bar_cosine(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

static double alpha_bar_exp(double t) {
    return exp(t * -12.0);
}

static double alpha_bar_laplace(double t) {
    double lmb = -0.5 * copysign(1.0, 0.5 - t) * log(1 - 2 * fabs(0.5 - t) + 1e-6);
    double snr = exp(lmb);
    return sqrt(snr / (1 + snr));
}

/* diffusers' betas_for_alpha_bar: Python doubles, then a float32 tensor. */
static void betas_for_alpha_bar(int n, double (*fn)(double), float *out) {
    for (int i = 0; i < n; i++) {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        double b = 1 - fn(t2) / fn(t1);
        out[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

/* torch.cumprod on float32: accumulated in double, each prefix stored as float32. */
static void cumprod_f32(const float *a, int n, float *out) {
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= a[i];
        out[i] = (float)acc;
    }
}

/* diffusers' rescale_zero_terminal_snr (Lin et al. 2023), in float32 like its torch code. */
static void rescale_zero_terminal_snr(float *betas, int n, float *tmp) {
    for (int i = 0; i < n; i++) tmp[i] = 1.0f - betas[i];
    cumprod_f32(tmp, n, tmp);
    for (int i = 0; i < n; i++) tmp[i] = sqrtf(tmp[i]);
    float s0 = tmp[0], sT = tmp[n - 1];
    float scale = s0 / (s0 - sT);
    for (int i = 0; i < n; i++) {
        tmp[i] -= sT;
        tmp[i] *= scale;
        tmp[i] = tmp[i] * tmp[i]; /* alphas_bar */
    }
    float prev = tmp[0];
    betas[0] = 1.0f - tmp[0];
    for (int i = 1; i < n; i++) {
        float a = tmp[i] / prev;
        prev = tmp[i];
        betas[i] = 1.0f - a;
    }
}

static sd_status build_betas(sd_scheduler *s, float *betas) {
    int n = s->num_train_timesteps;
    const cJSON *trained = sched_cfg_item(s, "trained_betas");
    if (trained && !cJSON_IsNull(trained)) {
        if (!cJSON_IsArray(trained) || cJSON_GetArraySize(trained) != n)
            return sched_cfg_error(s, SD_ERR_CONFIG,
                                   "trained_betas should be a list of num_train_timesteps (%d) "
                                   "numbers",
                                   n);
        int i = 0;
        for (const cJSON *e = trained->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e))
                return sched_cfg_error(s, SD_ERR_CONFIG, "trained_betas[%d] is not a number", i);
            betas[i] = (float)e->valuedouble;
        }
        return SD_OK;
    }
    double start = sched_cfg_num(s, "beta_start"), end = sched_cfg_num(s, "beta_end");
    const char *sched = sched_cfg_str(s, "beta_schedule");
    if (!strcmp(sched, "linear")) {
        torch_linspace_f32(start, end, n, betas);
    } else if (!strcmp(sched, "scaled_linear")) {
        torch_linspace_f32(sqrt(start), sqrt(end), n, betas);
        for (int i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
    } else if (!strcmp(sched, "squaredcos_cap_v2")) {
        betas_for_alpha_bar(n, alpha_bar_cosine, betas);
    } else if (!strcmp(sched, "exp")) {
        betas_for_alpha_bar(n, alpha_bar_exp, betas);
    } else if (!strcmp(sched, "laplace")) {
        betas_for_alpha_bar(n, alpha_bar_laplace, betas);
    } else if (!strcmp(sched, "sigmoid")) {
        torch_linspace_f32(-6, 6, n, betas);
        float range = (float)(end - start), base = (float)start;
        for (int i = 0; i < n; i++) betas[i] = 1.0f / (1.0f + expf(-betas[i])) * range + base;
    } else {
        /* the parameter table only admits the schedules each class knows */
        return sched_cfg_error(s, SD_ERR_CONFIG, "beta_schedule '%s' is not supported", sched);
    }
    return SD_OK;
}

sd_status sched_build_alphas_cumprod(sd_scheduler *s, bool terminal_clamp) {
    int n = s->num_train_timesteps;
    float *betas = calloc((size_t)n, sizeof *betas), *tmp = calloc((size_t)n, sizeof *tmp);
    free(s->alphas_cumprod);
    s->alphas_cumprod = malloc((size_t)n * sizeof *s->alphas_cumprod);
    if (!betas || !tmp || !s->alphas_cumprod) {
        free(betas), free(tmp);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", s->cls->name);
    }
    sd_status st = build_betas(s, betas);
    if (st == SD_OK) {
        bool zsnr = sched_cfg_bool(s, "rescale_betas_zero_snr");
        if (zsnr) rescale_zero_terminal_snr(betas, n, tmp);
        for (int i = 0; i < n; i++) tmp[i] = 1.0f - betas[i];
        cumprod_f32(tmp, n, s->alphas_cumprod);
        if (zsnr && terminal_clamp) s->alphas_cumprod[n - 1] = 0x1p-24f;
    }
    free(betas);
    free(tmp);
    return st;
}

void sched_train_sigmas(const sd_scheduler *s, float *out) {
    for (int i = 0; i < s->num_train_timesteps; i++) {
        float a = s->alphas_cumprod[i];
        out[i] = sqrtf((1.0f - a) / a);
    }
}

void sched_train_log_sigmas(const sd_scheduler *s, float *out) {
    sched_train_sigmas(s, out);
    for (int i = 0; i < s->num_train_timesteps; i++) out[i] = np_logf(out[i]);
}

/* ---- timestep grids and sigma conversions ---------------------------------------------------- */

int sched_spacing_timesteps(sched_spacing sp, int num_train, int n, int steps_offset, double *out) {
    if (sp == SPACING_LINSPACE) {
        np_linspace(0, num_train - 1, n, out);
        for (int i = 0; i < n / 2; i++) {
            double t = out[i];
            out[i] = out[n - 1 - i], out[n - 1 - i] = t;
        }
        return n;
    }
    if (sp == SPACING_LEADING) {
        int ratio = num_train / n;
        for (int i = 0; i < n; i++) out[i] = (double)(n - 1 - i) * ratio + steps_offset;
        return n;
    }
    double ratio = (double)num_train / n;
    int len = np_arange_len(num_train, 0, -ratio);
    if (len > n + 1) len = n + 1; /* cannot happen: N / (N / n) rounds to n */
    np_arange(num_train, -ratio, len, out);
    for (int i = 0; i < len; i++) out[i] = nearbyint(out[i]) - 1;
    return len;
}

void sched_karras_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    const double rho = 7.0;
    double min_inv_rho = pow(sigma_min, 1 / rho), max_inv_rho = pow(sigma_max, 1 / rho);
    np_linspace(0, 1, n, out);
    for (int i = 0; i < n; i++)
        out[i] = pow(max_inv_rho + out[i] * (min_inv_rho - max_inv_rho), rho);
}

void sched_exponential_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    np_linspace(log(sigma_max), log(sigma_min), n, out);
    for (int i = 0; i < n; i++) out[i] = exp(out[i]);
}

double sched_sigma_to_t(double sigma, const float *log_sigmas, int n) {
    double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    /* numpy: the last index whose log sigma is <= log_sigma (0 if none), kept below n - 1 */
    int low = 0;
    for (int j = 0; j < n; j++)
        if (log_sigma - (double)log_sigmas[j] >= 0) low = j;
    if (low > n - 2) low = n - 2;
    int high = low + 1;
    float lo = log_sigmas[low], hi = log_sigmas[high];
    double w = ((double)lo - log_sigma) / (double)(lo - hi); /* lo - hi is a float32 difference */
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (1 - w) * low + w * high;
}

double sched_sigma_to_t_f32(float sigma, const float *log_sigmas, int n) {
    /* a float32 sigma keeps numpy in float32 up to the final weighted sum */
    float log_sigma = np_logf(sigma > 1e-10f ? sigma : 1e-10f);
    int low = 0;
    for (int j = 0; j < n; j++)
        if (log_sigma - log_sigmas[j] >= 0) low = j;
    if (low > n - 2) low = n - 2;
    int high = low + 1;
    float lo = log_sigmas[low], hi = log_sigmas[high];
    float w = (lo - log_sigma) / (lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (double)(1 - w) * low + (double)w * high;
}

int sched_kdiff_timesteps(const sd_scheduler *s, int n, double *out) {
    sched_spacing sp = sched_cfg_spacing(s);
    int len = sched_spacing_timesteps(sp, s->num_train_timesteps, n,
                                      sched_cfg_int(s, "steps_offset"), out);
    /* np.linspace(..., dtype=float32): computed in float64, cast once */
    if (sp == SPACING_LINSPACE)
        for (int i = 0; i < len; i++) out[i] = (float)out[i];
    return len;
}

void sched_interp_sigmas(const float *train_sigmas, int num_train, const double *t, int n,
                         double *out) {
    for (int i = 0; i < n; i++) out[i] = np_interp_index(t[i], train_sigmas, num_train);
}

double sched_max_sigma_noise(const sd_scheduler *s) {
    float m = 0;
    for (int i = 0; i < s->n_sigmas; i++)
        if (s->sigmas[i] > m) m = s->sigmas[i];
    sched_spacing sp = sched_cfg_spacing(s);
    if (sp == SPACING_LINSPACE || sp == SPACING_TRAILING) return m;
    return sqrtf(m * m + 1.0f);
}

/* Checks the sigma-schedule switches shared by the k-diffusion classes. */
sd_status sched_check_sigma_switches(const sd_scheduler *s) {
    int on = sched_cfg_bool(s, "use_karras_sigmas") + sched_cfg_bool(s, "use_exponential_sigmas") +
             sched_cfg_bool(s, "use_beta_sigmas");
    if (on > 1)
        return sched_cfg_error(s, SD_ERR_CONFIG,
                               "only one of use_karras_sigmas, "
                               "use_exponential_sigmas, use_beta_sigmas can be "
                               "true");
    if (sched_cfg_bool(s, "use_beta_sigmas"))
        return sched_cfg_error(s, SD_ERR_UNSUPPORTED,
                               "use_beta_sigmas (scipy's beta.ppf) is not supported");
    return SD_OK;
}

/* Karras or exponential sigmas from the interpolated ones (in_sigmas[0] the largest), with the
 * config's sigma_min / sigma_max when set. Returns false when neither is configured. */
bool sched_convert_sigmas(const sd_scheduler *s, const double *in, int n_in, int n, double *out) {
    double smin = sched_cfg_attr_num(s, "sigma_min"), smax = sched_cfg_attr_num(s, "sigma_max");
    if (isnan(smin)) smin = in[n_in - 1];
    if (isnan(smax)) smax = in[0];
    if (sched_cfg_bool(s, "use_karras_sigmas")) {
        sched_karras_sigmas(smin, smax, n, out);
        return true;
    }
    if (sched_cfg_bool(s, "use_exponential_sigmas")) {
        sched_exponential_sigmas(smin, smax, n, out);
        return true;
    }
    return false;
}

int sched_kdiff_schedule(const sd_scheduler *s, int n, bool own_karras, double **ts_out,
                         double **sig_out) {
    const int N = s->num_train_timesteps;
    float *train = malloc((size_t)N * sizeof *train), *logs = malloc((size_t)N * sizeof *logs);
    double *ts = malloc((size_t)(n + 2) * sizeof *ts), *sig = malloc((size_t)(n + 2) * sizeof *sig);
    double *conv = malloc((size_t)(n + 2) * sizeof *conv);
    int len = -1;
    if (!train || !logs || !ts || !sig || !conv) {
        sd_set_error(SD_ERR_NOMEM, "%s: out of memory", s->cls->name);
        free(ts), free(sig);
        ts = sig = NULL;
        goto done;
    }
    sched_train_sigmas(s, train);
    sched_train_log_sigmas(s, logs);
    len = sched_kdiff_timesteps(s, n, ts);
    sched_interp_sigmas(train, N, ts, len, sig);
    bool converted;
    if (own_karras && sched_cfg_bool(s, "use_karras_sigmas")) {
        sched_karras_sigmas(sig[len - 1], sig[0], n, conv);
        converted = true;
    } else {
        converted = sched_convert_sigmas(s, sig, len, n, conv);
    }
    if (converted) {
        len = n;
        for (int i = 0; i < n; i++) sig[i] = conv[i], ts[i] = sched_sigma_to_t(sig[i], logs, N);
    }
    sig[len] = 0;
done:
    free(train), free(logs), free(conv);
    *ts_out = ts, *sig_out = sig;
    return len;
}
