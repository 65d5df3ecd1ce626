/* GGUF files where component files are taken (sd_load_params.unet_file / transformer_file;
 * gen --unet FILE.gguf, --transformer flux.gguf). tests/gguf_writer.c quantizes a tiny fixture's
 * weights with ggml's reference quantizers (Q4_K where rows are multiples of 256, Q8_0 where of
 * 32, F16 for other matrices, F32 vectors) and writes beside it an fp32 safetensors file of the
 * values those blocks stand for, decoded by its own code. The run with the GGUF must equal, bit
 * for bit, the run with that fp32 file (the reader dequantizes exactly): sd15-tiny's UNet in
 * diffusers names and in the original layout under model.diffusion_model. (as
 * stable-diffusion.cpp's files name it), and flux-tiny's transformer in Black Forest Labs' names
 * (as city96's FLUX GGUF files are); the UNets also with --low-memory. A GGUF of another model
 * is refused naming the file. */
#include <stdlib.h>
#include <string.h>

#include "../core/safetensors.h"
#include "bfl_writer.h"
#include "gguf_writer.h"
#include "ldm_writer.h"
#include "test.h"

static char tmpdir[600];
static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* The folder whose configs a whole-model file (-m FILE) runs with (NULL: the bundled ones). */
static const char *config_for_files;

static sd_status generate(const char *model, const char *unet, const char *transformer,
                          bool low_memory, sd_image *out) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config_for_files;
    lp.low_memory = low_memory;
    lp.keep_resident = !low_memory;
    lp.unet_file = unet;
    lp.transformer_file = transformer;
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.width = 64, g.height = 64;
    g.steps = 2;
    g.seed = 7;
    sd_result r;
    memset(&r, 0, sizeof r);
    const sd_status st = sd_generate(p, &g, &r);
    sd_pipeline_free(p);
    if (st != SD_OK) return st;
    const size_t n = (size_t)r.images[0].width * r.images[0].height * 3;
    *out = r.images[0];
    out->rgb = malloc(n);
    if (out->rgb) memcpy(out->rgb, r.images[0].rgb, n);
    sd_result_free(&r);
    return SD_OK;
}

/* `src` converted; the GGUF's image against the fp32 file's, by unet_file or transformer_file. */
static void check_same(const char *what, const char *model, const char *src, bool transformer,
                       bool want_q4k) {
    char gguf[700], ref[700];
    snprintf(gguf, sizeof gguf, "%s", tmp("model.gguf"));
    snprintf(ref, sizeof ref, "%s", tmp("model_ref.safetensors"));
    int counts[4];
    CHECK(gw_convert(src, gguf, ref, counts), "%s: convert %s", what, src);
    printf("%s: %d Q4_K, %d Q8_0, %d F16, %d F32 tensors\n", what, counts[0], counts[1],
           counts[2], counts[3]);
    CHECK(counts[1] > 0 && counts[2] + counts[3] > 0 && (!want_q4k || counts[0] > 0),
          "%s: the file mixes block types", what);
    /* Also with paging (--low-memory, the default since issue 19: the float32 pages given back
     * between uses must read back unchanged). The FLUX file was left out here once, when an fp32
     * BFL file gave another image paged than resident; that no longer reproduces (checked
     * 2026-12-07, four runs each of the GGUF and its fp32 twin), and paging is now FLUX's
     * default, so it is checked too. */
    for (int low = 0; low < 2; low++) {
        sd_image a = {0}, b = {0};
        CHECK_OK(generate(model, transformer ? NULL : gguf, transformer ? gguf : NULL, low, &a));
        CHECK_OK(generate(model, transformer ? NULL : ref, transformer ? ref : NULL, low, &b));
        CHECK(a.rgb && b.rgb && a.width == b.width && a.height == b.height &&
              !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3),
              "%s%s: the GGUF's image equals the dequantized fp32 file's", what,
              low ? " (low memory)" : "");
        free(a.rgb);
        free(b.rgb);
    }
}

/* city96's reshaped tensors (comfy.gguf.orig_shape.*): sd15-tiny's UNet with every 3x3
 * convolution and every Linear whose rows are not whole 256-blocks stored as Q4_K rows of 256;
 * the run equals the run of the dequantized fp32 file (those weights are read whole, through
 * the float32 path). Then bad metadata: the wrong element count, not an integer array. */
static void check_reshaped(const char *model, const char *src) {
    char gguf[700], ref[700];
    snprintf(gguf, sizeof gguf, "%s", tmp("reshaped.gguf"));
    snprintf(ref, sizeof ref, "%s", tmp("reshaped_ref.safetensors"));
    int counts[4], reshaped = 0;
    CHECK(gw_convert_reshaped(src, gguf, ref, counts, &reshaped), "convert %s", src);
    printf("sd15 unet, city96 reshaped: %d reshaped, %d Q4_K, %d Q8_0, %d F16, %d F32 tensors\n",
           reshaped, counts[0], counts[1], counts[2], counts[3]);
    CHECK(reshaped > 0 && counts[0] >= reshaped, "no tensor reshaped");
    for (int low = 0; low < 2; low++) {
        sd_image a = {0}, b = {0};
        CHECK_OK(generate(model, gguf, NULL, low, &a));
        CHECK_OK(generate(model, ref, NULL, low, &b));
        const bool same = a.rgb && b.rgb && a.width == b.width && a.height == b.height &&
                          !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3);
        CHECK(same, "city96 reshaped%s: the GGUF's image differs from the dequantized file's",
              low ? " (paged)" : "");
        if (same) printf("ok city96 reshaped%s: equals the dequantized fp32 file\n", low ? " (paged)" : "");
        free(a.rgb);
        free(b.rgb);
    }
    static uint8_t blocks[4 * 144];
    gw_tensor bad[2] = {{"conv.weight", GW_Q4_K, 2, {256, 4}, blocks, sizeof blocks, -1, 4, {4, 4, 8, 9}},
                        {"lin.weight", GW_F32, 2, {8, 2}, blocks, 64, -1, 2, {4, 4}}};
    const struct {
        const char *what, *want;
        int64_t dim1, dim3;
    } cases[] = {{"orig_shape of the wrong count", "gives 1152 values, the tensor holds 1024", 4, 9},
                 {"orig_shape with a negative dimension", "not an array of 1 to 8 positive", -4, 8}};
    for (int i = 0; i < 2; i++) {
        bad[0].orig_shape[1] = cases[i].dim1, bad[0].orig_shape[3] = cases[i].dim3;
        CHECK(gw_write(tmp("badshape.gguf"), bad, 2, 0), "writing badshape.gguf");
        st_file f;
        const sd_status st = st_open(&f, tmp("badshape.gguf"));
        CHECK(st != SD_OK && strstr(sd_last_error(), "badshape.gguf") &&
                  strstr(sd_last_error(), "comfy.gguf.orig_shape.conv.weight") &&
                  strstr(sd_last_error(), cases[i].want),
              "%s: %s", cases[i].what, st == SD_OK ? "opened" : sd_last_error());
        if (st == SD_OK) st_close(&f);
        else printf("ok %s: %s\n", cases[i].what, sd_last_error());
    }
    /* A good one opens with the original shape. */
    bad[0].orig_shape[1] = 4, bad[0].orig_shape[3] = 8;
    CHECK(gw_write(tmp("goodshape.gguf"), bad, 2, 0), "writing goodshape.gguf");
    st_file f;
    if (st_open(&f, tmp("goodshape.gguf")) == SD_OK) {
        const st_tensor *t = st_find(&f, "conv.weight");
        CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 4 && t->shape[2] == 8 &&
                  t->shape[3] == 8 && !st_rows_whole_blocks(t),
              "conv.weight: the original shape [4, 4, 8, 8] not restored");
        const st_tensor *l = st_find(&f, "lin.weight");
        CHECK(l && l->ndim == 2 && l->shape[0] == 4 && l->shape[1] == 4, "lin.weight not [4, 4]");
        st_close(&f);
        printf("ok comfy.gguf.orig_shape restores [4, 4, 8, 8] and [4, 4]\n");
    } else {
        CHECK(0, "goodshape.gguf: %s", sd_last_error());
    }
}

/* A whole-model GGUF as stable-diffusion.cpp converts a checkpoint (every tensor under its
 * original-layout name: model.diffusion_model.*, first_stage_model.*, cond_stage_model.* or
 * conditioner.embedders.*), given as -m: the same detection and configs as the .safetensors
 * single file, and the run equals, bit for bit, the run of the single file holding the
 * dequantized values. */
static void check_whole(const char *what, const char *folder, ldmw_flavour flavour) {
    char single[700], gguf[700], ref[700];
    snprintf(single, sizeof single, "%s", tmp("whole.safetensors"));
    snprintf(gguf, sizeof gguf, "%s", tmp("whole.gguf"));
    snprintf(ref, sizeof ref, "%s", tmp("whole_ref.safetensors"));
    const ldmw_options opt = {0};
    CHECK_OK(ldmw_write(folder, single, flavour, &opt));
    int counts[4];
    CHECK(gw_convert_as(single, gguf, ref, false, counts), "%s: convert %s", what, single);
    printf("%s: %d Q8_0, %d F16, %d F32 tensors\n", what, counts[1], counts[2], counts[3]);
    CHECK(counts[1] > 0, "%s: no Q8_0 tensor", what);
    config_for_files = folder;
    for (int low = 0; low < 2; low++) {
        sd_image a = {0}, b = {0};
        CHECK_OK(generate(gguf, NULL, NULL, low, &a));
        CHECK_OK(generate(ref, NULL, NULL, low, &b));
        const bool same = a.rgb && b.rgb && a.width == b.width && a.height == b.height &&
                          !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3);
        CHECK(same, "%s%s: the GGUF's image differs from the dequantized single file's", what,
              low ? " (paged)" : "");
        if (same)
            printf("ok %s%s: -m FILE.gguf equals the dequantized single file\n", what,
                   low ? " (paged)" : "");
        free(a.rgb);
        free(b.rgb);
    }
    /* The family is detected from the GGUF's keys as from the .safetensors file's. */
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = folder;
    sd_pipeline *pg = NULL, *ps = NULL;
    CHECK_OK(sd_pipeline_load(&pg, gguf, &lp));
    CHECK_OK(sd_pipeline_load(&ps, single, &lp));
    if (pg && ps)
        CHECK(sd_pipeline_family(pg) == sd_pipeline_family(ps), "%s: family %d from the GGUF, %d "
              "from the single file", what, (int)sd_pipeline_family(pg), (int)sd_pipeline_family(ps));
    sd_pipeline_free(pg);
    sd_pipeline_free(ps);
    config_for_files = NULL;
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("gguf_files"));
    char model[700], src[760];
    snprintf(model, sizeof model, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(src, sizeof src, "%s/unet/diffusion_pytorch_model.safetensors", model);
    check_same("sd15 unet, diffusers names", model, src, false, false);
    CHECK_OK(ldmw_write_component(model, "unet", tmp("unet_ldm.safetensors"), LDMW_SD1, 1));
    check_same("sd15 unet, model.diffusion_model.*", model, tmp("unet_ldm.safetensors"), false,
               false);

    /* A GGUF of another model: the SD UNet given as FLUX's transformer. */
    char flux[700], tdir[760];
    snprintf(flux, sizeof flux, "%s", fixture("flux-tiny/pipeline"));
    sd_image img = {0};
    const sd_status st = generate(flux, NULL, tmp("model.gguf"), false, &img);
    CHECK(st != SD_OK && strstr(sd_last_error(), "model.gguf"), "an SD GGUF as FLUX's "
          "transformer: %s", sd_last_error());
    printf("ok an SD GGUF as FLUX's transformer: %s\n", sd_last_error());
    free(img.rgb);

    snprintf(tdir, sizeof tdir, "%s/transformer", flux);
    const bflw_options faithful = {0};
    CHECK_OK(bflw_write(tdir, tmp("flux1-tiny.safetensors"), &faithful));
    check_same("flux transformer, BFL names", flux, tmp("flux1-tiny.safetensors"), true, true);

    check_reshaped(model, src);
    check_whole("sd15 whole model (cond_stage_model.transformer.*)", model, LDMW_SD1);
    /* stable-diffusion.cpp's own names for SDXL's CLIP-G and SD 2.x's OpenCLIP: refused by name. */
    static const float zeros[4 * 1024] = {0};
    const gw_tensor sdcpp_xl[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", GW_F32, 4, {3, 3, 4, 8}, zeros, 4 * 288, -1, 0, {0}},
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight", GW_F32, 1, {8}, zeros, 32, -1, 0, {0}},
        {"cond_stage_model.1.transformer.text_model.final_layer_norm.weight", GW_F32, 1, {8}, zeros, 32, -1, 0, {0}},
    };
    const gw_tensor sdcpp_sd2[] = {
        {"model.diffusion_model.input_blocks.0.0.weight", GW_F32, 4, {3, 3, 4, 8}, zeros, 4 * 288, -1, 0, {0}},
        {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", GW_F32, 2,
         {1024, 2}, zeros, 4 * 2048, -1, 0, {0}},
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight", GW_F32, 1, {8}, zeros, 32, -1, 0, {0}},
    };
    const struct {
        const char *file, *want;
        const gw_tensor *t;
        int n;
    } sdcpp[] = {{"sdcpp-xl.gguf", "cond_stage_model.1.transformer", sdcpp_xl, 3},
                 {"sdcpp-sd2.gguf", "cond_stage_model.transformer.*", sdcpp_sd2, 3}};
    for (int i = 0; i < 2; i++) {
        CHECK(gw_write(tmp(sdcpp[i].file), sdcpp[i].t, sdcpp[i].n, 0), "writing %s", sdcpp[i].file);
        sd_load_params lp;
        sd_load_params_init(&lp);
        lp.config_dir = model;
        sd_pipeline *p = NULL;
        const sd_status st = sd_pipeline_load(&p, tmp(sdcpp[i].file), &lp);
        CHECK(st != SD_OK && strstr(sd_last_error(), sdcpp[i].file) &&
                  strstr(sd_last_error(), sdcpp[i].want),
              "%s: %s", sdcpp[i].file, st == SD_OK ? "loaded" : sd_last_error());
        printf("ok %s\n", sd_last_error());
        sd_pipeline_free(p);
    }
    char sdxl[700];
    snprintf(sdxl, sizeof sdxl, "%s", fixture("sdxl-tiny/pipeline"));
    check_whole("sdxl whole model (conditioner.embedders.*)", sdxl, LDMW_SDXL);
    return test_summary();
}
