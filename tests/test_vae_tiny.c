/* The tiny autoencoder (vae/vae_tiny.c) against tests/fixtures/extra/tiny_vae_refs.safetensors:
 * decodes and encodes recorded on random taesd-shaped (4 latent channels) and taesd3-shaped (16,
 * with scaling and shift) models (tools/reference/tiny_vae_torch.py, a plain torch port written
 * from diffusers' source; tiny_vae_refs.py records the same names through diffusers itself). Also
 * the config and weight errors, and the latent scaling the pipelines apply. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../vae/vae_tiny.h"
#include "test.h"

static const char *REFS = "extra/tiny_vae_refs.safetensors";

static vae_tiny *load(const char *rel, bool enc) {
    vae_tiny *m = NULL;
    const sd_status st = vae_tiny_load(&m, fixture(rel), enc, NULL);
    CHECK(st == SD_OK, "vae_tiny_load(%s): %s", rel, sd_last_error());
    return m;
}

/* Decode and encode of one model against its references (NCHW there, NHWC here). */
static void check_model(const char *name, int latent_c) {
    char rel[128], t[128];
    snprintf(rel, sizeof rel, "extra/%s", name);
    vae_tiny *m = load(rel, true);
    if (!m) return;
    const vae_tiny_config *c = vae_tiny_get_config(m);
    CHECK(c->latent_channels == latent_c && vae_tiny_scale_factor(m) == 8 && c->n_enc == 4 &&
              c->n_dec == 4 && c->enc_blocks[0] == 1 && c->dec_blocks[3] == 1,
          "%s config: %d channels, factor %d", name, c->latent_channels, vae_tiny_scale_factor(m));
    int64_t ls[4], ds[4], is[4], es[4];
    snprintf(t, sizeof t, "%s.latent", name);
    float *lat = fixture_tensor(REFS, t, ls, NULL);
    snprintf(t, sizeof t, "%s.decoded", name);
    float *dec = fixture_tensor(REFS, t, ds, NULL);
    snprintf(t, sizeof t, "%s.image", name);
    float *img = fixture_tensor(REFS, t, is, NULL);
    snprintf(t, sizeof t, "%s.encoded", name);
    float *enc = fixture_tensor(REFS, t, es, NULL);
    if (lat && dec && img && enc) {
        const int h = (int)ls[2], w = (int)ls[3];
        CHECK(ls[1] == latent_c && ds[2] == 8 * h && ds[3] == 8 * w, "%s shapes", name);
        const size_t nl = (size_t)latent_c * h * w, nd = (size_t)3 * ds[2] * ds[3];
        float *z = malloc(nl * sizeof *z), *out = malloc(nd * sizeof *out),
              *nchw = malloc(nd * sizeof *nchw);
        nchw_to_nhwc(lat, z, 1, latent_c, h, w);
        CHECK_OK(vae_tiny_decode(m, z, 1, h, w, out));
        nhwc_to_nchw(out, nchw, 1, (int)ds[2], (int)ds[3], 3);
        char what[96];
        snprintf(what, sizeof what, "%s decode (%dx%d latent)", name, h, w);
        check_rel(what, nchw, dec, nd, 1e-5);
        /* The reference must use the range: a decode near a constant would test little. */
        float lo = 1, hi = -1;
        for (size_t i = 0; i < nd; i++) lo = fminf(lo, dec[i]), hi = fmaxf(hi, dec[i]);
        CHECK(lo < -0.8f && hi > 0.8f, "%s reference decode spans [%g, %g]", name, lo, hi);

        const int ih = (int)is[2], iw = (int)is[3];
        const size_t ni = (size_t)3 * ih * iw, ne = (size_t)latent_c * es[2] * es[3];
        float *x = malloc(ni * sizeof *x), *e = malloc(ne * sizeof *e),
              *en = malloc(ne * sizeof *en);
        nchw_to_nhwc(img, x, 1, 3, ih, iw);
        CHECK_OK(vae_tiny_encode(m, x, 1, ih, iw, e));
        nhwc_to_nchw(e, en, 1, ih / 8, iw / 8, latent_c);
        snprintf(what, sizeof what, "%s encode (%dx%d image)", name, iw, ih);
        check_rel(what, en, enc, ne, 1e-5);
        /* The scratch is kept between calls: a second decode is the same. */
        float *again = malloc(nd * sizeof *again);
        CHECK_OK(vae_tiny_decode(m, z, 1, h, w, again));
        CHECK(!memcmp(again, out, nd * sizeof *out), "%s: second decode differs", name);
        vae_tiny_release(m);
        CHECK_OK(vae_tiny_decode(m, z, 1, h, w, again));
        CHECK(!memcmp(again, out, nd * sizeof *out), "%s: decode after release differs", name);
        /* Not a multiple of 8: refused, naming the size. */
        CHECK(vae_tiny_encode(m, x, 1, ih - 4, iw, e) == SD_ERR_ARG &&
                  strstr(sd_last_error(), "44"),
              "%s: encode of 40x44: %s", name, sd_last_error());
        free(z), free(out), free(nchw), free(x), free(e), free(en), free(again);
    }
    free(lat), free(dec), free(img), free(enc);
    vae_tiny_free(m);
}

/* Decoder only: encoding is refused; the decode is the same. */
static void check_decoder_only(void) {
    vae_tiny *m = load("extra/taesd-tiny", false);
    if (!m) return;
    CHECK(!vae_tiny_has_encoder(m), "decoder-only load has an encoder");
    float img[3 * 16 * 16] = {0}, lat[4 * 2 * 2];
    CHECK(vae_tiny_encode(m, img, 1, 16, 16, lat) == SD_ERR_ARG, "encode without encoder");
    vae_tiny_free(m);
}

/* Pipeline scaling with taesd3's factors: SD3/Flux add the shift, SD/SDXL do not. */
static void check_scaling(void) {
    vae_tiny *m = load("extra/taesd3-tiny", false);
    if (!m) return;
    const float in[2] = {1.5305f, -3.061f};
    float out[2], back[2];
    vae_tiny_unscale_latents(m, true, in, out, 2);
    CHECK(fabsf(out[0] - 1.0609f) < 1e-6f && fabsf(out[1] - (-2.0f + 0.0609f)) < 1e-6f,
          "unscale with shift: %g %g", out[0], out[1]);
    vae_tiny_scale_latents(m, true, out, back, 2);
    CHECK(fabsf(back[0] - in[0]) < 1e-5f && fabsf(back[1] - in[1]) < 1e-5f, "scale back: %g %g",
          back[0], back[1]);
    vae_tiny_unscale_latents(m, false, in, out, 2);
    CHECK(fabsf(out[0] - 1.0f) < 1e-6f, "unscale without shift: %g", out[0]);
    vae_tiny_free(m);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

/* Config and weight errors name the key or the tensor. */
static void check_errors(void) {
    char dir[] = "/tmp/sd_vae_tiny_XXXXXX";
    if (!mkdtemp(dir)) return;
    char cfg[96], wts[96];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(wts, sizeof wts, "%s/diffusion_pytorch_model.safetensors", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'",
             fixture("extra/taesd-tiny/diffusion_pytorch_model.safetensors"), wts);
    CHECK(system(cmd) == 0, "%s", cmd);
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"_class_name\": \"AutoencoderKL\"}", "'_class_name' is 'AutoencoderKL'"},
        {"{\"act_fn\": \"silu\", \"decoder_block_out_channels\": [8,8,8,8], "
         "\"encoder_block_out_channels\": [8,8,8,8]}",
         "'act_fn'"},
        {"{\"decoder_block_out_channels\": [8,8,4,8], \"encoder_block_out_channels\": [8,8,8,8]}",
         "'decoder_block_out_channels' entry 2"},
        {"{\"decoder_block_out_channels\": [8,8,8], \"encoder_block_out_channels\": [8,8,8,8]}",
         "'num_decoder_blocks' has 4 entries"},
        {"{\"scaling_factor\": 0, \"decoder_block_out_channels\": [8,8,8,8], "
         "\"encoder_block_out_channels\": [8,8,8,8]}",
         "'scaling_factor'"},
        /* 16 channels against a 4-channel model's weights: the first tensor named. */
        {"{\"latent_channels\": 16, \"decoder_block_out_channels\": [8,8,8,8], "
         "\"encoder_block_out_channels\": [8,8,8,8]}",
         "decoder.layers.0.weight"},
        /* One block more than the weights have. */
        {"{\"num_decoder_blocks\": [3,3,3,2], \"decoder_block_out_channels\": [8,8,8,8], "
         "\"encoder_block_out_channels\": [8,8,8,8]}",
         "decoder.layers.18.conv.0.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(cfg, cases[i].json);
        vae_tiny *m = NULL;
        const sd_status st = vae_tiny_load(&m, dir, true, NULL);
        CHECK(st != SD_OK && !m && strstr(sd_last_error(), cases[i].want),
              "config %zu: %s (want '%s')", i, sd_last_error(), cases[i].want);
        vae_tiny_free(m);
    }
    unlink(cfg), unlink(wts), rmdir(dir);
}

int main(void) {
    check_model("taesd-tiny", 4);
    check_model("taesd3-tiny", 16);
    check_decoder_only();
    check_scaling();
    check_errors();
    return test_summary();
}
