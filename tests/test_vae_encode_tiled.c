/* Tiled VAE encoding (vae_encode_tiled) against the untiled encode, which test_vae holds to
 * diffusers, and the tiled engine's margins (vae_tiled.h). The rule for latents is the fixtures'
 * for a single VAE call: relative L2 error below 1e-5 (tests/fixtures/README.md). Sizes that need
 * several tiles, odd sizes, an odd band, no band, a batch, both VAE layouts (SD's with quant_conv,
 * SD3's 16 channels without), nothing stored and everything stored, and the pipeline's
 * image-to-image through tiles. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../include/sd.h"
#include "../vae/vae.h"
#include "../vae/vae_tiled.h"
#include "test.h"

static vae *load(const char *rel) {
    vae *m = NULL;
    sd_status st = vae_load(&m, fixture(rel), NULL);
    CHECK(st == SD_OK, "vae_load(%s, NULL): %s", rel, sd_last_error());
    return st == SD_OK ? m : NULL;
}

/* A picture with edges, gradients and flat areas in [-1, 1] (its statistics vary across the
 * image, which is what tile-local group norms would get wrong). */
static float *picture(int n, int H, int W) {
    float *img = malloc((size_t)n * H * W * 3 * sizeof *img);
    for (int b = 0; b < n; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float *p = img + (((size_t)b * H + y) * W + x) * 3;
                p[0] = (float)x / W * 2 - 1;
                p[1] = y < H / 3 ? 0.9f : (float)y / H - 0.5f;
                p[2] = ((x / 24 + y / 20 + b) % 2) ? 0.7f : -0.8f;
            }
    return img;
}

static double rel_err(const float *got, const float *want, size_t n, double *maxd) {
    double d2 = 0, w2 = 0;
    *maxd = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        d2 += d * d, w2 += (double)want[i] * want[i];
        if (fabs(d) > *maxd) *maxd = fabs(d);
    }
    return sqrt(d2 / (w2 > 0 ? w2 : 1));
}

/* Tiled against untiled, nothing stored and everything stored: mean and logvar within the
 * fixtures' 1e-5 relative L2. */
static void compare(vae *m, const float *img, int n, int H, int W, int tile, int overlap,
                    const char *what) {
    const int f = vae_scale_factor(m), l = vae_get_config(m)->latent_channels;
    const size_t nl = (size_t)n * (H / f) * (W / f) * l;
    float *mean = malloc(nl * sizeof *mean), *lv = malloc(nl * sizeof *lv);
    float *tm = malloc(nl * sizeof *tm), *tl = malloc(nl * sizeof *tl);
    CHECK_OK(vae_encode(m, img, n, H, W, mean, lv));
    for (int pass = 0; pass < 2; pass++) {
        const size_t limit = pass ? (size_t)1 << 40 : 0;
        sd_status st = vae_encode_tiled(m, img, n, H, W, tile, overlap, limit, tm, tl);
        CHECK(st == SD_OK, "%s: %s", what, sd_last_error());
        if (st != SD_OK) continue;
        double dm, dl;
        const double rm = rel_err(tm, mean, nl, &dm), rl = rel_err(tl, lv, nl, &dl);
        const bool ok = rm < 1e-5 && rl < 1e-5;
        printf("%s %s: image %dx%d x%d, tile %d overlap %d, %s: mean rel L2 %.2g (max %.2g), "
               "logvar rel L2 %.2g (max %.2g)\n",
               ok ? "ok  " : "FAIL", what, W, H, n, tile, overlap,
               pass ? "stored" : "nothing stored", rm, dm, rl, dl);
        CHECK(ok, "%s: tiled encode off by %g / %g", what, rm, rl);
    }
    free(mean), free(lv), free(tm), free(tl);
}

static void test_encode(void) {
    vae *m = load("sd15-tiny/pipeline/vae");
    if (!m) return;
    float *img = picture(1, 192, 128);
    /* 3 x 2 tiles of 8 latent pixels on a 24 x 16 latent: pieces ending inside the image on
     * every side, corners where four tiles meet. */
    compare(m, img, 1, 192, 128, 8, 2, "sd15 picture");
    /* Sizes the tiles do not divide, an odd band. */
    free(img);
    img = picture(1, 88, 104);
    compare(m, img, 1, 88, 104, 5, 3, "sd15 picture, odd sizes");
    /* A tile covering the latent is the untiled encode itself. */
    float a[11 * 13 * 4], b[11 * 13 * 4], la[11 * 13 * 4], lb[11 * 13 * 4];
    CHECK_OK(vae_encode(m, img, 1, 88, 104, a, la));
    CHECK_OK(vae_encode_tiled(m, img, 1, 88, 104, 13, 4, 0, b, lb));
    CHECK(!memcmp(a, b, sizeof a) && !memcmp(la, lb, sizeof la),
          "a tile as large as the latent encodes untiled");
    /* Impossible tilings and sizes are refused, naming the argument. */
    sd_status st = vae_encode_tiled(m, img, 1, 88, 104, 0, 0, 0, b, lb);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "tile 0"), "tile 0: %s", sd_last_error());
    st = vae_encode_tiled(m, img, 1, 88, 104, 6, 6, 0, b, lb);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "overlap 6"), "overlap = tile: %s",
          sd_last_error());
    st = vae_encode_tiled(m, img, 1, 86, 104, 6, 1, 0, b, lb);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "multiples of 8"), "side 86: %s",
          sd_last_error());
    free(img);
    vae_free(m);

    m = load("sd3-tiny/pipeline/vae"); /* 16 channels, no quant_conv; a batch; no band */
    if (!m) return;
    img = picture(2, 64, 96);
    compare(m, img, 2, 64, 96, 6, 0, "sd3 pictures, batch 2, no blending band");
    free(img);
    vae_free(m);
}

/* The engine itself on both tiled parts: pieces with the computed margin give the one-piece
 * result (within float reordering; bit for bit here); one latent pixel less and the pixels near
 * the tile borders change, so the margins are tight and a short one would be caught. No blending
 * band: it would widen the last segment's margin. */
static void test_margins(void) {
    vae *m = load("sd15-tiny/pipeline/vae");
    if (!m) return;
    const int h = 16, w = 24;
    for (int dec = 0; dec < 2; dec++) {
        vt_net n;
        dec ? vt_decoder_net(m, &n) : vt_encoder_net(m, &n);
        const vt_op *first = &n.ops[0], *last = &n.ops[n.n_ops - 1];
        const size_t nin = (size_t)h * first->s_in * w * first->s_in * first->cin;
        const size_t nout = (size_t)h * last->s_out * w * last->s_out * last->cout;
        float *in = malloc(nin * sizeof *in), *want = malloc(nout * sizeof *want);
        float *got = malloc(nout * sizeof *got);
        fill_random(in, nin, 11);
        const vt_plan one = {.n_seg = 1, .cut = {0, n.n_ops}};
        CHECK_OK(vt_run(m, &n, &one, h, w, w, 0, in, want, "test"));
        for (int stored = 0; stored < 2; stored++) {
            vt_plan p = one;
            if (stored) vt_plan_choose(&n, h, w, 8, 0, (size_t)1 << 40, &p);
            for (int delta = 0; delta >= -1; delta--) {
                n.margin_delta = delta;
                CHECK_OK(vt_run(m, &n, &p, h, w, 8, 0, in, got, "test"));
                double maxd;
                const double r = rel_err(got, want, nout, &maxd);
                printf("%s tiled part, %d segment(s), margin %+d: rel L2 %.2g, max %.2g\n",
                       dec ? "decoder" : "encoder", p.n_seg, delta, r, maxd);
                /* One pixel short, the decoder's whole tiled part in one segment is off by only
                 * 1e-7 at most (the far edge of its reach, 50 layers of pixels deep, carries little
                 * of the error): too close to float reordering to require. */
                const bool whole_decoder = dec && p.n_seg == 1;
                CHECK(delta == 0 ? r < 1e-6 : whole_decoder || r > 1e-6,
                      "%s, %d segments, margin %+d: rel L2 %g", dec ? "decoder" : "encoder",
                      p.n_seg, delta, r);
            }
            n.margin_delta = 0;
            CHECK(!stored || p.n_seg > 1, "an unlimited budget stores activations (%d segments)",
                  p.n_seg);
            CHECK(!stored || vt_plan_cost(&n, &p, h, w, 8, 2) < vt_plan_cost(&n, &one, h, w, 8, 2),
                  "storing activations costs fewer multiply-adds");
        }
        free(in), free(want), free(got);
    }
    vae_free(m);
}

/* vae_auto_tile_encode: untiled under the limit; over it a tile whose scratch fits. */
static void test_auto(void) {
    vae *m = load("sd15-tiny/pipeline/vae");
    if (!m) return;
    const int H = 320, W = 320;
    const size_t untiled = vae_encode_scratch_bytes(m, H, W, 0, 0);
    const size_t t20 = vae_encode_scratch_bytes(m, H, W, 20, 5);
    printf("encode 320x320 scratch: untiled %zu, tiles of 20 %zu\n", untiled, t20);
    CHECK(t20 < untiled, "tiles take less scratch");
    CHECK(vae_auto_tile_encode(m, H, W, untiled) == 0, "auto: untiled when it fits exactly");
    const int tile = vae_auto_tile_encode(m, H, W, t20);
    CHECK(tile >= VAE_MIN_AUTO_TILE && tile <= 20 &&
              vae_encode_scratch_bytes(m, H, W, tile, tile / 4) <= t20,
          "auto under tiles of 20's scratch: %d", tile);
    vae_free(m);
    vae *d = NULL;
    CHECK_OK(vae_load_opt(&d, fixture("sd15-tiny/pipeline/vae"), false, NULL));
    if (d) {
        CHECK(vae_encode_scratch_bytes(d, H, W, 0, 0) == 0 && vae_auto_tile_encode(d, H, W, 1) == 0,
              "no encoder: nothing to tile");
        vae_free(d);
    }
}

/* Image to image through the pipeline with the VAE tiled both ways (encode and decode in tiles
 * of 8 latent pixels) against off: within one 8-bit level. */
static void test_pipeline(void) {
    const int side = 128;
    sd_pipeline *p = NULL;
    if (sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL) != SD_OK) {
        CHECK(0, "sd_pipeline_load: %s", sd_last_error());
        return;
    }
    sd_image init = {.width = side, .height = side};
    init.rgb = malloc((size_t)side * side * 3);
    for (int i = 0; i < side * side * 3; i++)
        init.rgb[i] = (uint8_t)((i * 7 + (i / (side * 3)) * 3) & 255);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube";
    g.width = g.height = side;
    g.steps = 2;
    g.seed = 5;
    g.init_image = &init;
    g.strength = 0.6;
    sd_result off = {0}, tiled = {0};
    g.vae_tile = -1;
    CHECK_OK(sd_generate(p, &g, &off));
    g.vae_tile = 8;
    CHECK_OK(sd_generate(p, &g, &tiled));
    if (off.n_images == 1 && tiled.n_images == 1) {
        const size_t n = (size_t)side * side * 3;
        int maxd = 0;
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) {
            const int d = abs((int)off.images[0].rgb[i] - (int)tiled.images[0].rgb[i]);
            differ += d > 0;
            if (d > maxd) maxd = d;
        }
        printf("img2img, VAE in tiles of 8 vs off: %zu of %zu values differ, max %d\n", differ, n,
               maxd);
        CHECK(maxd <= 1 && differ * 1000 <= n, "tiled img2img image %d levels off", maxd);
    }
    sd_result_free(&off), sd_result_free(&tiled);
    free(init.rgb);
    sd_pipeline_free(p);
}

int main(void) {
    test_encode();
    test_margins();
    test_auto();
    test_pipeline();
    return test_summary();
}
