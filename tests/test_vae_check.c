/* bin/vae-check as a user runs it:
 *
 *  - decoding: sd15-tiny/expected/vae.safetensors's latents (--raw, what vae.decode was given)
 *    against diffusers' decode of them, and the final latents of recorded runs (latents_steps[-1],
 *    scaled as the pipeline leaves them: SD 1.x, a batch, SD 2.x, SD3's 16 channels with
 *    shift_factor) against the runs' images: 8-bit values within one level on >= 99.9%, never
 *    more than two apart; F16 and BF16 latents read exactly; a `gen --save-latents` file decodes
 *    to gen's own image; --tile stays within one level of the untiled decode;
 *  - the round trip: the printed PSNR and SSIM against figures computed here from the written
 *    recon.png (PSNR directly, SSIM by a plain direct-window implementation), and recon.png
 *    against the library's encode (posterior mean) + decode;
 *  - --reference / --min-psnr exit codes, and the errors: missing tensor, wrong channel count or
 *    rank, a file that is not safetensors, sizes the VAE cannot take, bad command lines. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "../vae/vae.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* Copies of fixture paths (fixture() reuses one buffer). */
static char sd15[512], sd2v[512], sd3[512];

/* got (8-bit image file) against want (NHWC floats in [0, 1], the fixtures' `image`). */
static void match_image(const char *what, const char *path, const float *want, int w, int h) {
    sd_image got;
    if (image_read(path, &got) != SD_OK) {
        CHECK(0, "%s: %s", what, sd_last_error());
        return;
    }
    const size_t n = (size_t)w * h * 3;
    int maxd = 0;
    size_t differ = 0, beyond = 0;
    const int size_ok = got.width == w && got.height == h;
    for (size_t k = 0; size_ok && k < n; k++) {
        const int d = abs((int)got.rgb[k] - (int)rintf(want[k] * 255.0f));
        differ += d > 0, beyond += d > 1;
        if (d > maxd) maxd = d;
    }
    const int ok = size_ok && beyond * 1000 <= n && maxd <= 2;
    printf("%s %s: %dx%d, %zu of %zu values differ (%zu by more than one), max %d\n",
           ok ? "ok  " : "FAIL", what, got.width, got.height, differ, n, beyond, maxd);
    CHECK(ok, "%s: decoded image differs from the reference", what);
    image_free(&got);
}

/* Two image files: the largest difference (-1 when unreadable or of different sizes). */
static int max_diff(const char *a_path, const char *b_path) {
    sd_image a, b;
    int maxd = -1;
    if (image_read(a_path, &a) != SD_OK) return -1;
    if (image_read(b_path, &b) == SD_OK) {
        if (a.width == b.width && a.height == b.height) {
            maxd = 0;
            for (size_t k = 0; k < (size_t)a.width * a.height * 3; k++)
                if (abs((int)a.rgb[k] - (int)b.rgb[k]) > maxd) maxd = abs((int)a.rgb[k] - (int)b.rgb[k]);
        }
        image_free(&b);
    }
    image_free(&a);
    return maxd;
}

static void write_latents(const char *path, const char *name, st_dtype dtype, const void *data,
                          int n, int c, int h, int w) {
    st_entry e = {name, dtype, 4, {n, c, h, w}, data};
    CHECK_OK(st_write(path, &e, 1, NULL, 0));
}

/* vae.decode(latents) recorded by diffusers, 16x24 latents. */
static void test_direct_decode(void) {
    const char *file = "sd15-tiny/expected/vae.safetensors";
    int64_t ds[8];
    float *dec = fixture_tensor(file, "decoded", ds, NULL); /* NCHW in about [-1, 1] */
    char latents[600];
    snprintf(latents, sizeof latents, "%s", fixture(file));
    int rc = tool_run("vae-check", "-m", sd15, "--latents", latents, "--raw", "-o", tmp("direct.png"), "-q", NULL);
    CHECK(rc == 0 && tool_output[0] == '\0', "decode vae.safetensors: exit %d: %s", rc, tool_output);
    if (dec && rc == 0) {
        const int h = (int)ds[2], w = (int)ds[3];
        float *nhwc = malloc((size_t)h * w * 3 * sizeof *nhwc);
        nchw_to_nhwc(dec, nhwc, 1, 3, h, w);
        for (size_t k = 0; k < (size_t)h * w * 3; k++) { /* as diffusers' postprocess */
            const float v = nhwc[k] * 0.5f + 0.5f;
            nhwc[k] = v < 0 ? 0 : v > 1 ? 1 : v;
        }
        match_image("vae.decode of vae.safetensors latents (--raw)", tmp("direct.png"), nhwc, w, h);
        free(nhwc);

        /* Tiles of 8 latent pixels (2 x 3 of them) against the untiled decode. */
        rc = tool_run("vae-check", "-m", sd15, "--latents", latents, "--raw", "--tile", "8",
                      "--tile-overlap", "2", "-o", tmp("tiled.png"), "-q", NULL);
        const int d = max_diff(tmp("tiled.png"), tmp("direct.png"));
        printf("%s --tile 8: largest difference from the untiled decode %d\n", d >= 0 && d <= 1 ? "ok  " : "FAIL", d);
        CHECK(rc == 0 && d >= 0 && d <= 1, "--tile 8: exit %d, max difference %d: %s", rc, d, tool_output);

        /* --tile auto under a 1 MB limit: the smallest tiles, said on stderr, within one level. */
        setenv("SD_VAE_TILE_LIMIT_MB", "1", 1);
        rc = tool_run("vae-check", "-m", sd15, "--latents", latents, "--raw", "--tile", "auto", "-o",
                      tmp("auto.png"), NULL);
        const int da = max_diff(tmp("auto.png"), tmp("direct.png"));
        printf("%s --tile auto (1 MB limit): largest difference from the untiled decode %d\n",
               da >= 0 && da <= 1 ? "ok  " : "FAIL", da);
        CHECK(rc == 0 && da >= 0 && da <= 1 && strstr(tool_output, "limit 1 MB: tiles of 16"),
              "--tile auto: exit %d, max difference %d: %s", rc, da, tool_output);
        setenv("SD_VAE_TILE_LIMIT_MB", "abc", 1);
        rc = tool_run("vae-check", "-m", sd15, "--latents", latents, "--raw", "--tile", "auto", "-o",
                      tmp("auto.png"), NULL);
        CHECK(rc == 1 && strstr(tool_output, "SD_VAE_TILE_LIMIT_MB"), "bad limit: exit %d: %s", rc, tool_output);
        unsetenv("SD_VAE_TILE_LIMIT_MB");
    }
    free(dec);
}

/* A run's final latents, as the pipeline leaves them before the VAE, against the run's image. */
static void test_run_latents(const char *model_dir, const char *model, const char *run) {
    char file[256], what[300];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", model, run);
    int64_t ls[8], is[8];
    float *steps = fixture_tensor(file, "latents_steps", ls, NULL); /* [K][B][C][h][w] */
    float *want = fixture_tensor(file, "image", is, NULL);           /* [B][H][W][3] */
    if (!steps || !want) {
        free(steps), free(want);
        return;
    }
    const int n = (int)ls[1], c = (int)ls[2], h = (int)ls[3], w = (int)ls[4];
    const size_t per = (size_t)n * c * h * w;
    const float *last = steps + (size_t)(ls[0] - 1) * per;
    write_latents(tmp("run.safetensors"), "latents", ST_F32, last, n, c, h, w);
    int rc = tool_run("vae-check", "-m", model_dir, "--latents", tmp("run.safetensors"), "-o",
                      tmp("run.png"), NULL);
    CHECK(rc == 0, "%s/%s: exit %d: %s", model, run, rc, tool_output);
    for (int b = 0; b < n && rc == 0; b++) {
        char name[32];
        snprintf(name, sizeof name, n > 1 ? "run-%d.png" : "run.png", b);
        snprintf(what, sizeof what, "%s/%s final latents (%d channels) image %d", model, run, c, b);
        match_image(what, tmp(name), want + (size_t)b * is[1] * is[2] * 3, (int)is[2], (int)is[1]);
    }
    free(steps), free(want);
}

/* F16 and BF16 files decode exactly like the same (rounded) values stored as F32. */
static void test_half_precision(void) {
    int64_t ls[8];
    float *steps = fixture_tensor("sd15-tiny/expected/euler.safetensors", "latents_steps", ls, NULL);
    if (!steps) return;
    const int c = (int)ls[2], h = (int)ls[3], w = (int)ls[4];
    const size_t n = (size_t)c * h * w;
    const float *last = steps + (size_t)(ls[0] - 1) * n;
    uint16_t *half = malloc(n * sizeof *half);
    float *rounded = malloc(n * sizeof *rounded);
    for (int kind = 0; kind < 2; kind++) {
        for (size_t k = 0; k < n; k++) {
            half[k] = kind ? st_f32_to_bf16(last[k]) : st_f32_to_f16(last[k]);
            rounded[k] = kind ? st_bf16_to_f32(half[k]) : st_f16_to_f32(half[k]);
        }
        /* two tensors in one file, the half one picked by name */
        st_entry e[2] = {{"as_f32", ST_F32, 4, {1, c, h, w}, rounded},
                         {"lat16", kind ? ST_BF16 : ST_F16, 4, {1, c, h, w}, half}};
        CHECK_OK(st_write(tmp("half.safetensors"), e, 2, NULL, 0));
        char spec32[700], spec16[700];
        snprintf(spec32, sizeof spec32, "%s:as_f32", tmp("half.safetensors"));
        snprintf(spec16, sizeof spec16, "%s:lat16", tmp("half.safetensors"));
        int rc1 = tool_run("vae-check", "-m", sd15, "--latents", spec32, "-o", tmp("h32.png"), "-q", NULL);
        int rc2 = tool_run("vae-check", "-m", sd15, "--latents", spec16, "-o", tmp("h16.png"), "-q", NULL);
        CHECK(rc1 == 0 && rc2 == 0 && max_diff(tmp("h32.png"), tmp("h16.png")) == 0,
              "%s latents decode as their F32 values: %d %d %s", kind ? "BF16" : "F16", rc1, rc2, tool_output);
    }
    free(half), free(rounded), free(steps);
}

/* gen --save-latents output works as it is and gives gen's own image. */
static void test_gen_latents(void) {
    int rc = tool_run("gen", "-m", sd15, "-s", "11", "--steps", "2", "-o", tmp("gen.png"),
                      "--save-latents", tmp("gen.safetensors"), "-q", "a lighthouse", NULL);
    CHECK(rc == 0, "gen: %d %s", rc, tool_output);
    rc = tool_run("vae-check", "-m", sd15, "--latents", tmp("gen.safetensors"), "-o", tmp("gen-vae.png"), "-q", NULL);
    const int d = max_diff(tmp("gen.png"), tmp("gen-vae.png"));
    CHECK(rc == 0 && d == 0, "gen --save-latents through vae-check: exit %d, max difference %d: %s",
          rc, d, tool_output);
}

static double parse_after(const char *key) {
    const char *p = strstr(tool_output, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* SSIM written out directly: the 11x11 window weights w(i)w(j), moments summed per position. */
static double ssim_direct(const sd_image *a, const sd_image *b) {
    double g[11], norm = 0;
    for (int k = 0; k < 11; k++) norm += g[k] = exp(-(k - 5) * (k - 5) / 4.5);
    const double c1 = 6.5025, c2 = 58.5225; /* (0.01 * 255)^2, (0.03 * 255)^2 */
    double total = 0;
    for (int ch = 0; ch < 3; ch++) {
        double sum = 0;
        for (int y = 0; y + 11 <= a->height; y++)
            for (int x = 0; x + 11 <= a->width; x++) {
                double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
                for (int i = 0; i < 11; i++)
                    for (int j = 0; j < 11; j++) {
                        const double wt = g[i] * g[j] / (norm * norm);
                        const size_t at = ((size_t)(y + i) * a->width + x + j) * 3 + ch;
                        const double u = a->rgb[at], v = b->rgb[at];
                        mx += wt * u, my += wt * v, xx += wt * u * u, yy += wt * v * v, xy += wt * u * v;
                    }
                const double vx = xx - mx * mx, vy = yy - my * my, cxy = xy - mx * my;
                sum += (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            }
        total += sum / ((double)(a->height - 10) * (a->width - 10));
    }
    return total / 3;
}

static void test_round_trip(void) {
    char input[600];
    snprintf(input, sizeof input, "%s", fixture("sd15-tiny/expected/img2img-image.png"));
    int rc = tool_run("vae-check", "-m", sd15, "--image", input, "-o", tmp("recon.png"), "-q", NULL);
    const double psnr = parse_after("psnr="), ssim = parse_after("ssim=");
    CHECK(rc == 0 && isfinite(psnr) && isfinite(ssim), "round trip: exit %d: %s", rc, tool_output);
    sd_image in, recon;
    if (rc != 0 || image_read(input, &in) != SD_OK) return;
    if (image_read(tmp("recon.png"), &recon) != SD_OK) {
        CHECK(0, "recon.png: %s", sd_last_error());
        image_free(&in);
        return;
    }
    double sq = 0;
    const size_t n = (size_t)in.width * in.height * 3;
    for (size_t k = 0; k < n && recon.width == in.width && recon.height == in.height; k++)
        sq += ((double)in.rgb[k] - recon.rgb[k]) * ((double)in.rgb[k] - recon.rgb[k]);
    const double want_psnr = 10 * log10(255.0 * 255.0 * (double)n / sq), want_ssim = ssim_direct(&recon, &in);
    printf("%s round trip: printed psnr %.4f ssim %.6f, computed from recon.png %.6f %.8f\n",
           fabs(psnr - want_psnr) < 1e-4 && fabs(ssim - want_ssim) < 1e-6 ? "ok  " : "FAIL", psnr,
           ssim, want_psnr, want_ssim);
    CHECK(fabs(psnr - want_psnr) < 1e-4, "round-trip PSNR %.4f, computed %.6f", psnr, want_psnr);
    CHECK(fabs(ssim - want_ssim) < 1e-6, "round-trip SSIM %.6f, computed %.8f", ssim, want_ssim);

    /* recon.png is the library's encode (posterior mean) then decode. */
    vae *m = NULL;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/vae", sd15);
    CHECK_OK(vae_load(&m, dir, NULL));
    if (m) {
        const int W = in.width, H = in.height;
        float *x = malloc(n * sizeof *x), *mean = malloc((size_t)W * H / 16 * sizeof *mean);
        float *logvar = malloc((size_t)W * H / 16 * sizeof *logvar);
        uint8_t *rgb = malloc(n);
        image_to_float(in.rgb, W, H, x);
        CHECK_OK(vae_encode(m, x, 1, H, W, mean, logvar));
        CHECK_OK(vae_decode(m, mean, 1, H / 8, W / 8, x));
        image_from_float(x, W, H, rgb);
        CHECK(!memcmp(rgb, recon.rgb, n), "recon.png is decode(encode(image).mean)");
        free(x), free(mean), free(logvar), free(rgb);
        vae_free(m);
    }

    /* --min-psnr on the round trip, and on a reference. */
    char limit[32];
    snprintf(limit, sizeof limit, "%.3f", want_psnr + 1);
    rc = tool_run("vae-check", "-m", sd15, "--image", input, "--min-psnr", limit, "-q", NULL);
    CHECK(rc == 1 && strstr(tool_output, "--min-psnr"), "round trip under --min-psnr: %d %s", rc, tool_output);
    snprintf(limit, sizeof limit, "%.3f", want_psnr - 1);
    rc = tool_run("vae-check", "-m", sd15, "--image", input, "--min-psnr", limit, "-q", NULL);
    CHECK(rc == 0, "round trip over --min-psnr: %d %s", rc, tool_output);
    rc = tool_run("vae-check", "-m", sd15, "--image", input, "--reference", tmp("recon.png"), "-q", NULL);
    CHECK(rc == 0 && strstr(tool_output, "reference psnr=inf ssim=1.000000"),
          "a reference equal to the decode: %d %s", rc, tool_output);
    rc = tool_run("vae-check", "-m", sd15, "--image", input, "--reference", input, "-q", NULL);
    CHECK(rc == 1 && fabs(parse_after("reference psnr=") - want_psnr) < 1e-4,
          "a reference under the default 30 dB exits 1: %d %s", rc, tool_output);
    rc = tool_run("vae-check", "-m", sd15, "--image", input, "--reference", input, "--min-psnr", "5", "-q", NULL);
    CHECK(rc == 0, "--min-psnr 5 admits it: %d %s", rc, tool_output);
    image_free(&in), image_free(&recon);
}

/* exit status and a one-line error containing `needle` */
static void expect_error(const char *what, int rc, int want_rc, const char *needle) {
    CHECK(rc == want_rc && tool_output_lines() == 1 && strstr(tool_output, needle),
          "%s: exit %d (want %d), output: %s", what, rc, want_rc, tool_output);
}

static void test_errors(void) {
    char vae_file[600], spec[700];
    snprintf(vae_file, sizeof vae_file, "%s", fixture("sd15-tiny/expected/vae.safetensors"));
    snprintf(spec, sizeof spec, "%s:nope", vae_file);
    int rc = tool_run("vae-check", "-m", sd15, "--latents", spec, "-o", tmp("e.png"), NULL);
    expect_error("missing tensor", rc, 1, "'nope'");
    CHECK(strstr(tool_output, "'latents'") != NULL, "the error lists the tensors: %s", tool_output);
    snprintf(spec, sizeof spec, "%s:image", vae_file);
    rc = tool_run("vae-check", "-m", sd15, "--latents", spec, "-o", tmp("e.png"), NULL);
    expect_error("wrong channel count", rc, 1, "3 channels");
    rc = tool_run("vae-check", "-m", sd3, "--latents", vae_file, "-o", tmp("e.png"), NULL);
    expect_error("4-channel latents for a 16-channel VAE", rc, 1, "takes 16");
    float three[24] = {0};
    st_entry e = {"latents", ST_F32, 3, {4, 2, 3}, three};
    CHECK_OK(st_write(tmp("rank3.safetensors"), &e, 1, NULL, 0));
    rc = tool_run("vae-check", "-m", sd15, "--latents", tmp("rank3.safetensors"), NULL);
    expect_error("3-dimensional latents", rc, 1, "NCHW");
    char json[600];
    snprintf(json, sizeof json, "%s", fixture("sd15-tiny/expected/euler.json"));
    rc = tool_run("vae-check", "-m", sd15, "--latents", json, NULL);
    expect_error("not a safetensors file", rc, 1, "euler.json");
    rc = tool_run("vae-check", "-m", sd15, "--latents", tmp("none.safetensors"), NULL);
    expect_error("missing file", rc, 1, "none.safetensors");
    rc = tool_run("vae-check", "-m", tmp("no-model"), "--latents", vae_file, NULL);
    expect_error("missing model", rc, 1, "no-model");
    sd_image odd;
    CHECK_OK(image_alloc(&odd, 100, 60));
    CHECK_OK(image_write(tmp("odd.png"), &odd, NULL, 0, 90));
    image_free(&odd);
    rc = tool_run("vae-check", "-m", sd15, "--image", tmp("odd.png"), NULL);
    expect_error("image size not a multiple of 8", rc, 1, "multiple of 8");
    rc = tool_run("vae-check", "-m", sd15, "--latents", vae_file, "--raw", "--reference", tmp("odd.png"), "-o", tmp("e.png"), "-q", NULL);
    expect_error("reference of another size", rc, 1, "odd.png");
    rc = tool_run("vae-check", "-m", sd15, "--latents", vae_file, "--image", tmp("odd.png"), NULL);
    expect_error("--latents and --image", rc, 2, "exactly one");
    rc = tool_run("vae-check", "-m", sd15, "--latents", vae_file, "--tile", "4", "--tile-overlap", "4", NULL);
    expect_error("overlap as large as the tile", rc, 2, "--tile-overlap");
    rc = tool_run("vae-check", "-m", sd15, "--latents", vae_file, "--tile", "auto", "--tile-overlap", "2", NULL);
    expect_error("an overlap with --tile auto", rc, 2, "--tile-overlap");
    rc = tool_run("vae-check", "-m", sd15, "--latents", vae_file, "--tile", "big", NULL);
    expect_error("--tile big", rc, 2, "auto");
    rc = tool_run("vae-check", "-m", sd15, "--latent", vae_file, NULL);
    expect_error("unknown option", rc, 2, "--latent");
    unsetenv("SD_MODEL");
    rc = tool_run("vae-check", "--latents", vae_file, NULL);
    expect_error("no model", rc, 2, "SD_MODEL");
    rc = tool_run("vae-check", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--latents") && strstr(tool_output, "--raw") &&
              strstr(tool_output, "--min-psnr") && strstr(tool_output, "--tile"), "--help");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-vae-check-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    snprintf(sd15, sizeof sd15, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(sd2v, sizeof sd2v, "%s", fixture("sd2v-tiny/pipeline"));
    snprintf(sd3, sizeof sd3, "%s", fixture("sd3-tiny/pipeline"));
    test_direct_decode();
    test_run_latents(sd15, "sd15-tiny", "euler");
    test_run_latents(sd15, "sd15-tiny", "batch2");
    test_run_latents(sd2v, "sd2v-tiny", "euler_v_zsnr");
    test_run_latents(sd3, "sd3-tiny", "flow_euler");
    test_half_precision();
    test_gen_latents();
    test_round_trip();
    test_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
