/* Whole pipelines with weights held in their stored dtype (issue 8), against the same pipeline
 * stored in float32 with every weight rounded to f16 / bf16 beforehand: the numbers must be
 * identical, bit for bit (widening is exact and the kernels run in the same order). Covers the
 * SD 1.5 tiny model (CLIP, UNet, VAE decoder and, through image-to-image, the VAE encoder), the
 * SD3 tiny model with a T5 (two CLIP encoders with projection, T5, the MMDiT) and the FLUX tiny
 * model (CLIP, T5, the FLUX transformer, whose fixture is stored as BF16).
 *
 * The variants are written into a temporary folder from the fixtures with core/safetensors'
 * writer: "r16" / "rb16" (F32, values rounded), "f16" / "bf16" (the rounded values stored as
 * 16-bit). Also checked: --weights-dtype f16|bf16 on the float32 release equals the rounded one,
 * and paging (weights paged in per layer: --low-memory, and the default of the families that page
 * by default) against --keep-resident changes nothing. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "../core/weights.h"
#include "../kernels/gemm.h"
#include "../nn/layers.h"
#include "../kernels/cpu.h"
#include "test.h"

typedef enum { AS_IS, ROUND_F16, ROUND_BF16, STORE_F16, STORE_BF16 } variant;

static uint16_t to16(float v, bool bf) { return bf ? st_f32_to_bf16(v) : st_f32_to_f16(v); }
static float from16(uint16_t h, bool bf) { return bf ? st_bf16_to_f32(h) : st_f16_to_f32(h); }

static bool write_variant_file(const char *src, const char *dst, variant v) {
    st_file f;
    if (st_open(&f, src) != SD_OK) return false;
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    void **bufs = calloc((size_t)f.n_tensors, sizeof *bufs);
    bool ok = e && bufs;
    const bool bf = v == ROUND_BF16 || v == STORE_BF16, store16 = v == STORE_F16 || v == STORE_BF16;
    for (int i = 0; ok && i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        e[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        if (!st_is_float(t->dtype) || v == AS_IS) continue;
        const size_t n = (size_t)st_numel(t);
        float *wide = malloc(n * sizeof *wide + 4);
        bufs[i] = malloc(n * 4 + 4);
        if (!wide || !bufs[i]) {
            free(wide);
            ok = false;
            break;
        }
        st_to_f32(t, wide);
        for (size_t j = 0; j < n; j++) {
            const uint16_t h = to16(wide[j], bf);
            if (store16) memcpy((uint8_t *)bufs[i] + 2 * j, &h, 2);
            else ((float *)bufs[i])[j] = from16(h, bf);
        }
        free(wide);
        e[i].dtype = store16 ? (bf ? ST_BF16 : ST_F16) : ST_F32;
        e[i].data = bufs[i];
    }
    if (ok) ok = st_write(dst, e, f.n_tensors, NULL, 0) == SD_OK;
    for (int i = 0; bufs && i < f.n_tensors; i++) free(bufs[i]);
    free(bufs);
    free(e);
    st_close(&f);
    return ok;
}

/* A copy of a pipeline folder (two levels) whose .safetensors files are rewritten as `v` says;
 * everything else is linked. */
static bool write_variant(const char *src, const char *dst, variant v, int depth) {
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
        else if (S_ISDIR(sb.st_mode) && depth > 0) ok = write_variant(s, t, v, depth - 1);
        else if (len > 12 && !strcmp(de->d_name + len - 12, ".safetensors"))
            ok = write_variant_file(s, t, v);
        else {
            char *abs = realpath(s, NULL); /* links must not depend on the working directory */
            ok = abs && !symlink(abs, t);
            free(abs);
        }
        free(s);
        free(t);
    }
    closedir(d);
    return ok;
}

/* What a generation gives: the final latents and the 8-bit image. */
typedef struct {
    float *latents;
    size_t n;
    uint8_t *rgb;
    size_t bytes;
} outcome;

/* How a run holds its weights: sd_load_params.keep_resident, .low_memory, or neither (the
 * family's default, issue 19). */
typedef enum { MEM_RESIDENT, MEM_LOW, MEM_DEFAULT } mem_mode;

/* The families that page by default (README, "Memory": where paging costs under 2% of a run),
 * written out here so that a change of the library's choice is a decision, not an accident. */
static bool pages_by_default(sd_family f) {
    return f == SD_FAMILY_SD || f == SD_FAMILY_SDXL || f == SD_FAMILY_SD3 || f == SD_FAMILY_FLUX;
}

static void outcome_free(outcome *o) {
    free(o->latents);
    free(o->rgb);
    memset(o, 0, sizeof *o);
}

/* `gens` generations on one pipeline, the second with another prompt (so that a low-memory
 * pipeline must bring its text encoders back). */
static bool generate_prec(const char *dir, sd_weights_dtype wd, mem_mode mem, sd_precision prec,
                          int gens, const sd_gen_params *g, const char *prompt_2, outcome o[2]) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.weights_dtype = wd;
    lp.low_memory = mem == MEM_LOW;
    lp.keep_resident = mem == MEM_RESIDENT;
    lp.precision = prec;
    sd_pipeline *p = NULL;
    memset(o, 0, 2 * sizeof *o);
    CHECK_OK(sd_pipeline_load(&p, dir, &lp));
    if (!p) return false;
    const bool paging = mem == MEM_LOW || (mem == MEM_DEFAULT && pages_by_default(sd_pipeline_family(p)));
    CHECK(sd_pipeline_paging(p) == paging, "%s: paging %s, expected %s (mode %d)", dir,
          sd_pipeline_paging(p) ? "on" : "off", paging ? "on" : "off", (int)mem);
    bool ok = true;
    for (int k = 0; k < gens && ok; k++) {
        sd_gen_params gk = *g;
        if (k) gk.prompt = prompt_2;
        sd_result r;
        memset(&r, 0, sizeof r);
        const sd_status st = sd_generate(p, &gk, &r);
        CHECK(st == SD_OK, "generate in %s: %s", dir, sd_last_error());
        ok = st == SD_OK && r.n_images == 1;
        if (!ok) break;
        o[k].n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
        o[k].bytes = (size_t)r.images[0].width * r.images[0].height * 3;
        o[k].latents = malloc(o[k].n * sizeof *o[k].latents);
        o[k].rgb = malloc(o[k].bytes);
        memcpy(o[k].latents, r.latents, o[k].n * sizeof *o[k].latents);
        memcpy(o[k].rgb, r.images[0].rgb, o[k].bytes);
        sd_result_free(&r);
    }
    sd_pipeline_free(p);
    return ok;
}

static bool generate(const char *dir, sd_weights_dtype wd, mem_mode mem, int gens,
                     const sd_gen_params *g, const char *prompt_2, outcome o[2]) {
    return generate_prec(dir, wd, mem, SD_PRECISION_FP32, gens, g, prompt_2, o);
}

static void expect_same(const char *what, const outcome *got, const outcome *want) {
    for (int k = 0; k < 2 && got[k].n; k++) {
        const bool same = got[k].n == want[k].n && got[k].bytes == want[k].bytes && want[k].n &&
                          !memcmp(got[k].latents, want[k].latents, want[k].n * sizeof(float)) &&
                          !memcmp(got[k].rgb, want[k].rgb, want[k].bytes);
        double err = got[k].n == want[k].n && want[k].n ? rel_l2(got[k].latents, want[k].latents, want[k].n) : -1;
        CHECK(same, "%s, generation %d: not identical (latents rel err %.3g)", what, k + 1, err);
        if (same) printf("ok %s, generation %d: latents and image identical\n", what, k + 1);
    }
}

static void run_model(const char *model, const char *tmp, const sd_gen_params *g, const char *p2) {
    static const char *const names[] = {"orig", "r16", "rb16", "f16", "bf16"};
    char dirs[5][512];
    for (int v = 0; v < 5; v++) {
        snprintf(dirs[v], sizeof dirs[v], "%s/%s-%s", tmp, model, names[v]);
        char src[256];
        snprintf(src, sizeof src, "%s/pipeline", model);
        const bool ok = write_variant(fixture(src), dirs[v], (variant)v, 1);
        CHECK(ok, "writing the %s variant of %s into %s", names[v], model, dirs[v]);
        if (!ok) return;
    }
    outcome ref[2], r16[2], rb16[2], got[2];
    char what[256];
    if (!generate(dirs[0], SD_WEIGHTS_STORED, MEM_RESIDENT, 2, g, p2, ref)) return;
    for (int mem = MEM_LOW; mem <= MEM_DEFAULT; mem++) {
        if (generate(dirs[0], SD_WEIGHTS_STORED, (mem_mode)mem, 2, g, p2, got)) {
            snprintf(what, sizeof what, "%s float32, %s vs --keep-resident", model,
                     mem == MEM_LOW ? "--low-memory" : "default");
            expect_same(what, got, ref);
        }
        for (int k = 0; k < 2; k++) outcome_free(&got[k]);
    }
    for (int bf = 0; bf < 2; bf++) {
        outcome *want = bf ? rb16 : r16;
        const char *dt = bf ? "bf16" : "f16";
        if (!generate(dirs[1 + bf], SD_WEIGHTS_STORED, MEM_RESIDENT, 2, g, p2, want)) continue;
        /* Rounding must change something, or the comparisons below prove nothing. */
        CHECK(memcmp(want[0].latents, ref[0].latents, ref[0].n * sizeof(float)),
              "%s rounded to %s gives the float32 latents: the variant is not rounded", model, dt);
        /* Every combination for f16; bf16 differs only in the conversion, so fewer (time). */
        struct {
            int dir;
            sd_weights_dtype wd;
            mem_mode mem;
            const char *label;
        } cases[] = {{3 + bf, SD_WEIGHTS_STORED, MEM_RESIDENT, "stored, --keep-resident"},
                     {0, bf ? SD_WEIGHTS_BF16 : SD_WEIGHTS_F16, bf ? MEM_LOW : MEM_RESIDENT, bf ? "float32 release, --weights-dtype --low-memory" : "float32 release, --weights-dtype --keep-resident"},
                     {3, SD_WEIGHTS_STORED, MEM_LOW, "stored, --low-memory"},
                     {3, SD_WEIGHTS_STORED, MEM_DEFAULT, "stored, default"}};
        for (size_t c = 0; c < sizeof cases / sizeof *cases - 2 * (size_t)bf; c++) {
            const int gens = cases[c].mem != MEM_RESIDENT ? 2 : 1;
            if (generate(dirs[cases[c].dir], cases[c].wd, cases[c].mem, gens, g, p2, got)) {
                snprintf(what, sizeof what, "%s %s (%s) vs pre-rounded float32", model, dt, cases[c].label);
                expect_same(what, got, want);
            }
            for (int k = 0; k < 2; k++) outcome_free(&got[k]);
        }
    }
    /* Under --precision bf16 every weight packed at load is packed as bf16 from its float32
     * values, whatever the file holds, and the unpacked ones (SD3's and FLUX's Linear layers)
     * run fp32 on the stored weights: an f16 release (also with --low-memory) must equal its
     * pre-rounded float32 twin there too. */
    outcome bw[2];
    if (generate_prec(dirs[1], SD_WEIGHTS_STORED, MEM_RESIDENT, SD_PRECISION_BF16, 1, g, p2, bw)) {
        /* bf16 runs where the CPU has it; elsewhere the pipeline falls back to fp32 exactly.
         * FLUX's latents stay fp32 (its transformer packs nothing): only its VAE changes. */
        const bool differs = memcmp(bw[0].latents, r16[0].latents, bw[0].n * sizeof(float)) ||
                             memcmp(bw[0].rgb, r16[0].rgb, bw[0].bytes);
        CHECK(differs == (kern_bf16_active() != 0), "%s: --precision bf16 %s the float32 latents "
              "on a CPU %s avx512_bf16", model, differs ? "changes" : "keeps",
              kern_bf16_active() ? "with" : "without");
        for (int low = 0; low < 2; low++) {
            if (generate_prec(dirs[3], SD_WEIGHTS_STORED, low ? MEM_LOW : MEM_RESIDENT,
                              SD_PRECISION_BF16, 1, g, p2, got)) {
                snprintf(what, sizeof what, "%s f16 stored, --precision bf16%s vs pre-rounded float32",
                         model, low ? " --low-memory" : " --keep-resident");
                expect_same(what, got, bw);
            }
            for (int k = 0; k < 2; k++) outcome_free(&got[k]);
        }
    }
    for (int k = 0; k < 2; k++) {
        outcome_free(&ref[k]);
        outcome_free(&r16[k]);
        outcome_free(&rb16[k]);
        outcome_free(&bw[k]);
    }
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

/* Fused projections whose parts a file stores in different dtypes: nn_linear_stack widens
 * them to float32 and the product is the plain one (a mix must load, not fail). */
static void test_mixed_stack(const char *tmp) {
    const int in = 37, outs[3] = {40, 5, 33}, dts[3] = {ST_F16, ST_F32, ST_BF16};
    char dir[512];
    snprintf(dir, sizeof dir, "%s/mixed", tmp);
    mkdir(dir, 0700);
    char *path = sd_path_join(dir, "model.safetensors");
    st_entry e[6];
    void *bufs[6] = {0};
    float *wide = malloc((size_t)(40 + 5 + 33) * in * sizeof *wide), *bias = malloc(78 * sizeof *bias);
    fill_random(bias, 78, 3);
    size_t row = 0;
    static const char *const names[6] = {"q.weight", "k.weight", "v.weight", "q.bias", "k.bias", "v.bias"};
    for (int i = 0; i < 3; i++) {
        const size_t n = (size_t)outs[i] * in;
        float *w = wide + row * in;
        fill_random(w, n, 10 + i);
        bufs[i] = malloc(n * 4);
        for (size_t j = 0; j < n; j++) {
            if (dts[i] == ST_F32) {
                ((float *)bufs[i])[j] = w[j];
                continue;
            }
            const uint16_t h = to16(w[j], dts[i] == ST_BF16);
            memcpy((uint8_t *)bufs[i] + 2 * j, &h, 2);
            w[j] = from16(h, dts[i] == ST_BF16);
        }
        e[i] = (st_entry){names[i], (st_dtype)dts[i], 2, {outs[i], in}, bufs[i]};
        e[3 + i] = (st_entry){names[3 + i], ST_F32, 1, {outs[i]}, bias + row};
        row += (size_t)outs[i];
    }
    CHECK_OK(st_write(path, e, 6, NULL, 0));
    sd_weights w;
    CHECK_OK(weights_open(&w, dir, "model", NULL));
    w.keep_stored = true;
    nn_linear parts[3], qkv;
    memset(parts, 0, sizeof parts);
    for (int i = 0; i < 3; i++) CHECK_OK(nn_linear_load(&parts[i], &w, in, outs[i], true, "%.1s", names[i]));
    CHECK_OK(nn_linear_stack(&qkv, parts, 3));
    float x[3 * 37], got[3 * 78], want[3 * 78];
    fill_random(x, sizeof x / sizeof *x, 5);
    nn_linear_forward(&qkv, x, got, 3);
    gemm_nt_ref(3, 78, in, x, in, wide, in, want, 78, bias, 0);
    check_rel("stacked q|k|v stored as f16, f32, bf16", got, want, 3 * 78, 1e-6);
    nn_linear_free(&qkv);
    weights_close(&w);
    for (int i = 0; i < 3; i++) free(bufs[i]);
    free(wide);
    free(bias);
    free(path);
}

int main(void) {
    char tmp[] = "/tmp/sd_wdtype_XXXXXX";
    if (!mkdtemp(tmp)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    test_mixed_stack(tmp);
    /* SD 1.5 as image-to-image: the VAE encoder runs too. */
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
    run_model("sd15-tiny", tmp, &g, "a lighthouse at dusk");
    image_free(&init);

    sd_gen_params_init(&g);
    g.prompt = "a red boat on a lake";
    g.width = g.height = 64;
    g.steps = 1;
    g.seed = 7;
    g.max_sequence_length = 16;
    run_model("sd3t5-tiny", tmp, &g, "a lighthouse at dusk");

    /* FLUX: the transformer's Linear layers are nn/ layers like SD3's, so the same rules hold. */
    sd_gen_params_init(&g);
    g.prompt = "a red boat on a lake";
    g.width = g.height = 64;
    g.steps = 2;
    g.seed = 5;
    g.max_sequence_length = 16;
    run_model("flux-tiny", tmp, &g, "a lighthouse at dusk");
    remove_tree(tmp);
    return test_summary();
}
