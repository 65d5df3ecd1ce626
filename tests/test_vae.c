/* AutoencoderKL against diffusers: direct decode/encode records, the final image of every
 * text-to-image run (SD1.x, SD2.x and an SD3 VAE with 16 channels, shift factor and no quant convs),
 * legacy attention weight names, and load errors that name the tensor at fault. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../kernels/conv2d.h"
#include "../vae/vae.h"
#include "../vae/vae_internal.h"
#include "test.h"

static const char *SD15_VAE = "sd15-tiny/pipeline/vae";

static vae *load(const char *rel) {
    vae *m = NULL;
    sd_status st = vae_load(&m, fixture(rel), NULL);
    CHECK(st == SD_OK, "vae_load(%s, NULL): %s", rel, sd_last_error());
    return st == SD_OK ? m : NULL;
}

/* Decodes NCHW latents [n][c][h][w] into NCHW images, the layout of the references. */
static float *decode_nchw(vae *m, const float *lat, int n, int c, int h, int w, int *oh, int *ow) {
    const vae_config *cfg = vae_get_config(m);
    const int f = vae_scale_factor(m), co = cfg->out_channels;
    size_t nin = (size_t)n * c * h * w, nout = (size_t)n * co * h * f * w * f;
    float *z = malloc(nin * sizeof *z), *img = malloc(nout * sizeof *img), *out = malloc(nout * sizeof *out);
    nchw_to_nhwc(lat, z, n, c, h, w);
    CHECK_OK(vae_decode(m, z, n, h, w, img));
    nhwc_to_nchw(img, out, n, h * f, w * f, co);
    *oh = h * f;
    *ow = w * f;
    free(z);
    free(img);
    return out;
}

/* sd15-tiny/expected/vae.safetensors: vae.decode(latents) and vae.encode(image).latent_dist. */
static void test_direct(void) {
    const char *file = "sd15-tiny/expected/vae.safetensors";
    vae *m = load(SD15_VAE);
    /* fixture_tensor fills ST_MAX_DIMS entries. */
    int64_t ls[ST_MAX_DIMS], is[ST_MAX_DIMS], ds[ST_MAX_DIMS], ms[ST_MAX_DIMS];
    float *lat = fixture_tensor(file, "latents", ls, NULL);
    float *dec = fixture_tensor(file, "decoded", ds, NULL);
    float *img = fixture_tensor(file, "image", is, NULL);
    float *mean = fixture_tensor(file, "posterior_mean", ms, NULL);
    float *logvar = fixture_tensor(file, "posterior_logvar", NULL, NULL);
    if (!m || !lat || !dec || !img || !mean || !logvar) goto done;

    /* The latents are what vae.decode was given: no scaling_factor applied here. */
    int oh, ow;
    float *got = decode_nchw(m, lat, (int)ls[0], (int)ls[1], (int)ls[2], (int)ls[3], &oh, &ow);
    CHECK(oh == ds[2] && ow == ds[3], "decoded size %dx%d, want %lldx%lld", oh, ow,
          (long long)ds[2], (long long)ds[3]);
    check_rel("sd15 vae.decode (16x24 latent)", got, dec, (size_t)ds[0] * ds[1] * ds[2] * ds[3], 1e-5);
    free(got);

    const int n = (int)is[0], c = (int)is[1], h = (int)is[2], w = (int)is[3];
    const int lc = (int)ms[1], lh = (int)ms[2], lw = (int)ms[3];
    const size_t nl = (size_t)n * lc * lh * lw;
    float *x = malloc((size_t)n * c * h * w * sizeof *x);
    float *gm = malloc(nl * sizeof *gm), *gl = malloc(nl * sizeof *gl), *t = malloc(nl * sizeof *t);
    nchw_to_nhwc(img, x, n, c, h, w);
    CHECK_OK(vae_encode(m, x, n, h, w, gm, gl));
    nhwc_to_nchw(gm, t, n, lh, lw, lc);
    check_rel("sd15 vae.encode posterior mean (128x96 image)", t, mean, nl, 1e-5);
    nhwc_to_nchw(gl, t, n, lh, lw, lc);
    check_rel("sd15 vae.encode posterior logvar", t, logvar, nl, 1e-5);

    /* A second pass reuses the arena and must give the same numbers. */
    float *again = malloc(nl * sizeof *again);
    CHECK_OK(vae_encode(m, x, n, h, w, again, t));
    CHECK(!memcmp(again, gm, nl * sizeof *gm), "second encode identical");
    free(again);
    free(x);
    free(gm);
    free(gl);
    free(t);
done:
    free(lat);
    free(dec);
    free(img);
    free(mean);
    free(logvar);
    vae_free(m);
}

/* The last latents of a run -> unscale -> decode -> (x / 2 + 0.5) clamped, against the run's image
 * (NHWC in [0, 1]); the 8-bit pixels round(v * 255) must agree too. */
static void check_run(vae *m, const char *family, const char *run) {
    char file[256], what[300];
    snprintf(file, sizeof file, "%s-tiny/expected/%s.safetensors", family, run);
    int64_t ls[ST_MAX_DIMS], is[ST_MAX_DIMS];
    float *steps = fixture_tensor(file, "latents_steps", ls, NULL);
    float *want = fixture_tensor(file, "image", is, NULL);
    if (!steps || !want) {
        free(steps);
        free(want);
        return;
    }
    const int n = (int)ls[1], c = (int)ls[2], h = (int)ls[3], w = (int)ls[4];
    const size_t nlat = (size_t)n * c * h * w;
    const float *last = steps + (size_t)(ls[0] - 1) * nlat;
    const int f = vae_scale_factor(m);
    CHECK(is[0] == n && is[1] == h * f && is[2] == w * f && is[3] == 3, "%s: image shape", file);
    const size_t npix = (size_t)n * h * f * w * f * 3;
    float *z = malloc(nlat * sizeof *z), *img = malloc(npix * sizeof *img);
    nchw_to_nhwc(last, z, n, c, h, w);
    vae_unscale_latents(m, z, z, nlat);
    CHECK_OK(vae_decode(m, z, n, h, w, img));
    for (size_t i = 0; i < npix; i++) {
        float v = img[i] * 0.5f + 0.5f;
        img[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    snprintf(what, sizeof what, "%s/%s image (%dx%d, batch %d)", family, run, w * f, h * f, n);
    check_rel(what, img, want, npix, 1e-5);
    size_t differ = 0;
    int maxd = 0;
    for (size_t i = 0; i < npix; i++) {
        int d = abs((int)rintf(img[i] * 255.0f) - (int)rintf(want[i] * 255.0f));
        if (d) differ++;
        if (d > maxd) maxd = d;
    }
    printf("     %s: %zu of %zu 8-bit values differ, by at most %d\n", what, differ, npix, maxd);
    CHECK(differ * 1000 <= npix && maxd <= 1, "%s: %zu values differ (max %d)", what, differ, maxd);
    free(z);
    free(img);
    free(steps);
    free(want);
}

static void test_runs(void) {
    static const char *sd15[] = {"batch2", "ddim",  "dpmpp2m",   "dpmpp2m_karras", "euler",
                                 "euler_a", "heun", "lcm_nocfg", "pndm",           "unipc"};
    static const char *sd2v[] = {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v",
                                 "euler_v_zsnr"};
    vae *m = load(SD15_VAE);
    if (m)
        for (size_t i = 0; i < sizeof sd15 / sizeof *sd15; i++) check_run(m, "sd15", sd15[i]);
    vae_free(m);
    m = load("sd2v-tiny/pipeline/vae");
    if (m)
        for (size_t i = 0; i < sizeof sd2v / sizeof *sd2v; i++) check_run(m, "sd2v", sd2v[i]);
    vae_free(m);
}

/* SD3's VAE: 16 latent channels, latents / 1.5305 + 0.0609, no quant_conv / post_quant_conv. */
static void test_sd3(void) {
    vae *m = load("sd3-tiny/pipeline/vae");
    if (!m) return;
    const vae_config *c = vae_get_config(m);
    CHECK(c->latent_channels == 16 && c->has_shift_factor && !c->use_quant_conv &&
              !c->use_post_quant_conv,
          "sd3 vae config: %d channels, shift %d, quant %d/%d", c->latent_channels,
          c->has_shift_factor, c->use_quant_conv, c->use_post_quant_conv);
    float x[2] = {1.0f, -2.0f}, y[2], back[2];
    vae_unscale_latents(m, x, y, 2);
    CHECK(y[0] == 1.0f / 1.5305f + 0.0609f && y[1] == -2.0f / 1.5305f + 0.0609f, "sd3 unscale %g %g",
          y[0], y[1]);
    vae_scale_latents(m, y, back, 2);
    CHECK(fabsf(back[0] - x[0]) < 1e-6f && fabsf(back[1] - x[1]) < 1e-6f, "scale undoes unscale");
    check_run(m, "sd3", "flow_euler");
    vae_free(m);
}

/* The upsampler works in bands of rows (the fixtures' sizes fit in one band): every band count,
 * against nearest upsampling written out whole and the reference convolution. */
static void test_upsample_bands(void) {
    const int c = 8, co = 6, h = 7, w = 5, h2 = 2 * h, w2 = 2 * w;
    nn_conv2d conv = {.s = {c, co, 3, 3, 1, 1, 1, 1, 1}};
    float *ohwi = malloc((size_t)co * 9 * c * sizeof *ohwi);
    conv.b = malloc((size_t)co * sizeof *conv.b);
    fill_random(ohwi, (size_t)co * 9 * c, 21);
    fill_random(conv.b, co, 22);
    /* nn_conv2d holds weights packed for the GEMM engine, as nn_conv2d_load leaves them */
    conv.w = aligned_alloc(64, (conv2d_packed_size(&conv.s) * sizeof *conv.w + 63) & ~(size_t)63);
    conv2d_pack_weights(&conv.s, ohwi, conv.w);
    float *x = malloc((size_t)h * w * c * sizeof *x), *up = malloc((size_t)h2 * w2 * c * sizeof *up);
    float *want = malloc((size_t)h2 * w2 * co * sizeof *want);
    fill_random(x, (size_t)h * w * c, 23);
    for (int y = 0; y < h2; y++)
        for (int xo = 0; xo < w2; xo++)
            memcpy(up + ((size_t)y * w2 + xo) * c, x + ((size_t)(y / 2) * w + xo / 2) * c, c * sizeof *x);
    conv2d_nhwc_ref(&conv.s, up, 1, h2, w2, ohwi, conv.b, want);
    const size_t cap = 4 * (size_t)h2 * w2 * c;
    float *region = malloc(cap * sizeof *region);
    sd_arena arena;
    sd_arena_init(&arena);
    static const int rows[] = {1, 2, 3, 5, 13, 14, 100};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        vae_act a;
        vae_act_init(&a, region, cap, &arena);
        float *in = vae_act_far(&a, (size_t)h * w * c);
        memcpy(in, x, (size_t)h * w * c * sizeof *x);
        vae_act_set(&a, in, (size_t)h * w * c);
        vae_upsample_bands(&conv, &a, h, w, rows[i]);
        char what[64];
        snprintf(what, sizeof what, "upsample 7x5 -> 14x10 in bands of %d rows", rows[i]);
        check_rel(what, a.x, want, (size_t)h2 * w2 * co, 1e-6);
    }
    sd_arena_free(&arena);
    free(region);
    free(x);
    free(up);
    free(want);
    free(ohwi);
    nn_conv2d_free(&conv);
}

/* ---- A modified copy of the sd15 VAE folder, for legacy names and load errors. ---- */

static char tmpdir[64];

typedef enum { EDIT_NONE, EDIT_DROP, EDIT_RESHAPE, EDIT_LEGACY, EDIT_NO_ATTN } edit_kind;

/* The pre-0.14 attention names, written as [c][c][1][1] conv weights. */
static const char *legacy_name(const char *name, char *buf, size_t size) {
    static const char *map[][2] = {{".to_q.", ".query."}, {".to_k.", ".key."},
                                   {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    for (size_t i = 0; i < 4; i++) {
        const char *p = strstr(name, map[i][0]);
        if (p) {
            snprintf(buf, size, "%.*s%s%s", (int)(p - name), name, map[i][1], p + strlen(map[i][0]));
            return buf;
        }
    }
    return name;
}

/* Writes tmpdir/vae: the sd15 config (or `config` when given) and its weights with one edit
 * applied to tensor `target` (or to every attention projection for EDIT_LEGACY). */
static int write_variant(edit_kind kind, const char *target, const char *config) {
    char dir[128], path[192];
    snprintf(dir, sizeof dir, "%s/vae", tmpdir);
    mkdir(dir, 0755);
    st_file f;
    if (st_open(&f, fixture("sd15-tiny/pipeline/vae/diffusion_pytorch_model.safetensors")) != SD_OK) {
        CHECK(0, "open sd15 vae weights: %s", sd_last_error());
        return 0;
    }
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    char (*names)[160] = calloc((size_t)f.n_tensors, sizeof *names);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (kind == EDIT_DROP && !strcmp(t->name, target)) continue;
        if (kind == EDIT_NO_ATTN && strstr(t->name, ".attentions.")) continue;
        st_entry *o = &e[n];
        o->name = t->name;
        o->dtype = t->dtype;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        o->data = t->data;
        if (kind == EDIT_RESHAPE && !strcmp(t->name, target) && t->ndim == 4) {
            o->shape[1] = t->shape[2] * t->shape[3]; /* same bytes, wrong shape */
            o->shape[2] = t->shape[1];
            o->shape[3] = 1;
        }
        if (kind == EDIT_LEGACY && strstr(t->name, "attentions.0.") &&
            legacy_name(t->name, names[n], sizeof names[n]) != t->name) {
            o->name = names[n];
            if (t->ndim == 2) o->shape[2] = o->shape[3] = 1, o->ndim = 4;
        }
        n++;
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    sd_status st = st_write(path, e, n, NULL, 0);
    st_close(&f);
    free(e);
    free(names);
    char *text = NULL;
    if (st == SD_OK && !config) st = sd_read_file(fixture("sd15-tiny/pipeline/vae/config.json"), &text, NULL);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = st == SD_OK ? fopen(path, "w") : NULL;
    if (fp) {
        fputs(config ? config : text, fp);
        fclose(fp);
    }
    free(text);
    CHECK(st == SD_OK && fp, "writing the variant folder: %s", sd_last_error());
    return st == SD_OK && fp;
}

static void expect_load_error(const char *what, sd_status want, const char *needle) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/vae", tmpdir);
    vae *m = NULL;
    sd_status st = vae_load(&m, dir, NULL);
    CHECK(st == want && m == NULL, "%s: status %s, want %s", what, sd_status_name(st), sd_status_name(want));
    CHECK(strstr(sd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, sd_last_error(),
          needle);
    printf("     %s -> %s\n", what, sd_last_error());
    vae_free(m);
}

static void test_legacy_names(void) {
    if (!write_variant(EDIT_LEGACY, NULL, NULL)) return;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/vae", tmpdir);
    vae *legacy = NULL, *m = load(SD15_VAE);
    CHECK_OK(vae_load(&legacy, dir, NULL));
    if (legacy && m) {
        float z[4 * 3 * 2], a[24 * 16 * 3], b[24 * 16 * 3];
        fill_random(z, sizeof z / sizeof *z, 7);
        CHECK_OK(vae_decode(m, z, 1, 3, 2, a));
        CHECK_OK(vae_decode(legacy, z, 1, 3, 2, b));
        CHECK(!memcmp(a, b, sizeof a), "query/key/value/proj_attn [C][C][1][1] weights decode the same");
        float mean[2][24], lv[2][24];
        CHECK_OK(vae_encode(m, a, 1, 24, 16, mean[0], lv[0]));
        CHECK_OK(vae_encode(legacy, a, 1, 24, 16, mean[1], lv[1]));
        CHECK(!memcmp(mean[0], mean[1], sizeof mean[0]) && !memcmp(lv[0], lv[1], sizeof lv[0]),
              "legacy names encode the same");
    }
    vae_free(legacy);
    vae_free(m);
}

/* mid_block_add_attention false: a mid block of two resnets, no attention tensors needed. The
 * fixtures have no such model, so only loading and running are checked, plus that dropping the
 * attention changes the output. */
static void test_no_attention(void) {
    char *text = NULL;
    if (sd_read_file(fixture("sd15-tiny/pipeline/vae/config.json"), &text, NULL) != SD_OK) {
        CHECK(0, "read sd15 vae config: %s", sd_last_error());
        return;
    }
    const char *key = "\"mid_block_add_attention\": true";
    char *at = strstr(text, key), *edited = NULL;
    CHECK(at != NULL, "sd15 vae config has %s", key);
    if (at) edited = sd_strfmt("%.*s\"mid_block_add_attention\": false%s", (int)(at - text), text,
                               at + strlen(key));
    int ok = edited && write_variant(EDIT_NO_ATTN, NULL, edited);
    free(edited);
    free(text);
    if (!ok) return;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/vae", tmpdir);
    vae *plain = NULL, *m = load(SD15_VAE);
    CHECK_OK(vae_load(&plain, dir, NULL));
    if (plain && m) {
        CHECK(!vae_get_config(plain)->mid_block_add_attention, "mid_block_add_attention read as false");
        float z[4 * 2 * 2], a[16 * 16 * 3], b[16 * 16 * 3];
        fill_random(z, sizeof z / sizeof *z, 3);
        CHECK_OK(vae_decode(m, z, 1, 2, 2, a));
        CHECK_OK(vae_decode(plain, z, 1, 2, 2, b));
        CHECK(memcmp(a, b, sizeof a) != 0, "the attention-free mid block gives another image");
    }
    vae_free(plain);
    vae_free(m);
}

/* Decoding needs no encoder weights: a decoder-only load decodes the same and refuses to encode. */
static void test_decoder_only(void) {
    vae *full = load(SD15_VAE), *dec = NULL;
    CHECK_OK(vae_load_opt(&dec, fixture(SD15_VAE), false, NULL));
    if (full && dec) {
        float z[4 * 3 * 3], a[24 * 24 * 3], b[24 * 24 * 3], mean[36], lv[36];
        fill_random(z, sizeof z / sizeof *z, 11);
        CHECK_OK(vae_decode(full, z, 1, 3, 3, a));
        CHECK_OK(vae_decode(dec, z, 1, 3, 3, b));
        CHECK(!memcmp(a, b, sizeof a), "decoder-only load decodes the same");
        CHECK(vae_encode(dec, a, 1, 24, 24, mean, lv) == SD_ERR_ARG &&
                  strstr(sd_last_error(), "encoder"),
              "decoder-only encode refused: %s", sd_last_error());
    }
    vae_free(full);
    vae_free(dec);
}

static void test_errors(void) {
    if (write_variant(EDIT_DROP, "decoder.up_blocks.2.resnets.1.conv2.weight", NULL))
        expect_load_error("missing tensor", SD_ERR_TENSOR, "decoder.up_blocks.2.resnets.1.conv2.weight");
    if (write_variant(EDIT_DROP, "encoder.mid_block.attentions.0.to_v.bias", NULL))
        expect_load_error("missing attention bias", SD_ERR_TENSOR, "encoder.mid_block.attentions.0.to_v.bias");
    if (write_variant(EDIT_DROP, "post_quant_conv.weight", NULL))
        expect_load_error("missing post_quant_conv", SD_ERR_TENSOR, "post_quant_conv.weight");
    if (write_variant(EDIT_RESHAPE, "encoder.down_blocks.1.downsamplers.0.conv.weight", NULL))
        expect_load_error("wrong shape", SD_ERR_TENSOR, "encoder.down_blocks.1.downsamplers.0.conv.weight");
    if (write_variant(EDIT_NONE, NULL, "{\"block_out_channels\": [8, 16], \"norm_num_groups\": 8}"))
        expect_load_error("block types default to one entry", SD_ERR_CONFIG, "down_block_types");
    if (write_variant(EDIT_NONE, NULL,
                      "{\"block_out_channels\": [8], \"down_block_types\": [\"AttnDownEncoderBlock2D\"]}"))
        expect_load_error("unsupported block type", SD_ERR_UNSUPPORTED, "AttnDownEncoderBlock2D");
    if (write_variant(EDIT_NONE, NULL, "{\"latent_channels\": \"four\"}"))
        expect_load_error("mistyped key", SD_ERR_CONFIG, "latent_channels");
    if (write_variant(EDIT_NONE, NULL, "{\"block_out_channels\": [8, 16, 16, 16], \"layers_per_block\": 2,"
                      " \"norm_num_groups\": 5, \"down_block_types\": [\"DownEncoderBlock2D\","
                      " \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],"
                      " \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\","
                      " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}"))
        expect_load_error("groups do not divide", SD_ERR_CONFIG, "groups");

    vae *m = load(SD15_VAE);
    if (m) {
        float x[12 * 12 * 3], mean[8], lv[8];
        memset(x, 0, sizeof x);
        CHECK(vae_encode(m, x, 1, 12, 12, mean, lv) == SD_ERR_ARG, "encode 12x12 refused");
        CHECK(vae_decode(m, x, 1, 0, 4, x) == SD_ERR_ARG, "decode 0x4 refused");
    }
    vae_free(m);
    vae *none = NULL;
    CHECK(vae_load(&none, "/nonexistent/vae", NULL) != SD_OK &&
              strstr(sd_last_error(), "/nonexistent/vae"),
          "missing folder named: %s", sd_last_error());
}

static void remove_tmp(void) {
    const char *files[] = {"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae", ""};
    char path[192];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
        remove(path);
    }
}

int main(void) {
    test_direct();
    test_runs();
    test_sd3();
    test_decoder_only();
    test_upsample_bands();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_vae_XXXXXX");
    if (mkdtemp(tmpdir)) {
        test_legacy_names();
        test_no_attention();
        test_errors();
        remove_tmp();
    } else {
        CHECK(0, "mkdtemp failed");
    }
    return test_summary();
}
