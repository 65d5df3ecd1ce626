/* A FLUX.1 folder with its transformer from one file in Black Forest Labs' layout
 * (sd_load_params.transformer_file, gen --transformer): flux-tiny's transformer is written as one
 * BFL file by an independent converter (tests/bfl_writer.c, from BFL's model definition) and must
 * give the SAME image, bit for bit, as the plain folder (same weights, same arithmetic): bare and
 * under ComfyUI's model.diffusion_model. prefix (or diffusion_model.), with --low-memory, and as a diffusers-layout
 * file. The fixture is bf16 and the file keeps it (the fused tensors' row views read bf16). Also
 * the errors: a missing block, fewer blocks than the config's, an unexpected key, a block beyond
 * the config's count, a shape mismatch, a pickled file, an SD checkpoint given as the
 * transformer, a non-FLUX folder. */
#include <stdlib.h>
#include <string.h>

#include "../core/safetensors.h"
#include "bfl_writer.h"
#include "ldm_writer.h"
#include "manifest.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static sd_status generate(const char *model, const char *transformer, bool low_memory,
                          sd_result *r) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.transformer_file = transformer;
    lp.low_memory = low_memory;
    lp.keep_resident = !low_memory;
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.width = 64, g.height = 64;
    g.steps = 2;
    g.seed = 7;
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

static const char *folder(void) {
    static char buf[700];
    snprintf(buf, sizeof buf, "%s", fixture("flux-tiny/pipeline"));
    return buf;
}

static const char *transformer_dir(void) {
    static char buf[760];
    snprintf(buf, sizeof buf, "%s/transformer", folder());
    return buf;
}

/* The stored dtype of `name` in `path`, -1 when absent. */
static int dtype_of(const char *path, const char *name) {
    st_file f;
    if (st_open(&f, path) != SD_OK) return -1;
    const st_tensor *t = st_find(&f, name);
    const int d = t ? (int)t->dtype : -1;
    st_close(&f);
    return d;
}

static void test_same_image(void) {
    sd_result want, got;
    memset(&want, 0, sizeof want);
    CHECK_OK(generate(folder(), NULL, false, &want));
    const bflw_options plain = {0}, comfy = {.prefix = "model.diffusion_model."};
    CHECK_OK(bflw_write(transformer_dir(), tmp("flux1-tiny.safetensors"), &plain));
    /* The file diffusers' FluxTransformer2DModel.from_single_file was recorded reading. */
    manifest_check_dit_file("flux1-tiny.safetensors", tmp("flux1-tiny.safetensors"));
    CHECK_OK(bflw_write(transformer_dir(), tmp("flux1-tiny-comfy.safetensors"), &comfy));
    /* fp32, as the full release: its stored weights (swapped adaLN halves: the loader's own heap
     * copy) are paged out by --low-memory, which must not give back a heap copy's pages. */
    const bflw_options wide = {.f32 = 1};
    CHECK_OK(bflw_write(transformer_dir(), tmp("flux1-tiny-f32.safetensors"), &wide));
    const bflw_options short_prefix = {.prefix = "diffusion_model."};
    CHECK_OK(bflw_write(transformer_dir(), tmp("flux1-tiny-dm.safetensors"), &short_prefix));
    CHECK(dtype_of(tmp("flux1-tiny.safetensors"), "single_blocks.0.linear1.weight") == ST_BF16,
          "the BFL file keeps the fixture's bf16");
    char diffusers[800];
    snprintf(diffusers, sizeof diffusers, "%s/diffusion_pytorch_model.safetensors", transformer_dir());
    const struct {
        const char *file;
        bool low_memory;
    } cases[] = {
        {tmp("flux1-tiny.safetensors"), false},
        {tmp("flux1-tiny-comfy.safetensors"), false},
        {tmp("flux1-tiny-dm.safetensors"), false},
        {tmp("flux1-tiny.safetensors"), true},
        {tmp("flux1-tiny-f32.safetensors"), false},
        {tmp("flux1-tiny-f32.safetensors"), true},
        {diffusers, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memset(&got, 0, sizeof got);
        CHECK_OK(generate(folder(), cases[i].file, cases[i].low_memory, &got));
        CHECK(same_result(&want, &got), "%s%s: the folder's image, bit for bit", cases[i].file,
              cases[i].low_memory ? " (low memory)" : "");
        sd_result_free(&got);
    }
    sd_result_free(&want);
}

/* sd_pipeline_load with the transformer file must fail with `want` (a status) and a message
 * holding `text`. */
static void check_error(const char *model, const char *file, sd_status want, const char *text,
                        const char *what) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.transformer_file = file;
    sd_pipeline *p = NULL;
    const sd_status st = sd_pipeline_load(&p, model, &lp);
    CHECK(st == want && p == NULL && strstr(sd_last_error(), text),
          "%s: %s (%s), want '%s'", what, sd_status_name(st), sd_last_error(), text);
    sd_pipeline_free(p);
}

static void test_errors(void) {
    const bflw_options drop = {.drop = "single_blocks.0."};
    CHECK_OK(bflw_write(transformer_dir(), tmp("missing.safetensors"), &drop));
    check_error(folder(), tmp("missing.safetensors"), SD_ERR_TENSOR,
                "single_transformer_blocks.0.", "a missing single block");
    /* The last block missing: fewer blocks than the config's, named before any is loaded. */
    const bflw_options drop_last = {.drop = "single_blocks.1."};
    CHECK_OK(bflw_write(transformer_dir(), tmp("shallow.safetensors"), &drop_last));
    check_error(folder(), tmp("shallow.safetensors"), SD_ERR_CONFIG,
                "single block count is 1 (tensor 'single_blocks.N'), but", "a shallower file");
    check_error(folder(), tmp("shallow.safetensors"), SD_ERR_CONFIG, "num_single_layers 2",
                "a shallower file names the config key");
    const bflw_options extra = {.extra = "double_blocks.0.img_attn.bogus.weight"};
    CHECK_OK(bflw_write(transformer_dir(), tmp("extra.safetensors"), &extra));
    check_error(folder(), tmp("extra.safetensors"), SD_ERR_FORMAT,
                "'double_blocks.0.img_attn.bogus.weight'", "an unexpected key");
    const bflw_options beyond = {.extra = "double_blocks.1.img_mod.lin.bias"};
    CHECK_OK(bflw_write(transformer_dir(), tmp("beyond.safetensors"), &beyond));
    check_error(folder(), tmp("beyond.safetensors"), SD_ERR_FORMAT, "num_layers 1",
                "a double block beyond the config's count");
    const bflw_options shrink = {.shrink = "txt_in.weight"};
    CHECK_OK(bflw_write(transformer_dir(), tmp("shrunk.safetensors"), &shrink));
    check_error(folder(), tmp("shrunk.safetensors"), SD_ERR_TENSOR, "context_embedder.weight",
                "a shape mismatch");
    FILE *f = fopen(tmp("flux1-dev.ckpt"), "wb");
    if (f) fclose(f);
    check_error(folder(), tmp("flux1-dev.ckpt"), SD_ERR_UNSUPPORTED, "never unpickles",
                "a pickled file");
    const ldmw_options sd_opt = {0};
    CHECK_OK(ldmw_write(fixture("sd15-tiny/pipeline"), tmp("sd15.safetensors"), LDMW_SD1, &sd_opt));
    check_error(folder(), tmp("sd15.safetensors"), SD_ERR_FORMAT, "not a FLUX.1 transformer",
                "an SD checkpoint as the transformer");
    check_error(fixture("sd15-tiny/pipeline"), tmp("flux1-tiny.safetensors"), SD_ERR_ARG,
                "whose denoiser is a UNet", "a transformer file for an SD folder");
    check_error(fixture("sd3-tiny/pipeline"), tmp("flux1-tiny.safetensors"), SD_ERR_FORMAT,
                "holds a FLUX transformer", "a FLUX transformer file for an SD3 folder");
}

static void test_gen_cli(void) {
    const char *args[] = {"-m", folder(), "--transformer", tmp("flux1-tiny.safetensors"),
                          "--steps", "1", "-W", "64", "-H", "64", "-o", tmp("cli.png"), "a cat",
                          NULL};
    int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "gen --transformer FILE (rc %d): %s", rc, tool_output);
    rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--transformer FILE"), "gen --help lists --transformer");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("flux_bfl"));
    test_same_image();
    test_errors();
    test_gen_cli();
    return test_summary();
}
