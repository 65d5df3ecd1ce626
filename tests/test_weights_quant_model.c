/* --weights-dtype q8_0|q4_0 on whole tiny pipelines (SD 1.5 as image-to-image, so the VAE
 * encoder runs too; FLUX, whose transformer fixture is BF16, with its T5): the run must equal,
 * bit for bit, the run of an fp32 folder this test writes itself with every weight as the README
 * says the policy holds it: a Linear weight of the text encoders or the denoiser (2 dims, named
 * .weight, rows a whole number of blocks, not an embedding or a first/last layer) quantized with
 * the reference quantizer and dequantized, everything else at 16 bits (an F32 tensor rounded to
 * f16, a BF16 one as it is). The rules are written out here, not taken from the library, so a
 * weight the library quantizes or keeps against them changes the numbers. Counts of quantized
 * tensors are checked too, so that the comparison cannot pass by quantizing nothing. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/gguf_quant.h"
#include "../core/gguf_quantize.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "test.h"

/* The README's kept list ("GGUF files"), by diffusers name. */
static bool kept_by_name(const char *name) {
    static const char *const top[] = {"conv_in.", "conv_out.", "proj_out.", "norm_out.",
                                      "text_projection."};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strncmp(name, top[i], strlen(top[i]))) return true;
    /* T5's token table is a lookup, never a Linear layer (it has no "embed" in its name). */
    return strstr(name, "embed") != NULL || !strcmp(name, "shared.weight");
}

/* One component file rewritten as the policy holds it; *quantized counts the Linear weights. */
static bool write_expected_file(const char *src, const char *dst, bool linear_ok, uint32_t type,
                                int *quantized) {
    st_file f;
    if (st_open(&f, src) != SD_OK) return false;
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    float **bufs = calloc((size_t)f.n_tensors, sizeof *bufs);
    bool ok = e && bufs;
    int elems = 0, bytes = 0;
    gguf_type_block(type, &elems, &bytes);
    for (int i = 0; ok && i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        e[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        if (!st_is_float(t->dtype)) continue;
        const size_t n = (size_t)st_numel(t), len = strlen(t->name);
        float *x = bufs[i] = malloc(n * sizeof *x + 4);
        uint8_t *q = malloc(n * 2 + 4);
        if (!x || !q) {
            free(q);
            ok = false;
            break;
        }
        st_to_f32(t, x);
        const bool linear = linear_ok && t->ndim == 2 && len > 7 &&
                            !strcmp(t->name + len - 7, ".weight") && t->shape[1] % elems == 0 &&
                            !kept_by_name(t->name);
        if (linear) {
            gguf_quantize_row(type, x, q, (int64_t)n);
            gguf_dequantize(type, q, x, (int64_t)n);
            ++*quantized;
        } else if (t->dtype == ST_F32) {
            for (size_t j = 0; j < n; j++) x[j] = st_f16_to_f32(st_f32_to_f16(x[j]));
        }
        free(q);
        e[i].dtype = ST_F32;
        e[i].data = x;
    }
    if (ok) ok = st_write(dst, e, f.n_tensors, NULL, 0) == SD_OK;
    for (int i = 0; bufs && i < f.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(e);
    st_close(&f);
    return ok;
}

/* The pipeline folder `src` as the expected fp32 folder `dst` (component folders one level
 * down; everything but .safetensors files linked). */
static bool write_expected(const char *src, const char *dst, uint32_t type, int depth,
                           bool linear_ok, int *quantized) {
    if (mkdir(dst, 0700) && errno != EEXIST) return false;
    DIR *d = opendir(src);
    if (!d) return false;
    bool ok = true;
    for (struct dirent *de; ok && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char *s = sd_path_join(src, de->d_name), *t = sd_path_join(dst, de->d_name);
        struct stat sb;
        const size_t len = strlen(de->d_name);
        if (!s || !t || stat(s, &sb)) ok = false;
        else if (S_ISDIR(sb.st_mode) && depth > 0)
            /* The VAE's Linear weights (its attention) are read as float32 copies: no blocks. */
            ok = write_expected(s, t, type, depth - 1, strcmp(de->d_name, "vae") != 0, quantized);
        else if (len > 12 && !strcmp(de->d_name + len - 12, ".safetensors"))
            ok = write_expected_file(s, t, linear_ok, type, quantized);
        else {
            char *abs = realpath(s, NULL);
            ok = abs && !symlink(abs, t);
            free(abs);
        }
        free(s);
        free(t);
    }
    closedir(d);
    return ok;
}

typedef struct {
    float *latents;
    size_t n;
    uint8_t *rgb;
    size_t bytes;
} outcome;

static bool generate(const char *dir, sd_weights_dtype wd, bool resident, const sd_gen_params *g,
                     outcome *o) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.weights_dtype = wd;
    lp.keep_resident = resident;
    sd_pipeline *p = NULL;
    memset(o, 0, sizeof *o);
    CHECK_OK(sd_pipeline_load(&p, dir, &lp));
    if (!p) return false;
    sd_result r;
    memset(&r, 0, sizeof r);
    const sd_status st = sd_generate(p, g, &r);
    CHECK(st == SD_OK, "generate in %s: %s", dir, sd_last_error());
    if (st == SD_OK && r.n_images == 1) {
        o->n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
        o->bytes = (size_t)r.images[0].width * r.images[0].height * 3;
        o->latents = malloc(o->n * sizeof *o->latents);
        o->rgb = malloc(o->bytes);
        memcpy(o->latents, r.latents, o->n * sizeof *o->latents);
        memcpy(o->rgb, r.images[0].rgb, o->bytes);
    }
    sd_result_free(&r);
    sd_pipeline_free(p);
    return o->n > 0;
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *de; (de = readdir(d));) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *s = sd_path_join(path, de->d_name);
            struct stat sb;
            if (s && !lstat(s, &sb) && S_ISDIR(sb.st_mode)) remove_tree(s);
            else if (s) unlink(s);
            free(s);
        }
        closedir(d);
    }
    rmdir(path);
}

static void run_case(const char *model, const char *tmp, sd_weights_dtype wd, uint32_t type,
                     bool resident, int min_quantized, const sd_gen_params *g) {
    char dir[512], src[256];
    snprintf(dir, sizeof dir, "%s/%s-%s", tmp, model, gguf_type_name(type));
    snprintf(src, sizeof src, "%s/pipeline", model);
    int quantized = 0;
    const bool ok = write_expected(fixture(src), dir, type, 1, true, &quantized);
    CHECK(ok, "writing the expected %s folder of %s", gguf_type_name(type), model);
    CHECK(quantized >= min_quantized, "%s %s: %d Linear weights quantized, expected >= %d", model,
          gguf_type_name(type), quantized, min_quantized);
    outcome got, want, plain;
    if (!ok || !generate(dir, SD_WEIGHTS_STORED, false, g, &want)) return;
    if (generate(fixture(src), wd, resident, g, &got)) {
        const bool same = got.n == want.n && got.bytes == want.bytes &&
                          !memcmp(got.latents, want.latents, want.n * sizeof(float)) &&
                          !memcmp(got.rgb, want.rgb, want.bytes);
        CHECK(same, "%s --weights-dtype %s%s: not identical to the dequantized fp32 folder "
              "(latents rel err %.3g)", model, gguf_type_name(type),
              resident ? " --keep-resident" : "", got.n == want.n ? rel_l2(got.latents, want.latents, want.n) : -1.0);
        if (same)
            printf("ok %s --weights-dtype %s%s (%d Linear weights quantized): latents and image "
                   "identical to the dequantized fp32 folder\n", model, gguf_type_name(type),
                   resident ? " --keep-resident" : "", quantized);
        /* Quantizing must change something, or the comparison proves nothing. */
        if (generate(fixture(src), SD_WEIGHTS_STORED, false, g, &plain)) {
            CHECK(memcmp(plain.latents, got.latents, got.n * sizeof(float)),
                  "%s %s: the same latents as the unquantized run", model, gguf_type_name(type));
            free(plain.latents), free(plain.rgb);
        }
        free(got.latents), free(got.rgb);
    }
    free(want.latents), free(want.rgb);
    remove_tree(dir);
}

int main(void) {
    char tmp[] = "/tmp/sd_wquant_XXXXXX";
    if (!mkdtemp(tmp)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    sd_image init;
    CHECK_OK(image_alloc(&init, 64, 64));
    for (int i = 0; init.rgb && i < 64 * 64 * 3; i++) init.rgb[i] = (uint8_t)(i * 37 % 251);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red boat on a lake";
    g.negative_prompt = "blurry";
    g.width = g.height = 64;
    g.steps = 2;
    g.seed = 42;
    g.init_image = &init;
    g.strength = 0.9;
    run_case("sd15-tiny", tmp, SD_WEIGHTS_Q8_0, GGUF_TYPE_Q8_0, false, 60, &g);
    run_case("sd15-tiny", tmp, SD_WEIGHTS_Q4_0, GGUF_TYPE_Q4_0, true, 60, &g);
    image_free(&init);

    sd_gen_params_init(&g);
    g.prompt = "a red boat on a lake";
    g.width = g.height = 64;
    g.steps = 2;
    g.seed = 5;
    g.max_sequence_length = 16;
    run_case("flux-tiny", tmp, SD_WEIGHTS_Q8_0, GGUF_TYPE_Q8_0, false, 25, &g);
    run_case("flux-tiny", tmp, SD_WEIGHTS_Q4_0, GGUF_TYPE_Q4_0, true, 25, &g);
    /* The K types need rows of 256: the tiny fixtures' only such rows are FLUX's timestep
     * embedder (kept), so they are checked layer by layer in test_gguf_quantize.c. */
    remove_tree(tmp);
    return test_summary();
}
