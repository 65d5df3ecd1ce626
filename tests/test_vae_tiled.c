/* Tiled VAE decoding (vae_decode_tiled) against the untiled decode, which test_vae holds to
 * diffusers: at sizes that need several tiles, on latents with structure (an encoded picture) and
 * on noise, with odd sizes, an odd blending band, no band, a batch, both VAE layouts (SD's with
 * post_quant_conv, SD3's 16 channels without), and either thread count. The rule is the issue's:
 * the 8-bit pixels stay within one level of the untiled ones. Sizes are small to keep the suite
 * fast; the example, 64x48 latents in tiles of 16 overlapping by 4, measured the same way
 * gives 16 (noise) and 17 (encoded picture) of 589824 values one level apart, none further. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/image.h"
#include "../core/threads.h"
#include "../include/sd.h"
#include "../pipeline/pipeline_internal.h"
#include "../vae/vae.h"
#include "../vae/vae_internal.h"
#include "test.h"

static vae *load(const char *rel) {
    vae *m = NULL;
    sd_status st = vae_load(&m, fixture(rel), NULL);
    CHECK(st == SD_OK, "vae_load(%s, NULL): %s", rel, sd_last_error());
    return st == SD_OK ? m : NULL;
}

/* A picture with edges, gradients and flat areas, encoded: latents with the statistics of real
 * ones (they vary across the image, which is what breaks tile-local group norms). */
static float *structured_latents(vae *m, int n, int h, int w) {
    const int f = vae_scale_factor(m), H = h * f, W = w * f, l = vae_get_config(m)->latent_channels;
    float *img = malloc((size_t)n * H * W * 3 * sizeof *img);
    float *mean = malloc((size_t)n * h * w * l * sizeof *mean), *logvar = malloc((size_t)n * h * w * l * sizeof *logvar);
    for (int b = 0; b < n; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float *p = img + (((size_t)b * H + y) * W + x) * 3;
                p[0] = (float)x / W * 2 - 1;
                p[1] = y < H / 3 ? 0.9f : (float)y / H - 0.5f;
                p[2] = ((x / 24 + y / 20 + b) % 2) ? 0.7f : -0.8f;
            }
    CHECK_OK(vae_encode(m, img, n, H, W, mean, logvar));
    free(img);
    free(logvar);
    return mean;
}

/* Tiled against untiled: every 8-bit value within one level (and at most 0.1% of them off).
 * Returns the tiled decode (malloc'd). */
static float *compare(vae *m, const float *z, int n, int h, int w, int tile, int overlap,
                      const char *what) {
    const int f = vae_scale_factor(m), oc = vae_get_config(m)->out_channels;
    const size_t npix = (size_t)n * h * f * w * f * oc;
    float *want = malloc(npix * sizeof *want), *got = malloc(npix * sizeof *got);
    uint8_t *a = malloc(npix), *b = malloc(npix);
    CHECK_OK(vae_decode(m, z, n, h, w, want));
    /* With nothing stored (every statistics pass from the latent's resolution), then with every
     * activation the plan wants stored (passes from the last stored one). */
    for (int pass = 0; pass < 2; pass++) {
    const size_t limit = pass ? (size_t)1 << 40 : 0;
    sd_status st = vae_decode_tiled(m, z, n, h, w, tile, overlap, limit, got);
    CHECK(st == SD_OK, "%s: %s", what, sd_last_error());
    if (st == SD_OK) {
        image_from_float(want, (int)(npix / 3), 1, a);
        image_from_float(got, (int)(npix / 3), 1, b);
        int maxd = 0;
        size_t differ = 0;
        double maxf = 0;
        for (size_t i = 0; i < npix; i++) {
            const int d = abs((int)a[i] - (int)b[i]);
            differ += d > 0;
            if (d > maxd) maxd = d;
            if (fabs(got[i] - want[i]) > maxf) maxf = fabs(got[i] - want[i]);
        }
        const int ok = maxd <= 1 && differ * 1000 <= npix;
        printf("%s %s: latent %dx%d x%d, tile %d overlap %d, %s: %zu of %zu values differ, max %d "
               "level(s); max float difference %.3g\n", ok ? "ok  " : "FAIL", what, w, h, n, tile,
               overlap, pass ? "stored" : "nothing stored", differ, npix, maxd, maxf);
        CHECK(ok, "%s: tiled decode %d levels off", what, maxd);
    }
    }
    free(want), free(a), free(b);
    return got;
}

static void test_sd15(void) {
    vae *m = load("sd15-tiny/pipeline/vae");
    if (!m) return;
    /* 2 x 2 tiles of 8x8 latent pixels (64x64 image pixels) over a 128x128 image: edges and a
     * corner where four tiles meet. */
    float *z = structured_latents(m, 1, 16, 16);
    free(compare(m, z, 1, 16, 16, 8, 2, "sd15 encoded picture"));

    /* A tile covering the latent is the untiled decode itself. */
    const size_t npix = (size_t)16 * 8 * 16 * 8 * 3;
    float *a = malloc(npix * sizeof *a), *b = malloc(npix * sizeof *b);
    CHECK_OK(vae_decode(m, z, 1, 16, 16, a));
    CHECK_OK(vae_decode_tiled(m, z, 1, 16, 16, 16, 4, 0, b));
    CHECK(!memcmp(a, b, npix * sizeof *a), "a tile as large as the latent decodes untiled");
    free(z);

    /* Sizes that the tiles do not divide, an odd blending band, noise. */
    const int h = 11, w = 13;
    z = malloc((size_t)h * w * 4 * sizeof *z);
    fill_random(z, (size_t)h * w * 4, 5);
    for (size_t i = 0; i < (size_t)h * w * 4; i++) z[i] *= 2.5f;
    free(compare(m, z, 1, h, w, 6, 3, "sd15 noise, odd sizes"));
    /* 3 x 2 tiles of 8 on a 24 x 16 latent: pieces that end inside the image on every side (the
     * statistics passes' narrower than the pixel pass's). */
    float *z2 = malloc((size_t)24 * 16 * 4 * sizeof *z2);
    fill_random(z2, (size_t)24 * 16 * 4, 6);
    for (size_t i = 0; i < (size_t)24 * 16 * 4; i++) z2[i] *= 2.5f;
    free(compare(m, z2, 1, 24, 16, 8, 2, "sd15 noise, inner pieces"));
    free(z2);

    /* The thread count changes nothing (two tiles side by side). */
    sd_set_threads(1);
    CHECK_OK(vae_decode_tiled(m, z, 1, 8, 13, 7, 2, (size_t)1 << 40, a));
    sd_set_threads(2);
    CHECK_OK(vae_decode_tiled(m, z, 1, 8, 13, 7, 2, (size_t)1 << 40, b));
    sd_set_threads(0);
    CHECK(!memcmp(a, b, (size_t)8 * 8 * 13 * 8 * 3 * sizeof *a),
          "tiled decode: 1 and 2 threads give the same floats");
    free(a), free(b);

    /* Impossible tilings are refused, naming the argument. */
    float dummy[4];
    sd_status st = vae_decode_tiled(m, z, 1, h, w, 0, 0, 0, dummy);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "tile 0"), "tile 0: %s", sd_last_error());
    st = vae_decode_tiled(m, z, 1, h, w, 6, 6, 0, dummy);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "overlap 6"), "overlap = tile: %s", sd_last_error());
    st = vae_decode_tiled(m, z, 1, h, w, 6, -1, 0, dummy);
    CHECK(st == SD_ERR_ARG, "negative overlap: %s", sd_last_error());
    free(z);
    vae_free(m);
}

/* SD3's VAE: 16 latent channels, no post_quant_conv; a batch of two; tiles meeting without a band
 * (overlap 0). */
static void test_sd3(void) {
    vae *m = load("sd3-tiny/pipeline/vae");
    if (!m) return;
    float *z = structured_latents(m, 2, 8, 12);
    free(compare(m, z, 2, 8, 12, 6, 0, "sd3 encoded pictures, batch 2, no blending band"));
    free(z);
    vae_free(m);
}

/* vae_auto_tile: untiled under the limit; over it, the largest tile that fits, and its decode
 * within one level of the untiled one; the limit parameter. */
static void test_auto(void) {
    vae *m = load("sd15-tiny/pipeline/vae");
    if (!m) return;
    const int h = 40, w = 40;
    const size_t untiled = vae_decode_scratch_bytes(m, h, w, 0, 0), t20 = vae_decode_scratch_bytes(m, h, w, 20, 5);
    printf("latent 40x40 scratch: untiled %zu, tiles of 20 %zu\n", untiled, t20);
    CHECK(t20 < untiled, "tiles take less scratch");
    CHECK(vae_auto_tile(m, h, w, untiled) == 0, "auto: untiled when it fits exactly");
    CHECK(vae_auto_tile(m, h, w, (size_t)1 << 40) == 0, "auto: untiled under a large limit");
    int tile = vae_auto_tile(m, h, w, untiled - 1);
    CHECK(tile == 20, "auto with the limit just under the untiled scratch: 2 x 2 tiles, not %d", tile);
    /* The least scratch any tile takes (the whole-latent part sets a floor), then limits under
     * tiles of 20's: a smaller tile that fits, or when none does (the impossible limit 1 always),
     * one within a tenth of the least. */
    size_t least = SIZE_MAX;
    for (int t = VAE_MIN_AUTO_TILE; t < 40; t++) {
        const size_t b = vae_decode_scratch_bytes(m, h, w, t, t / 4);
        if (b < least) least = b;
    }
    const size_t limits[2] = {t20 - 1, 1};
    for (int k = 0; k < 2; k++) {
        tile = vae_auto_tile(m, h, w, limits[k]);
        const size_t b = vae_decode_scratch_bytes(m, h, w, tile, tile / 4);
        CHECK(tile >= VAE_MIN_AUTO_TILE && (b <= limits[k] || (least > limits[k] && b <= least + least / 10)),
              "auto under %zu bytes: tile %d takes %zu (the least %zu)", limits[k], tile, b, least);
    }

    /* The limit parameter (sd_gen_params.vae_tile_limit_mb): 0 is the default, MB otherwise. */
    size_t lim = 0;
    CHECK_OK(vae_auto_tile_limit(0, &lim));
    CHECK(lim == (size_t)VAE_AUTO_TILE_LIMIT_MB << 20, "default limit %zu", lim);
    CHECK_OK(vae_auto_tile_limit(300, &lim));
    CHECK(lim == (size_t)300 << 20, "a limit of 300 MB: %zu", lim);
    sd_status st = vae_auto_tile_limit(-5, &lim);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "-5"), "limit -5: %s", sd_last_error());
    vae_free(m);
}

/* Through the pipeline: --vae-tile auto under a limit that forces tiles gives off's image within
 * one level, and the scratch estimates hold: after the tiled decode (a fresh pipeline) the VAE's
 * arena plus the tiled decode's own buffers fit its estimate; after the untiled one the arena's
 * high-water mark is the untiled estimate. A negative limit is refused. */
static void test_pipeline_auto(void) {
    const int side = 192, lat = side / 8;
    sd_pipeline *p = NULL;
    /* Resident: paging (the default) gives the VAE's arena back after each decode, and its
     * high-water mark with it. */
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.keep_resident = true;
    if (sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp) != SD_OK) {
        CHECK(0, "sd_pipeline_load: %s", sd_last_error());
        return;
    }
    vae *m = p->vae;
    /* In whole MB, from the scratch of 2 x 2 tiles (of VAE_MIN_AUTO_TILE = 16) up. */
    const size_t untiled = vae_decode_scratch_bytes(m, lat, lat, 0, 0);
    const size_t tiled = vae_decode_scratch_bytes(m, lat, lat, 16, 4);
    const size_t limit_mb = (tiled + (1 << 20) - 1) >> 20;
    const int tile = vae_auto_tile(m, lat, lat, limit_mb << 20);
    CHECK(tile == 16 && untiled > limit_mb << 20,
          "a %zu MB limit tiles a %dx%d decode in 2 x 2 (%d; untiled scratch %zu)", limit_mb, side,
          side, tile, untiled);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube";
    g.width = g.height = side;
    g.steps = 1;
    g.seed = 3;
    sd_result off = {0}, aut = {0}, bad = {0};
    g.vae_tile_limit_mb = (int)limit_mb;
    g.vae_tile = 0;
    CHECK_OK(sd_generate(p, &g, &aut));
    const size_t own = (size_t)lat * lat * 16 * 4 + (size_t)side * side * 4; /* low + wsum, at least */
    printf("tiled %d: estimate %zu bytes, arena high water %zu\n", tile, tiled, m->arena.high_water);
    CHECK(m->arena.high_water + own <= tiled, "tiled estimate %zu, arena %zu", tiled, m->arena.high_water);
    g.vae_tile_limit_mb = -1;
    sd_status st = sd_generate(p, &g, &bad);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "tile limit"), "bad limit: %s",
          sd_last_error());
    g.vae_tile = -1;
    CHECK_OK(sd_generate(p, &g, &off));
    printf("untiled: estimate %zu bytes, arena high water %zu\n", untiled, m->arena.high_water);
    CHECK(m->arena.high_water >= untiled - 64 && m->arena.high_water <= untiled + 64,
          "untiled scratch estimate %zu vs arena %zu", untiled, m->arena.high_water);
    if (off.n_images == 1 && aut.n_images == 1) {
        const size_t n = (size_t)side * side * 3;
        int maxd = 0;
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) {
            const int d = abs((int)off.images[0].rgb[i] - (int)aut.images[0].rgb[i]);
            differ += d > 0;
            if (d > maxd) maxd = d;
        }
        printf("pipeline auto (tiles of %d under %zu MB) vs off: %zu of %zu values differ, max %d\n",
               tile, limit_mb, differ, n, maxd);
        CHECK(maxd <= 1 && differ * 1000 <= n, "auto-tiled pipeline image %d levels off", maxd);
    }
    sd_result_free(&off), sd_result_free(&aut), sd_result_free(&bad);
    sd_pipeline_free(p);
}

int main(void) {
    test_sd15();
    test_sd3();
    test_auto();
    test_pipeline_auto();
    return test_summary();
}
