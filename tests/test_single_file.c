/* Single-file checkpoints in the original (LDM / A1111) layout: each tiny fixture is written as
 * one file by an independent converter (tests/ldm_writer.c, diffusers' to-original tables) and
 * must give the SAME image, bit for bit, as its folder (same weights, same arithmetic): SD 1.x
 * (CLIP), SD 2.x v-prediction (OpenCLIP, fused in_proj) and SDXL (both encoders, text_projection
 * transposed). Also: what was detected, extra keys ignored (EMA, DDPM buffers), the bundled
 * configs' shapes disagreeing with a tiny file (an error naming the tensor), pickled files and
 * diffusers-layout files refused, a file without a VAE, and gen's flags and printout. */
#include <stdlib.h>
#include <string.h>

#include "../convert/ldm_source.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../unet/unet.h"
#include "ldm_writer.h"
#include "lora_ref.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static sd_status generate_lora(const char *model, const char *config, sd_prediction pred,
                               const sd_lora *loras, int n_loras, sd_result *r, char *info,
                               size_t info_size) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    lp.prediction = pred;
    lp.loras = loras;
    lp.n_loras = n_loras;
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

static sd_status generate(const char *model, const char *config, sd_prediction pred,
                          sd_result *r, char *info, size_t info_size) {
    return generate_lora(model, config, pred, NULL, 0, r, info, info_size);
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
    CHECK(st != SD_OK && p == NULL && strstr(sd_last_error(), "conv_in.weight") &&
              strstr(sd_last_error(), "first_stage_model.* as diffusers vae"),
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

/* Writes a file of the named tensors (zeros) with the given shapes: a few keys of a real
 * checkpoint at their real shapes, enough for detection. */
static void write_shapes(const char *path, const char *const *names, const int64_t (*shapes)[4],
                         int n) {
    st_entry e[8];
    int64_t most = 1;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < 4 && shapes[i][d]; d++) numel *= shapes[i][d];
        if (numel > most) most = numel;
    }
    uint16_t *zeros = calloc((size_t)most, sizeof *zeros);
    for (int i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].name = names[i];
        e[i].dtype = ST_F16;
        e[i].ndim = 0;
        while (e[i].ndim < 4 && shapes[i][e[i].ndim]) e[i].shape[e[i].ndim] = shapes[i][e[i].ndim], e[i].ndim++;
        e[i].data = zeros;
    }
    CHECK_OK(st_write(path, e, n, NULL, 0));
    free(zeros);
}

/* Detection on real key names and shapes (SD 2.x's 1024-wide cross-attention, SDXL's label_emb,
 * the refiner's lone OpenCLIP, 9-channel inpainting, layers_per_block from the first downsampler,
 * the VAE's levels), without full-size weights. */
static void test_detection(void) {
    static const char *const sd2[] = {
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "first_stage_model.decoder.up.3.block.0.conv1.weight",
    };
    static const int64_t sd2_shapes[][4] = {{320, 4, 3, 3}, {320, 1024}, {320, 320, 3, 3}, {4, 4, 1, 1}};
    write_shapes(tmp("det-sd2.safetensors"), sd2, sd2_shapes, 4);
    ldm_checkpoint c;
    CHECK_OK(ldm_checkpoint_open(&c, tmp("det-sd2.safetensors")));
    CHECK(c.family == LDM_SD2 && c.context_dim == 1024 && c.in_channels == 4 &&
              c.parts[0].levels == 2 && c.parts[1].levels == 4 && !strcmp(c.unet_dtype, "fp16"),
          "a UNet-only SD 2.x file: family %d, context %d, in %d, layers %d, VAE levels %d",
          c.family, c.context_dim, c.in_channels, c.parts[0].levels, c.parts[1].levels);
    ldm_checkpoint_close(&c);

    static const char *const xl[] = {
        "model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
        "conditioner.embedders.0.model.ln_final.weight", "v_pred",
    };
    static const int64_t xl_shapes[][4] = {{320, 9, 3, 3}, {1280, 2816}, {1280}, {1}};
    write_shapes(tmp("det-refiner.safetensors"), xl, xl_shapes, 4);
    CHECK_OK(ldm_checkpoint_open(&c, tmp("det-refiner.safetensors")));
    CHECK(c.family == LDM_SDXL_REFINER && c.in_channels == 9 && c.v_pred &&
              ldm_checkpoint_source(&c, "text_encoder_2") && !ldm_checkpoint_source(&c, "text_encoder"),
          "a refiner-like file: family %d, in %d, v_pred %d", c.family, c.in_channels, c.v_pred);
    ldm_checkpoint_close(&c);
    /* A key under the UNet's prefix that no table knows: named whole when the UNet is opened (the
     * other components come from --config's folder). */
    static const char *const odd[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                      "model.diffusion_model.middle_block.7.odd.weight"};
    static const int64_t odd_shapes[][4] = {{320, 4, 3, 3}, {4}};
    write_shapes(tmp("det-odd.safetensors"), odd, odd_shapes, 2);
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = fixture("sd15-tiny/pipeline");
    sd_pipeline *bad = NULL;
    CHECK(sd_pipeline_load(&bad, tmp("det-odd.safetensors"), &lp) == SD_ERR_FORMAT && !bad &&
              strstr(sd_last_error(), "'model.diffusion_model.middle_block.7.odd.weight'"),
          "an unknown UNet key is named: %s", sd_last_error());
    /* A refiner takes the bundled (derived) sdxl-refiner configs, whatever its input width;
     * without a VAE in the file the message says to pass --config. */
    sd_pipeline *p = NULL;
    const sd_status st = sd_pipeline_load(&p, tmp("det-refiner.safetensors"), NULL);
    CHECK(st == SD_ERR_FORMAT && p == NULL && strstr(sd_last_error(), "SDXL refiner") &&
              strstr(sd_last_error(), "no vae weights") && strstr(sd_last_error(), "--config"),
          "a refiner file without a VAE: %s", sd_last_error());
    /* The derived refiner UNet config is one the UNet reader takes, and its widths fit the
     * refiner's pieces: bigG's 1280-wide hidden states, its pooled 1280 + 5 time ids x 256 (the
     * aesthetic score among them), 64-wide heads. */
    char *dir = sd_path_join(sd_configs_dir(), "sdxl-refiner/unet");
    unet_config uc;
    CHECK_OK(unet_config_read(&uc, dir));
    CHECK(uc.n_blocks == 4 && uc.cross_attention_dim == 1280 &&
              uc.projection_class_embeddings_input_dim == 1280 + 5 * uc.addition_time_embed_dim &&
              uc.heads[1] * 64 == uc.block_out_channels[1] && uc.transformer_layers[2] == 4,
          "the bundled refiner UNet config: %d blocks, cross %d, class %d", uc.n_blocks,
          uc.cross_attention_dim, uc.projection_class_embeddings_input_dim);
    free(dir);
}

/* sd15-tiny with its UNet's conv_in widened to 9 input channels (latents, mask, masked image;
 * deterministic weights), the rest linked: what an inpainting checkpoint's folder would be. */
static const char *make_inpaint_folder(void) {
    static char dir[700];
    snprintf(dir, sizeof dir, "%s", tmp("inpaint9"));
    char cmd[1600], path[900];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/unet'", dir, dir);
    const char *parts[] = {"tokenizer", "text_encoder", "vae", "scheduler", "model_index.json"};
    if (system(cmd) != 0 || !fixture_link_parts("sd15-tiny/pipeline", dir, parts, 5)) return NULL;
    char *text;
    if (sd_read_file(fixture("sd15-tiny/pipeline/unet/config.json"), &text, NULL) != SD_OK) return NULL;
    cJSON *uc = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(uc, "in_channels", cJSON_CreateNumber(9));
    text = cJSON_Print(uc);
    cJSON_Delete(uc);
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    FILE *fp = fopen(path, "w");
    const bool ok = fp && fputs(text, fp) >= 0 && fclose(fp) == 0;
    cJSON_free(text);
    st_file f;
    if (!ok || st_open(&f, fixture("sd15-tiny/pipeline/unet/diffusion_pytorch_model.safetensors")) != SD_OK)
        return NULL;
    st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
    float *conv_in = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(es[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "conv_in.weight")) { /* [out][in][3][3] */
            es[i].shape[1] = 9;
            const size_t n = (size_t)t->shape[0] * 9 * t->shape[2] * t->shape[3];
            conv_in = malloc(n * sizeof *conv_in);
            for (size_t k = 0; k < n; k++) conv_in[k] = 0.2f * (float)((k * 7919 % 201) - 100) / 100.0f;
            es[i].dtype = ST_F32;
            es[i].data = conv_in;
        }
    }
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    const sd_status st = conv_in ? st_write(path, es, f.n_tensors, NULL, 0) : SD_ERR_TENSOR;
    st_close(&f);
    free(es), free(conv_in);
    return st == SD_OK ? dir : NULL;
}

static sd_status generate_inpaint(const char *model, const char *config, sd_result *r, char *info,
                                  size_t info_size) {
    static uint8_t rgb[64 * 64 * 3], mask[64 * 64 * 3];
    for (int i = 0; i < 64 * 64; i++) {
        rgb[3 * i] = (uint8_t)(i % 64 * 4), rgb[3 * i + 1] = (uint8_t)(i / 64 * 4), rgb[3 * i + 2] = 90;
        memset(mask + 3 * i, i % 64 < 32 ? 255 : 0, 3); /* repaint the left half */
    }
    const sd_image init = {64, 64, rgb}, m = {64, 64, mask};
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    if (info) snprintf(info, info_size, "%s", sd_pipeline_checkpoint_info(p) ? sd_pipeline_checkpoint_info(p) : "");
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.width = 64, g.height = 64;
    g.steps = 3;
    g.seed = 42;
    g.init_image = &init;
    g.mask_image = &m;
    const sd_status st = sd_generate(p, &g, r);
    sd_pipeline_free(p);
    return st;
}

/* A 9-channel inpainting checkpoint: the tensors decide in_channels over the config's (sd15-tiny's
 * says 4), so the file under the plain SD 1.5 config paints as the 9-channel folder, bit for bit;
 * with the bundled configs it is no longer refused (the tiny shapes then disagree, named). */
static void test_inpainting(void) {
    const char *folder = make_inpaint_folder();
    CHECK(folder != NULL, "a 9-channel sd15-tiny folder");
    if (!folder) return;
    const ldmw_options opt = {0};
    CHECK_OK(ldmw_write(folder, tmp("inpaint9.safetensors"), LDMW_SD1, &opt));
    sd_result want, got;
    memset(&want, 0, sizeof want);
    memset(&got, 0, sizeof got);
    char info[512] = "";
    CHECK_OK(generate_inpaint(folder, NULL, &want, NULL, 0));
    CHECK_OK(generate_inpaint(tmp("inpaint9.safetensors"), fixture("sd15-tiny/pipeline"), &got,
                              info, sizeof info));
    CHECK(same_result(&want, &got), "an inpainting file: the 9-channel folder's image, bit for bit");
    CHECK(strstr(info, "SD 1.x inpainting (9-channel UNet)") == info, "detected as '%s'", info);
    sd_result_free(&want);
    sd_result_free(&got);
    sd_pipeline *p = NULL;
    const sd_status st = sd_pipeline_load(&p, tmp("inpaint9.safetensors"), NULL);
    CHECK(st != SD_OK && st != SD_ERR_UNSUPPORTED && !p &&
              strstr(sd_last_error(), "first_stage_model") && strstr(sd_last_error(), "expected [512"),
          "an inpainting file takes the bundled SD 1.5 configs: %s", sd_last_error());
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

/* A LoRA applies to a single file as to its folder: the LoRA's keys (kohya names for the UNet and
 * the text encoder) meet the diffusers names the file's tensors are renamed to, so the image is
 * the folder's with the same LoRA, bit for bit, and differs from the image without it. */
static void test_lora(void) {
    char folder[700];
    snprintf(folder, sizeof folder, "%s", fixture("sd15-tiny/pipeline"));
    static const char *const unet_pats[] = {"attn1.to_", "attn2.to_", "ff.net", NULL};
    static const char *const te_pats[] = {"self_attn.", "mlp.fc", NULL};
    static ref_lora kohya;
    ref_lora_pick(&kohya, folder, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false,
                  4, 3.0f, true, 31);
    ref_lora_pick(&kohya, folder, "text_encoder", "model.safetensors", te_pats, false, 4, 2.0f,
                  true, 32);
    CHECK(kohya.n > 20, "LoRA modules picked (%d)", kohya.n);
    CHECK(ref_lora_write(&kohya, tmp("lora.safetensors"), REF_KOHYA, false), "write the LoRA");
    ref_lora_free(&kohya);
    const ldmw_options opt = {0};
    CHECK_OK(ldmw_write(folder, tmp("sd15-lora.safetensors"), LDMW_SD1, &opt));
    const sd_lora lora = {tmp("lora.safetensors"), 0.8f};
    sd_result want, got, plain;
    memset(&want, 0, sizeof want), memset(&got, 0, sizeof got), memset(&plain, 0, sizeof plain);
    CHECK_OK(generate_lora(folder, NULL, SD_PREDICTION_AUTO, &lora, 1, &want, NULL, 0));
    CHECK_OK(generate_lora(tmp("sd15-lora.safetensors"), folder, SD_PREDICTION_AUTO, &lora, 1, &got,
                           NULL, 0));
    CHECK_OK(generate(tmp("sd15-lora.safetensors"), folder, SD_PREDICTION_AUTO, &plain, NULL, 0));
    CHECK(same_result(&want, &got), "LoRA on the single file: the folder's image with the LoRA");
    CHECK(!same_result(&got, &plain), "LoRA on the single file: the LoRA changes the image");
    sd_result_free(&want), sd_result_free(&got), sd_result_free(&plain);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("single_file"));
    test_families();
    test_prediction();
    test_bad_input();
    test_detection();
    test_gen_cli();
    test_lora();
    test_inpainting();
    return test_summary();
}
