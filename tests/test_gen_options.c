/* Settings a family's diffusers pipeline has no argument for are refused the same way by every
 * family (pipeline/gen_options.c): SD_ERR_ARG and "NAME: not supported by FAMILY (CLASS has no
 * ARGUMENT)", before any work. Every setting of the matrix below is tried on the four tiny
 * fixtures: a refused one must give exactly that message; an accepted one must generate (one
 * step, small size), so a family cannot refuse what its pipeline takes either. Image-to-image
 * (SD3, Flux: SD_ERR_UNSUPPORTED) and a mask or a strength without an init image (every family)
 * have their own messages. */
#include <stdio.h>
#include <string.h>

#include "../include/sd.h"
#include "test.h"

enum { SD15, SDXL, SD3, FLUX, N_FAMILIES };

static const struct {
    const char *model, *name, *cls;
} families[N_FAMILIES] = {
    {"sd15-tiny/pipeline", "Stable Diffusion 1.x/2.x", "StableDiffusionPipeline"},
    {"sdxl-tiny/pipeline", "SDXL", "StableDiffusionXLPipeline"},
    {"sd3-tiny/pipeline", "Stable Diffusion 3", "StableDiffusion3Pipeline"},
    {"flux-tiny/pipeline", "FLUX.1", "FluxPipeline"},
};

static void set_eta(sd_gen_params *g) { g->eta = 0.5; }
static void set_rescale(sd_gen_params *g) { g->guidance_rescale = 0.5; }
static void set_clip_skip(sd_gen_params *g) { g->clip_skip = 1; }
static void set_prompt_2(sd_gen_params *g) { g->prompt_2 = "oil painting"; }
static void set_negative_2(sd_gen_params *g) { g->negative_prompt_2 = "blurry"; }
static void set_prompt_3(sd_gen_params *g) { g->prompt_3 = "oil painting"; }
static void set_negative_3(sd_gen_params *g) { g->negative_prompt_3 = "blurry"; }
static void set_original(sd_gen_params *g) { g->original_width = 96, g->original_height = 64; }
static void set_crop(sd_gen_params *g) { g->crop_top = 8; }
static void set_target(sd_gen_params *g) { g->target_width = 64, g->target_height = 96; }
static void set_max_sequence(sd_gen_params *g) { g->max_sequence_length = 8; }

static const struct {
    void (*set)(sd_gen_params *g);
    const char *name, *argument;
    bool takes[N_FAMILIES]; /* SD15, SDXL, SD3, FLUX */
} cases[] = {
    {set_eta, "eta", "eta", {1, 1, 0, 0}},
    {set_rescale, "guidance_rescale", "guidance_rescale", {1, 1, 0, 0}},
    {set_clip_skip, "clip_skip", "clip_skip", {1, 1, 1, 0}},
    {set_prompt_2, "prompt_2", "prompt_2", {0, 1, 1, 1}},
    {set_negative_2, "negative_prompt_2", "negative_prompt_2", {0, 1, 1, 1}},
    {set_prompt_3, "prompt_3", "prompt_3", {0, 0, 1, 0}},
    {set_negative_3, "negative_prompt_3", "negative_prompt_3", {0, 0, 1, 0}},
    {set_original, "original_width/original_height (SDXL micro-conditioning)", "original_size",
     {0, 1, 0, 0}},
    {set_crop, "crop_top/crop_left (SDXL micro-conditioning)", "crops_coords_top_left",
     {0, 1, 0, 0}},
    {set_target, "target_width/target_height (SDXL micro-conditioning)", "target_size",
     {0, 1, 0, 0}},
    {set_max_sequence, "max_sequence_length", "max_sequence_length", {0, 0, 1, 1}},
};

static sd_gen_params base_params(int family) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a lighthouse";
    g.negative_prompt = "fog";
    g.steps = 1;
    g.width = g.height = family == FLUX ? 32 : 64;
    if (family == SD3 || family == FLUX) g.max_sequence_length = 8; /* small T5 context */
    return g;
}

static void expect(sd_pipeline *p, const sd_gen_params *g, sd_status want, const char *message,
                   const char *what) {
    sd_result r;
    sd_status st = sd_generate(p, g, &r);
    if (st == SD_OK) sd_result_free(&r);
    const bool ok = st == want && (!message || !strcmp(sd_last_error(), message));
    CHECK(ok, "%s: %s '%s', want %s '%s'", what, sd_status_name(st), st ? sd_last_error() : "",
          sd_status_name(want), message ? message : "");
}

static void check_family(int f) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture(families[f].model), NULL));
    if (!p) return;
    char what[200], message[400];
    const int failed_before = test_failed;
    int refused = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sd_gen_params g = base_params(f);
        cases[i].set(&g);
        snprintf(what, sizeof what, "%s, %s", families[f].name, cases[i].name);
        if (cases[i].takes[f]) {
            expect(p, &g, SD_OK, NULL, what);
            continue;
        }
        snprintf(message, sizeof message, "%s: not supported by %s (%s has no %s)", cases[i].name,
                 families[f].name, families[f].cls, cases[i].argument);
        expect(p, &g, SD_ERR_ARG, message, what);
        refused++;
    }
    sd_gen_params g = base_params(f);
    g.strength = 0.5;
    snprintf(what, sizeof what, "%s, strength without an init image", families[f].name);
    expect(p, &g, SD_ERR_ARG, "strength 0.5 applies to image-to-image: give an init image", what);
    sd_image im = {0};
    g = base_params(f);
    g.mask_image = &im;
    snprintf(what, sizeof what, "%s, a mask without an init image", families[f].name);
    expect(p, &g, SD_ERR_ARG, "a mask needs an init image (the image to repaint)", what);
    if (f == SD3 || f == FLUX) {
        g = base_params(f);
        g.init_image = &im;
        snprintf(message, sizeof message, "init_image: not supported by %s (image-to-image and "
                 "inpainting are not implemented for %s)", families[f].name, families[f].cls);
        snprintf(what, sizeof what, "%s, init image", families[f].name);
        expect(p, &g, SD_ERR_UNSUPPORTED, message, what);
    }
    printf("%s %s: %d of %d settings refused, the rest accepted\n",
           test_failed == failed_before ? "ok  " : "FAIL", families[f].name, refused,
           (int)(sizeof cases / sizeof *cases));
    sd_pipeline_free(p);
}

int main(void) {
    for (int f = 0; f < N_FAMILIES; f++) check_family(f);
    return test_summary();
}
