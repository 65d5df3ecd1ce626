/* What the scheduler files share: the scheduler struct, the per-class vtable with its parameter
 * table (diffusers' __init__ signature: names, types, defaults), the resolved-config getters and
 * the numpy/torch-exact schedule helpers of schedule.c.
 *
 * Adding a scheduler is adding a file that defines a `sched_class` and listing it in
 * scheduler.c's class table. */
#ifndef SD_SCHED_INTERNAL_H
#define SD_SCHED_INTERNAL_H

#include "scheduler.h"

#include <stdint.h>

/* ---- parameters (one table per class, ended by a NULL key) ---------------------------------- */

typedef enum {
    SP_INT,     /* a JSON number with an integral value */
    SP_NUM,     /* a JSON number */
    SP_BOOL,    /* true / false (numbers count as Python truthiness) */
    SP_STR,     /* a string, one of `choices` when given */
    SP_OPT_NUM, /* a number or null (default null) */
    SP_OPT_STR, /* a string (one of `choices`) or null (default null) */
    SP_JSON,    /* any JSON value, checked by the class (trained_betas, disable_corrector) */
} sched_param_type;

typedef struct {
    const char *key;
    sched_param_type type;
    double def;          /* SP_INT / SP_NUM / SP_BOOL */
    const char *def_str; /* SP_STR default; SP_JSON default as JSON text */
    const char *choices; /* SP_STR / SP_OPT_STR: allowed values separated by '|', NULL: any */
} sched_param;

/* clang-format off */
#define SP_I(k, d) {k, SP_INT, d, NULL, NULL}
#define SP_N(k, d) {k, SP_NUM, d, NULL, NULL}
#define SP_B(k, d) {k, SP_BOOL, d, NULL, NULL}
#define SP_S(k, d, choices) {k, SP_STR, 0, d, choices}
#define SP_ON(k) {k, SP_OPT_NUM, 0, NULL, NULL}
#define SP_OS(k, choices) {k, SP_OPT_STR, 0, NULL, choices}
#define SP_J(k, d) {k, SP_JSON, 0, d, NULL}
#define SP_END {NULL, SP_INT, 0, NULL, NULL}
/* clang-format on */

/* ---- the class vtable ------------------------------------------------------------------------ */

typedef struct sched_class {
    const char *name;    /* diffusers class name */
    const char *aliases; /* comma-separated short names (for sched_list) */
    const char *description;
    const sched_param *params;
    int order; /* diffusers' class attribute `order` */
    /* Reads the resolved config, checks combinations, builds the training schedule. */
    sd_status (*init)(sd_scheduler *s);
    sd_status (*set_timesteps)(sd_scheduler *s, int steps, const sched_timestep_opts *opts);
    /* NULL: scale_model_input is the identity. */
    void (*scale_model_input)(sd_scheduler *s, int i, const float *x, float *out, size_t n);
    sd_status (*step)(sd_scheduler *s, int i, const float *model_output, float *sample, size_t n,
                      sched_noise_fn noise, void *noise_ctx);
    void (*add_noise)(const sd_scheduler *s, int i, const float *x0, const float *noise, float *out,
                      size_t n);
    /* Frees `state` (NULL: plain free). */
    void (*free_state)(void *state);
} sched_class;

typedef enum { PRED_EPSILON, PRED_V, PRED_SAMPLE, PRED_FLOW } sched_pred;
typedef enum { SPACING_LEADING, SPACING_TRAILING, SPACING_LINSPACE } sched_spacing;

struct sd_scheduler {
    const sched_class *cls;
    cJSON *config; /* the resolved config: what diffusers' scheduler.config holds */

    int num_train_timesteps;
    sched_pred pred;
    /* float32 values exactly as torch holds them; NULL for flow matching */
    float *alphas_cumprod; /* [num_train_timesteps] */

    /* after set_timesteps */
    int num_inference_steps; /* the `num_inference_steps` argument */
    int n_timesteps;
    double *timesteps; /* the values the model is called with (int64 or float32 in diffusers) */
    int n_sigmas;
    float *sigmas; /* float32, as the scheduler's `sigmas` tensor */
    double init_noise_sigma;
    double eta;

    void *state; /* the class's own data (history, buffers) */
};

/* ---- resolved-config getters (the value is known to exist and to have the right type) -------- */

const cJSON *sched_cfg_item(const sd_scheduler *s, const char *key);
double sched_cfg_num(const sd_scheduler *s, const char *key); /* NAN when null */
int sched_cfg_int(const sd_scheduler *s, const char *key);
bool sched_cfg_bool(const sd_scheduler *s, const char *key);
const char *sched_cfg_str(const sd_scheduler *s, const char *key); /* NULL when null */
bool sched_cfg_is(const sd_scheduler *s, const char *key, const char *value);
/* `getattr(self.config, key)` as a number, NAN when absent or null: unlike the getters above it
 * also sees hidden keys, as diffusers' _convert_to_karras does for sigma_min / sigma_max even in
 * classes without those parameters. */
double sched_cfg_attr_num(const sd_scheduler *s, const char *key);

/* An error about a config key of this scheduler: "<Class>: <key> ...". */
sd_status sched_cfg_error(const sd_scheduler *s, sd_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Common reads: num_train_timesteps (> 0), prediction_type, timestep_spacing. */
sd_status sched_read_common(sd_scheduler *s);
sched_spacing sched_cfg_spacing(const sd_scheduler *s);

/* SD_OK when opts hold neither custom sigmas nor mu (for classes that take neither). */
sd_status sched_plain_opts(const sd_scheduler *s, const sched_timestep_opts *opts);

/* Classes that index alphas_cumprod by timestep: every timestep must be a training timestep
 * (a large steps_offset can push one past the end, where diffusers fails with an IndexError). */
sd_status sched_check_timestep_range(const sd_scheduler *s);

/* Allocates s->timesteps / s->sigmas for n entries (frees the old ones). */
sd_status sched_alloc_timesteps(sd_scheduler *s, int n);
sd_status sched_alloc_sigmas(sd_scheduler *s, int n);

/* ---- training schedule (schedule.c) ---------------------------------------------------------- */

/* betas from beta_schedule / beta_start / beta_end / trained_betas (float32, as torch builds
 * them), optionally rescaled to zero terminal SNR (rescale_betas_zero_snr), then alphas_cumprod
 * (accumulated in double, stored float32: torch's cumprod). With `terminal_clamp`, a zero-SNR
 * schedule's last alphas_cumprod becomes 2^-24 (the k-diffusion schedulers do this so that the
 * last sigma is finite). */
sd_status sched_build_alphas_cumprod(sd_scheduler *s, bool terminal_clamp);

/* sqrt((1 - a) / a) in float32 per training step: the k-diffusion sigma of each timestep. */
void sched_train_sigmas(const sd_scheduler *s, float *out);
/* log of each train sigma as numpy computes it on a float32 array (float32 result). */
void sched_train_log_sigmas(const sd_scheduler *s, float *out);

/* ---- numpy / torch replicas (schedule.c) ----------------------------------------------------- */

void np_linspace(double start, double stop, int num, double *out);
/* np.arange(start, stop, step) for floats: its length, and its values (start + i * delta with
 * delta = (start + step) - start, as numpy fills it). */
int np_arange_len(double start, double stop, double step);
void np_arange(double start, double step, int len, double *out);
/* np.interp(x, arange(n), fp) with float32 fp. */
double np_interp_index(double x, const float *fp, int n);
/* np.log on float32 values (numpy's SIMD polynomial, not the correctly rounded logf). */
float np_logf(float x);
/* torch.linspace(start, end, n, dtype=float32). */
void torch_linspace_f32(double start, double end, int n, float *out);

/* The timesteps of leading / trailing / linspace spacing over n steps, descending, before any
 * cast: linspace is np.linspace(0, N-1, n) unrounded (callers round or cast as their class
 * does); leading adds steps_offset. Returns the count (trailing can differ from n, as numpy's
 * arange length does). `out` holds at least n + 1 entries. */
int sched_spacing_timesteps(sched_spacing sp, int num_train, int n, int steps_offset, double *out);

/* Karras et al. (rho = 7) sigmas from sigma_max down to sigma_min over n steps (float64). */
void sched_karras_sigmas(double sigma_min, double sigma_max, int n, double *out);
/* exp(linspace(log(sigma_max), log(sigma_min), n)). */
void sched_exponential_sigmas(double sigma_min, double sigma_max, int n, double *out);
/* The fractional training timestep of a sigma, interpolating log sigmas (float32 table). */
double sched_sigma_to_t(double sigma, const float *log_sigmas, int n);

/* The same for a float32 sigma (custom sigmas): numpy then stays in float32 for log and weights. */
double sched_sigma_to_t_f32(float sigma, const float *log_sigmas, int n);

/* Timesteps of the k-diffusion style classes (Euler, Euler ancestral, Heun, LMS): the spacing's
 * values as float32 (linspace unrounded). Returns the count; out holds n + 1. */
int sched_kdiff_timesteps(const sd_scheduler *s, int n, double *out);
/* np.interp of each timestep into the training sigmas. */
void sched_interp_sigmas(const float *train_sigmas, int num_train, const double *t, int n,
                         double *out);
/* init_noise_sigma of the k-diffusion classes: max sigma for linspace / trailing spacing,
 * sqrt(max^2 + 1) for leading (float32). */
double sched_max_sigma_noise(const sd_scheduler *s);

/* use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas: at most one, and beta sigmas
 * (scipy's beta.ppf) are not supported. */
sd_status sched_check_sigma_switches(const sd_scheduler *s);
/* Karras or exponential sigmas (n of them) from in[0..n_in) (in[0] the largest), with the
 * config's sigma_min / sigma_max when set. Returns false when neither switch is on. */
bool sched_convert_sigmas(const sd_scheduler *s, const double *in, int n_in, int n, double *out);

/* The whole k-diffusion schedule of Heun and LMS: the spacing's timesteps, their interpolated
 * training sigmas, then Karras / exponential conversion (timesteps mapped back through the log
 * sigmas). `own_karras`: Karras between the interpolated ends, ignoring a configured sigma_min /
 * sigma_max (LMS's _convert_to_karras). *ts and *sig are malloc'd (the caller frees them): len
 * timesteps and len + 1 sigmas ending in 0; returns len, or -1 after setting the error. */
int sched_kdiff_schedule(const sd_scheduler *s, int n, bool own_karras, double **ts, double **sig);

/* ---- shared step pieces (common.c) ----------------------------------------------------------- */

/* Fills noise (in the caller's layout) through the callback; n elements. */
void sched_draw_noise(sched_noise_fn noise, void *ctx, float *buf, size_t n);
/* sample / sqrt(sigma^2 + 1) with sigma = sigmas[i] (Euler, Heun, LMS, Euler ancestral). */
void sched_scale_by_sigma(sd_scheduler *s, int i, const float *x, float *out, size_t n);
/* x0 + noise * sigmas[i] (k-diffusion add_noise). */
void sched_add_noise_sigma(const sd_scheduler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n);
/* sqrt(a) * x0 + sqrt(1 - a) * noise with a = alphas_cumprod[timestep of call i] (DDPM family). */
void sched_add_noise_alpha(const sd_scheduler *s, int i, const float *x0, const float *noise,
                           float *out, size_t n);
/* alpha_t * x0 + sigma_t * noise from sigmas[i] (DPM-Solver, UniPC). */
void sched_add_noise_vp(const sd_scheduler *s, int i, const float *x0, const float *noise,
                        float *out, size_t n);
/* Per-element buffers of a scheduler: (re)allocates `*buf` (zeroed) for k arrays of n floats
 * unless it already holds them. Classes with history check for a size change mid-run first. */
sd_status sched_state_buffer(float **buf, size_t *have_n, size_t n, int k);

#endif
