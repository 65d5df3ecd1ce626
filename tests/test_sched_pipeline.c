/* Schedulers inside recorded diffusers pipeline runs: for every text-to-image run of
 * tests/fixtures/{sd15-tiny,sd2v-tiny}/expected, build the run's scheduler class from the
 * pipeline's scheduler_config.json the way from_config does (checking the resolved config against
 * the recorded one), set the timesteps (exact) and sigmas, then replay the run: initial noise from
 * the seeded torch generator times init_noise_sigma, and for each model call k compare
 * scale_model_input with model_inputs[k], combine the recorded model_outputs[k] with
 * classifier-free guidance (and guidance_rescale), step, and compare latents_steps[k].
 * Image-to-image runs start at the later index diffusers starts at (the last int(steps *
 * strength) timesteps); their first latents come from the VAE, so the replay takes them from the
 * recorded first model input. Inpainting (which mixes in VAE latents after every step) is left to
 * the pipeline's tests.
 *
 * With arguments (`test_sched_pipeline ROOT MODEL...`) it replays the runs of other fixture
 * trees too (sdxl-tiny, sd3-tiny, flux-tiny: flow matching, packed Flux latents, dynamic shift). */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../schedulers/scheduler.h"
#include "test.h"

static void rng_noise(void *ctx, float *out, size_t n) {
    rng_randn(ctx, out, n);
}

typedef struct {
    char name[64];
    int runs;
    double worst_step, worst_input, worst_sigma;
} class_stats;

static class_stats stats[16];
static int n_stats;

static class_stats *stats_for(const char *name) {
    for (int i = 0; i < n_stats; i++)
        if (!strcmp(stats[i].name, name)) return &stats[i];
    class_stats *s = &stats[n_stats++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

/* Every recorded key must equal ours; _use_default_values compares as a set. */
static void check_config(const char *run, const cJSON *ours, const cJSON *recorded) {
    int bad = 0, checked = 0;
    for (const cJSON *e = recorded->child; e; e = e->next, checked++) {
        const cJSON *mine = cJSON_GetObjectItem(ours, e->string);
        bool ok;
        if (!strcmp(e->string, "_use_default_values")) {
            ok = cJSON_GetArraySize(e) == (mine ? cJSON_GetArraySize(mine) : 0);
            for (const cJSON *k = e->child; ok && k; k = k->next)
                ok = fixture_json_in_list(mine, k->valuestring);
        } else {
            ok = fixture_json_equal(mine, e);
        }
        if (!ok) {
            char *a = mine ? cJSON_PrintUnformatted(mine) : NULL, *b = cJSON_PrintUnformatted(e);
            printf("FAIL %s: config key %s is %s, recorded %s\n", run, e->string, a ? a : "absent",
                   b);
            free(a), free(b);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d of %d config keys differ from the recorded scheduler_config", run, bad,
          checked);
}

static double num_or(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* diffusers' rescale_noise_cfg for one image: std over all of its elements (unbiased). */
static void rescale_cfg(float *cfg, const float *text, size_t n, double rescale) {
    double mt = 0, mc = 0, vt = 0, vc = 0;
    for (size_t k = 0; k < n; k++) mt += text[k], mc += cfg[k];
    mt /= n, mc /= n;
    for (size_t k = 0; k < n; k++)
        vt += (text[k] - mt) * (text[k] - mt), vc += (cfg[k] - mc) * (cfg[k] - mc);
    float ratio = (float)sqrt(vt / (n - 1)) / (float)sqrt(vc / (n - 1));
    float a = (float)rescale, b = (float)(1 - rescale);
    for (size_t k = 0; k < n; k++) cfg[k] = a * (cfg[k] * ratio) + b * cfg[k];
}

typedef struct {
    st_file f;
    const st_tensor *inputs, *outputs, *steps, *timesteps, *sigmas, *model_t;
} run_tensors;

static float *read_all(const st_tensor *t) {
    float *out = malloc((size_t)st_numel(t) * sizeof *out);
    st_to_f32(t, out);
    return out;
}

static void replay(const char *root, const char *model, const char *run) {
    char path[1024], label[160];
    snprintf(label, sizeof label, "%s/%s", model, run);
    snprintf(path, sizeof path, "%s/%s/expected/%s.json", root, model, run);
    sd_cfg rj, pc;
    if (cfg_open(&rj, path) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return;
    }
    snprintf(path, sizeof path, "%s/%s/pipeline/scheduler/scheduler_config.json", root, model);
    if (cfg_open(&pc, path) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        cfg_close(&rj);
        return;
    }
    const cJSON *recorded = cJSON_GetObjectItem(rj.root, "scheduler_config");
    const char *cls = cJSON_GetObjectItem(rj.root, "scheduler_class")->valuestring;
    cJSON *ov = fixture_run_overrides(recorded, pc.root);
    sd_scheduler *s = NULL;
    sd_status st = sched_create(&s, cls, pc.root, ov);
    CHECK_OK(st);
    float *x = NULL, *e = NULL, *buf = NULL, *in = NULL, *out = NULL, *lat = NULL, *want_t = NULL;
    run_tensors rt = {0};
    if (st != SD_OK) goto done;
    check_config(label, sched_config(s), recorded);
    class_stats *cs = stats_for(cls);
    cs->runs++;

    snprintf(path, sizeof path, "%s/%s/expected/%s.safetensors", root, model, run);
    if (st_open(&rt.f, path) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        goto done;
    }
    rt.inputs = st_find(&rt.f, "model_inputs");
    rt.outputs = st_find(&rt.f, "model_outputs");
    rt.steps = st_find(&rt.f, "latents_steps");
    rt.timesteps = st_find(&rt.f, "timesteps");
    rt.sigmas = st_find(&rt.f, "sigmas");
    rt.model_t = st_find(&rt.f, "model_timesteps");
    CHECK(rt.inputs && rt.outputs && rt.steps && rt.timesteps, "%s: tensors missing", label);
    if (!rt.inputs || !rt.outputs || !rt.steps || !rt.timesteps) goto done;

    int steps = (int)num_or(rj.root, "num_inference_steps", 0);
    int batch = (int)num_or(rj.root, "num_images_per_prompt", 1);
    int H = (int)num_or(rj.root, "height", 0), W = (int)num_or(rj.root, "width", 0);
    const st_tensor *mo = rt.outputs;
    int calls = (int)mo->shape[0];
    bool cfg = mo->shape[1] == 2 * batch;
    size_t per_image = 1;
    for (int d = 2; d < mo->ndim; d++) per_image *= (size_t)mo->shape[d];
    size_t n = per_image * batch;
    bool packed = mo->ndim == 4; /* Flux: (calls, B, tokens, C * 4) */

    sched_timestep_opts opts = {0};
    const cJSON *sc = sched_config(s);
    double *custom = NULL;
    if (cJSON_IsTrue(cJSON_GetObjectItem(sc, "use_dynamic_shifting"))) {
        /* the Flux pipeline: sigmas linspace(1, 1/n, n) and mu from the packed sequence length */
        custom = malloc((size_t)steps * sizeof *custom);
        for (int i = 0; i < steps; i++)
            custom[i] = steps > 1 ? 1.0 + i * ((1.0 / steps - 1.0) / (steps - 1)) : 1.0;
        if (steps > 1) custom[steps - 1] = 1.0 / steps;
        opts.sigmas = custom, opts.n_sigmas = steps;
        opts.has_mu = true;
        opts.mu = sched_flux_mu((H / 16) * (W / 16), (int)num_or(sc, "base_image_seq_len", 256),
                                (int)num_or(sc, "max_image_seq_len", 4096),
                                num_or(sc, "base_shift", 0.5), num_or(sc, "max_shift", 1.15));
    }
    st = sched_set_timesteps(s, steps, &opts);
    free(custom);
    CHECK_OK(st);
    if (st != SD_OK) goto done;

    /* timesteps exact, sigmas close */
    want_t = read_all(rt.timesteps);
    int n_t = (int)st_numel(rt.timesteps), exact = 0;
    CHECK(n_t == sched_len(s), "%s: %d timesteps, recorded %d", label, sched_len(s), n_t);
    for (int i = 0; i < n_t && i < sched_len(s); i++)
        exact += (float)sched_timestep(s, i) == want_t[i];
    CHECK(exact == n_t, "%s: %d of %d timesteps exact", label, exact, n_t);
    double sig_err = 0;
    if (rt.sigmas) {
        float *ws = read_all(rt.sigmas), got[256];
        int ns = (int)st_numel(rt.sigmas);
        CHECK(ns == sched_num_sigmas(s) && ns <= 256, "%s: %d sigmas, recorded %d", label,
              sched_num_sigmas(s), ns);
        if (ns == sched_num_sigmas(s) && ns <= 256) {
            for (int i = 0; i < ns; i++) got[i] = (float)sched_sigma(s, i);
            sig_err = rel_l2(got, ws, (size_t)ns);
            CHECK(sig_err < 1e-6, "%s: sigmas rel err %.3g", label, sig_err);
        }
        free(ws);
        if (sig_err > cs->worst_sigma) cs->worst_sigma = sig_err;
    }
    /* img2img: diffusers' get_timesteps keeps the last int(steps * strength) of them */
    double strength = num_or(rj.root, "strength", -1);
    int start = 0;
    if (strength >= 0) {
        int init_steps = (int)(steps * strength) < steps ? (int)(steps * strength) : steps;
        start = (steps - init_steps > 0 ? steps - init_steps : 0) * sched_order(s);
    }
    CHECK(start + calls == sched_len(s),
          "%s: %d recorded model calls from index %d, scheduler "
          "has %d",
          label, calls, start, sched_len(s));
    if (start + calls != sched_len(s)) goto done;

    /* initial latents: randn (NCHW, packed 2x2 for Flux) times init_noise_sigma */
    sd_rng rng;
    rng_seed(&rng, (uint64_t)num_or(rj.root, "seed", 0));
    x = malloc(n * sizeof *x), e = malloc(n * sizeof *e), buf = malloc(n * sizeof *buf);
    rng_randn(&rng, buf, n);
    if (packed) {
        int C = (int)mo->shape[3] / 4, h = 2 * (H / 16), w = 2 * (W / 16);
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < C; c++)
                for (int yy = 0; yy < h; yy++)
                    for (int xx = 0; xx < w; xx++) {
                        size_t tok = (size_t)(yy / 2) * (w / 2) + xx / 2;
                        size_t ch = (size_t)c * 4 + (yy % 2) * 2 + xx % 2;
                        x[b * per_image + tok * (C * 4) + ch] =
                            buf[(((size_t)b * C + c) * h + yy) * w + xx];
                    }
    } else {
        memcpy(x, buf, n * sizeof *x);
    }
    float init = (float)sched_init_noise_sigma(s);
    for (size_t k = 0; k < n; k++) x[k] = x[k] * init;

    in = read_all(rt.inputs), out = read_all(rt.outputs), lat = read_all(rt.steps);
    if (start > 0) {
        /* the noised VAE latents, undoing scale_model_input of the first recorded input */
        float one = 1.0f, f;
        sched_scale_model_input(s, start, &one, &f, 1);
        for (size_t k = 0; k < n; k++) x[k] = in[k] / f;
    }
    float *mt = rt.model_t ? read_all(rt.model_t) : NULL;
    double g = num_or(rj.root, "guidance_scale", 1),
           rescale = num_or(rj.root, "guidance_rescale", 0);
    double worst_in = 0, worst_step = 0;
    size_t call_in = n * (cfg ? 2 : 1);
    for (int k = 0; k < calls && st == SD_OK; k++) {
        int i = start + k;
        double t = sched_timestep(s, i);
        if (mt)
            CHECK((float)t == mt[k] || (float)t / 1000.0f == mt[k],
                  "%s: call %d timestep %.9g, recorded %.9g", label, k, t, mt[k]);
        sched_scale_model_input(s, i, x, e, n);
        for (int half = 0; half < (cfg ? 2 : 1); half++) {
            double err = rel_l2(e, in + (size_t)k * call_in + half * n, n);
            if (!(err <= worst_in)) worst_in = err;
        }
        const float *o = out + (size_t)k * call_in;
        if (cfg) {
            float gs = (float)g;
            for (size_t j = 0; j < n; j++) e[j] = o[j] + gs * (o[n + j] - o[j]);
            if (rescale > 0)
                for (int b = 0; b < batch; b++)
                    rescale_cfg(e + b * per_image, o + n + b * per_image, per_image, rescale);
        } else {
            memcpy(e, o, n * sizeof *e);
        }
        st = sched_step(s, i, e, x, n, rng_noise, &rng);
        CHECK_OK(st);
        double err = rel_l2(x, lat + (size_t)k * n, n);
        if (!(err <= worst_step)) worst_step = err;
    }
    free(mt);
    CHECK(worst_in < 1e-5, "%s: model input rel err %.3g", label, worst_in);
    CHECK(worst_step < 1e-5, "%s: latents rel err %.3g", label, worst_step);
    if (!(worst_in <= cs->worst_input)) cs->worst_input = worst_in;
    if (!(worst_step <= cs->worst_step)) cs->worst_step = worst_step;
    printf("%s %-40s %-32s %2d calls: timesteps %d/%d exact, sigmas %.1e, inputs %.1e, "
           "worst step %.2e\n",
           worst_step < 1e-5 && worst_in < 1e-5 && exact == n_t ? "ok  " : "FAIL", label, cls,
           calls, exact, n_t, sig_err, worst_in, worst_step);
done:
    free(x), free(e), free(buf), free(in), free(out), free(lat), free(want_t);
    if (rt.f.map) st_close(&rt.f);
    sched_free(s);
    cJSON_Delete(ov);
    cfg_close(&pc);
    cfg_close(&rj);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every run of a model but inpainting (its steps mix in VAE latents). */
static int replay_model(const char *root, const char *model) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s/expected", root, model);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open %s", dir);
    if (!d) return 0;
    char *names[128];
    int count = 0;
    for (struct dirent *de; (de = readdir(d)) && count < 128;) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        if (!strncmp(de->d_name, "inpaint", 7)) continue;
        names[count] = strndup(de->d_name, len - 5);
        count++;
    }
    closedir(d);
    qsort(names, (size_t)count, sizeof *names, cmp_names);
    for (int i = 0; i < count; i++) {
        replay(root, model, names[i]);
        free(names[i]);
    }
    return count;
}

int main(int argc, char **argv) {
    int runs = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++) runs += replay_model(argv[1], argv[i]);
    } else {
        char root[1024];
        snprintf(root, sizeof root, "%s", fixture(""));
        root[strlen(root) - 1] = '\0'; /* drop the trailing slash */
        int a = replay_model(root, "sd15-tiny"), b = replay_model(root, "sd2v-tiny");
        CHECK(a == 12 && b == 5, "expected 12 sd15-tiny and 5 sd2v-tiny runs, found %d and %d", a,
              b);
        runs = a + b;
    }
    printf("\n%d runs; worst figures per class:\n", runs);
    for (int i = 0; i < n_stats; i++)
        printf("  %-32s %2d runs  sigmas %.2e  model inputs %.2e  latents per step %.2e\n",
               stats[i].name, stats[i].runs, stats[i].worst_sigma, stats[i].worst_input,
               stats[i].worst_step);
    return test_summary();
}
