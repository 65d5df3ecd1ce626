/* Image-to-image and inpainting beyond the recorded runs (test_img2img.c has those), each
 * against a rule diffusers states:
 * - every scheduler class runs img2img and 4-channel inpainting, with the number of model calls
 *   get_timesteps gives, finite latents, and (inpainting) the kept region ending exactly on the
 *   init image's latents;
 * - a batch repeats the one image's latents under one noise draw;
 * - sizes: the image's own rounded down to a multiple of 8, -W/-H when given (the image
 *   stretched), the model's default for inpainting;
 * - bad input through the library and through bin/gen: one clear error each. */
#include "img2img_util.h"

static void every_scheduler(sd_pipeline *p) {
    img_run ir;
    if (!img_run_load(&ir, "inpaint")) {
        img_run_free(&ir);
        return;
    }
    int h, w, c;
    const uint64_t seed = 11;
    float *want = init_latents(&ir.image, seed, &h, &w, &c);
    const sched_info *info;
    int n_classes = sched_list(&info), ran = 0;
    for (int k = 0; k < n_classes && want; k++) {
        for (int inpaint = 0; inpaint < 2; inpaint++) {
            sd_gen_params g;
            sd_gen_params_init(&g);
            g.prompt = "a lighthouse";
            g.seed = seed, g.steps = 4, g.strength = 0.5, g.guidance = 5;
            g.scheduler = info[k].class_name;
            g.init_image = &ir.image;
            g.mask_image = inpaint ? &ir.mask : NULL;
            g.width = 128, g.height = 128;
            sd_result r;
            sd_status st = sd_generate(p, &g, &r);
            CHECK(st == SD_OK, "%s %s: %s", inpaint ? "inpaint" : "img2img", g.scheduler, sd_last_error());
            if (st != SD_OK) continue;
            ran++;
            int calls = expected_calls(g.scheduler, g.steps, g.strength);
            CHECK(r.model_calls == calls, "%s %s: %d model calls, get_timesteps gives %d",
                  inpaint ? "inpaint" : "img2img", g.scheduler, r.model_calls, calls);
            size_t n = (size_t)c * h * w, finite = 0;
            for (size_t i = 0; i < n; i++) finite += isfinite(r.latents[i]);
            CHECK(finite == n, "%s: %zu of %zu final latents finite", g.scheduler, finite, n);
            if (inpaint) { /* the kept region ends exactly on the init latents */
                double worst = 0;
                for (int ch = 0; ch < c; ch++)
                    for (int y = 0; y < h; y++)
                        for (int x = 0; x < w; x++)
                            if (latent_kept(&ir.mask, y, x)) {
                                double d = fabs(r.latents[((size_t)ch * h + y) * w + x] -
                                                want[((size_t)y * w + x) * c + ch]);
                                if (d > worst) worst = d;
                            }
                CHECK(worst < 1e-5, "inpaint %s: kept region off the init latents by %g",
                      g.scheduler, worst);
            }
            sd_result_free(&r);
        }
    }
    printf("ok   img2img and 4-channel inpainting ran with %d scheduler classes (%d runs)\n",
           n_classes, ran);
    free(want);
    img_run_free(&ir);
}

/* A batch repeats the one image's latents (diffusers: torch.cat([init_latents] * n)) under one
 * noise draw of the whole batch: every item keeps the init latents in the kept region, and item 0,
 * whose noise is the first part of the same stream, follows the batch-1 run. */
static void batch(sd_pipeline *p) {
    img_run ir;
    if (!img_run_load(&ir, "inpaint")) {
        img_run_free(&ir);
        return;
    }
    int h, w, c;
    sd_gen_params g = ir.fr.g;
    g.steps = 4, g.strength = 0.75;
    float *want = init_latents(&ir.image, g.seed, &h, &w, &c);
    sd_result one, two;
    g.batch = 1;
    sd_status st1 = sd_generate(p, &g, &one);
    g.batch = 2;
    sd_status st2 = sd_generate(p, &g, &two);
    CHECK(st1 == SD_OK && st2 == SD_OK, "inpainting batch of 2: %s", sd_last_error());
    if (want && st1 == SD_OK && st2 == SD_OK) {
        const size_t n1 = (size_t)c * h * w;
        CHECK(two.n_images == 2, "a batch of 2 gives %d images", two.n_images);
        check_rel("batch of 2, item 0 against the batch-1 run (final latents)", two.latents,
                  one.latents, n1, 1e-5);
        for (int b = 0; b < 2; b++) {
            double worst = 0;
            for (int ch = 0; ch < c; ch++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                        if (latent_kept(&ir.mask, y, x))
                            worst = fmax(worst, fabs(two.latents[b * n1 + ((size_t)ch * h + y) * w + x] -
                                                     want[((size_t)y * w + x) * c + ch]));
            CHECK(worst < 1e-5, "batch item %d: kept region off the init latents by %g", b, worst);
        }
    }
    if (st1 == SD_OK) sd_result_free(&one);
    if (st2 == SD_OK) sd_result_free(&two);
    free(want);
    img_run_free(&ir);
}

static void sizes(sd_pipeline *p) {
    sd_image img;
    if (image_alloc(&img, 133, 77) != SD_OK) return;
    for (size_t i = 0; i < (size_t)133 * 77 * 3; i++) img.rgb[i] = (uint8_t)(i * 37 % 251);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x", g.steps = 2, g.strength = 0.5, g.init_image = &img;
    sd_result r;
    const struct {
        int w, h, want_w, want_h;
    } cases[] = {{0, 0, 128, 72}, {64, 96, 64, 96}, {64, 0, 64, 72}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        g.width = cases[k].w, g.height = cases[k].h;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "img2img %dx%d from 133x77: %s", g.width, g.height, sd_last_error());
        if (st != SD_OK) continue;
        CHECK(r.images[0].width == cases[k].want_w && r.images[0].height == cases[k].want_h &&
              r.used.width == cases[k].want_w && r.used.height == cases[k].want_h,
              "img2img -W %d -H %d from 133x77: %dx%d, diffusers makes %dx%d", g.width, g.height,
              r.images[0].width, r.images[0].height, cases[k].want_w, cases[k].want_h);
        sd_result_free(&r);
    }
    /* Inpainting without a size takes the model's (sample_size 16 * 8), whatever the image's. */
    sd_image mask;
    if (image_alloc(&mask, 133, 77) == SD_OK) {
        memset(mask.rgb, 255, (size_t)133 * 77 * 3);
        g.mask_image = &mask, g.width = g.height = 0;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK && r.images[0].width == 128 && r.images[0].height == 128,
              "inpainting size from the model: %s", st == SD_OK ? "wrong size" : sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        image_free(&mask);
    }
    image_free(&img);
}

static void expect_lib_error(sd_pipeline *p, const sd_gen_params *g, const char *what,
                             const char *needle) {
    sd_result r;
    sd_status st = sd_generate(p, g, &r);
    CHECK(st != SD_OK && strstr(sd_last_error(), needle), "%s: %s", what,
          st == SD_OK ? "accepted" : sd_last_error());
    if (st == SD_OK) sd_result_free(&r);
}

static void bad_inputs(sd_pipeline *p) {
    img_run ir;
    if (!img_run_load(&ir, "inpaint")) {
        img_run_free(&ir);
        return;
    }
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x", g.steps = 4;
    g.mask_image = &ir.mask;
    expect_lib_error(p, &g, "mask without an init image", "needs an init image");
    g.mask_image = NULL, g.strength = 0.5;
    expect_lib_error(p, &g, "strength without an init image", "init image");
    g.init_image = &ir.image;
    const double bad[] = {0, -0.5, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        g.strength = bad[i];
        expect_lib_error(p, &g, "strength out of range", "outside (0, 1]");
    }
    g.strength = 0.2; /* int(4 * 0.2) = 0 steps */
    expect_lib_error(p, &g, "strength that runs no step", "runs no denoising step");
    g.strength = NAN;
    sd_image small, other;
    if (image_alloc(&small, 5, 64) == SD_OK) {
        g.init_image = &small;
        expect_lib_error(p, &g, "image narrower than 8 pixels", "smaller than 8");
        image_free(&small);
    }
    g.init_image = &ir.image;
    if (image_alloc(&other, 128, 120) == SD_OK) {
        g.mask_image = &other;
        expect_lib_error(p, &g, "mask of another size", "must be the same size");
        image_free(&other);
    }
    g.mask_image = NULL, g.width = 100;
    expect_lib_error(p, &g, "width not a multiple of 8", "multiple of 8");

    /* the same through bin/gen */
    char model[512], image[512], mask[512], small_mask[512];
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(image, sizeof image, "%s", expected_file("inpaint-image.png"));
    snprintf(mask, sizeof mask, "%s", expected_file("inpaint-mask_image.png"));
    snprintf(small_mask, sizeof small_mask, "%s", expected_file("img2img_euler_nonsquare-image.png"));
    const char *out = tmp("bad.png");
    int rc;
    const char *a1[] = {"-m", model, "--init-image", tmp("no-such-image.png"), "-o", out, "x", NULL};
    rc = tool_run_args("gen", a1);
    expect_error("unreadable init image", rc, "no-such-image.png");
    const char *a2[] = {"-m", model, "--mask", mask, "-o", out, "x", NULL};
    rc = tool_run_args("gen", a2);
    expect_error("--mask without --init-image", rc, "--init-image");
    const char *a3[] = {"-m", model, "--init-image", image, "--strength", "1.5", "-o", out, "x", NULL};
    rc = tool_run_args("gen", a3);
    expect_error("--strength 1.5", rc, "strength");
    const char *a4[] = {"-m", model, "--init-image", image, "--mask", small_mask, "-o", out, "x", NULL};
    rc = tool_run_args("gen", a4);
    expect_error("mask of another size", rc, "same size");
    const char *a5[] = {"-m", model, "--init-image", image, "--mask", tmp("no-such-mask.png"), "-o", out, "x", NULL};
    rc = tool_run_args("gen", a5);
    expect_error("unreadable mask", rc, "no-such-mask.png");
    img_run_free(&ir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-img2img-cases-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        every_scheduler(p);
        batch(p);
        sizes(p);
        bad_inputs(p);
        sd_pipeline_free(p);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
