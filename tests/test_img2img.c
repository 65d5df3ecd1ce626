/* Image-to-image and inpainting against diffusers' StableDiffusionImg2ImgPipeline and
 * StableDiffusionInpaintPipeline: the sd15-tiny runs img2img (DDIM, strength 0.6),
 * img2img_euler_nonsquare (Euler, 192x128, strength 0.85) and inpaint (DDIM, 4-channel UNet), with
 * every denoiser input and output and the latents after every step compared as they are produced
 * (relative L2 < 1e-4, the trajectory tolerance, or 4x the run's own measured sensitivity for a
 * chaotic run, as test_pipeline.c explains), the final pixels (within one level on >= 99.9% of
 * values, never more than two apart), and for inpainting the kept region of the final latents,
 * which is not chaotic (< 1e-5). Inpainting's pixels are checked per region: where the mask keeps
 * the init image, to the fixture tolerance; where it repaints, to a tolerance measured on the run
 * itself (check_image). Then the same runs through bin/gen (pixels of the PNG, and its parameters
 * text). test_img2img_cases.c and test_inpaint9.c test what the fixtures do not hold. */
#include "../core/safetensors.h"
#include "img2img_util.h"

typedef struct {
    float *model_inputs, *model_outputs, *latents_steps;
    int n_calls, n_steps;
    size_t per_step; /* one step's latents */
    double worst_in, worst_out, worst_lat;
    int calls_seen, first_call;
    float *own_steps; /* our latents after each recorded step, NCHW */
} run_check;

/* The fixture records only the calls that ran: call index i of the full schedule is record
 * i - (total - recorded). */
static int on_event(void *user, const sd_event *ev) {
    run_check *rc = user;
    if (ev->kind != SD_EVENT_MODEL_INPUT && ev->kind != SD_EVENT_MODEL_OUTPUT &&
        ev->kind != SD_EVENT_STEP)
        return 0;
    int k = ev->index - (ev->total - rc->n_calls);
    if (k < 0 || k >= rc->n_calls) {
        rc->worst_in = INFINITY; /* a call the reference did not make */
        return 0;
    }
    if (ev->kind == SD_EVENT_MODEL_INPUT) {
        if (rc->calls_seen++ == 0) rc->first_call = ev->index;
        if (!rc->model_inputs) return 0;
        double e = fixture_compare_slice(&ev->tensor, rc->model_inputs, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d t=%g input err %.3g\n", ev->index, ev->timestep, e);
        if (e > rc->worst_in) rc->worst_in = e;
    } else if (ev->kind == SD_EVENT_MODEL_OUTPUT) {
        if (!rc->model_outputs) return 0;
        double e = fixture_compare_slice(&ev->tensor, rc->model_outputs, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   call %d output err %.3g\n", ev->index, e);
        if (e > rc->worst_out) rc->worst_out = e;
    } else {
        nhwc_to_nchw(ev->tensor.data, rc->own_steps + (size_t)k * rc->per_step, ev->tensor.batch,
                     ev->tensor.h, ev->tensor.w, ev->tensor.c);
        if (!rc->latents_steps) return 0;
        double e = fixture_compare_slice(&ev->tensor, rc->latents_steps, k);
        if (getenv("SD_TEST_VERBOSE")) printf("   step %d latents err %.3g\n", ev->index, e);
        if (e > rc->worst_lat) rc->worst_lat = e;
    }
    return 0;
}

/* Differences of 8-bit values over a set of pixels. */
typedef struct {
    size_t n;
    long differ, beyond_one;
    int maxd;
} px_stats;

/* `got` against `want` (npx RGB pixels each) over the pixels where sel[i] == which (sel NULL:
 * all of them). */
static px_stats compare_pixels(const uint8_t *got, const uint8_t *want, size_t npx,
                               const uint8_t *sel, int which) {
    px_stats s = {0};
    for (size_t i = 0; i < npx * 3; i++) {
        if (sel && sel[i / 3] != which) continue;
        const int d = abs((int)got[i] - (int)want[i]);
        if (d > s.maxd) s.maxd = d;
        s.n++;
        s.differ += d > 0;
        s.beyond_one += d > 1;
    }
    return s;
}

/* The fixture tolerance: within one level on >= 99.9% of values, never more than two apart. */
static void check_pixels(const char *name, const px_stats *s) {
    printf("     %s pixels: %ld of %zu values differ (%ld by more than one level), max diff %d\n",
           name, s->differ, s->n, s->beyond_one, s->maxd);
    CHECK(s->n > 0 && s->maxd <= 2 && (size_t)s->beyond_one * 1000 <= s->n,
          "%s: %ld/%zu pixel values more than one level apart (max %d)", name, s->beyond_one, s->n,
          s->maxd);
}

/* Inpainting's pixels come in two kinds. Where the mask keeps the init image, the final latents
 * are the init image's (known_region holds them to 1e-5) and the pixels decoded from them must
 * match diffusers' as any VAE decode does: the fixture tolerance. Where the mask repaints, the
 * latents are the end of a trajectory as chaotic as the run (held to 4x the run's own divergence
 * from 1e-7-perturbed noise), and their pixels are held to a tolerance measured the same way:
 * REPAINT_FACTOR times the largest difference the perturbed run's image shows there against the
 * unperturbed one (the factor the trajectory is allowed), at least the fixture's two levels and
 * at most REPAINT_MAX: a run that diverged further from itself could not tell a defect from
 * rounding, and fails.
 *
 * A pixel is repainted where the mask is white at pixel resolution or where its latent pixel was
 * repainted (the latent grid follows the mask's edge only to 8 pixels). The kept region leaves
 * out a band of KEPT_BAND pixels (one latent pixel) around every repainted pixel: the decoder's
 * 3x3 convolutions at latent resolution mix each latent with its neighbours; farther away the
 * repainted latents reach a kept pixel only through group-norm statistics and the mid-block
 * attention (measured: one level at most). The band counts with the repainted region. */
enum { KEPT_BAND = 8, REPAINT_FACTOR = 4, REPAINT_MAX = 16 };

/* Per pixel: 1 where held to the fixture tolerance (kept), 0 in the repainted region and band. */
static uint8_t *kept_pixels(const sd_image *mask) {
    const int w = mask->width, h = mask->height;
    uint8_t *repaint = malloc((size_t)w * h), *kept = malloc((size_t)w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            repaint[(size_t)y * w + x] = mask->rgb[((size_t)y * w + x) * 3] / 255.0f >= 0.5f ||
                                         !latent_kept(mask, y / 8, x / 8);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            bool near = false;
            for (int yy = y - KEPT_BAND; yy <= y + KEPT_BAND && !near; yy++)
                for (int xx = x - KEPT_BAND; xx <= x + KEPT_BAND && !near; xx++)
                    near = yy >= 0 && yy < h && xx >= 0 && xx < w && repaint[(size_t)yy * w + xx];
            kept[(size_t)y * w + x] = !near;
        }
    free(repaint);
    return kept;
}

/* The pixel tolerance of an inpainting run's repainted region, from its own divergence: `pert`
 * is the image of the run from perturbed noise (run_sensitivity), `got` the run's. */
static int repaint_tolerance(const char *run, const sd_image *got, const sd_image *pert,
                             const sd_image *mask) {
    uint8_t *kept = kept_pixels(mask);
    const px_stats s =
        compare_pixels(pert->rgb, got->rgb, (size_t)got->width * got->height, kept, 0);
    free(kept);
    int tol = REPAINT_FACTOR * s.maxd;
    tol = tol < 2 ? 2 : tol > REPAINT_MAX ? REPAINT_MAX : tol;
    printf("     %s: the run from 1e-7-perturbed noise differs from itself by up to %d levels in "
           "the repainted region (%ld of %zu values): pixel tolerance there %d\n",
           run, s.maxd, s.differ, s.n, tol);
    return tol;
}

/* A run's image against the reference: whole (image-to-image), or per region (inpainting: the
 * repainted region within repaint_tol levels). */
static void check_image(const char *name, const sd_image *got, const uint8_t *want,
                        const sd_image *mask, int repaint_tol) {
    const size_t npx = (size_t)got->width * got->height;
    if (!mask) {
        const px_stats s = compare_pixels(got->rgb, want, npx, NULL, 0);
        check_pixels(name, &s);
        return;
    }
    uint8_t *kept = kept_pixels(mask);
    const px_stats k = compare_pixels(got->rgb, want, npx, kept, 1);
    const px_stats r = compare_pixels(got->rgb, want, npx, kept, 0);
    free(kept);
    char what[160];
    snprintf(what, sizeof what, "%s kept region", name);
    check_pixels(what, &k);
    printf("     %s repainted region (with the %d-pixel band) pixels: %ld of %zu values differ "
           "(%ld by more than one level), max diff %d (tolerance %d)\n",
           name, KEPT_BAND, r.differ, r.n, r.beyond_one, r.maxd, repaint_tol);
    CHECK(r.n > 0 && r.maxd <= repaint_tol,
          "%s: repainted pixels up to %d levels apart (tolerance %d, from its own divergence)",
          name, r.maxd, repaint_tol);
}

/* The run again from its start noise perturbed by 1e-7 relative (the noise the generator would
 * draw after the image's posterior sample, passed as latents): how far it drifts from itself.
 * With `image`, also hands back that run's image. */
static double run_sensitivity(sd_pipeline *p, const sd_gen_params *base, const run_check *ref,
                              int c, int h, int w, sd_image *image) {
    sd_gen_params g = *base;
    const size_t n = (size_t)g.batch * c * h * w, n1 = (size_t)c * h * w;
    float *noise = malloc(n * sizeof *noise);
    sd_rng rng;
    rng_seed(&rng, g.seed);
    rng_randn(&rng, noise, n1); /* the posterior sample comes first */
    rng_randn(&rng, noise, n);
    for (size_t i = 0; i < n; i++) noise[i] *= 1.0f + 1e-7f * (float)((long)(i * 7919 % 101) - 50) / 50.0f;
    run_check rc = *ref;
    rc.model_inputs = rc.model_outputs = rc.latents_steps = NULL;
    rc.own_steps = calloc((size_t)rc.n_steps * rc.per_step, sizeof(float));
    g.latents = noise;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    double worst = INFINITY;
    if (sd_generate(p, &g, &r) == SD_OK) {
        worst = 0;
        for (int k = 0; k < rc.n_steps; k++) {
            double e = rel_l2(rc.own_steps + k * rc.per_step, ref->own_steps + k * ref->per_step, rc.per_step);
            if (e > worst) worst = e;
        }
        if (image && r.n_images == 1) { /* handed over: the caller frees it */
            *image = r.images[0];
            r.images[0] = (sd_image){0};
        }
        sd_result_free(&r);
    }
    free(rc.own_steps);
    free(noise);
    return worst;
}

/* 4-channel inpainting ends with the unmasked region holding the init image's latents, which are
 * not chaotic: there the final latents must match diffusers' to the single-call tolerance,
 * whatever the denoised region does. */
static void known_region(const char *run, const sd_image *mask, const run_check *rc, int h, int w) {
    const int c = (int)(rc->per_step / ((size_t)h * w)), last = rc->n_steps - 1;
    const float *got = rc->own_steps + (size_t)last * rc->per_step;
    const float *want = rc->latents_steps + (size_t)last * rc->per_step;
    float *a = malloc(rc->per_step * sizeof *a), *b = malloc(rc->per_step * sizeof *b);
    size_t n = 0;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (latent_kept(mask, y, x)) {
                    a[n] = got[((size_t)ch * h + y) * w + x];
                    b[n++] = want[((size_t)ch * h + y) * w + x];
                }
    char what[160];
    snprintf(what, sizeof what, "%s: final latents in the kept region (%zu values)", run, n);
    CHECK(n > 0 && n < rc->per_step, "%s: the mask keeps %zu of %zu latents", run, n, rc->per_step);
    check_rel(what, a, b, n, 1e-5);
    free(a), free(b);
}

/* Returns the pixel tolerance of an inpainting run's repainted region (2 when not measured), for
 * cli_run. */
static int library_run(sd_pipeline *p, const char *run) {
    int repaint_tol = 2;
    img_run ir;
    if (!img_run_load(&ir, run)) {
        img_run_free(&ir);
        return repaint_tol;
    }
    run_check rc = {0};
    int64_t in_shape[8], lat_shape[8], img_shape[8];
    rc.model_inputs = fixture_tensor(ir.st_path, "model_inputs", in_shape, NULL);
    rc.model_outputs = fixture_tensor(ir.st_path, "model_outputs", NULL, NULL);
    rc.latents_steps = fixture_tensor(ir.st_path, "latents_steps", lat_shape, NULL);
    float *image = fixture_tensor(ir.st_path, "image", img_shape, NULL);
    if (!rc.model_inputs || !rc.model_outputs || !rc.latents_steps || !image) goto done;
    rc.n_calls = (int)in_shape[0];
    rc.n_steps = (int)lat_shape[0];
    rc.per_step = (size_t)lat_shape[1] * lat_shape[2] * lat_shape[3] * lat_shape[4];
    rc.own_steps = calloc((size_t)rc.n_steps * rc.per_step, sizeof(float));
    sd_gen_params g = ir.fr.g;
    g.on_event = on_event;
    g.user = &rc;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "%s: %s", run, sd_last_error());
    if (st != SD_OK) goto done;
    double traj = fmax(rc.worst_in, fmax(rc.worst_out, rc.worst_lat)), tol = 1e-4, sens = 0;
    sd_image pert = {0}; /* inpainting always measures itself: its pixel tolerance needs it */
    if (traj >= tol || ir.fr.g.mask_image) {
        sens = run_sensitivity(p, &ir.fr.g, &rc, (int)lat_shape[2], (int)lat_shape[3],
                               (int)lat_shape[4], ir.fr.g.mask_image ? &pert : NULL);
        if (traj >= tol && 4 * sens > tol) tol = 4 * sens;
    }
    bool ok = traj < tol && r.model_calls == rc.n_calls && rc.calls_seen == rc.n_calls;
    printf("%s sd15-tiny/%s: calls %d..%d of %d, inputs %.2g, outputs %.2g, latents %.2g (tol %.2g",
           ok ? "ok  " : "FAIL", run, rc.first_call, rc.first_call + r.model_calls - 1,
           rc.first_call + rc.n_calls, rc.worst_in, rc.worst_out, rc.worst_lat, tol);
    if (sens > 0) printf("; the run's own divergence from 1e-7 noise: %.2g", sens);
    printf(", %.2f s)\n", r.seconds);
    CHECK(ok, "%s: intermediates differ (%d calls, recorded %d)", run, r.model_calls, rc.n_calls);
    CHECK(r.n_images == 1 && r.images[0].width == img_shape[2] && r.images[0].height == img_shape[1],
          "%s: image size %dx%d, recorded %dx%d", run, r.n_images ? r.images[0].width : 0,
          r.n_images ? r.images[0].height : 0, (int)img_shape[2], (int)img_shape[1]);
    CHECK(r.used.width == img_shape[2] && r.used.height == img_shape[1] &&
          r.used.strength == ir.fr.g.strength, "%s: used settings %dx%d strength %g", run,
          r.used.width, r.used.height, r.used.strength);
    const sd_image *mask = ir.fr.g.mask_image;
    if (r.n_images == 1 && r.images[0].width == img_shape[2] &&
        r.images[0].height == img_shape[1] &&
        (!mask || (mask->width == r.images[0].width && mask->height == r.images[0].height))) {
        const size_t n = (size_t)img_shape[1] * img_shape[2] * 3;
        uint8_t *want = malloc(n); /* the recorded PNG's values */
        for (size_t i = 0; i < n; i++) want[i] = (uint8_t)nearbyintf(image[i] * 255.0f);
        if (mask) {
            CHECK(pert.width == r.images[0].width && pert.height == r.images[0].height,
                  "%s: no image from the perturbed run", run);
            if (pert.rgb) repaint_tol = repaint_tolerance(run, &r.images[0], &pert, mask);
        }
        check_image(run, &r.images[0], want, mask, repaint_tol);
        free(want);
    }
    if (mask) known_region(run, &ir.mask, &rc, (int)lat_shape[3], (int)lat_shape[4]);
    sd_result_free(&r);
done:
    image_free(&pert);
    free(rc.model_inputs), free(rc.model_outputs), free(rc.latents_steps), free(rc.own_steps);
    free(image);
    img_run_free(&ir);
    return repaint_tol;
}

/* A recorded run as a user types it; the written PNG against the recorded one (an inpainting
 * run's repainted region within repaint_tol levels, measured by library_run). */
static void cli_run(const char *run, int repaint_tol) {
    img_run ir;
    if (!img_run_load(&ir, run)) {
        img_run_free(&ir);
        return;
    }
    const sd_gen_params *g = &ir.fr.g;
    char model[512], seed[32], steps[16], guidance[32], strength[32], w[16], h[16], image[512],
        mask[512], want[512];
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    snprintf(steps, sizeof steps, "%d", g->steps);
    snprintf(guidance, sizeof guidance, "%.17g", g->guidance);
    snprintf(strength, sizeof strength, "%.17g", g->strength);
    snprintf(w, sizeof w, "%d", g->width);
    snprintf(h, sizeof h, "%d", g->height);
    snprintf(image, sizeof image, "%s",
             expected_file(cJSON_GetObjectItem(ir.fr.json, "image")->valuestring));
    const cJSON *mk = cJSON_GetObjectItem(ir.fr.json, "mask_image");
    if (cJSON_IsString(mk)) snprintf(mask, sizeof mask, "%s", expected_file(mk->valuestring));
    char name[160];
    snprintf(name, sizeof name, "%s-0.png", run);
    snprintf(want, sizeof want, "%s", expected_file(name));
    const char *out = tmp("run.png");
    const char *args[64];
    char *owned[16];
    int na = 0, no = 0;
    const char *fixed[] = {"-m", model, "-s", seed, "--steps", steps, "-g", guidance, "--scheduler",
                           g->scheduler, "--init-image", image, "--strength", strength, "-o", out,
                           "-q"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) args[na++] = fixed[i];
    if (g->width) args[na++] = "-W", args[na++] = w;
    if (g->height) args[na++] = "-H", args[na++] = h;
    if (cJSON_IsString(mk)) args[na++] = "--mask", args[na++] = mask;
    for (const cJSON *e = ir.fr.overrides->child; e && no < 16; e = e->next) {
        char *value = cJSON_PrintUnformatted(e);
        owned[no++] = sd_strfmt("%s=%s", e->string, value);
        cJSON_free(value);
        args[na++] = "--scheduler-opt";
        args[na++] = owned[no - 1];
    }
    if (g->negative_prompt) args[na++] = "-n", args[na++] = g->negative_prompt;
    args[na++] = g->prompt;
    args[na] = NULL;
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "gen %s: exit %d: %s", run, rc, tool_output);
    sd_image got = {0}, ref = {0};
    if (rc == 0 && image_read(out, &got) == SD_OK && image_read(want, &ref) == SD_OK) {
        CHECK(got.width == ref.width && got.height == ref.height, "gen %s: %dx%d, recorded %dx%d",
              run, got.width, got.height, ref.width, ref.height);
        const sd_image *mask = ir.fr.g.mask_image;
        if (got.width == ref.width && got.height == ref.height &&
            (!mask || (mask->width == got.width && mask->height == got.height))) {
            char what[160];
            snprintf(what, sizeof what, "gen %s", run);
            check_image(what, &got, ref.rgb, mask, repaint_tol);
        }
    }
    image_free(&got), image_free(&ref);
    char *params = NULL, want_text[64];
    snprintf(want_text, sizeof want_text, "Denoising strength: %g", g->strength);
    if (rc == 0) CHECK_OK(image_read_png_text(out, "parameters", &params));
    CHECK(rc != 0 || (params && strstr(params, want_text)), "gen %s: parameters '%s' lack '%s'",
          run, params ? params : "", want_text);
    free(params);
    for (int i = 0; i < no; i++) free(owned[i]);
    img_run_free(&ir);
}

static const char *const runs[] = {"img2img", "img2img_euler_nonsquare", "inpaint"};

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-img2img-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    enum { N_RUNS = sizeof runs / sizeof *runs };
    int repaint_tol[N_RUNS] = {2, 2, 2};
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < N_RUNS; i++) repaint_tol[i] = library_run(p, runs[i]);
        sd_pipeline_free(p);
    }
    for (size_t i = 0; i < N_RUNS; i++) cli_run(runs[i], repaint_tol[i]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
