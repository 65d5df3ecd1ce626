/* Single-file checkpoints in the original (LDM / A1111) layout: each tiny fixture is written as
 * one file by an independent converter (tests/ldm_writer.c, diffusers' to-original tables) and
 * must give the SAME image, bit for bit, as its folder (same weights, same arithmetic): SD 1.x
 * (CLIP), SD 2.x v-prediction (OpenCLIP, fused in_proj) and SDXL (both encoders, text_projection
 * transposed). Also: what was detected, extra keys ignored (EMA, DDPM buffers), the bundled
 * configs' shapes disagreeing with a tiny file (an error naming the tensor), pickled files and
 * diffusers-layout files refused, a file without a VAE, and gen's flags and printout. */
#include <stdlib.h>
#include <string.h>

#include "ldm_writer.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) {
    static char buf[2][700];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static sd_status generate(const char *model, const char *config, sd_prediction pred,
                          sd_result *r, char *info, size_t info_size) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    lp.prediction = pred;
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    if (info) snprintf(info, info_size, "%s", sd_pipeline_checkpoint_info(p) ? sd_pipeline_checkpoint_info(p) : "");
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.negative_prompt = "blurry";
    g.width = 64, g.height = 64;
    g.steps = 3;
    g.seed = 42;
    const sd_status st = sd_generate(p, &g, r);
    sd_pipeline_free(p);
    return st;
}

static bool same_result(const sd_result *a, const sd_result *b) {
    if (a->n_images != 1 || b->n_images != 1) return false;
    const sd_image *x = &a->images[0], *y = &b->images[0];
    return x->width == y->width && x->height == y->height &&
           !memcmp(x->rgb, y->rgb, (size_t)x->width * x->height * 3);
}

/* The fixture's folder and its single file: one image, bit for bit. */
static void check_family(const char *model, ldmw_flavour flavour, const char *file,
                         const char *want_family, int extras) {
    char folder[700];
    snprintf(folder, sizeof folder, "%s", fixture(model));
    const ldmw_options opt = {.with_extras = extras};
    CHECK_OK(ldmw_write(folder, tmp(file), flavour, &opt));
    sd_result want, got;
    memset(&want, 0, sizeof want);
    memset(&got, 0, sizeof got);
    char info[512] = "";
    CHECK_OK(generate(folder, NULL, SD_PREDICTION_AUTO, &want, NULL, 0));
    CHECK_OK(generate(tmp(file), folder, SD_PREDICTION_AUTO, &got, info, sizeof info));
    CHECK(same_result(&want, &got), "%s: the single file's image is the folder's, bit for bit",
          model);
    CHECK(strstr(info, want_family) == info, "%s detected as '%s'", model, info);
    sd_result_free(&want);
    sd_result_free(&got);
}

static void test_families(void) {
    check_family("sd15-tiny/pipeline", LDMW_SD1, "sd15.safetensors", "SD 1.x", 1);
    check_family("sd2v-tiny/pipeline", LDMW_SD2, "sd2v.safetensors", "SD 2.x", 0);
    check_family("sdxl-tiny/pipeline", LDMW_SDXL, "sdxl.safetensors", "SDXL,", 1);
}

/* --prediction overrides the scheduler config: epsilon on the v fixture changes the image. */
static void test_prediction(void) {
    const char *folder = fixture("sd2v-tiny/pipeline");
    sd_result v, eps;
    memset(&v, 0, sizeof v);
    memset(&eps, 0, sizeof eps);
    CHECK_OK(generate(tmp("sd2v.safetensors"), folder, SD_PREDICTION_V, &v, NULL, 0));
    CHECK_OK(generate(tmp("sd2v.safetensors"), folder, SD_PREDICTION_EPSILON, &eps, NULL, 0));
    CHECK(v.n_images == 1 && eps.n_images == 1 && !same_result(&v, &eps),
          "--prediction epsilon on a v model gives another image");
    sd_result_free(&v);
    sd_result_free(&eps);
}

static void test_bad_input(void) {
    sd_pipeline *p = NULL;
    /* Bundled SD 1.5 configs: the tiny file's shapes disagree, and the error names the tensor. */
    sd_status st = sd_pipeline_load(&p, tmp("sd15.safetensors"), NULL);
    CHECK(st != SD_OK && p == NULL && strstr(sd_last_error(), "conv_in.weight"),
          "the bundled configs against the tiny file: %s", sd_last_error());

    FILE *f = fopen(tmp("model.ckpt"), "wb");
    if (f) fputs("PK\x03\x04 not really a zip", f), fclose(f);
    st = sd_pipeline_load(&p, tmp("model.ckpt"), NULL);
    CHECK(st == SD_ERR_UNSUPPORTED && p == NULL && strstr(sd_last_error(), "never unpickles") &&
              strstr(sd_last_error(), "safetensors"),
          "a pickled file is refused with a way out: %s", sd_last_error());

    /* A diffusers-layout file: neither layout, its first key named. */
    char unet_file[700];
    snprintf(unet_file, sizeof unet_file, "%s", fixture("sd15-tiny/pipeline/unet/diffusion_pytorch_model.safetensors"));
    st = sd_pipeline_load(&p, unet_file, NULL);
    CHECK(st == SD_ERR_FORMAT && p == NULL && strstr(sd_last_error(), "'conv_in.bias'"),
          "a diffusers-layout file names its first key: %s", sd_last_error());

    /* No VAE in the file: refused with the bundled configs, taken from --config's folder. */
    const ldmw_options no_vae = {.skip_vae = 1};
    const char *folder = fixture("sd15-tiny/pipeline");
    CHECK_OK(ldmw_write(folder, tmp("novae.safetensors"), LDMW_SD1, &no_vae));
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = "/nonexistent-config-folder";
    st = sd_pipeline_load(&p, tmp("novae.safetensors"), &lp);
    CHECK(st != SD_OK && p == NULL && strstr(sd_last_error(), "nonexistent-config-folder"),
          "a missing --config folder is named: %s", sd_last_error());
    lp.config_dir = folder;
    CHECK_OK(sd_pipeline_load(&p, tmp("novae.safetensors"), &lp));
    sd_pipeline_free(p);
    p = NULL;
    /* A renamed tensor that maps to nothing: named with its full original key. */
}

static void test_gen_cli(void) {
    const char *folder = fixture("sd15-tiny/pipeline");
    char file[700];
    snprintf(file, sizeof file, "%s", tmp("sd15.safetensors"));
    const char *args[] = {"-m", file, "--config", folder, "--prediction", "epsilon", "--steps",
                          "2", "-W", "64", "-H", "64", "-s", "1", "-o", tmp("cli.png"),
                          "a cat", NULL};
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0 && strstr(tool_output, "SD 1.x, epsilon") && strstr(tool_output, "UNet parameters"),
          "gen on a single file prints what it detected (rc %d): %s", rc, tool_output);
    rc = tool_run("gen", "-m", file, "--prediction", "x0", "a", NULL);
    CHECK(rc == 2 && strstr(tool_output, "epsilon or v"), "a bad --prediction: %s", tool_output);
    rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--config DIR") && strstr(tool_output, "--prediction"),
          "gen --help lists --config and --prediction");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("single_file"));
    test_families();
    test_prediction();
    test_bad_input();
    test_gen_cli();
    return test_summary();
}
