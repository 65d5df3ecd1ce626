/* FLUX.1 with no diffusers folder, as people run it with stable-diffusion.cpp or ComfyUI:
 * `gen -m flux1-dev.safetensors --vae ae.safetensors --text-encoder clip_l.safetensors
 * --text-encoder-2 t5xxl_fp16.safetensors` (or --transformer FILE and no -m). flux-tiny's
 * components are written as those files: the transformer in Black Forest Labs' layout by the
 * independent tests/bfl_writer.c, the VAE as BFL's ae.safetensors holds it (the original LDM
 * layout, bare, no quant_conv: tests/ldm_writer.c), CLIP-L and T5 in transformers' names as
 * clip_l / t5xxl hold them (the fixture's own files). With --config the fixture folder they give
 * the folder's image, bit for bit. Without it the file is detected as FLUX.1 dev or schnell
 * (guidance_in.*) and the bundled full-size configs are picked: the tiny file is refused, the
 * error naming the tensor and the config key; sparse files with the released models' shapes
 * pass them. The flags a file alone lacks are named. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../convert/bfl_flux.h"
#include "bfl_writer.h"
#include "ldm_writer.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static const char *folder(void) {
    static char buf[700];
    snprintf(buf, sizeof buf, "%s", fixture("flux-tiny/pipeline"));
    return buf;
}

/* The files a user of FLUX.1 without a folder has. */
typedef struct {
    const char *model, *config, *vae, *clip, *t5;
} flux_files;

static char clip_path[800], t5_path[800];

static sd_status load(const flux_files *f, sd_pipeline **p) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = f->config;
    lp.vae_file = f->vae;
    lp.text_encoder_file = f->clip;
    lp.text_encoder_2_file = f->t5;
    *p = NULL;
    return sd_pipeline_load(p, f->model, &lp);
}

static sd_status generate(sd_pipeline *p, sd_result *r) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.width = 64, g.height = 64;
    g.steps = 2;
    g.seed = 7;
    g.max_sequence_length = 64;
    memset(r, 0, sizeof *r);
    return sd_generate(p, &g, r);
}

static bool same_result(const sd_result *a, const sd_result *b) {
    if (a->n_images != 1 || b->n_images != 1) return false;
    const sd_image *x = &a->images[0], *y = &b->images[0];
    return x->width == y->width && x->height == y->height &&
           !memcmp(x->rgb, y->rgb, (size_t)x->width * x->height * 3);
}

static void write_files(void) {
    char transformer[760];
    snprintf(transformer, sizeof transformer, "%s/transformer", folder());
    const bflw_options plain = {0}, comfy = {.prefix = "model.diffusion_model."};
    const bflw_options schnell = {.drop = "guidance_in."};
    CHECK_OK(bflw_write(transformer, tmp("flux1-dev.safetensors"), &plain));
    CHECK_OK(bflw_write(transformer, tmp("flux1-dev-comfy.safetensors"), &comfy));
    CHECK_OK(bflw_write(transformer, tmp("flux1-schnell.safetensors"), &schnell));
    /* ae.safetensors: encoder.* / decoder.* bare, 16 latent channels, no quant_conv */
    CHECK_OK(ldmw_write_component(folder(), "vae", tmp("ae.safetensors"), LDMW_SD1, 0));
    snprintf(clip_path, sizeof clip_path, "%s/text_encoder/model.safetensors", folder());
    snprintf(t5_path, sizeof t5_path, "%s/text_encoder_2/model.safetensors", folder());
}

static void test_same_image(void) {
    sd_pipeline *p = NULL;
    sd_result want, got;
    CHECK_OK(sd_pipeline_load(&p, folder(), NULL));
    CHECK_OK(generate(p, &want));
    sd_pipeline_free(p);
    const flux_files cases[] = {
        {tmp("flux1-dev.safetensors"), folder(), tmp("ae.safetensors"), clip_path, t5_path},
        {tmp("flux1-dev-comfy.safetensors"), folder(), tmp("ae.safetensors"), clip_path, t5_path},
        {tmp("flux1-dev.safetensors"), folder(), NULL, NULL, NULL}, /* all from --config */
        {tmp("flux1-dev.safetensors"), folder(), tmp("ae.safetensors"), NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const sd_status st = load(&cases[i], &p);
        CHECK(st == SD_OK, "case %zu: %s: %s", i, cases[i].model, sd_last_error());
        if (st != SD_OK) continue;
        const char *info = sd_pipeline_checkpoint_info(p);
        CHECK(info && strstr(info, "FLUX.1 [dev] (guidance_in.* present), 1 double and 2 single "
                                   "blocks") && strstr(info, folder()),
              "case %zu: the checkpoint info says what was detected: %s", i,
              info ? info : "(none)");
        if (cases[i].vae)
            CHECK(info && strstr(info, "; vae from ") && strstr(info, "ae.safetensors"),
                  "case %zu: the info names the VAE file: %s", i, info ? info : "(none)");
        CHECK_OK(generate(p, &got));
        CHECK(same_result(&want, &got), "case %zu (%s%s): the folder's image, bit for bit", i,
              cases[i].model, cases[i].vae ? " + ae, clip_l, t5 files" : "");
        sd_result_free(&got);
        sd_pipeline_free(p);
    }
    sd_result_free(&want);
}

static void check_error(const flux_files *f, sd_status want, const char *const *texts,
                        const char *what) {
    sd_pipeline *p = NULL;
    const sd_status st = load(f, &p);
    bool ok = st == want && !p;
    for (int i = 0; texts[i]; i++) ok = ok && strstr(sd_last_error(), texts[i]);
    CHECK(ok, "%s: %s (%s)", what, sd_status_name(st), sd_last_error());
    sd_pipeline_free(p);
}

static void test_bundled_configs(void) {
    /* No --config: detected, the bundled full-size configs picked, the tiny depth refused. */
    const flux_files dev = {tmp("flux1-dev.safetensors"), NULL, tmp("ae.safetensors"), clip_path,
                            t5_path};
    check_error(&dev, SD_ERR_CONFIG,
                (const char *const[]){"flux1-dev/transformer/config.json", "'double_blocks.N'",
                                      "num_layers 19", "double block count is 1", NULL},
                "a tiny dev file against the bundled flux1-dev config");
    const flux_files comfy = {tmp("flux1-dev-comfy.safetensors"), NULL, tmp("ae.safetensors"),
                              clip_path, t5_path};
    check_error(&comfy, SD_ERR_CONFIG,
                (const char *const[]){"flux1-dev/", "'model.diffusion_model.double_blocks.N'",
                                      NULL},
                "a tiny dev file under ComfyUI's prefix");
    const flux_files schnell = {tmp("flux1-schnell.safetensors"), NULL, tmp("ae.safetensors"),
                                clip_path, t5_path};
    check_error(&schnell, SD_ERR_CONFIG,
                (const char *const[]){"flux1-schnell/transformer/config.json", "num_layers",
                                      NULL},
                "a tiny schnell file (no guidance_in) against the bundled flux1-schnell config");
    /* With --config a [dev] folder, a file without guidance_in is refused as schnell. */
    const flux_files schnell_dev = {tmp("flux1-schnell.safetensors"), folder(), NULL, NULL, NULL};
    check_error(&schnell_dev, SD_ERR_CONFIG,
                (const char *const[]){"no guidance embedding", "guidance_embeds true", NULL},
                "a schnell file under a dev folder");
}

/* A safetensors header listing BF16 tensors of these shapes over a hole (ftruncate): the
 * released models' shapes without gigabytes. Only the header is read. */
typedef struct {
    const char *name;
    int64_t shape[2];
} sparse_tensor;

static bool write_sparse(const char *path, const sparse_tensor *t, int n) {
    cJSON *root = cJSON_CreateObject();
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", "BF16");
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        uint64_t bytes = 2;
        for (int d = 0; d < 2 && t[i].shape[d]; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
            bytes *= (uint64_t)t[i].shape[d];
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    const uint64_t len = json ? (strlen(json) + 7) / 8 * 8 : 0; /* padded with spaces */
    FILE *fp = json ? fopen(path, "wb") : NULL;
    bool ok = fp && fwrite(&len, 8, 1, fp) == 1 && fputs(json, fp) >= 0;
    for (uint64_t i = json ? strlen(json) : 0; ok && i < len; i++) ok = fputc(' ', fp) != EOF;
    if (fp) ok = fclose(fp) == 0 && ok;
    free(json);
    return ok && truncate(path, (off_t)(8 + len + off)) == 0;
}

/* FLUX.1 dev and schnell at full size (hidden 3072 = 24 x 128, 19 double and 38 single blocks,
 * T5's 4096 and CLIP's 768 inputs; linear1 7 x 3072 rows) fit their bundled config and are told
 * apart by guidance_in; each is refused by the other's. */
static void test_released_shapes(void) {
    const sparse_tensor dev[] = {
        {"img_in.weight", {3072, 64}},
        {"txt_in.weight", {3072, 4096}},
        {"vector_in.in_layer.weight", {3072, 768}},
        {"double_blocks.18.img_mod.lin.bias", {18432, 0}},
        {"single_blocks.37.linear1.weight", {21504, 3072}},
        {"guidance_in.in_layer.weight", {3072, 256}},
    };
    CHECK(write_sparse(tmp("real-dev.safetensors"), dev, 6), "write real-dev");
    CHECK(write_sparse(tmp("real-schnell.safetensors"), dev, 5), "write real-schnell");
    static const char *const files[] = {"real-dev.safetensors", "real-schnell.safetensors"};
    static const char *const configs[] = {"flux1-dev", "flux1-schnell"};
    for (int i = 0; i < 2; i++) {
        bfl_flux_probe probe;
        bfl_flux_probe_file(tmp(files[i]), &probe);
        CHECK(probe.flux && probe.dev == (i == 0), "%s detected as FLUX.1 %s", files[i],
              probe.dev ? "dev" : "schnell");
        for (int k = 0; k < 2; k++) {
            char json[1200];
            snprintf(json, sizeof json, "%s/%s/transformer/config.json", sd_configs_dir(),
                     configs[k]);
            bfl_flux_file f;
            const sd_status st = bfl_flux_open(&f, tmp(files[i]), json);
            if (k == i)
                CHECK(st == SD_OK && f.n_double == 19 && f.n_single == 38,
                      "%s fits the bundled %s config: %s", files[i], configs[k], sd_last_error());
            else
                CHECK(st != SD_OK && strstr(sd_last_error(), "guidance"),
                      "%s against the %s config: %s", files[i], configs[k], sd_last_error());
            if (st == SD_OK) bfl_flux_close(&f);
        }
    }
}

static void test_missing_flags(void) {
    const flux_files no_vae = {tmp("flux1-dev.safetensors"), NULL, NULL, clip_path, t5_path};
    check_error(&no_vae, SD_ERR_ARG,
                (const char *const[]){"--vae FILE", "ae.safetensors", "--config DIR", NULL},
                "no --vae");
    sd_pipeline *p = NULL;
    CHECK(load(&no_vae, &p) != SD_OK && !strstr(sd_last_error(), "--text-encoder"),
          "only the missing flag is named: %s", sd_last_error());
    sd_pipeline_free(p);
    const flux_files alone = {tmp("flux1-dev.safetensors"), NULL, NULL, NULL, NULL};
    check_error(&alone, SD_ERR_ARG,
                (const char *const[]){"--vae FILE", "--text-encoder FILE", "clip_l",
                                      "--text-encoder-2 FILE", "t5xxl", NULL},
                "a transformer file alone names every flag missing");
    /* No model_dir: the transformer file is the model. */
    sd_load_params lp0;
    sd_load_params_init(&lp0);
    lp0.config_dir = folder();
    lp0.transformer_file = tmp("flux1-dev.safetensors");
    CHECK_OK(sd_pipeline_load(&p, NULL, &lp0));
    CHECK(p && sd_pipeline_checkpoint_info(p) &&
          strstr(sd_pipeline_checkpoint_info(p), "FLUX.1 [dev]"),
          "model_dir NULL with a transformer file loads it as the model");
    sd_pipeline_free(p);
    p = NULL;
    /* -m one FLUX file and --transformer another. */
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = folder();
    lp.transformer_file = tmp("flux1-dev-comfy.safetensors");
    const sd_status st = sd_pipeline_load(&p, tmp("flux1-dev.safetensors"), &lp);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "pass one of them"),
          "-m FILE and --transformer OTHER: %s", sd_last_error());
    sd_pipeline_free(p);
}

static void test_gen_cli(void) {
    /* --transformer FILE and no -m. */
    const char *args[] = {"--transformer", tmp("flux1-dev.safetensors"), "--config", folder(),
                          "--vae", tmp("ae.safetensors"), "--text-encoder", clip_path,
                          "--text-encoder-2", t5_path, "--steps", "1", "-W", "64", "-H", "64",
                          "--max-sequence-length", "64", "-o", tmp("cli.png"), "a cat", NULL};
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0 && strstr(tool_output, "FLUX.1 [dev]"),
          "gen --transformer FILE without -m prints what it detected (rc %d): %s", rc,
          tool_output);
    const char *alone[] = {"-m", tmp("flux1-dev.safetensors"), "-o", tmp("cli2.png"), "a cat",
                           NULL};
    rc = tool_run_args("gen", alone);
    CHECK(rc == 1 && strstr(tool_output, "--vae FILE"),
          "gen -m flux1-dev.safetensors alone names the flags (rc %d): %s", rc, tool_output);
    rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "gen -m flux1-dev.safetensors --vae ae.safetensors") &&
              strstr(tool_output, "--text-encoder-2 t5xxl_fp16.safetensors"),
          "gen --help shows the FLUX files example");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("flux_files"));
    write_files();
    test_same_image();
    test_bundled_configs();
    test_released_shapes();
    test_missing_flags();
    test_gen_cli();
    return test_summary();
}
