/* Whole-model benchmark of SD 1.5 at 512x512 (see README.md, "Benchmark"):
 *
 *   make bench                                  model made if missing, then this with defaults
 *   build/bench/sd_bench MODEL_DIR [options]
 *     --threads LIST   thread counts to sweep, e.g. 1,2,all (default: 1, 2 and all cores)
 *     --main N         the thread count of the headline figures (default 2, or all if fewer)
 *     --runs N         timed runs per figure, after one warm-up (default 3; the median is kept)
 *     --size N         image side in pixels (default: the model's, 512)
 *     --results PATH   where the JSON line is appended (default bench/results.jsonl; "-": nowhere)
 *     --parts LIST     what to time, of text,unet,vae (default all three; for profiling one)
 *     --precision P    fp32: the sweep in fp32 only; bf16: the sweep in bf16 (UNet and VAE
 *                      packed as bf16, kernels/gemm_bf16.h); both (default where the CPU has
 *                      avx512_bf16, else fp32): the fp32 sweep, then the UNet step and the VAE
 *                      decode again in bf16 at the --main thread count, with the speed-up and the
 *                      relative difference of their outputs from fp32 (keys *_bf16_*)
 *     --int8 on|off    after the sweep (and before any bf16 phase), the UNet step again with
 *                      the UNet packed as int8 (--precision int8, kernels/gemm_int8.h) at the
 *                      --main thread count: keys unet_step_int8_s, unet_int8_speedup,
 *                      unet_int8_rel_diff, int8_kernel (default on)
 *
 * It loads the tokenizer, text encoder, UNet and VAE decoder of a diffusers folder (make_model
 * writes one with random weights), measures this machine's FP32 FMA peak with bench/peak.c's
 * calibration loop, then per thread count times text encoding (prompt and negative prompt, batch
 * 2), one UNet call at batch 2 (one CFG step) and one VAE decode, each the median of --runs runs
 * after a warm-up. FLOPs are counted from the configs (bench/flops.c). The last line printed is
 * `BENCH {json}` with the headline figures and the sweep. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/fileutil.h"
#include "../core/threads.h"
#include "../include/sd.h"
#include "../kernels/cpu.h"
#include "../text_encoder/clip_tokenizer.h"
#include "flops.h"
#include "peak.h"
#include "sysinfo.h"

enum { MAX_RUNS = 64, MAX_SWEEP = 8, CTX = 77 };

static const char *const PROMPT = "a photograph of an astronaut riding a horse on the moon, "
                                  "highly detailed, sharp focus";
static const char *const NEGATIVE = "blurry, low quality";

typedef struct {
    clip_tokenizer *tok;
    clip_text *text;
    unet *unet;
    vae *vae;
    int lh, lw;        /* latent size */
    float *latents;    /* [2][lh][lw][4]: the CFG batch */
    float *context;    /* [2][77][hidden] */
    float *unet_out;   /* [2][lh][lw][4] */
    float *z;          /* [1][lh][lw][4], unscaled */
    float *image;      /* [1][8 lh][8 lw][3] */
    sd_status st;      /* the first failure of a timed call */
} bench_ctx;

/* The median, minimum and maximum of a figure's runs, and what the runs cost besides time. */
typedef struct {
    double median, min, max;
    double allocs, faults; /* per run */
    double first;          /* the warm-up call (first touch of its scratch memory included) */
    double cpu;            /* process CPU seconds per run: below threads x median, the threads
                            * were kept waiting (a busy machine); spin-waits count as CPU */
} timing;

typedef struct {
    int threads;
    double peak; /* GFLOP/s, measured at this thread count */
    timing text, unet, vae;
} sweep_row;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run_text(bench_ctx *c) {
    const clip_text_config *cfg = clip_text_get_config(c->text);
    int32_t ids[2 * CTX];
    sd_status st = clip_tokenize_padded(c->tok, NEGATIVE, ids, CTX);
    if (st == SD_OK) st = clip_tokenize_padded(c->tok, PROMPT, ids + CTX, CTX);
    if (st == SD_OK) st = clip_text_encode(c->text, ids, 2, CTX, cfg->num_layers, true, c->context, NULL);
    if (st != SD_OK && c->st == SD_OK) c->st = st;
}

static void run_unet(bench_ctx *c) {
    sd_status st = unet_forward(c->unet, c->latents, 2, c->lh, c->lw, 500.0f, c->context, CTX, NULL,
                                c->unet_out);
    if (st != SD_OK && c->st == SD_OK) c->st = st;
}

static void run_vae(bench_ctx *c) {
    sd_status st = vae_decode(c->vae, c->z, 1, c->lh, c->lw, c->image);
    if (st != SD_OK && c->st == SD_OK) c->st = st;
}

/* One warm-up call (it sizes the scratch arenas), then `runs` timed calls. */
static timing time_calls(void (*fn)(bench_ctx *), bench_ctx *c, int runs) {
    double t[MAX_RUNS];
    const double w0 = now();
    fn(c);
    const double first = now() - w0;
    /* For profilers (perf record -k CLOCK_MONOTONIC, then perf report --time A,B). */
    if (getenv("SD_BENCH_MARKS")) fprintf(stderr, "mark: timed runs start at %.6f\n", now());
    const long a0 = sysinfo_alloc_calls(), f0 = sysinfo_minor_faults();
    const double c0 = cpu_now();
    for (int r = 0; r < runs; r++) {
        const double t0 = now();
        fn(c);
        t[r] = now() - t0;
    }
    if (getenv("SD_BENCH_MARKS")) fprintf(stderr, "mark: timed runs end at %.6f\n", now());
    timing out;
    out.allocs = (double)(sysinfo_alloc_calls() - a0) / runs;
    out.faults = (double)(sysinfo_minor_faults() - f0) / runs;
    out.cpu = (cpu_now() - c0) / runs;
    out.first = first;
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    out.min = t[0], out.max = t[runs - 1];
    out.median = runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]);
    return out;
}

/* Deterministic values of about unit variance (Box-Muller on a 64-bit LCG). */
static void fill_normal(float *x, size_t n, unsigned long long seed) {
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int j = 0; j < 2; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            u[j] = ((seed >> 11) + 0.5) / 9007199254740992.0;
        }
        const double r = sqrt(-2.0 * log(u[0]));
        x[i] = (float)(r * cos(6.283185307179586 * u[1]));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
}

/* Mean |x| over n values, and how many are not finite. */
static double mean_abs(const float *x, size_t n, size_t *bad) {
    double s = 0.0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) (*bad)++;
        else s += fabs(x[i]);
    }
    return s / (double)n;
}

static sd_status load(bench_ctx *c, const char *dir, int size, double *secs) {
    const double t0 = now();
    char *p;
    sd_status st = SD_OK;
#define LOAD(sub, call)                                                                            \
    if (st == SD_OK) {                                                                             \
        if (!(p = sd_path_join(dir, sub))) return sd_set_error(SD_ERR_NOMEM, "out of memory");     \
        st = call;                                                                                 \
        free(p);                                                                                   \
    }
    LOAD("tokenizer", clip_tokenizer_load(&c->tok, p));
    LOAD("text_encoder", clip_text_load(&c->text, p, NULL));
    LOAD("unet", unet_load(&c->unet, p, NULL));
    LOAD("vae", vae_load_opt(&c->vae, p, false, NULL));
#undef LOAD
    if (st != SD_OK) return st;
    *secs = now() - t0;
    const int f = vae_scale_factor(c->vae);
    if (size <= 0) size = unet_get_config(c->unet)->sample_size * f;
    if (size % 64) return sd_set_error(SD_ERR_ARG, "--size %d: must be a multiple of 64", size);
    c->lh = c->lw = size / f;
    const int hidden = clip_text_get_config(c->text)->hidden_size;
    const size_t lat = (size_t)c->lh * c->lw * 4;
    c->latents = malloc(2 * lat * sizeof(float));
    c->unet_out = malloc(2 * lat * sizeof(float));
    c->z = malloc(lat * sizeof(float));
    c->context = malloc((size_t)2 * CTX * hidden * sizeof(float));
    c->image = malloc(lat / 4 * f * f * 3 * sizeof(float));
    if (!c->latents || !c->unet_out || !c->z || !c->context || !c->image)
        return sd_set_error(SD_ERR_NOMEM, "out of memory for the inputs");
    fill_normal(c->latents, 2 * lat, 1);
    fill_normal(c->z, lat, 2);
    vae_unscale_latents(c->vae, c->z, c->z, lat);
    return SD_OK;
}

/* The bf16 phase of --precision both: the UNet and the VAE reloaded packed as bf16 (the fp32 ones
 * freed first, so peak memory stays the fp32 run's), timed at the current thread count, their
 * outputs compared with the fp32 ones the sweep left in c. */
typedef struct {
    timing unet, vae;
    double unet_err, vae_err;
} bf16_phase;

static sd_status reload_bf16(bench_ctx *c, const char *dir) {
    unet_free(c->unet);
    vae_free(c->vae);
    c->unet = NULL, c->vae = NULL;
    char *pu = sd_path_join(dir, "unet"), *pv = sd_path_join(dir, "vae");
    sd_status st = pu && pv ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    const weights_policy bf16 = {.precision = WEIGHTS_PRECISION_BF16};
    if (st == SD_OK) st = unet_load(&c->unet, pu, &bf16);
    if (st == SD_OK) st = vae_load_opt(&c->vae, pv, false, &bf16);
    free(pu), free(pv);
    return st;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static sd_status run_bf16_phase(bench_ctx *c, const char *dir, int runs, const char *parts, bf16_phase *out) {
    const size_t nu = (size_t)2 * c->lh * c->lw * 4, nv = (size_t)c->lh * c->lw * 64 * 3;
    float *u32 = malloc(nu * sizeof *u32), *v32 = malloc(nv * sizeof *v32);
    if (!u32 || !v32) {
        free(u32), free(v32);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    memcpy(u32, c->unet_out, nu * sizeof *u32);
    memcpy(v32, c->image, nv * sizeof *v32);
    sd_status st = reload_bf16(c, dir);
    const timing none = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    out->unet = out->vae = none;
    out->unet_err = out->vae_err = NAN;
    if (st == SD_OK) {
        c->st = SD_OK;
        if (strstr(parts, "unet")) out->unet = time_calls(run_unet, c, runs), out->unet_err = rel_diff(c->unet_out, u32, nu);
        if (strstr(parts, "vae")) out->vae = time_calls(run_vae, c, runs), out->vae_err = rel_diff(c->image, v32, nv);
        st = c->st;
    }
    free(u32), free(v32);
    return st;
}

/* The int8 phase: the UNet alone reloaded packed as int8 (the VAE stays fp32 under --precision
 * int8), timed, its output compared with the fp32 one the sweep left in c; c->unet_out is put
 * back afterwards so a bf16 phase compares with fp32 too. */
static sd_status run_int8_phase(bench_ctx *c, const char *dir, int runs, timing *t, double *err) {
    const size_t nu = (size_t)2 * c->lh * c->lw * 4;
    float *u32 = malloc(nu * sizeof *u32);
    char *pu = sd_path_join(dir, "unet");
    sd_status st = u32 && pu ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    const timing none = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    *t = none;
    *err = NAN;
    if (st == SD_OK) {
        memcpy(u32, c->unet_out, nu * sizeof *u32);
        unet_free(c->unet);
        c->unet = NULL;
        const weights_policy int8 = {.precision = WEIGHTS_PRECISION_INT8};
        st = unet_load(&c->unet, pu, &int8);
    }
    if (st == SD_OK) {
        c->st = SD_OK;
        *t = time_calls(run_unet, c, runs);
        *err = rel_diff(c->unet_out, u32, nu);
        st = c->st;
        memcpy(c->unet_out, u32, nu * sizeof *u32);
    }
    free(u32), free(pu);
    return st;
}

static void unload(bench_ctx *c) {
    clip_tokenizer_free(c->tok);
    clip_text_free(c->text);
    unet_free(c->unet);
    vae_free(c->vae);
    free(c->latents), free(c->unet_out), free(c->z), free(c->context), free(c->image);
}

/* "1,2,all" -> sorted unique counts. */
static int parse_threads(const char *s, int cores, int *out) {
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const int v = !strcmp(t, "all") ? cores : atoi(t);
        if (v < 1) return -1;
        bool seen = false;
        for (int i = 0; i < n; i++) seen |= out[i] == v;
        if (!seen && n < MAX_SWEEP) out[n++] = v;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j] < out[j - 1]; j--) {
            const int t = out[j];
            out[j] = out[j - 1], out[j - 1] = t;
        }
    return n;
}

static double round3(double x) { return round(x * 1000.0) / 1000.0; }

static cJSON *timing_json(const timing *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "median_s", round3(t->median));
    cJSON_AddNumberToObject(o, "min_s", round3(t->min));
    cJSON_AddNumberToObject(o, "max_s", round3(t->max));
    cJSON_AddNumberToObject(o, "allocs_per_call", t->allocs);
    cJSON_AddNumberToObject(o, "minor_faults_per_call", t->faults);
    cJSON_AddNumberToObject(o, "cpu_s_per_call", round3(t->cpu));
    cJSON_AddNumberToObject(o, "first_call_s", round3(t->first));
    return o;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *results = "bench/results.jsonl", *thread_list = "1,2,all";
    const char *parts = "text,unet,vae", *precision = NULL, *int8_opt = "on";
    int runs = 3, main_threads = 0, size = 0;
    /* The library reads no environment: the benchmark passes SD_KERNEL_ISA on, as the tools do. */
    if (getenv("SD_KERNEL_ISA") && sd_set_kernel_isa(getenv("SD_KERNEL_ISA")) != SD_OK) {
        fprintf(stderr, "SD_KERNEL_ISA: %s\n", sd_last_error());
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const bool has = i + 1 < argc;
        if (!strcmp(argv[i], "--threads") && has) thread_list = argv[++i];
        else if (!strcmp(argv[i], "--main") && has) main_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && has) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && has) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--results") && has) results = argv[++i];
        else if (!strcmp(argv[i], "--parts") && has) parts = argv[++i];
        else if (!strcmp(argv[i], "--precision") && has) precision = argv[++i];
        else if (!strcmp(argv[i], "--int8") && has) int8_opt = argv[++i];
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "sd_bench: unexpected argument '%s' (see the header of bench/sd_bench.c)\n", argv[i]);
            return 2;
        }
    }
    const char *bf16_missing = kern_bf16_unavailable();
    if (!precision) precision = bf16_missing ? "fp32" : "both";
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16") && strcmp(precision, "both")) {
        fprintf(stderr, "sd_bench: --precision %s: expected fp32, bf16 or both\n", precision);
        return 2;
    }
    if (strcmp(precision, "fp32") && bf16_missing) {
        fprintf(stderr, "sd_bench: --precision %s: %s\n", precision, bf16_missing);
        return 2;
    }
    const bool sweep_bf16 = !strcmp(precision, "bf16"), phase_bf16 = !strcmp(precision, "both");
    if (strcmp(int8_opt, "on") && strcmp(int8_opt, "off")) {
        fprintf(stderr, "sd_bench: --int8 %s: expected on or off\n", int8_opt);
        return 2;
    }
    const bool phase_int8 = !strcmp(int8_opt, "on") && !sweep_bf16;
    const int cores = omp_get_num_procs();
    if (main_threads <= 0) main_threads = cores < 2 ? cores : 2;
    int counts[MAX_SWEEP + 1];
    int n_counts = parse_threads(thread_list, cores, counts);
    if (!dir || runs < 1 || runs > MAX_RUNS || n_counts < 0) {
        fprintf(stderr, "usage: sd_bench MODEL_DIR [--threads 1,2,all] [--main N] [--runs 1..%d] "
                        "[--size N] [--results PATH|-]\n", MAX_RUNS);
        return 2;
    }
    bool have_main = false;
    for (int i = 0; i < n_counts; i++) have_main |= counts[i] == main_threads;
    if (!have_main) {
        counts[n_counts++] = main_threads;
        for (int j = n_counts - 1; j > 0 && counts[j] < counts[j - 1]; j--) {
            const int t = counts[j];
            counts[j] = counts[j - 1], counts[j - 1] = t;
        }
    }

    char cpu[128], commit[64], date[32];
    bool dirty;
    double load0[3], load1[3];
    sysinfo_cpu_model(cpu, sizeof cpu);
    sysinfo_git_commit(commit, sizeof commit, &dirty);
    sysinfo_utc_now(date, sizeof date);
    sysinfo_loadavg(load0);
    const kern_isa isa = kern_isa_active();
    printf("sd_bench: %s, %d cores, kernels %s, commit %s%s, %s\n", cpu, cores, kern_isa_name(isa),
           commit, dirty ? " (modified)" : "", date);
    printf("load average at start: %.2f %.2f %.2f\n", load0[0], load0[1], load0[2]);
    fflush(stdout);

    bench_ctx c;
    memset(&c, 0, sizeof c);
    double load_s = 0.0;
    sd_set_threads(main_threads);
    /* --precision bf16: the UNet and the VAE packed as bf16 (the text encoder stays fp32, as in
     * the pipeline) */
    sd_status load_st = SD_OK;
    if (sweep_bf16) {
        load_st = load(&c, dir, size, &load_s); /* fp32 first for the sizes, then bf16 */
        if (load_st == SD_OK) load_st = reload_bf16(&c, dir);
    } else {
        load_st = load(&c, dir, size, &load_s);
    }
    if (load_st != SD_OK) {
        fprintf(stderr, "sd_bench: %s\n", sd_last_error());
        unload(&c);
        return 1;
    }
    const int img = c.lh * vae_scale_factor(c.vae);
    const bench_flops fu = bench_flops_unet(unet_get_config(c.unet), 2, c.lh, c.lw, CTX);
    const bench_flops fv = bench_flops_vae_decode(vae_get_config(c.vae), c.lh, c.lw);
    const bench_flops ft = bench_flops_clip(clip_text_get_config(c.text), 2, CTX);
    const double unet_f = bench_flops_total(&fu), vae_f = bench_flops_total(&fv), text_f = bench_flops_total(&ft);
    printf("model %s: loaded in %.1f s; %dx%d, CFG batch 2, %d tokens\n", dir, load_s, img, img, CTX);
    printf("work counted from the configs: UNet call %.3f TFLOP (conv %.3f, linear %.3f, attention "
           "%.3f; the issue quotes 1.607 at 512x512)\n", unet_f * 1e-12, fu.conv * 1e-12,
           fu.linear * 1e-12, fu.attention * 1e-12);
    printf("  VAE decode %.3f TFLOP (conv %.3f, linear %.3f, attention %.3f; the issue quotes 2.51), "
           "text encode %.1f GFLOP\n", vae_f * 1e-12, fv.conv * 1e-12, fv.linear * 1e-12,
           fv.attention * 1e-12, text_f * 1e-9);
    printf("timed: median of %d runs after a warm-up (min-max in brackets)\n\n", runs);
    printf("threads | FMA peak   | text encode | UNet step (batch 2)                 | VAE decode\n");
    printf("        | GFLOP/s    | s           | s                     GFLOP/s  peak | s                     GFLOP/s  peak\n");
    fflush(stdout);

    sweep_row rows[MAX_SWEEP + 1];
    const timing no_time = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    int main_row = 0;
    float *ref_unet = NULL, *ref_image = NULL;
    bool same_across_threads = true;
    double peak1 = 0.0;
    for (int i = 0; i < n_counts; i++) {
        sweep_row *r = &rows[i];
        memset(r, 0, sizeof *r);
        r->threads = counts[i];
        sd_set_threads(r->threads);
        peak_measure(isa, r->threads, &peak1, &r->peak);
        /* the text encoder's output is the UNet's context: it runs at least once */
        r->text = strstr(parts, "text") ? time_calls(run_text, &c, runs) : (run_text(&c), no_time);
        r->unet = strstr(parts, "unet") ? time_calls(run_unet, &c, runs) : no_time;
        r->vae = strstr(parts, "vae") ? time_calls(run_vae, &c, runs) : no_time;
        /* Once more after the work: a busy moment during the first measurement would otherwise
         * inflate every fraction (the best of both is kept). */
        peak_measure(isa, r->threads, &peak1, &r->peak);
        if (c.st != SD_OK) {
            fprintf(stderr, "sd_bench: %s\n", sd_last_error());
            unload(&c);
            return 1;
        }
        if (r->threads == main_threads) main_row = i;
        /* The kernels promise results independent of the thread count: check it on the whole. */
        const size_t nu = (size_t)2 * c.lh * c.lw * 4, nv = (size_t)c.lh * c.lw * 64 * 3;
        if (i == 0) {
            ref_unet = malloc(nu * sizeof *ref_unet), ref_image = malloc(nv * sizeof *ref_image);
            if (ref_unet) memcpy(ref_unet, c.unet_out, nu * sizeof *ref_unet);
            if (ref_image) memcpy(ref_image, c.image, nv * sizeof *ref_image);
        } else {
            if (ref_unet && strstr(parts, "unet") && memcmp(ref_unet, c.unet_out, nu * sizeof *ref_unet))
                same_across_threads = false;
            if (ref_image && strstr(parts, "vae") && memcmp(ref_image, c.image, nv * sizeof *ref_image))
                same_across_threads = false;
        }
        printf("%7d | %10.1f | %5.3f (%5.3f-%5.3f) | %6.2f (%6.2f-%6.2f) %7.1f %5.1f%% | %6.2f (%6.2f-%6.2f) %7.1f %5.1f%%\n",
               r->threads, r->peak, r->text.median, r->text.min, r->text.max, r->unet.median,
               r->unet.min, r->unet.max, unet_f / r->unet.median * 1e-9,
               100.0 * unet_f / r->unet.median * 1e-9 / r->peak, r->vae.median, r->vae.min,
               r->vae.max, vae_f / r->vae.median * 1e-9,
               100.0 * vae_f / r->vae.median * 1e-9 / r->peak);
        fflush(stdout);
    }
    sysinfo_loadavg(load1);

    size_t bad_u, bad_v, arena_bytes, arena_grew;
    const double mu = mean_abs(c.unet_out, (size_t)2 * c.lh * c.lw * 4, &bad_u);
    const double mv = mean_abs(c.image, (size_t)img * img * 3, &bad_v);
    unet_scratch_stats(c.unet, &arena_bytes, &arena_grew);
    const sweep_row *m = &rows[main_row];
    printf("\noutputs: UNet mean |x| %.4g (%zu not finite), image mean |x| %.4g (%zu not finite)\n",
           mu, bad_u, mv, bad_v);
    printf("memory: peak RSS %.0f MB, UNet scratch %.0f MB (grew %zu times in the last call); "
           "allocations per call at %d threads: text %.0f, UNet %.0f, VAE %.0f\n",
           sysinfo_peak_rss_mb(), arena_bytes / 1048576.0, arena_grew, m->threads, m->text.allocs,
           m->unet.allocs, m->vae.allocs);
    if (n_counts > 1)
        printf("outputs bit-identical across thread counts: %s\n", same_across_threads ? "yes" : "NO");
    printf("load average at end: %.2f %.2f %.2f\n", load1[0], load1[1], load1[2]);
    printf("precision: %s%s\n", sweep_bf16 ? "bf16 (UNet and VAE; text encoder fp32)" : "fp32",
           phase_bf16 ? ", then bf16 at the main thread count" : "");
    const double peak_rss = sysinfo_peak_rss_mb(); /* the sweep's, before any bf16 reload */
    timing t_int8 = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    double int8_err = NAN;
    if (phase_int8 && strstr(parts, "unet")) {
        sd_set_threads(m->threads);
        if (run_int8_phase(&c, dir, runs, &t_int8, &int8_err) != SD_OK) {
            fprintf(stderr, "sd_bench: int8: %s\n", sd_last_error());
            free(ref_unet), free(ref_image);
            unload(&c);
            return 1;
        }
        printf("int8 (%s kernel) at %d threads: UNet step %.2f s (%.2f-%.2f), %.2fx fp32, output "
               "rel diff %.2g\n", kern_int8_kernel_name(), m->threads, t_int8.median, t_int8.min,
               t_int8.max, m->unet.median / t_int8.median, int8_err);
    }
    bf16_phase bp;
    memset(&bp, 0, sizeof bp);
    if (phase_bf16) {
        sd_set_threads(m->threads);
        if (run_bf16_phase(&c, dir, runs, parts, &bp) != SD_OK) {
            fprintf(stderr, "sd_bench: bf16: %s\n", sd_last_error());
            free(ref_unet), free(ref_image);
            unload(&c);
            return 1;
        }
        printf("bf16 at %d threads: UNet step %.2f s (%.2f-%.2f), %.2fx fp32, output rel diff %.2g; "
               "VAE decode %.2f s (%.2f-%.2f), %.2fx fp32, image rel diff %.2g\n", m->threads,
               bp.unet.median, bp.unet.min, bp.unet.max, m->unet.median / bp.unet.median,
               bp.unet_err, bp.vae.median, bp.vae.min, bp.vae.max, m->vae.median / bp.vae.median,
               bp.vae_err);
    }

    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "date", date);
    cJSON_AddStringToObject(j, "commit", commit);
    cJSON_AddBoolToObject(j, "dirty", dirty);
    cJSON_AddStringToObject(j, "cpu", cpu);
    cJSON_AddNumberToObject(j, "cores", cores);
    cJSON_AddStringToObject(j, "isa", kern_isa_name(isa));
    cJSON_AddStringToObject(j, "model", dir);
    cJSON_AddNumberToObject(j, "width", img);
    cJSON_AddNumberToObject(j, "height", img);
    cJSON_AddNumberToObject(j, "runs", runs);
    cJSON_AddNumberToObject(j, "threads", m->threads);
    cJSON_AddNumberToObject(j, "text_encode_s", round3(m->text.median));
    cJSON_AddNumberToObject(j, "unet_step_s", round3(m->unet.median));
    cJSON_AddNumberToObject(j, "unet_gflops", round3(unet_f / m->unet.median * 1e-9));
    cJSON_AddNumberToObject(j, "vae_decode_s", round3(m->vae.median));
    cJSON_AddNumberToObject(j, "vae_gflops", round3(vae_f / m->vae.median * 1e-9));
    cJSON_AddNumberToObject(j, "peak_gflops", round3(m->peak));
    cJSON_AddNumberToObject(j, "unet_peak_fraction", round3(unet_f / m->unet.median * 1e-9 / m->peak));
    cJSON_AddNumberToObject(j, "vae_peak_fraction", round3(vae_f / m->vae.median * 1e-9 / m->peak));
    cJSON_AddNumberToObject(j, "peak_rss_mb", round(peak_rss));
    cJSON_AddNumberToObject(j, "unet_tflop", round3(unet_f * 1e-12));
    cJSON_AddNumberToObject(j, "vae_tflop", round3(vae_f * 1e-12));
    cJSON_AddNumberToObject(j, "text_gflop", round3(text_f * 1e-9));
    cJSON_AddNumberToObject(j, "load_s", round3(load_s));
    cJSON_AddNumberToObject(j, "unet_scratch_mb", round(arena_bytes / 1048576.0));
    if (n_counts > 1) cJSON_AddBoolToObject(j, "same_across_threads", same_across_threads);
    cJSON_AddStringToObject(j, "precision", sweep_bf16 ? "bf16" : "fp32");
    if (phase_bf16) {
        cJSON_AddNumberToObject(j, "unet_step_bf16_s", round3(bp.unet.median));
        cJSON_AddNumberToObject(j, "vae_decode_bf16_s", round3(bp.vae.median));
        cJSON_AddNumberToObject(j, "unet_bf16_speedup", round3(m->unet.median / bp.unet.median));
        cJSON_AddNumberToObject(j, "vae_bf16_speedup", round3(m->vae.median / bp.vae.median));
        cJSON_AddNumberToObject(j, "unet_bf16_rel_diff", bp.unet_err);
        cJSON_AddNumberToObject(j, "vae_bf16_rel_diff", bp.vae_err);
        cJSON_AddItemToObject(j, "unet_bf16", timing_json(&bp.unet));
        cJSON_AddItemToObject(j, "vae_bf16", timing_json(&bp.vae));
    }
    if (phase_int8 && strstr(parts, "unet")) {
        cJSON_AddStringToObject(j, "int8_kernel", kern_int8_kernel_name());
        cJSON_AddNumberToObject(j, "unet_step_int8_s", round3(t_int8.median));
        cJSON_AddNumberToObject(j, "unet_int8_speedup", round3(m->unet.median / t_int8.median));
        cJSON_AddNumberToObject(j, "unet_int8_rel_diff", int8_err);
        cJSON_AddItemToObject(j, "unet_int8", timing_json(&t_int8));
    }
    cJSON_AddItemToObject(j, "loadavg_start", cJSON_CreateDoubleArray(load0, 3));
    cJSON_AddItemToObject(j, "loadavg_end", cJSON_CreateDoubleArray(load1, 3));
    cJSON *sw = cJSON_AddArrayToObject(j, "sweep");
    for (int i = 0; i < n_counts; i++) {
        const sweep_row *r = &rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "threads", r->threads);
        cJSON_AddNumberToObject(o, "peak_gflops", round3(r->peak));
        cJSON_AddItemToObject(o, "text", timing_json(&r->text));
        cJSON_AddItemToObject(o, "unet", timing_json(&r->unet));
        cJSON_AddItemToObject(o, "vae", timing_json(&r->vae));
        cJSON_AddItemToArray(sw, o);
    }
    char *line = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    int rc = line ? 0 : 1;
    if (line && strcmp(results, "-")) {
        FILE *fp = fopen(results, "a");
        if (fp) {
            fprintf(fp, "%s\n", line);
            fclose(fp);
            printf("appended to %s\n", results);
        } else {
            fprintf(stderr, "sd_bench: cannot append to %s\n", results);
            rc = 1;
        }
    }
    if (!same_across_threads) {
        fprintf(stderr, "sd_bench: outputs differ between thread counts\n");
        rc = 1;
    }
    if (bad_u || bad_v) {
        fprintf(stderr, "sd_bench: non-finite outputs: the timings are not trustworthy\n");
        rc = 1;
    }
    printf("BENCH %s\n", line ? line : "{}");
    free(line);
    free(ref_unet), free(ref_image);
    unload(&c);
    return rc;
}
