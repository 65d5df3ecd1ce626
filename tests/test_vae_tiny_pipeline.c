/* The tiny autoencoder in the pipeline (sd_load_params.vae_tiny_dir, gen --vae-tiny) and step
 * previews (sd_preview_image, gen --preview):
 * - sd15-tiny's recorded `euler` run with taesd-tiny gives the image that an independent torch
 *   port of AutoencoderTiny decodes from diffusers' recorded final latents
 *   (extra/tiny_vae_refs.safetensors `sd15_euler_taesd.image`, tools/reference/tiny_vae_torch.py);
 * - gen --vae-tiny writes the decode of its own --save-latents through vae_tiny, and its last
 *   --preview is that image;
 * - the preview without a tiny VAE is the latent-to-RGB map; errors name the settings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/image.h"
#include "../core/layout.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../pipeline/img2img.h"
#include "../vae/vae_tiny.h"
#include "test.h"
#include "tool_run.h"

static const char *REFS = "extra/tiny_vae_refs.safetensors";

/* fixture() in one of 4 rotating buffers: several in one call (fixture's own buffer is shared). */
static const char *fx(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s", fixture(rel));
    return buf[k];
}

typedef struct {
    sd_pipeline *p;
    sd_image last_preview; /* sd_preview_image of the last step */
    int steps;
} catcher;

static int on_event(void *user, const sd_event *ev) {
    catcher *c = user;
    if (ev->kind != SD_EVENT_STEP) return 0;
    c->steps++;
    sd_image_free(&c->last_preview);
    if (sd_preview_image(c->p, &ev->tensor, &c->last_preview) != SD_OK) return 1;
    return 0;
}

static sd_pipeline *load(const char *model, const char *tiny) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.vae_tiny_dir = tiny ? fx(tiny) : NULL;
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fx(model), &lp));
    return p;
}

/* Whether the references hold tensor `name`: tiny_vae_torch.py (here) records sd15_euler_taesd,
 * diffusers' tiny_vae_refs.py (on a machine with diffusers) sd15_taesd, each with its own weights
 * in taesd-tiny; whichever wrote the files is checked. */
static bool refs_have(const char *name) {
    st_file f;
    if (st_open(&f, fx(REFS)) != SD_OK) return false;
    const bool has = st_find(&f, name) != NULL;
    st_close(&f);
    return has;
}

/* diffusers' StableDiffusionPipeline run with vae=taesd-tiny (tiny_vae_refs.py): the call in
 * tiny_vae_refs.json, final latents and pixels. */
static void check_diffusers_run(void) {
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fx("extra/tiny_vae_refs.json")));
    const cJSON *run = c.root ? cJSON_GetObjectItem(c.root, "sd15_taesd") : NULL;
    sd_pipeline *p = run ? load("sd15-tiny/pipeline", "extra/taesd-tiny") : NULL;
    CHECK(p, "sd15_taesd in tiny_vae_refs.json");
    if (p) {
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = cJSON_GetObjectItem(run, "prompt")->valuestring;
        g.negative_prompt = cJSON_GetObjectItem(run, "negative_prompt")->valuestring;
        g.steps = cJSON_GetObjectItem(run, "num_inference_steps")->valueint;
        g.guidance = cJSON_GetObjectItem(run, "guidance_scale")->valuedouble;
        g.width = cJSON_GetObjectItem(run, "width")->valueint;
        g.height = cJSON_GetObjectItem(run, "height")->valueint;
        g.seed = (uint64_t)cJSON_GetObjectItem(run, "seed")->valuedouble;
        sd_result r;
        CHECK_OK(sd_generate(p, &g, &r));
        int64_t ls[4];
        float *lat = fixture_tensor(REFS, "sd15_taesd.latents", ls, NULL);
        float *img = fixture_tensor(REFS, "sd15_taesd.image", NULL, NULL);
        if (r.n_images == 1 && lat && img) {
            check_rel("sd15_taesd final latents", r.latents, lat, (size_t)ls[1] * ls[2] * ls[3],
                      1e-4);
            fixture_check_pixels("sd15_taesd (diffusers, vae=AutoencoderTiny)", &r, img, 1);
            sd_result_free(&r);
        }
        free(lat), free(img);
        sd_pipeline_free(p);
    }
    cfg_close(&c);
}

/* The recorded euler run through taesd-tiny: final latents as recorded (the VAE plays no part in
 * the trajectory), pixels as the torch port decodes them; the last step's preview is the image. */
static void check_euler_run(void) {
    sd_pipeline *p = load("sd15-tiny/pipeline", "extra/taesd-tiny");
    fixture_run fr;
    if (!p || !fixture_run_load(&fr, "sd15-tiny", "euler")) return;
    catcher c = {p, {0}, 0};
    fr.g.on_event = on_event;
    fr.g.user = &c;
    sd_result r;
    CHECK_OK(sd_generate(p, &fr.g, &r));
    int64_t ls[5], is[4];
    float *steps =
        fixture_tensor("sd15-tiny/expected/euler.safetensors", "latents_steps", ls, NULL);
    float *want = fixture_tensor(REFS, "sd15_euler_taesd.image", is, NULL);
    if (r.n_images == 1 && steps && want) {
        const size_t n = (size_t)ls[2] * ls[3] * ls[4];
        check_rel("sd15 euler with taesd: final latents", r.latents, steps + (ls[0] - 1) * n, n,
                  1e-4);
        CHECK(r.images[0].width == 128 && r.images[0].height == 128, "image %dx%d",
              r.images[0].width, r.images[0].height);
        fixture_check_pixels("sd15 euler decoded by taesd-tiny", &r, want, 1);
        CHECK(c.steps == 8 && c.last_preview.width == 128 && c.last_preview.height == 128 &&
                  !memcmp(c.last_preview.rgb, r.images[0].rgb, (size_t)128 * 128 * 3),
              "last preview (%d steps, %dx%d) is the final image", c.steps, c.last_preview.width,
              c.last_preview.height);
        sd_result_free(&r);
    }
    free(steps), free(want);
    sd_image_free(&c.last_preview);
    fixture_run_free(&fr);
    sd_pipeline_free(p);
}

/* SD3 and FLUX.1 add the tiny config's shift_factor before decoding (taesd3-tiny: 0.0609; SD / SDXL
 * never do): the image is vae_tiny's decode of (latents / 1.5305 + 0.0609), not of latents
 * / 1.5305. Low memory gives the same image. */
static void check_shifted(const char *model, int size) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red boat";
    g.steps = 2;
    g.seed = 9;
    g.width = g.height = size;
    sd_result r = {0}, low = {0};
    vae_tiny *m = NULL;
    for (int lowmem = 0; lowmem < 2; lowmem++) {
        sd_load_params lp;
        sd_load_params_init(&lp);
        lp.vae_tiny_dir = fx("extra/taesd3-tiny");
        lp.low_memory = lowmem;
        lp.keep_resident = !lowmem; /* paging is the default: compare against resident */
        sd_pipeline *p = NULL;
        CHECK_OK(sd_pipeline_load(&p, fx(model), &lp));
        if (p) CHECK_OK(sd_generate(p, &g, lowmem ? &low : &r));
        sd_pipeline_free(p);
    }
    if (r.n_images == 1 && low.n_images == 1 &&
        vae_tiny_load(&m, fx("extra/taesd3-tiny"), false, NULL) == SD_OK) {
        const int c = r.latent_shape[1], h = r.latent_shape[2], w = r.latent_shape[3];
        const size_t n = (size_t)c * h * w, px = (size_t)size * size;
        float *z = malloc(n * sizeof *z), *dec = malloc(px * 3 * sizeof *dec);
        uint8_t *rgb = malloc(px * 3);
        for (int shift = 1; shift >= 0; shift--) {
            layout_nchw_to_nhwc(r.latents, z, 1, c, h, w);
            vae_tiny_unscale_latents(m, shift, z, z, n);
            CHECK_OK(vae_tiny_decode(m, z, 1, h, w, dec));
            image_from_float(dec, size, size, rgb);
            const bool same = !memcmp(rgb, r.images[0].rgb, px * 3);
            CHECK(same == (shift == 1), "%s: the image is the tiny decode %s the shift", model,
                  shift ? "with" : "without");
        }
        CHECK(!memcmp(low.images[0].rgb, r.images[0].rgb, px * 3), "%s: --low-memory image differs",
              model);
        free(z), free(dec), free(rgb);
    }
    vae_tiny_free(m);
    sd_result_free(&r), sd_result_free(&low);
}

typedef struct {
    float *first_input; /* the first denoiser input's cond half... any half: both are the same */
    size_t n;
} input_catcher;

static int on_input(void *user, const sd_event *ev) {
    input_catcher *c = user;
    if (ev->kind == SD_EVENT_MODEL_INPUT && !c->first_input) {
        c->n = (size_t)ev->tensor.h * ev->tensor.w * ev->tensor.c;
        c->first_input = malloc(c->n * sizeof(float));
        if (c->first_input) memcpy(c->first_input, ev->tensor.data, c->n * sizeof(float));
    }
    return 0;
}

/* Image to image encodes with the tiny VAE and draws nothing for it, as diffusers'
 * retrieve_latents with AutoencoderTiny: the first denoiser input is a * encode(image) *
 * scaling_factor + b * noise, the noise being the generator's FIRST draw (with the big VAE the
 * posterior sample comes first). a and b (the scheduler's) are fitted; the rest must vanish. */
static void check_img2img_noise(void) {
    sd_pipeline *p = load("sd15-tiny/pipeline", "extra/taesd-tiny");
    vae_tiny *m = NULL;
    if (!p || vae_tiny_load(&m, fx("extra/taesd-tiny"), true, NULL) != SD_OK) return;
    enum { W = 64, H = 48, C = 4 };
    sd_image init;
    CHECK_OK(image_alloc(&init, W, H));
    for (size_t i = 0; i < (size_t)W * H * 3; i++) init.rgb[i] = (uint8_t)(i * 53 % 241);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red boat";
    g.steps = 4;
    g.seed = 21;
    g.init_image = &init;
    input_catcher c = {0};
    g.on_event = on_input;
    g.user = &c;
    sd_result r;
    CHECK_OK(sd_generate(p, &g, &r));
    const size_t n = (size_t)(W / 8) * (H / 8) * C;
    float px[W * H * 3], enc[n], draw[n], noise[n];
    CHECK_OK(pl_i2i_image_pixels(&init, W, H, px));
    CHECK_OK(vae_tiny_encode(m, px, 1, H, W, enc)); /* scaling_factor 1.0 */
    sd_rng rng;
    rng_seed(&rng, g.seed);
    rng_randn(&rng, draw, n); /* NCHW, as torch draws */
    layout_nchw_to_nhwc(draw, noise, 1, C, H / 8, W / 8);
    if (c.first_input && c.n == n) {
        /* Least squares for x = a * enc + b * noise. */
        double ee = 0, en = 0, nn = 0, xe = 0, xn = 0, xx = 0;
        for (size_t i = 0; i < n; i++) {
            const double e = enc[i], z = noise[i], x = c.first_input[i];
            ee += e * e, en += e * z, nn += z * z, xe += x * e, xn += x * z, xx += x * x;
        }
        const double det = ee * nn - en * en, a = (xe * nn - xn * en) / det,
                     b = (xn * ee - xe * en) / det;
        double res = 0;
        for (size_t i = 0; i < n; i++) {
            const double d = c.first_input[i] - a * enc[i] - b * noise[i];
            res += d * d;
        }
        CHECK(a > 0.1 && b > 0.1 && sqrt(res / xx) < 1e-5,
              "img2img start = %.4f * tiny encode + %.4f * first noise draw, residual %.2e", a, b,
              sqrt(res / xx));
    }
    CHECK(c.first_input != NULL, "img2img: no model input event");
    if (r.n_images == 1) sd_result_free(&r);
    free(c.first_input);
    sd_image_free(&init);
    vae_tiny_free(m);
    sd_pipeline_free(p);
}

/* Image to image with the tiny VAE: it encodes too, deterministically (nothing drawn), so two runs
 * agree and differ from the big VAE's. */
static void check_img2img(void) {
    sd_pipeline *p = load("sd15-tiny/pipeline", "extra/taesd-tiny");
    if (!p) return;
    sd_image init;
    CHECK_OK(image_alloc(&init, 64, 48));
    for (size_t i = 0; i < (size_t)64 * 48 * 3; i++) init.rgb[i] = (uint8_t)(i * 37 % 251);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red boat";
    g.steps = 4;
    g.seed = 3;
    g.init_image = &init;
    sd_result a, b;
    CHECK_OK(sd_generate(p, &g, &a));
    CHECK_OK(sd_generate(p, &g, &b));
    if (a.n_images == 1 && b.n_images == 1) {
        CHECK(a.images[0].width == 64 && a.images[0].height == 48, "img2img size %dx%d",
              a.images[0].width, a.images[0].height);
        CHECK(!memcmp(a.images[0].rgb, b.images[0].rgb, (size_t)64 * 48 * 3), "img2img repeats");
        sd_result_free(&a), sd_result_free(&b);
    }
    sd_image_free(&init);
    sd_pipeline_free(p);
}

/* Without a tiny VAE the preview is sd_latents_preview's latent-sized map. */
static void check_cheap_preview(void) {
    sd_pipeline *p = load("sd15-tiny/pipeline", NULL);
    if (!p) return;
    float lat[2 * 3 * 4];
    fill_random(lat, sizeof lat / sizeof *lat, 5);
    const sd_tensor t = {lat, 1, 2, 3, 4};
    sd_image a, b;
    CHECK_OK(sd_preview_image(p, &t, &a));
    CHECK_OK(sd_latents_preview(p, &t, &b));
    CHECK(a.width == 3 && a.height == 2 && b.width == 3 && !memcmp(a.rgb, b.rgb, 18),
          "cheap preview %dx%d", a.width, a.height);
    sd_image_free(&a), sd_image_free(&b);
    sd_pipeline_free(p);
    /* With the tiny VAE: full size, and the wrong channel count is refused. */
    p = load("sd15-tiny/pipeline", "extra/taesd-tiny");
    if (!p) return;
    CHECK_OK(sd_preview_image(p, &t, &a));
    CHECK(a.width == 24 && a.height == 16, "tiny preview %dx%d", a.width, a.height);
    sd_image_free(&a);
    const sd_tensor bad = {lat, 1, 2, 2, 6};
    CHECK(sd_preview_image(p, &bad, &a) == SD_ERR_ARG && strstr(sd_last_error(), "6 channels"),
          "6-channel preview: %s", sd_last_error());
    sd_pipeline_free(p);
}

static void check_errors(void) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    sd_pipeline *p = NULL;
    lp.vae_tiny_dir = fx("extra/taesd3-tiny"); /* 16 channels for a 4-channel UNet */
    CHECK(sd_pipeline_load(&p, fx("sd15-tiny/pipeline"), &lp) == SD_ERR_CONFIG &&
              strstr(sd_last_error(), "16 latent channels"),
          "taesd3 on sd15: %s", sd_last_error());
    lp.vae_tiny_dir = fx("extra/taesd-tiny");
    lp.vae_file = fx("sd15-tiny/pipeline/vae/diffusion_pytorch_model.safetensors");
    CHECK(sd_pipeline_load(&p, fx("sd15-tiny/pipeline"), &lp) == SD_ERR_ARG &&
              strstr(sd_last_error(), "vae_tiny_dir") && strstr(sd_last_error(), "vae_file"),
          "tiny and vae_file: %s", sd_last_error());
    lp.vae_file = NULL;
    lp.vae_tiny_dir = fx("sd15-tiny/pipeline/vae"); /* an AutoencoderKL */
    CHECK(sd_pipeline_load(&p, fx("sd15-tiny/pipeline"), &lp) == SD_ERR_CONFIG &&
              strstr(sd_last_error(), "AutoencoderKL"),
          "KL as tiny: %s", sd_last_error());
    CHECK(!p, "no pipeline after failures");
}

static bool read_image(const char *path, sd_image *img) {
    const sd_status st = sd_image_read(path, img);
    CHECK(st == SD_OK, "read %s: %s", path, sd_last_error());
    return st == SD_OK;
}

/* gen --vae-tiny --save-latents --preview: the image is vae_tiny's decode of the saved latents
 * (scaling 1.0), the preview after the last step is the image, and no temporary file is left. */
static void check_gen(void) {
    char dir[] = "/tmp/sd_tiny_gen_XXXXXX";
    if (!mkdtemp(dir)) return;
    const char *out = test_path(dir, "out.png"), *lat = test_path(dir, "lat.safetensors");
    const char *pv = test_path(dir, "preview.png");
    const int rc =
        tool_run("gen", "-m", fx("sd15-tiny/pipeline"), "--vae-tiny", fx("extra/taesd-tiny"), "-s",
                 "11", "--steps", "4", "-W", "64", "-H", "48", "-q", "-o", out, "--save-latents",
                 lat, "--preview", pv, "--preview-every", "3", "a lighthouse", NULL);
    CHECK(rc == 0, "gen --vae-tiny: exit %d: %s", rc, tool_output);
    sd_latents l = {0};
    sd_image img = {0}, prev = {0};
    vae_tiny *m = NULL;
    if (rc == 0 && read_image(out, &img) && read_image(pv, &prev) &&
        sd_latents_read(lat, NULL, &l) == SD_OK &&
        vae_tiny_load(&m, fx("extra/taesd-tiny"), false, NULL) == SD_OK) {
        const size_t n = (size_t)l.c * l.h * l.w, px = (size_t)64 * 48;
        float *z = malloc(n * sizeof *z), *dec = malloc(px * 3 * sizeof *dec);
        uint8_t *rgb = malloc(px * 3);
        layout_nchw_to_nhwc(l.data, z, 1, l.c, l.h, l.w);
        vae_tiny_unscale_latents(m, false, z, z, n);
        CHECK_OK(vae_tiny_decode(m, z, 1, l.h, l.w, dec));
        image_from_float(dec, 64, 48, rgb);
        CHECK(img.width == 64 && img.height == 48 && !memcmp(rgb, img.rgb, px * 3),
              "gen --vae-tiny image is the tiny decode of its latents");
        CHECK(prev.width == 64 && prev.height == 48 && !memcmp(prev.rgb, img.rgb, px * 3),
              "last preview is the image");
        free(z), free(dec), free(rgb);
    }
    vae_tiny_free(m);
    sd_latents_free(&l);
    sd_image_free(&img), sd_image_free(&prev);
    /* Nothing but the three files: previews go through a temporary name and a rename. */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 3", dir);
    CHECK(system(cmd) == 0, "files left in %s besides out, latents and preview", dir);
    /* --preview-every without --preview, and a preview that cannot be written. */
    CHECK(tool_run("gen", "-m", fx("sd15-tiny/pipeline"), "--preview-every", "2", "x", NULL) == 2 &&
              strstr(tool_output, "--preview FILE"),
          "--preview-every alone: %s", tool_output);
    const int bad =
        tool_run("gen", "-m", fx("sd15-tiny/pipeline"), "--steps", "1", "-W", "64", "-H", "64",
                 "-q", "-o", out, "--preview", "/nonexistent/p.png", "x", NULL);
    CHECK(bad == 1 && strstr(tool_output, "--preview /nonexistent/p.png"),
          "unwritable preview: %d %s", bad, tool_output);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "%s", cmd);
}

int main(void) {
    const bool torch_refs = refs_have("sd15_euler_taesd.image"),
               diffusers_refs = refs_have("sd15_taesd.image");
    CHECK(torch_refs || diffusers_refs, "%s holds a pipeline reference", REFS);
    if (torch_refs) check_euler_run();
    if (diffusers_refs) check_diffusers_run();
    check_shifted("sd3-tiny/pipeline", 64);
    check_shifted("flux-tiny/pipeline", 64);
    check_img2img();
    check_img2img_noise();
    check_cheap_preview();
    check_errors();
    check_gen();
    return test_summary();
}
