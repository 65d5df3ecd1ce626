/* Schedulers against diffusers: every case of tests/fixtures/schedulers.json (21 configurations x
 * {1, 4, 10, 25} steps) under the synthetic model
 *     eps(x, t) = 0.5 * scale_model_input(x, t) * cos(t / 300) + 0.1 * sin(t / 100)
 * from x0 * init_noise_sigma, with stochastic steps drawing from one torch generator; timesteps
 * must be exact, sigmas within 1e-6 and every trajectory state within 1e-5 (relative L2). Then
 * the error cases (unknown class, bad option values, bad step counts) and from_config details.
 * The trajectory stays in NCHW here: every scheduler operation is element-wise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../schedulers/scheduler.h"
#include "test.h"

#define SCHED_FILE "schedulers.safetensors"

static void rng_noise(void *ctx, float *out, size_t n) {
    rng_randn(ctx, out, n);
}

/* Worst figures per class, for the summary. */
typedef struct {
    char name[64];
    int cases, ts_total, ts_exact;
    double traj_worst, sigma_worst, init_worst;
} class_stats;

static class_stats stats[32];
static int n_stats;

static class_stats *stats_for(const char *name) {
    for (int i = 0; i < n_stats; i++)
        if (!strcmp(stats[i].name, name)) return &stats[i];
    class_stats *s = &stats[n_stats++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static const float *tensor_or_null(const st_file *f, const char *name, int64_t *numel) {
    static float *buf[3];
    static int slot;
    const st_tensor *t = st_find(f, name);
    if (!t) return NULL;
    *numel = st_numel(t);
    slot = (slot + 1) % 3;
    free(buf[slot]);
    buf[slot] = malloc((size_t)*numel * sizeof(float));
    st_to_f32(t, buf[slot]);
    return buf[slot];
}

/* rel_l2, except that a NaN where diffusers has NaN counts as agreement: some option sets blow up
 * under the synthetic model (UniPC bh1 and noise prediction reach a zero final sigma and divide by
 * it) and the reference records the NaN; ours must be NaN in exactly the same places. */
static double rel_l2_nan(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i]) || isnan(got[i])) {
            if (isnan(want[i]) != isnan(got[i])) return INFINITY;
            continue;
        }
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double num_or(const cJSON *obj, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItem(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static void run_case(const st_file *f, const cJSON *c, uint64_t seed, const float *x0, size_t n) {
    const char *key = cJSON_GetObjectItem(c, "key")->valuestring;
    const char *cls = cJSON_GetObjectItem(c, "class")->valuestring;
    const cJSON *config = cJSON_GetObjectItem(c, "config");
    const cJSON *options = cJSON_GetObjectItem(c, "options");
    int steps = cJSON_GetObjectItem(c, "num_inference_steps")->valueint;
    class_stats *cs = stats_for(cls);
    cs->cases++;

    sd_scheduler *s = NULL;
    sd_status st = sched_create(&s, cls, config, NULL);
    const cJSON *refused = cJSON_GetObjectItem(c, "error");
    if (refused) { /* diffusers refused this combination: so must we, with a message */
        sched_timestep_opts none = {0};
        if (st == SD_OK) st = sched_set_timesteps(s, steps, &none);
        printf("%s %-8s %-32s steps %2d: diffusers refuses (%.60s); we say: %s\n",
               st != SD_OK ? "ok  " : "FAIL", key, cls, steps, refused->valuestring,
               st != SD_OK ? sd_last_error() : "(accepted)");
        CHECK(st != SD_OK, "%s: diffusers refuses %s, we accept it", key, refused->valuestring);
        sched_free(s);
        return;
    }
    CHECK_OK(st);
    if (st != SD_OK) return;
    if (cJSON_GetObjectItem(options, "eta")) sched_set_eta(s, num_or(options, "eta", 0));
    sched_timestep_opts opts = {0};
    if (cJSON_GetObjectItem(options, "mu")) {
        opts.has_mu = true;
        opts.mu = num_or(options, "mu", 0);
    } else if (cJSON_GetObjectItem(options, "mu_for_seq_len")) {
        opts.has_mu = true;
        opts.mu =
            sched_flux_mu((int)num_or(options, "mu_for_seq_len", 0),
                          (int)num_or(config, "base_image_seq_len", 256),
                          (int)num_or(config, "max_image_seq_len", 4096),
                          num_or(config, "base_shift", 0.5), num_or(config, "max_shift", 1.15));
    }
    st = sched_set_timesteps(s, steps, &opts);
    CHECK_OK(st);
    if (st != SD_OK) {
        sched_free(s);
        return;
    }
    CHECK(sched_order(s) == cJSON_GetObjectItem(c, "order")->valueint, "%s: order %d", key,
          sched_order(s));
    double want_init = num_or(c, "init_noise_sigma", NAN);
    double init_err = fabs(sched_init_noise_sigma(s) - want_init) / want_init;
    if (init_err > cs->init_worst) cs->init_worst = init_err;
    CHECK(init_err < 1e-7, "%s: init_noise_sigma %.9g, want %.9g", key, sched_init_noise_sigma(s),
          want_init);

    char name[96];
    int64_t len = 0;
    snprintf(name, sizeof name, "%s_timesteps", key);
    const float *want_ts = tensor_or_null(f, name, &len);
    CHECK(want_ts && len == sched_len(s), "%s: %d timesteps, want %lld", key, sched_len(s),
          (long long)len);
    if (!want_ts || len != sched_len(s)) {
        sched_free(s);
        return;
    }
    int exact = 0;
    for (int i = 0; i < len; i++) exact += (float)sched_timestep(s, i) == want_ts[i];
    cs->ts_total += (int)len, cs->ts_exact += exact;
    CHECK(exact == len, "%s: %d of %lld timesteps exact (first: %.9g vs %.9g)", key, exact,
          (long long)len, sched_timestep(s, 0), want_ts[0]);

    snprintf(name, sizeof name, "%s_sigmas", key);
    int64_t n_sig = 0;
    const float *want_sig = tensor_or_null(f, name, &n_sig);
    if (want_sig) {
        CHECK(n_sig == sched_num_sigmas(s), "%s: %d sigmas, want %lld", key, sched_num_sigmas(s),
              (long long)n_sig);
        if (n_sig == sched_num_sigmas(s)) {
            float got[64];
            for (int i = 0; i < n_sig; i++) got[i] = (float)sched_sigma(s, i);
            double err = rel_l2(got, want_sig, (size_t)n_sig);
            if (err > cs->sigma_worst) cs->sigma_worst = err;
            CHECK(err < 1e-6, "%s: sigmas rel err %.3g", key, err);
        }
    }

    snprintf(name, sizeof name, "%s_trajectory", key);
    int64_t n_traj = 0;
    const float *traj = tensor_or_null(f, name, &n_traj);
    CHECK(traj && n_traj == (len + 1) * (int64_t)n, "%s: trajectory of %lld values", key,
          (long long)n_traj);
    if (traj && n_traj == (len + 1) * (int64_t)n) {
        float *x = malloc(n * sizeof *x), *e = malloc(n * sizeof *e);
        float init = (float)sched_init_noise_sigma(s);
        for (size_t k = 0; k < n; k++) x[k] = x0[k] * init;
        double worst = rel_l2(x, traj, n);
        sd_rng rng;
        rng_seed(&rng, seed);
        for (int i = 0; i < len && st == SD_OK; i++) {
            double t = sched_timestep(s, i);
            sched_scale_model_input(s, i, x, e, n);
            float c1 = (float)cos(t / 300), c2 = (float)(0.1 * sin(t / 100));
            for (size_t k = 0; k < n; k++) e[k] = 0.5f * e[k] * c1 + c2;
            st = sched_step(s, i, e, x, n, rng_noise, &rng);
            CHECK_OK(st);
            double err = rel_l2_nan(x, traj + (size_t)(i + 1) * n, n);
            if (!(err <= worst)) worst = err;
        }
        if (worst > cs->traj_worst || isnan(worst)) cs->traj_worst = worst;
        CHECK(worst < 1e-5, "%s: trajectory rel err %.3g", key, worst);
        printf("%s %-8s %-32s steps %2d: timesteps %d/%lld exact, worst state rel err %.2e\n",
               worst < 1e-5 && exact == len ? "ok  " : "FAIL", key, cls, steps, exact,
               (long long)len, worst);
        free(x);
        free(e);
    }
    sched_free(s);
}

/* Runs every case of a scheduler reference file. The shared schedulers.json holds 84; the extra
 * file (tools/reference/extra_refs.py, recorded by diffusers the same way, from the same x0 and
 * generator seed 42) covers options the shared one does not. */
static void case_file(const char *json, const char *tensors, int expect_cases, const float *x0,
                      size_t n_x0) {
    sd_cfg cfg;
    CHECK_OK(cfg_open(&cfg, fixture(json)));
    if (!cfg.root) return;
    st_file f;
    sd_status st = st_open(&f, fixture(tensors));
    CHECK_OK(st);
    if (st == SD_OK) {
        uint64_t seed = (uint64_t)num_or(cfg.root, "generator_seed", 42);
        int n_cases = 0;
        const cJSON *cases = cJSON_GetObjectItem(cfg.root, "cases");
        for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, n_cases++)
            run_case(&f, c, seed, x0, n_x0);
        CHECK(n_cases == expect_cases, "%s has %d cases", json, n_cases);
        st_close(&f);
    }
    cfg_close(&cfg);
}

static void fixture_cases(void) {
    st_file f;
    if (st_open(&f, fixture(SCHED_FILE)) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return;
    }
    int64_t n_x0 = 0;
    const float *x0_view = tensor_or_null(&f, "x0", &n_x0);
    float *x0 = malloc((size_t)n_x0 * sizeof *x0);
    memcpy(x0, x0_view, (size_t)n_x0 * sizeof *x0);
    st_close(&f);
    case_file("schedulers.json", SCHED_FILE, 84, x0, (size_t)n_x0);
    case_file("extra/schedulers_extra.json", "extra/schedulers_extra.safetensors", 120, x0, (size_t)n_x0);
    free(x0);
    printf("\nworst figures per class (fixture cases):\n");
    for (int i = 0; i < n_stats; i++)
        printf("  %-32s %2d cases  timesteps %3d/%3d exact  sigmas %.2e  trajectory %.2e  "
               "init_noise_sigma %.1e\n",
               stats[i].name, stats[i].cases, stats[i].ts_exact, stats[i].ts_total,
               stats[i].sigma_worst, stats[i].traj_worst, stats[i].init_worst);
}

/* ---- error cases and from_config details ----------------------------------------------------- */

static void expect_error(const char *what, sd_status got, sd_status want, const char *needle) {
    const char *msg = sd_last_error();
    CHECK(got == want, "%s: status %s, want %s (%s)", what, sd_status_name(got),
          sd_status_name(want), msg);
    CHECK(!needle || strstr(msg, needle), "%s: message '%s' does not name '%s'", what, msg, needle);
    printf("%s %s -> %s: %s\n", got == want ? "ok  " : "FAIL", what, sd_status_name(got), msg);
}

static sd_status create_with(const char *cls, const cJSON *config, const char *override_json,
                             sd_scheduler **out) {
    cJSON *ov = override_json ? cJSON_Parse(override_json) : NULL;
    sd_status st = sched_create(out, cls, config, ov);
    cJSON_Delete(ov);
    return st;
}

static void error_cases(void) {
    sd_cfg tmp;
    CHECK_OK(cfg_open(&tmp, fixture("sd15-tiny/pipeline/scheduler/scheduler_config.json")));
    cJSON *config = tmp.root;
    if (!config) return;
    sd_scheduler *s = NULL;

    expect_error("unknown class", create_with("NoSuchScheduler", config, NULL, &s), SD_ERR_ARG,
                 "NoSuchScheduler");
    expect_error("bad spacing option",
                 create_with("ddim", config, "{\"timestep_spacing\": \"sideways\"}", &s),
                 SD_ERR_ARG, "sideways");
    expect_error("unknown option",
                 create_with("euler_a", config, "{\"use_karras_sigmas\": true}", &s), SD_ERR_ARG,
                 "use_karras_sigmas");
    expect_error("option of the wrong type",
                 create_with("euler", config, "{\"steps_offset\": \"one\"}", &s), SD_ERR_ARG,
                 "steps_offset");
    expect_error("solver_order 5", create_with("dpm++2m", config, "{\"solver_order\": 5}", &s),
                 SD_ERR_CONFIG, "solver_order");
    expect_error("thresholding",
                 create_with("DDIMScheduler", config, "{\"thresholding\": true}", &s),
                 SD_ERR_UNSUPPORTED, "thresholding");

    cJSON *bad = cJSON_Duplicate(config, 1);
    cJSON_ReplaceItemInObject(bad, "beta_schedule", cJSON_CreateString("cubic"));
    expect_error("unknown beta_schedule", sched_create(&s, "PNDMScheduler", bad, NULL),
                 SD_ERR_CONFIG, "cubic");
    cJSON_ReplaceItemInObject(bad, "beta_schedule", cJSON_CreateString("scaled_linear"));
    cJSON_ReplaceItemInObject(bad, "num_train_timesteps", cJSON_CreateString("many"));
    expect_error("num_train_timesteps of the wrong type", sched_create(&s, NULL, bad, NULL),
                 SD_ERR_CONFIG, "num_train_timesteps");
    cJSON_Delete(bad);
    expect_error("no class name", sched_create(&s, NULL, NULL, NULL), SD_ERR_CONFIG, "_class_name");

    CHECK_OK(sched_create(&s, "euler", config, NULL));
    if (s) {
        expect_error("steps 0", sched_set_timesteps(s, 0, NULL), SD_ERR_ARG, "num_inference_steps");
        expect_error("steps -3", sched_set_timesteps(s, -3, NULL), SD_ERR_ARG,
                     "num_inference_steps");
        expect_error("steps 1001", sched_set_timesteps(s, 1001, NULL), SD_ERR_ARG, "1001");
        float x[4] = {0}, e[4] = {0};
        expect_error("step before set_timesteps", sched_step(s, 0, e, x, 4, NULL, NULL), SD_ERR_ARG,
                     "set_timesteps");
        CHECK_OK(sched_set_timesteps(s, 4, NULL));
        expect_error("step index out of range", sched_step(s, 7, e, x, 4, NULL, NULL), SD_ERR_ARG,
                     "step 7");
        sched_free(s);
    }
    CHECK_OK(sched_create(&s, "ddpm", config, NULL)); /* steps_offset 1 in this config */
    if (s) {
        expect_error("DDPM leading timesteps past the end", sched_set_timesteps(s, 1000, NULL),
                     SD_ERR_CONFIG, "steps_offset");
        sched_free(s);
    }
    CHECK_OK(sched_create(&s, "lcm", config, NULL));
    if (s) {
        expect_error("LCM steps > original_inference_steps", sched_set_timesteps(s, 60, NULL),
                     SD_ERR_ARG, "original_inference_steps");
        /* img2img strength 0.5 keeps 25 of the 50 original steps (k = 20): diffusers picks
         * indices floor(linspace(0, 25, 4, endpoint=False)) = 0, 6, 12, 18 of 499, 479, ..., 19 */
        sched_timestep_opts o = {.strength = 0.5};
        CHECK_OK(sched_set_timesteps(s, 4, &o));
        const double want[4] = {499, 379, 259, 139};
        for (int i = 0; i < 4; i++)
            CHECK(sched_timestep(s, i) == want[i], "LCM strength 0.5: timestep %d is %g, want %g",
                  i, sched_timestep(s, i), want[i]);
        sched_free(s);
    }
    CHECK_OK(create_with("flow_euler", NULL, "{\"use_dynamic_shifting\": true}", &s));
    if (s) {
        expect_error("dynamic shifting without mu", sched_set_timesteps(s, 4, NULL), SD_ERR_ARG,
                     "mu");
        sched_free(s);
    }

    /* from_config: DDIM built from the PNDM config takes DDIM's default clip_sample = true and
     * keeps PNDM's skip_prk_steps as a hidden key; an alias applies its options. */
    CHECK_OK(sched_create(&s, "ddim", config, NULL));
    if (s) {
        const cJSON *cfg = sched_config(s);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "clip_sample")), "DDIM clip_sample default");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "skip_prk_steps")), "hidden skip_prk_steps");
        CHECK(!strcmp(cJSON_GetObjectItem(cfg, "_class_name")->valuestring, "DDIMScheduler"),
              "_class_name");
        CHECK(!strcmp(sched_class_name(s), "DDIMScheduler"), "class name");
        sched_free(s);
    }
    CHECK_OK(sched_create(&s, "dpm++2m_sde_karras", config, NULL));
    if (s) {
        const cJSON *cfg = sched_config(s);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "use_karras_sigmas")), "alias karras");
        CHECK(!strcmp(cJSON_GetObjectItem(cfg, "algorithm_type")->valuestring, "sde-dpmsolver++"),
              "alias algorithm_type");
        sched_free(s);
    }
    /* every listed class and alias can be built and run for a few steps */
    const sched_info *info;
    int n = sched_list(&info);
    CHECK(n == 11, "sched_list gives %d classes", n);
    for (int i = 0; i < n; i++) {
        char aliases[256];
        snprintf(aliases, sizeof aliases, "%s, %s", info[i].class_name, info[i].aliases);
        for (char *tok = strtok(aliases, ", "); tok; tok = strtok(NULL, ", ")) {
            sd_status st = sched_create(&s, tok, config, NULL);
            CHECK(st == SD_OK, "create '%s': %s", tok, sd_last_error());
            if (st != SD_OK) continue;
            CHECK(!strcmp(sched_class_name(s), info[i].class_name), "'%s' builds %s", tok,
                  sched_class_name(s));
            sd_rng rng;
            rng_seed(&rng, 1);
            float x[40], e[40];
            for (int k = 0; k < 40; k++) x[k] = (float)(k % 7) - 3.0f;
            st = sched_set_timesteps(s, 5, NULL);
            for (int k = 0; st == SD_OK && k < sched_len(s); k++) {
                sched_scale_model_input(s, k, x, e, 40);
                st = sched_step(s, k, e, x, 40, rng_noise, &rng);
            }
            bool finite = true;
            for (int k = 0; k < 40; k++) finite &= isfinite(x[k]);
            CHECK(st == SD_OK && finite, "'%s': 5-step run %s, finite %d", tok, sd_status_name(st),
                  finite);
            sched_free(s);
        }
    }
    cfg_close(&tmp);
}

/* Option combinations that no fixture records: each must build, run 4, 10 and 25 steps without
 * error and stay finite (the numbers themselves are checked only where fixtures exist). Noise
 * prediction in UniPC needs a non-zero final sigma: with sigma 0 diffusers itself yields NaN. */
static void option_matrix(void) {
    static const char *const combos[][2] = {
        {"PNDMScheduler", "{\"skip_prk_steps\": false}"},
        {"PNDMScheduler",
         "{\"prediction_type\": \"v_prediction\", \"timestep_spacing\": \"trailing\"}"},
        {"DDIMScheduler", "{\"timestep_spacing\": \"linspace\", \"prediction_type\": \"sample\"}"},
        {"EulerDiscreteScheduler", "{\"interpolation_type\": \"log_linear\"}"},
        {"EulerDiscreteScheduler", "{\"use_exponential_sigmas\": true}"},
        {"EulerDiscreteScheduler", "{\"use_karras_sigmas\": true, \"sigma_min\": 0.05, "
                                   "\"sigma_max\": 10, \"final_sigmas_type\": \"sigma_min\"}"},
        {"EulerDiscreteScheduler", "{\"prediction_type\": \"v_prediction\", \"timestep_type\": "
                                   "\"continuous\"}"},
        {"DPMSolverMultistepScheduler", "{\"solver_order\": 3}"},
        {"DPMSolverMultistepScheduler", "{\"solver_order\": 3, \"algorithm_type\": "
                                        "\"sde-dpmsolver++\", \"use_karras_sigmas\": true}"},
        {"DPMSolverMultistepScheduler", "{\"solver_type\": \"heun\"}"},
        {"DPMSolverMultistepScheduler",
         "{\"algorithm_type\": \"dpmsolver\", \"final_sigmas_type\": "
         "\"sigma_min\", \"solver_order\": 3}"},
        {"DPMSolverMultistepScheduler",
         "{\"algorithm_type\": \"sde-dpmsolver\", "
         "\"final_sigmas_type\": \"sigma_min\", \"solver_type\": \"heun\"}"},
        {"DPMSolverMultistepScheduler", "{\"use_lu_lambdas\": true}"},
        {"DPMSolverMultistepScheduler",
         "{\"use_exponential_sigmas\": true, \"euler_at_final\": true}"},
        {"DPMSolverMultistepScheduler", "{\"lower_order_final\": false, \"final_sigmas_type\": "
                                        "\"sigma_min\", \"lambda_min_clipped\": -5.1}"},
        {"DPMSolverMultistepScheduler", "{\"algorithm_type\": \"deis\", \"solver_type\": \"bh2\"}"},
        {"LCMScheduler",
         "{\"original_inference_steps\": 100, \"prediction_type\": \"v_prediction\"}"},
        {"HeunDiscreteScheduler",
         "{\"use_karras_sigmas\": true, \"prediction_type\": \"v_prediction\"}"},
        {"HeunDiscreteScheduler", "{\"beta_schedule\": \"exp\", \"clip_sample\": true}"},
        {"LMSDiscreteScheduler", "{\"use_karras_sigmas\": true}"},
        {"LMSDiscreteScheduler",
         "{\"use_exponential_sigmas\": true, \"prediction_type\": \"sample\"}"},
        /* bh1 ends in NaN with a zero final sigma, as in diffusers (schedulers_extra e9) */
        {"UniPCMultistepScheduler", "{\"solver_type\": \"bh1\", \"solver_order\": 3, "
                                    "\"final_sigmas_type\": \"sigma_min\"}"},
        {"UniPCMultistepScheduler",
         "{\"predict_x0\": false, \"solver_order\": 3, \"use_karras_sigmas\": true, "
         "\"final_sigmas_type\": \"sigma_min\"}"},
        {"UniPCMultistepScheduler", "{\"lower_order_final\": false, \"final_sigmas_type\": "
                                    "\"sigma_min\", \"disable_corrector\": [0, 2]}"},
        {"DDPMScheduler", "{\"variance_type\": \"fixed_small_log\"}"},
        {"DDPMScheduler", "{\"variance_type\": \"fixed_large\", \"beta_schedule\": \"sigmoid\"}"},
        {"DDPMScheduler", "{\"beta_schedule\": \"laplace\", \"timestep_spacing\": \"trailing\"}"},
        {"FlowMatchEulerDiscreteScheduler", "{\"invert_sigmas\": true}"},
        {"FlowMatchEulerDiscreteScheduler", "{\"shift\": 3, \"shift_terminal\": 0.1}"},
        {"FlowMatchEulerDiscreteScheduler",
         "{\"use_karras_sigmas\": true, \"stochastic_sampling\": true}"},
    };
    sd_cfg tmp;
    CHECK_OK(cfg_open(&tmp, fixture("sd15-tiny/pipeline/scheduler/scheduler_config.json")));
    if (!tmp.root) return;
    int ok = 0, total = 0;
    for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++) {
        bool flow = strstr(combos[c][0], "FlowMatch") != NULL;
        for (int steps = 4; steps <= 25; steps = steps == 4 ? 10 : steps == 10 ? 25 : 99) {
            sd_scheduler *s = NULL;
            sd_status st = create_with(combos[c][0], flow ? NULL : tmp.root, combos[c][1], &s);
            if (st == SD_OK) st = sched_set_timesteps(s, steps, NULL);
            float x[120], e[120];
            for (int k = 0; k < 120; k++) x[k] = (float)((k * 37) % 23) / 11.0f - 1.0f;
            sd_rng rng;
            rng_seed(&rng, 7);
            for (int i = 0; st == SD_OK && i < sched_len(s); i++) {
                double t = sched_timestep(s, i);
                sched_scale_model_input(s, i, x, e, 120);
                for (int k = 0; k < 120; k++) e[k] = 0.5f * e[k] * (float)cos(t / 300) + 0.1f;
                st = sched_step(s, i, e, x, 120, rng_noise, &rng);
            }
            bool finite = true;
            for (int k = 0; k < 120; k++) finite &= isfinite(x[k]) != 0;
            total++;
            ok += st == SD_OK && finite;
            CHECK(st == SD_OK && finite, "%s %s, %d steps: %s, finite %d (%s)", combos[c][0],
                  combos[c][1], steps, sd_status_name(st), finite, sd_last_error());
            sched_free(s);
        }
    }
    printf("%s option matrix: %d of %d runs complete and finite\n", ok == total ? "ok  " : "FAIL",
           ok, total);
    cfg_close(&tmp);
}

int main(void) {
    fixture_cases();
    error_cases();
    option_matrix();
    return test_summary();
}
