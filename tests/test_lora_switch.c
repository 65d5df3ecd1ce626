/* sd_pipeline_set_loras: a pipeline loaded with LoRA A and switched to B generates the same
 * latents and prompt embeddings, bit for bit, as a fresh load with B; switched to none, as the
 * plain model; to A + B, as a fresh load with both. A set that fails (a missing file, a LoRA for
 * another family, keys that match nothing) leaves the pipeline with its previous set. A switch
 * while sd_generate runs is SD_ERR_BUSY. The same from a single-file checkpoint, and on FLUX, with the transformer from the folder
 * and from a BFL file. LoRA files are written at test time (tests/lora_ref.h). */
#include <stdlib.h>
#include <string.h>

#include "bfl_writer.h"
#include "ldm_writer.h"
#include "lora_ref.h"
#include "lora_run.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* config_dir: a single file's configs (the tiny fixtures are not the bundled real ones). */
static sd_pipeline *load_cfg(const char *model, const char *config_dir,
                             const char *transformer_file, const sd_lora *loras, int n) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config_dir;
    lp.transformer_file = transformer_file;
    lp.loras = loras;
    lp.n_loras = n;
    sd_pipeline *p = NULL;
    CHECK(sd_pipeline_load(&p, model, &lp) == SD_OK, "load %s: %s", model, sd_last_error());
    return p;
}

static sd_pipeline *load(const char *model, const char *transformer_file, const sd_lora *loras,
                         int n) {
    return load_cfg(model, NULL, transformer_file, loras, n);
}

/* Generates with p and compares with `want` (latents and embeddings). */
static void expect_same(sd_pipeline *p, const run_out *want, const char *what) {
    run_out got = {0};
    CHECK(p && run_generate(p, &got), "%s: generates: %s", what, sd_last_error());
    CHECK(same(&got, want), "%s: latents bit for bit (max diff %g)", what,
          got.latents && want->latents ? max_diff(got.latents, want->latents, got.n) : -1.0);
    CHECK(got.embeds && want->embeds && got.n_embeds == want->n_embeds &&
              !memcmp(got.embeds, want->embeds, got.n_embeds * sizeof(float)),
          "%s: prompt embeddings bit for bit", what);
    run_free(&got);
}

typedef struct {
    sd_pipeline *p;
    sd_status during; /* what sd_pipeline_set_loras answered from inside sd_generate */
    bool called;
} busy_probe;

static int try_switch(void *user, const sd_event *ev) {
    busy_probe *b = user;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS && !b->called) {
        b->called = true;
        b->during = sd_pipeline_set_loras(b->p, NULL, 0);
    }
    return 0;
}

static void test_sd15(const char *model) {
    static const char *const unet_pats[] = {"attn1.to_", "attn2.to_", "ff.net", NULL};
    static const char *const te_pats[] = {"self_attn.", NULL};
    static ref_lora a, b;
    ref_lora_pick(&a, model, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false, 4,
                  2.0f, true, 51);
    ref_lora_pick(&a, model, "text_encoder", "model.safetensors", te_pats, false, 4, 4.0f, true, 52);
    ref_lora_pick(&b, model, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false, 8,
                  8.0f, false, 53);
    CHECK(a.n > 4 && b.n > 4, "modules picked (%d, %d)", a.n, b.n);
    CHECK(ref_lora_write(&a, tmp("a.safetensors"), REF_KOHYA, false), "write A (kohya, UNet + TE)");
    CHECK(ref_lora_write(&b, tmp("b.safetensors"), REF_PEFT, false), "write B (PEFT, UNet)");
    const sd_lora la = {tmp("a.safetensors"), 0.7f}, lb = {tmp("b.safetensors"), 1.2f};
    const sd_lora both[] = {la, lb};
    run_out want_a, want_b, want_ab, plain;
    CHECK(run(model, &la, 1, &want_a) && run(model, &lb, 1, &want_b) &&
              run(model, both, 2, &want_ab) && run(model, NULL, 0, &plain),
          "fresh loads: %s", sd_last_error());
    CHECK(!same(&want_a, &want_b) && !same(&want_a, &plain) && !same(&want_b, &plain),
          "A, B and none differ");

    sd_pipeline *p = load(model, NULL, &la, 1);
    expect_same(p, &want_a, "loaded with A");
    CHECK(p && sd_pipeline_set_loras(p, &lb, 1) == SD_OK, "A -> B: %s", sd_last_error());
    expect_same(p, &want_b, "A -> B equals a fresh load with B");
    CHECK(p && sd_pipeline_set_loras(p, NULL, 0) == SD_OK, "B -> none: %s", sd_last_error());
    expect_same(p, &plain, "B -> none equals the plain model");
    CHECK(p && sd_pipeline_set_loras(p, both, 2) == SD_OK, "none -> A + B: %s", sd_last_error());
    expect_same(p, &want_ab, "none -> A + B equals a fresh load with both");
    CHECK(p && sd_pipeline_set_loras(p, &la, 1) == SD_OK, "A + B -> A: %s", sd_last_error());
    expect_same(p, &want_a, "A + B -> A equals a fresh load with A");

    /* Failures keep A: a missing file, an SDXL LoRA (text_encoder_2), keys matching nothing. */
    static ref_lora te2;
    ref_lora_pick(&te2, fixture("sdxl-tiny/pipeline"), "text_encoder_2", "model.safetensors",
                  te_pats, false, 4, 4.0f, true, 54);
    CHECK(ref_lora_write(&te2, tmp("xl.safetensors"), REF_KOHYA, true), "write an SDXL LoRA");
    ref_file none = {0};
    const float v[4] = {0.25f, 0.5f, 0.75f, 1.0f};
    const int64_t shape[2] = {2, 2};
    ref_add(&none, ref_f32("lora_unet_no_such_module.lora_down.weight", 2, shape, v));
    ref_add(&none, ref_f32("lora_unet_no_such_module.lora_up.weight", 2, shape, v));
    CHECK(ref_write(tmp("none.safetensors"), &none), "write a LoRA matching nothing");
    ref_free(&none);
    const struct {
        const char *file, *says;
    } bad[] = {{"missing.safetensors", "missing"}, {"xl.safetensors", "another family"},
               {"none.safetensors", "no_such_module"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const sd_lora l[] = {lb, {tmp(bad[i].file), 1.0f}};
        const sd_status st = p ? sd_pipeline_set_loras(p, l, 2) : SD_OK;
        CHECK(st != SD_OK && strstr(sd_last_error(), bad[i].says), "%s refused (%s)", bad[i].file,
              sd_last_error());
        expect_same(p, &want_a, "after a refused switch the pipeline keeps A");
    }

    busy_probe probe = {p, SD_OK, false};
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a cat", g.steps = 1, g.on_event = try_switch, g.user = &probe;
    sd_result r;
    CHECK(p && sd_generate(p, &g, &r) == SD_OK, "generate with a switch attempt inside");
    if (p) sd_result_free(&r);
    CHECK(probe.called && probe.during == SD_ERR_BUSY, "a switch during sd_generate is "
          "SD_ERR_BUSY (%d)", (int)probe.during);
    expect_same(p, &want_a, "after the busy refusal the pipeline keeps A");
    sd_pipeline_free(p);
    run_free(&want_a), run_free(&want_b), run_free(&want_ab), run_free(&plain);
    ref_lora_free(&a), ref_lora_free(&b), ref_lora_free(&te2);
}

/* A single-file SD 1.x checkpoint (original layout, tests/ldm_writer.c): A -> B equals a fresh
 * load of the file with B; the components come from the file again, not from a folder. */
static void test_single_file(const char *model) {
    const ldmw_options plain_file = {0};
    CHECK(ldmw_write(model, tmp("sd15.safetensors"), LDMW_SD1, &plain_file) == SD_OK,
          "single file written: %s", sd_last_error());
    const sd_lora la = {tmp("a.safetensors"), 0.7f}, lb = {tmp("b.safetensors"), 1.2f};
    run_out want_b = {0};
    sd_pipeline *fresh = load_cfg(tmp("sd15.safetensors"), model, NULL, &lb, 1);
    CHECK(fresh && run_generate(fresh, &want_b), "single file with B: %s", sd_last_error());
    sd_pipeline_free(fresh);
    sd_pipeline *p = load_cfg(tmp("sd15.safetensors"), model, NULL, &la, 1);
    CHECK(p && sd_pipeline_set_loras(p, &lb, 1) == SD_OK, "single file A -> B: %s",
          sd_last_error());
    expect_same(p, &want_b, "single file A -> B equals a fresh load with B");
    sd_pipeline_free(p);
    run_free(&want_b);
}

/* FLUX.1: none -> a PEFT LoRA -> none, the transformer from the folder and from a BFL file. */
static void test_flux(const char *model) {
    static const char *const pats[] = {"attn.to_", "ff.net", "proj_mlp", NULL};
    static ref_lora l;
    ref_lora_pick(&l, model, "transformer", "diffusion_pytorch_model.safetensors", pats, false, 4,
                  2.0f, true, 55);
    CHECK(ref_lora_write(&l, tmp("flux.safetensors"), REF_PEFT, false), "write a FLUX LoRA");
    const bflw_options faithful = {0};
    CHECK(bflw_write(fixture("flux-tiny/pipeline/transformer"), tmp("flux1.safetensors"),
                     &faithful) == SD_OK, "BFL transformer file written: %s", sd_last_error());
    const sd_lora lf = {tmp("flux.safetensors"), 0.9f};
    for (int from_file = 0; from_file < 2; from_file++) {
        const char *file = from_file ? tmp("flux1.safetensors") : NULL;
        run_out want, plain;
        CHECK(run_file(model, file, &lf, 1, 0, &want) && run_file(model, file, NULL, 0, 0, &plain),
              "FLUX fresh loads: %s", sd_last_error());
        CHECK(!same(&want, &plain), "the FLUX LoRA changes the latents");
        sd_pipeline *p = load(model, file, NULL, 0);
        CHECK(p && sd_pipeline_set_loras(p, &lf, 1) == SD_OK, "FLUX none -> LoRA: %s",
              sd_last_error());
        expect_same(p, &want, from_file ? "FLUX (BFL file) none -> LoRA" : "FLUX none -> LoRA");
        CHECK(p && sd_pipeline_set_loras(p, NULL, 0) == SD_OK, "FLUX LoRA -> none: %s",
              sd_last_error());
        expect_same(p, &plain, from_file ? "FLUX (BFL file) LoRA -> none" : "FLUX LoRA -> none");
        sd_pipeline_free(p);
        run_free(&want), run_free(&plain);
    }
    ref_lora_free(&l);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-lora-switch-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    char sd15[512], flux[512];
    snprintf(sd15, sizeof sd15, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(flux, sizeof flux, "%s", fixture("flux-tiny/pipeline"));
    test_sd15(sd15);
    test_single_file(sd15); /* with test_sd15's a/b.safetensors */
    test_flux(flux);
    CHECK(sd_pipeline_set_loras(NULL, NULL, 0) == SD_ERR_ARG, "a NULL pipeline is an error");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
