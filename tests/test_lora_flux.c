/* FLUX.1 LoRAs in Black Forest Labs' module names, as people share them: kohya-ss
 * (lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight / .lora_up.weight / .alpha) and
 * ComfyUI / BFL (diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight / .lora_B.weight),
 * written at test time for flux-tiny with random factors; and XLabs' attention-processor files
 * (double_blocks.0.processor.qkv_lora1.down.weight). The reference (tests/lora_ref.h) merges
 * in float64 into a copy of the folder, each fused BFL module (img_attn.qkv, single_blocks.N.linear1)
 * cut by this file's own table into the diffusers modules it adapts, as diffusers'
 * _convert_kohya_flux_lora_to_diffusers cuts it: the matching rows of up with the whole down.
 * The LoRA run must equal the merged folder's bit for bit, with the transformer from the folder
 * and from a BFL file (tests/bfl_writer.c). Also the errors: a FLUX LoRA on SD 1.5 and on SD3
 * says it is for FLUX.1, an unknown FLUX module is named. */
#include <stdlib.h>
#include <string.h>

#include "bfl_writer.h"
#include "lora_ref.h"
#include "lora_run.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* One BFL module and the diffusers tensors its up's rows go to, written from diffusers'
 * conversion (lora_conversion_utils.py) and BFL's model definition, independently of
 * core/lora_flux.c. `tail`: the last target takes the rows left after the equal blocks. */
typedef struct {
    const char *bfl;
    const char *targets[4];
    int n;
    bool tail, swap_halves, ignore_alpha;
} flux_case;

static const flux_case cases[] = {
    {"double_blocks.0.img_attn.qkv",
     {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
      "transformer_blocks.0.attn.to_v"}, 3, false, false, false},
    {"double_blocks.0.txt_attn.qkv",
     {"transformer_blocks.0.attn.add_q_proj", "transformer_blocks.0.attn.add_k_proj",
      "transformer_blocks.0.attn.add_v_proj"}, 3, false, false, false},
    {"double_blocks.0.img_attn.proj", {"transformer_blocks.0.attn.to_out.0"}, 1, false, false, false},
    {"double_blocks.0.txt_attn.proj", {"transformer_blocks.0.attn.to_add_out"}, 1, false, false,
     false},
    {"double_blocks.0.img_mlp.2", {"transformer_blocks.0.ff.net.2"}, 1, false, false, false},
    {"double_blocks.0.txt_mlp.0", {"transformer_blocks.0.ff_context.net.0.proj"}, 1, false, false,
     false},
    {"double_blocks.0.img_mod.lin", {"transformer_blocks.0.norm1.linear"}, 1, false, false, false},
    {"single_blocks.1.linear1",
     {"single_transformer_blocks.1.attn.to_q", "single_transformer_blocks.1.attn.to_k",
      "single_transformer_blocks.1.attn.to_v", "single_transformer_blocks.1.proj_mlp"}, 4, true,
     false, false},
    {"single_blocks.0.linear2", {"single_transformer_blocks.0.proj_out"}, 1, false, false, false},
    {"single_blocks.0.modulation.lin", {"single_transformer_blocks.0.norm.linear"}, 1, false, false,
     false},
    {"img_in", {"x_embedder"}, 1, false, false, false},
    {"guidance_in.in_layer", {"time_text_embed.guidance_embedder.linear_1"}, 1, false, false, false},
    /* diffusers takes final_layer's factors without their alpha, adaLN's halves swapped */
    {"final_layer.adaLN_modulation.1", {"norm_out.linear"}, 1, false, true, true},
};
enum { N_CASES = sizeof cases / sizeof *cases, RANK = 4 };

/* XLabs' attention-processor LoRAs (diffusers' _convert_xlabs_flux_lora_to_diffusers): no alpha;
 * a single block's qkv_lora is q, k, v alone. */
static const flux_case xlabs_cases[] = {
    {"double_blocks.0.processor.qkv_lora1",
     {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
      "transformer_blocks.0.attn.to_v"}, 3, false, false, true},
    {"double_blocks.0.processor.proj_lora2", {"transformer_blocks.0.attn.to_add_out"}, 1, false,
     false, true},
    {"single_blocks.0.processor.qkv_lora",
     {"single_transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.attn.to_k",
      "single_transformer_blocks.0.attn.to_v"}, 3, false, false, true},
    {"single_blocks.1.processor.proj_lora", {"single_transformer_blocks.1.proj_out"}, 1, false,
     false, true},
};
enum { N_XLABS = sizeof xlabs_cases / sizeof *xlabs_cases };

static const ref_tensor *find(const ref_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

typedef struct {
    int64_t rows, in; /* the fused up's rows, down's columns */
    float alpha;
    float *down, *up;
} fused;

/* Random factors for every case (shapes from flux-tiny's tensors), and the reference's modules:
 * one per diffusers target with the rows of up it takes. */
static bool make(const char *model, const flux_case *cases, int n_cases, fused *f, ref_lora *ref,
                 uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/transformer/diffusion_pytorch_model.safetensors", model);
    ref_file w;
    if (!ref_read(path, &w)) return false;
    ref_rng = seed;
    ref->n = 0;
    bool ok = true;
    for (int c = 0; c < n_cases && ok; c++) {
        const flux_case *k = &cases[c];
        int64_t rows[4], total = 0;
        for (int i = 0; i < k->n && ok; i++) {
            char name[300];
            snprintf(name, sizeof name, "%s.weight", k->targets[i]);
            const ref_tensor *t = find(&w, name);
            ok = t && t->ndim == 2;
            if (!ok) break;
            rows[i] = t->shape[0], total += rows[i];
            f[c].in = t->shape[1];
        }
        if (!ok) break;
        f[c].rows = total;
        f[c].alpha = (float)(c % 3 + 1); /* 1, 2, 3: alpha / rank differs from 1 */
        f[c].down = malloc((size_t)(RANK * f[c].in) * sizeof(float));
        f[c].up = malloc((size_t)(total * RANK) * sizeof(float));
        for (int64_t j = 0; j < RANK * f[c].in; j++) f[c].down[j] = 0.5f * ref_rand();
        for (int64_t j = 0; j < total * RANK; j++) f[c].up[j] = 0.5f * ref_rand();
        int64_t row0 = 0;
        for (int i = 0; i < k->n; i++) {
            ref_module *m = &ref->m[ref->n++];
            memset(m, 0, sizeof *m);
            snprintf(m->component, sizeof m->component, "transformer");
            snprintf(m->tensor, sizeof m->tensor, "%s.weight", k->targets[i]);
            m->rank = RANK, m->kh = m->kw = 1;
            m->out = rows[i], m->in = f[c].in;
            m->alpha = f[c].alpha, m->has_alpha = !k->ignore_alpha;
            m->down = malloc((size_t)(RANK * m->in) * sizeof(float));
            m->up = malloc((size_t)(m->out * RANK) * sizeof(float));
            memcpy(m->down, f[c].down, (size_t)(RANK * m->in) * sizeof(float));
            if (k->tail && i == k->n - 1) row0 = total - rows[i];
            for (int64_t o = 0; o < m->out; o++) {
                const int64_t src = k->swap_halves ? (o + m->out / 2) % m->out : o;
                memcpy(m->up + o * RANK, f[c].up + (row0 + src) * RANK, RANK * sizeof(float));
            }
            row0 += rows[i];
        }
    }
    ref_free(&w);
    return ok;
}

/* kohya: lora_unet_<bfl with '_'>.lora_down/.lora_up/.alpha; BFL: diffusion_model.<bfl>.lora_A /
 * .lora_B / .alpha. Fused modules as one pair, as the trainers save them. */
static bool write_lora(const fused *f, const char *path, bool kohya, const char *extra_module) {
    ref_file out = {0};
    for (int c = 0; c < N_CASES + (extra_module != NULL); c++) {
        const fused *x = &f[c < N_CASES ? c : 0];
        char base[300], name[340];
        const char *bfl = c < N_CASES ? cases[c].bfl : extra_module;
        if (kohya) {
            snprintf(base, sizeof base, "lora_unet_%s", bfl);
            for (char *p = base; *p; p++)
                if (*p == '.') *p = '_';
        } else {
            snprintf(base, sizeof base, "diffusion_model.%s", bfl);
        }
        const int64_t ds[2] = {RANK, x->in}, us[2] = {x->rows, RANK};
        snprintf(name, sizeof name, "%s.%s", base, kohya ? "lora_down.weight" : "lora_A.weight");
        ref_add(&out, ref_f32(name, 2, ds, x->down));
        snprintf(name, sizeof name, "%s.%s", base, kohya ? "lora_up.weight" : "lora_B.weight");
        ref_add(&out, ref_f32(name, 2, us, x->up));
        snprintf(name, sizeof name, "%s.alpha", base);
        ref_add(&out, ref_f32(name, 0, NULL, &x->alpha));
    }
    const bool ok = ref_write(path, &out);
    ref_free(&out);
    return ok;
}

/* XLabs: <bfl>.down.weight / .up.weight, no alpha. */
static bool write_xlabs(const fused *f, const char *path) {
    ref_file out = {0};
    for (int c = 0; c < N_XLABS; c++) {
        char name[340];
        const int64_t ds[2] = {RANK, f[c].in}, us[2] = {f[c].rows, RANK};
        snprintf(name, sizeof name, "%s.down.weight", xlabs_cases[c].bfl);
        ref_add(&out, ref_f32(name, 2, ds, f[c].down));
        snprintf(name, sizeof name, "%s.up.weight", xlabs_cases[c].bfl);
        ref_add(&out, ref_f32(name, 2, us, f[c].up));
    }
    const bool ok = ref_write(path, &out);
    ref_free(&out);
    return ok;
}

/* An XLabs LoRA against its own merged folder. */
static void test_xlabs(const char *model) {
    static fused f[N_XLABS];
    static ref_lora ref;
    CHECK(make(model, xlabs_cases, N_XLABS, f, &ref, 43), "flux-tiny's tensors for XLabs");
    CHECK(write_xlabs(f, tmp("xlabs.safetensors")), "write XLabs FLUX LoRA");
    const char *merged = tmp("merged-xlabs");
    const char *const changed[] = {"transformer", NULL};
    link_folder(model, merged, changed);
    const ref_lora *refs[] = {&ref};
    const float scale = 1.1f;
    CHECK(ref_merge_component(model, merged, "transformer", "diffusion_pytorch_model.safetensors",
                              refs, &scale, 1), "reference merge (XLabs)");
    const sd_lora l = {tmp("xlabs.safetensors"), scale};
    run_out want, with, plain;
    CHECK(run(merged, NULL, 0, &want) && run(model, &l, 1, &with) && run(model, NULL, 0, &plain),
          "XLabs runs: %s", sd_last_error());
    CHECK(same(&with, &want), "XLabs LoRA: latents equal the merged folder's bit for bit (max "
          "diff %g)", with.latents && want.latents ? max_diff(with.latents, want.latents, with.n)
                                                   : -1.0);
    CHECK(!same(&with, &plain), "the XLabs LoRA changes the latents");
    run_free(&want), run_free(&with), run_free(&plain);
    for (int c = 0; c < N_XLABS; c++) free(f[c].down), free(f[c].up);
    ref_lora_free(&ref);
}

static void test_flux(const char *model) {
    static fused f[N_CASES];
    static ref_lora ref;
    CHECK(make(model, cases, N_CASES, f, &ref, 41), "flux-tiny's tensors for every case");
    CHECK(write_lora(f, tmp("kohya.safetensors"), true, NULL), "write kohya FLUX LoRA");
    CHECK(write_lora(f, tmp("bfl.safetensors"), false, NULL), "write BFL FLUX LoRA");
    const char *merged = tmp("merged");
    const char *const changed[] = {"transformer", NULL};
    link_folder(model, merged, changed);
    const ref_lora *refs[] = {&ref};
    const float scale = 0.8f;
    CHECK(ref_merge_component(model, merged, "transformer", "diffusion_pytorch_model.safetensors",
                              refs, &scale, 1), "reference merge");
    run_out want, plain;
    CHECK(run(merged, NULL, 0, &want), "merged folder runs: %s", sd_last_error());
    CHECK(run(model, NULL, 0, &plain), "plain runs: %s", sd_last_error());
    CHECK(!same(&want, &plain), "the merged LoRA changes the latents");
    const bflw_options faithful = {0};
    CHECK(bflw_write(fixture("flux-tiny/pipeline/transformer"), tmp("flux1.safetensors"),
                     &faithful) == SD_OK, "BFL transformer file written: %s", sd_last_error());
    static const char *const names[] = {"kohya", "bfl"};
    for (int k = 0; k < 2; k++) {
        char file[64];
        snprintf(file, sizeof file, "%s.safetensors", names[k]);
        const sd_lora l = {tmp(file), scale};
        for (int from_file = 0; from_file < 2; from_file++) {
            run_out with;
            CHECK(run_file(model, from_file ? tmp("flux1.safetensors") : NULL, &l, 1, 0, &with),
                  "%s LoRA loads%s: %s", names[k], from_file ? " (BFL transformer file)" : "",
                  sd_last_error());
            CHECK(same(&with, &want), "%s LoRA%s: latents equal the merged folder's bit for bit "
                  "(max diff %g)", names[k], from_file ? ", BFL transformer file" : "",
                  with.latents && want.latents ? max_diff(with.latents, want.latents, with.n) : -1.0);
            run_free(&with);
        }
    }
    run_free(&want), run_free(&plain);
    for (int c = 0; c < N_CASES; c++) free(f[c].down), free(f[c].up);
    ref_lora_free(&ref);
}

static void expect_error(const char *what, const char *model, const char *lora, const char *part1,
                         const char *part2) {
    const sd_lora l = {lora, 1.0f};
    run_out o;
    const bool loaded = run(model, &l, 1, &o);
    CHECK(!loaded && strstr(sd_last_error(), part1) && (!part2 || strstr(sd_last_error(), part2)),
          "%s: refused naming '%s' (%s)", what, part1, loaded ? "loaded" : sd_last_error());
    if (loaded) run_free(&o);
}

static void test_errors(const char *flux) {
    static fused f[N_CASES];
    static ref_lora ref;
    CHECK(make(flux, cases, N_CASES, f, &ref, 42), "factors for the error cases");
    CHECK(write_lora(f, tmp("unknown.safetensors"), true, "double_blocks.0.img_attn.bogus"),
          "write a kohya FLUX LoRA with an unknown module");
    expect_error("unknown FLUX module", flux, tmp("unknown.safetensors"),
                 "lora_unet_double_blocks_0_img_attn_bogus", "FLUX");
    expect_error("FLUX LoRA on SD 1.5", fixture("sd15-tiny/pipeline"), tmp("kohya.safetensors"),
                 "for FLUX.1", "kohya.safetensors");
    expect_error("FLUX LoRA (BFL naming) on SD3", fixture("sd3-tiny/pipeline"),
                 tmp("bfl.safetensors"), "for FLUX.1", "diffusion_model.");
    for (int c = 0; c < N_CASES; c++) free(f[c].down), free(f[c].up);
    ref_lora_free(&ref);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-lora-flux-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    char flux[512];
    snprintf(flux, sizeof flux, "%s", fixture("flux-tiny/pipeline"));
    test_flux(flux);
    test_xlabs(flux);
    test_errors(flux);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
