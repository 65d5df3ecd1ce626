/* Cancellation through the event callback: a non-zero return stops sd_generate at once.
 *
 * On sd15-tiny: the callback returns 1 on the STEP event of step index 1 (the second of 4), so it
 * sees steps 0 and 1 and nothing after; sd_generate returns SD_ERR_CANCELLED naming "step 2 of
 * 4", and the sd_result is all zeros. The same pipeline then generates the image of a fresh
 * pipeline, byte for byte (no state left half-done: caches, scratch arenas, released weights).
 * Also cancelled: while the prompts are encoded, before the VAE decode, an img2img run, and a
 * low-memory pipeline (whose releases must run on the cancelled path too). Then one SDXL run
 * (cancelled between the negative embeddings' two events) and one Flux run. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/image.h"
#include "../include/sd.h"
#include "test.h"

typedef struct {
    sd_event_kind stop_kind; /* cancel on this event ... */
    int stop_index;          /* ... with this index */
    bool stopped;
    int after;               /* events seen after the cancelling one (must stay 0) */
    int steps[64], n_steps;  /* STEP indices seen */
    int model_inputs;
} canceller;

static int cancel_event(void *user, const sd_event *ev) {
    canceller *c = user;
    if (c->stopped) {
        c->after++;
        return 1;
    }
    if (ev->kind == SD_EVENT_STEP && c->n_steps < 64) c->steps[c->n_steps++] = ev->index;
    if (ev->kind == SD_EVENT_MODEL_INPUT) c->model_inputs++;
    c->stopped = ev->kind == c->stop_kind && ev->index == c->stop_index;
    return c->stopped;
}

static sd_gen_params small_run(void) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a lighthouse at dawn";
    g.negative_prompt = "blurry";
    g.seed = 42;
    g.steps = 4;
    g.width = g.height = 64;
    g.scheduler = "EulerDiscreteScheduler"; /* first order: one model call per step */
    return g;
}

static bool result_zero(const sd_result *r) {
    sd_result zero;
    memset(&zero, 0, sizeof zero);
    return !memcmp(r, &zero, sizeof zero);
}

/* Runs g cancelling at (kind, index); checks the status, the message, the zeroed result and that
 * no event followed. Returns what the callback saw. */
static canceller expect_cancel(sd_pipeline *p, sd_gen_params g, sd_event_kind kind, int index,
                               const char *what, const char *message) {
    canceller c = {kind, index, false, 0, {0}, 0, 0};
    g.on_event = cancel_event, g.user = &c;
    sd_result r;
    memset(&r, 0xab, sizeof r); /* sd_generate must overwrite all of it */
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_ERR_CANCELLED, "%s: status %s (%s)", what, sd_status_name(st), sd_last_error());
    CHECK(strstr(sd_last_error(), message) != NULL, "%s: message '%s' does not say '%s'", what,
          sd_last_error(), message);
    CHECK(c.stopped && c.after == 0, "%s: cancelled %d, %d events after the cancelling one", what,
          c.stopped, c.after);
    CHECK(result_zero(&r), "%s: the result is not all zeros (%d images)", what, r.n_images);
    if (st == SD_OK) sd_result_free(&r);
    printf("%s %s: %s\n", st == SD_ERR_CANCELLED ? "ok  " : "FAIL", what, sd_last_error());
    return c;
}

/* A full run's first image and latents (malloc'd copies). */
static bool run_full(sd_pipeline *p, sd_gen_params g, sd_image *im, float **latents, size_t *n) {
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "full run: %s", sd_last_error());
    if (st != SD_OK) return false;
    *n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
    *latents = r.latents;
    *im = r.images[0];
    r.latents = NULL;
    r.images[0].rgb = NULL;
    sd_result_free(&r);
    return true;
}

/* A run on p equals the same run on `reference`, byte for byte. */
static void expect_same_run(sd_pipeline *p, sd_pipeline *reference, sd_gen_params g,
                            const char *what) {
    sd_image a = {0}, b = {0};
    float *la = NULL, *lb = NULL;
    size_t na = 0, nb = 0;
    if (run_full(p, g, &a, &la, &na) && run_full(reference, g, &b, &lb, &nb)) {
        const bool same = na == nb && !memcmp(la, lb, na * sizeof *la) && a.width == b.width &&
                          a.height == b.height &&
                          !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3);
        printf("%s %s: the image of a fresh run\n", same ? "ok  " : "FAIL", what);
        CHECK(same, "%s: the image differs from a fresh run's", what);
    }
    image_free(&a), image_free(&b);
    free(la), free(lb);
}

static void check_sd15(void) {
    const char *model = fixture("sd15-tiny/pipeline");
    sd_pipeline *p = NULL, *fresh = NULL, *low = NULL;
    CHECK_OK(sd_pipeline_load(&p, model, NULL));
    CHECK_OK(sd_pipeline_load(&fresh, model, NULL));
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.low_memory = true;
    CHECK_OK(sd_pipeline_load(&low, model, &lp));
    if (!p || !fresh || !low) goto done;
    const sd_gen_params g = small_run();

    /* After step 2 of 4 (index 1): steps 0 and 1 seen, and only those. */
    canceller c = expect_cancel(p, g, SD_EVENT_STEP, 1, "cancel at step index 1", "at step 2 of 4");
    CHECK(c.n_steps == 2 && c.steps[0] == 0 && c.steps[1] == 1 && c.model_inputs == 2,
          "the callback saw steps 0 and 1 (%d steps, %d model inputs)", c.n_steps, c.model_inputs);
    expect_same_run(p, fresh, g, "after a cancelled run");

    c = expect_cancel(p, g, SD_EVENT_PROMPT_EMBEDS, 0, "cancel at the prompt embeddings",
                      "encoding the prompts");
    CHECK(c.model_inputs == 0, "no model call after cancelling the encoding (%d)", c.model_inputs);
    c = expect_cancel(p, g, SD_EVENT_MODEL_OUTPUT, 0, "cancel at the first model output",
                      "at step 1 of 4");
    CHECK(c.n_steps == 0, "no step after cancelling at the first model output (%d)", c.n_steps);
    c = expect_cancel(p, g, SD_EVENT_DECODE, 0, "cancel before the decode",
                      "before the VAE decode");
    CHECK(c.n_steps == 4, "all 4 steps ran before the decode event (%d)", c.n_steps);

    /* Image-to-image (strength 0.5: calls 2 and 3 of 4 run), cancelled at its first step. */
    sd_image init = {0};
    CHECK_OK(image_read(fixture("sd15-tiny/expected/img2img-image.png"), &init));
    if (init.rgb) {
        sd_gen_params gi = g;
        gi.init_image = &init, gi.strength = 0.5, gi.width = gi.height = 64;
        c = expect_cancel(p, gi, SD_EVENT_STEP, 2, "img2img cancelled at its first step",
                          "at step 3 of 4");
        expect_same_run(p, fresh, gi, "img2img after a cancelled run");
        image_free(&init);
    }

    /* Low memory: cancelled mid-loop, then the same image as the normal pipeline's. */
    expect_cancel(low, g, SD_EVENT_MODEL_INPUT, 1, "low memory, cancelled", "at step 2 of 4");
    expect_same_run(low, fresh, g, "low memory after a cancelled run");
done:
    sd_pipeline_free(p), sd_pipeline_free(fresh), sd_pipeline_free(low);
}

/* Other families run the same skeleton: SDXL (cancelled between the negative embeddings' hidden
 * states and pooled output, index 1 of 2) and Flux (at its first step). */
static void check_other_families(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sdxl-tiny/pipeline"), NULL));
    if (p) {
        sd_gen_params g = small_run();
        canceller c = expect_cancel(p, g, SD_EVENT_NEGATIVE_EMBEDS, 1,
                                    "SDXL: cancel in the encoding", "encoding the prompts");
        CHECK(c.model_inputs == 0, "SDXL: no model call (%d)", c.model_inputs);
        sd_pipeline_free(p);
    }
    p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("flux-tiny/pipeline"), NULL));
    if (p) {
        sd_gen_params g = small_run();
        g.width = g.height = 32, g.steps = 3, g.max_sequence_length = 8, g.negative_prompt = NULL;
        g.scheduler = NULL; /* Flux's own: custom sigmas and mu */
        sd_image before = {0};
        float *lat = NULL;
        size_t n = 0;
        const bool ok = run_full(p, g, &before, &lat, &n);
        canceller c = expect_cancel(p, g, SD_EVENT_STEP, 0, "Flux: cancel at the first step",
                                    "at step 1 of 3");
        CHECK(c.n_steps == 1 && c.model_inputs == 1, "Flux: one step seen (%d, %d model inputs)",
              c.n_steps, c.model_inputs);
        sd_image after = {0};
        float *lat2 = NULL;
        size_t n2 = 0;
        if (ok && run_full(p, g, &after, &lat2, &n2))
            CHECK(n == n2 && !memcmp(lat, lat2, n * sizeof *lat) &&
                      !memcmp(before.rgb, after.rgb, (size_t)before.width * before.height * 3),
                  "Flux: the run after a cancelled one equals the run before it");
        image_free(&before), image_free(&after);
        free(lat), free(lat2);
        sd_pipeline_free(p);
    }
}

int main(void) {
    check_sd15();
    check_other_families();
    return test_summary();
}
