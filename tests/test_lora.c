/* LoRA: the library's merge at load (core/lora.c) against an independent float64 merge into a
 * copy of the fixture folder (tests/lora_ref.h), for kohya-ss, LoCon, LyCORIS LoHa / LoKr and
 * diffusers/PEFT files on the SD 1.5 and SDXL tiny fixtures; several LoRAs at once; scale 0; the
 * text encoders; the error cases; gen's --lora and <lora:NAME:SCALE> tags. LoRA files are written at test time into a
 * temporary folder (never committed). */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lora_ref.h"
#include "lora_run.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static int warnings;
static char last_warning[1024];
static void on_log(void *user, sd_log_level level, const char *msg) {
    (void)user;
    if (level == SD_LOG_WARN) warnings++, snprintf(last_warning, sizeof last_warning, "%s", msg);
}

static const char *const unet_pats[] = {"attn1.to_", "attn2.to_", "ff.net", "proj_", NULL};
static const char *const te_pats[] = {"self_attn.", "mlp.fc", NULL};
static const char *const conv_pats[] = {"resnets.", NULL};

/* The library with the LoRAs on the fixture == the fixture merged by the reference; the LoRA
 * changes the result; embeddings follow when a text encoder is adapted. */
static void check_case(const char *what, const char *model, const char *const *changed,
                       const ref_lora *const *refs, const char *const *paths, const float *scales,
                       int n, const char *merged_name) {
    const char *merged = tmp(merged_name);
    link_folder(model, merged, changed);
    for (int i = 0; changed[i]; i++) {
        const char *file = strncmp(changed[i], "text_encoder", 12)
                               ? "diffusion_pytorch_model.safetensors" : "model.safetensors";
        CHECK(ref_merge_component(model, merged, changed[i], file, refs, scales, n),
              "%s: reference merge of %s", what, changed[i]);
    }
    sd_lora loras[4];
    for (int i = 0; i < n; i++) loras[i] = (sd_lora){paths[i], scales[i]};
    run_out with, want, plain;
    warnings = 0;
    sd_set_log_callback(on_log, NULL);
    CHECK(run(model, loras, n, &with), "%s: load with LoRA: %s", what, sd_last_error());
    sd_set_log_callback(NULL, NULL);
    CHECK(warnings == 0, "%s: every module matched (%s)", what, warnings ? last_warning : "");
    CHECK(run(merged, NULL, 0, &want), "%s: merged folder: %s", what, sd_last_error());
    CHECK(run(model, NULL, 0, &plain), "%s: plain: %s", what, sd_last_error());
    CHECK(same(&with, &want), "%s: latents equal the merged folder's bit for bit (max diff %g)",
          what, with.latents && want.latents ? max_diff(with.latents, want.latents, with.n) : -1.0);
    CHECK(with.latents && plain.latents && !same(&with, &plain), "%s: the LoRA changes the latents",
          what);
    CHECK(with.embeds && want.embeds && with.n_embeds == want.n_embeds &&
              !memcmp(with.embeds, want.embeds, with.n_embeds * sizeof(float)),
          "%s: prompt embeddings equal the merged folder's", what);
    bool te = false;
    for (int i = 0; changed[i]; i++) te |= !strncmp(changed[i], "text_encoder", 12);
    if (with.embeds && plain.embeds && with.n_embeds == plain.n_embeds)
        CHECK(te == (memcmp(with.embeds, plain.embeds, with.n_embeds * sizeof(float)) != 0),
              "%s: prompt embeddings %s", what, te ? "change (text encoder LoRA)" : "unchanged");
    run_free(&with), run_free(&want), run_free(&plain);
}

static void test_sd15(const char *model) {
    static ref_lora kohya, locon, peft;
    ref_lora_pick(&kohya, model, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false, 4,
                  3.0f, true, 11);
    ref_lora_pick(&kohya, model, "text_encoder", "model.safetensors", te_pats, false, 4, 2.0f, true,
                  12);
    ref_lora_pick(&locon, model, "unet", "diffusion_pytorch_model.safetensors", conv_pats, true, 3,
                  1.5f, true, 13);
    ref_lora_pick(&peft, model, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false, 2,
                  0, false, 14);
    CHECK(kohya.n > 20 && locon.n > 4 && peft.n > 10, "LoRA modules picked (%d, %d, %d)", kohya.n,
          locon.n, peft.n);
    bool conv = false;
    for (int i = 0; i < locon.n; i++) conv |= locon.m[i].kh == 3;
    CHECK(conv, "the LoCon LoRA has 3x3 convolutions");
    CHECK(ref_lora_write(&kohya, tmp("kohya.safetensors"), REF_KOHYA, false), "write kohya");
    CHECK(ref_lora_write(&locon, tmp("locon.safetensors"), REF_KOHYA, false), "write locon");
    CHECK(ref_lora_write(&peft, tmp("peft.safetensors"), REF_PEFT, false), "write peft");

    const char *const unet_te[] = {"unet", "text_encoder", NULL}, *const unet_only[] = {"unet", NULL};
    {
        const ref_lora *r[] = {&kohya};
        const char *p[] = {tmp("kohya.safetensors")};
        const float s[] = {0.8f};
        check_case("sd15 kohya unet+te, alpha 3/2 rank 4, scale 0.8", model, unet_te, r, p, s, 1,
                   "m1");
    }
    {
        const ref_lora *r[] = {&locon, &peft};
        const char *p[] = {tmp("locon.safetensors"), tmp("peft.safetensors")};
        const float s[] = {0.7f, 1.25f};
        check_case("sd15 LoCon (3x3) + PEFT at once", model, unet_only, r, p, s, 2, "m2");
    }
    {
        static ref_lora old;
        static const char *const attn[] = {"attn1.to_", "attn2.to_", NULL};
        ref_lora_pick(&old, model, "unet", "diffusion_pytorch_model.safetensors", attn, false, 2, 0,
                      false, 15);
        CHECK(ref_lora_write(&old, tmp("old.safetensors"), REF_OLD_DIFFUSERS, false), "write old");
        const ref_lora *r[] = {&old};
        const char *p[] = {tmp("old.safetensors")};
        const float s[] = {1.0f};
        check_case("sd15 old diffusers attn-processor naming", model, unet_only, r, p, s, 1, "m3");
        ref_lora_free(&old);
    }
    /* Scale 0 adds exact zeros: the plain model's numbers. */
    run_out zero, plain;
    const sd_lora z[] = {{tmp("kohya.safetensors"), 0.0f}};
    CHECK(run(model, z, 1, &zero), "scale 0 loads: %s", sd_last_error());
    CHECK(run(model, NULL, 0, &plain), "plain loads");
    CHECK(same(&zero, &plain), "scale 0 equals no LoRA");
    run_free(&zero), run_free(&plain);
    /* --low-memory keeps unmerged weights mapped and pages them per layer: same numbers. */
    run_out lm, full;
    const sd_lora k[] = {{tmp("kohya.safetensors"), 0.8f}};
    CHECK(run_lm(model, k, 1, 1, &lm) && run(model, k, 1, &full) && same(&lm, &full),
          "LoRA under --low-memory gives the same latents");
    run_free(&lm), run_free(&full);
    /* --weights-dtype f16 rounds the merged weight like every other: the merged folder (F32)
     * converted at load gives the same numbers. */
    run_out h, hm;
    CHECK(run_lm(model, k, 1, 2, &h) && run_lm(tmp("m1"), NULL, 0, 2, &hm) && same(&h, &hm),
          "LoRA under --weights-dtype f16 equals the merged folder under f16");
    run_free(&h), run_free(&hm);
    ref_lora_free(&kohya), ref_lora_free(&locon), ref_lora_free(&peft);
}

static void test_sdxl(const char *model) {
    static ref_lora l;
    ref_lora_pick(&l, model, "unet", "diffusion_pytorch_model.safetensors", unet_pats, false, 4,
                  2.0f, true, 21);
    ref_lora_pick(&l, model, "text_encoder", "model.safetensors", te_pats, false, 2, 1.0f, true, 22);
    ref_lora_pick(&l, model, "text_encoder_2", "model.safetensors", te_pats, false, 4, 8.0f, true,
                  23);
    CHECK(ref_lora_write(&l, tmp("xl.safetensors"), REF_KOHYA, true), "write sdxl kohya");
    CHECK(ref_lora_write(&l, tmp("xl_peft.safetensors"), REF_PEFT, true), "write sdxl peft");
    const char *const changed[] = {"unet", "text_encoder", "text_encoder_2", NULL};
    const ref_lora *r[] = {&l};
    const char *p[] = {tmp("xl.safetensors")};
    const float s[] = {1.0f};
    check_case("sdxl kohya te1+te2(fp16)+unet", model, changed, r, p, s, 1, "x1");
    const char *pp[] = {tmp("xl_peft.safetensors")};
    check_case("sdxl PEFT te1+te2(fp16)+unet", model, changed, r, pp, s, 1, "x2");
    ref_lora_free(&l);

    /* kohya SDXL files name the UNet in the original layout: attention, resnets (LoCon 3x3
     * convs, time_emb_proj), the down- and upsamplers, the mid block. */
    static ref_lora ldm;
    static const char *const pats[] = {"attn1.to_", "attn2.to_", "ff.net", "proj_", "resnets.",
                                       "samplers.", NULL};
    ref_lora_pick(&ldm, model, "unet", "diffusion_pytorch_model.safetensors", pats, true, 4, 3.0f,
                  true, 24);
    ref_lora_pick(&ldm, model, "text_encoder_2", "model.safetensors", te_pats, false, 2, 1.0f,
                  true, 25);
    int convs = 0, mids = 0, samplers = 0;
    for (int i = 0; i < ldm.n; i++) {
        convs += ldm.m[i].kh == 3;
        mids += strstr(ldm.m[i].tensor, "mid_block.") != NULL;
        samplers += strstr(ldm.m[i].tensor, "samplers.") != NULL;
    }
    CHECK(convs > 4 && mids > 2 && samplers >= 3, "LDM-named LoRA covers convs (%d), the mid block "
          "(%d), down/upsamplers (%d)", convs, mids, samplers);
    CHECK(ref_lora_write(&ldm, tmp("xl_ldm.safetensors"), REF_KOHYA_LDM, true), "write sdxl ldm");
    const char *const changed2[] = {"unet", "text_encoder_2", NULL};
    const ref_lora *r2[] = {&ldm};
    const char *p2[] = {tmp("xl_ldm.safetensors")};
    check_case("sdxl kohya, original-layout UNet names", model, changed2, r2, p2, s, 1, "x3");
    ref_lora_free(&ldm);
}

/* LyCORIS LoHa and LoKr (each way of holding LoKr's factors) on the SD 1.5 UNet's attention and
 * 3x3 convolutions, alone and beside a plain LoRA. */
static void test_lycoris(const char *model) {
    static const char *const pats[] = {"attn1.to_", "attn2.to_", "ff.net", "resnets.", NULL};
    static ref_lora loha, lokr[3], plain;
    const char *const changed[] = {"unet", NULL};
    const char *unet = "diffusion_pytorch_model.safetensors";
    ref_lora_pick(&loha, model, "unet", unet, pats, true, 4, 2.0f, true, 61);
    ref_lycoris_make(&loha, 1, false, false, 62);
    CHECK(ref_lora_write(&loha, tmp("loha.safetensors"), REF_KOHYA, false), "write LoHa");
    const ref_lora *r1[] = {&loha};
    const char *p1[] = {tmp("loha.safetensors")};
    const float s1[] = {0.6f};
    check_case("LoHa", model, changed, r1, p1, s1, 1, "ly1");
    static const bool factored[3][2] = {{false, true}, {true, false}, {false, false}};
    for (int k = 0; k < 3; k++) {
        ref_lora_pick(&lokr[k], model, "unet", unet, pats, k == 1, 4, 3.0f, true, 63 + k);
        ref_lycoris_make(&lokr[k], 2, factored[k][0], factored[k][1], 66 + k);
        char file[64], what[80], merged[16];
        snprintf(file, sizeof file, "lokr%d.safetensors", k);
        snprintf(what, sizeof what, "LoKr, w1 %s, w2 %s", factored[k][0] ? "a @ b" : "whole",
                 factored[k][1] ? "a @ b" : "whole");
        snprintf(merged, sizeof merged, "ly%d", 2 + k);
        CHECK(ref_lora_write(&lokr[k], tmp(file), REF_KOHYA, false), "write %s", what);
        const ref_lora *r[] = {&lokr[k]};
        const char *p[] = {tmp(file)};
        check_case(what, model, changed, r, p, s1, 1, merged);
    }
    ref_lora_pick(&plain, model, "unet", unet, pats, false, 4, 1.0f, false, 69);
    CHECK(ref_lora_write(&plain, tmp("ly_plain.safetensors"), REF_KOHYA, false), "write LoRA");
    const ref_lora *r2[] = {&loha, &lokr[1], &plain};
    const char *p2[] = {tmp("loha.safetensors"), tmp("lokr1.safetensors"),
                        tmp("ly_plain.safetensors")};
    const float s2[] = {0.5f, 1.5f, 0.8f};
    check_case("LoHa + LoKr + LoRA", model, changed, r2, p2, s2, 3, "ly5");
    ref_lora_free(&loha), ref_lora_free(&plain);
    for (int k = 0; k < 3; k++) ref_lora_free(&lokr[k]);
}

/* diffusers/PEFT transformer.* LoRAs on the DiT families (bf16 fixtures: the merged copy is F32,
 * widening is exact). */
static void test_dit(const char *model, const char *what, uint64_t seed) {
    static ref_lora l;
    static const char *const pats[] = {"attn.to_", "attn.add_", "ff.net", "proj_mlp", NULL};
    ref_lora_pick(&l, model, "transformer", "diffusion_pytorch_model.safetensors", pats, false, 4,
                  2.0f, true, seed);
    CHECK(l.n > 4, "%s: modules picked (%d)", what, l.n);
    char name[64];
    snprintf(name, sizeof name, "%s.safetensors", what);
    CHECK(ref_lora_write(&l, tmp(name), REF_PEFT, false), "write %s", name);
    const char *const changed[] = {"transformer", NULL};
    const ref_lora *r[] = {&l};
    const char *p[] = {tmp(name)};
    const float s[] = {0.9f};
    check_case(what, model, changed, r, p, s, 1, what);
    ref_lora_free(&l);
}

/* A LoRA file of raw (name, shape) tensors for the error cases. */
static void write_raw(const char *path, const char *const *names, int n, int rows, int cols) {
    ref_file f = {0};
    float *v = calloc((size_t)rows * cols + 1, sizeof *v);
    for (int i = 0; i < n; i++) {
        const bool up = strstr(names[i], "up") || strstr(names[i], "lora_B");
        const int64_t s[2] = {up ? rows : 2, up ? 2 : cols};
        ref_add(&f, ref_f32(names[i], 2, s, v));
    }
    CHECK(ref_write(path, &f), "write %s", path);
    ref_free(&f);
    free(v);
}

static void expect_error(const char *what, const char *model, const char *path, const char *part1,
                         const char *part2) {
    const sd_lora l[] = {{path, 1.0f}};
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.loras = l;
    lp.n_loras = 1;
    sd_pipeline *p = NULL;
    const sd_status st = sd_pipeline_load(&p, model, &lp);
    CHECK(st != SD_OK && !p && strstr(sd_last_error(), part1) && strstr(sd_last_error(), part2),
          "%s: refused, naming '%s' and '%s' (got: %s)", what, part1, part2,
          st == SD_OK ? "loaded" : sd_last_error());
    sd_pipeline_free(p);
}

static void test_errors(const char *sd15, const char *sdxl) {
    const char *none[] = {"lora_unet_no_such_module.lora_down.weight",
                          "lora_unet_no_such_module.lora_up.weight"};
    write_raw(tmp("none.safetensors"), none, 2, 16, 16);
    expect_error("no key matches", sd15, tmp("none.safetensors"), "none.safetensors",
                 "lora_unet_no_such_module");
    expect_error("SDXL LoRA on SD 1.5", sd15, tmp("xl.safetensors"), "xl.safetensors",
                 "text_encoder_2");
    const char *bad[] = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
                         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"};
    write_raw(tmp("shape.safetensors"), bad, 2, 16, 24);
    expect_error("shapes disagree", sd15, tmp("shape.safetensors"), "attn1_to_q.lora_down.weight",
                 "attn1.to_q.weight");
    const char *ldm[] = {"lora_unet_input_blocks_4_7_proj_in.lora_down.weight",
                         "lora_unet_input_blocks_4_7_proj_in.lora_up.weight"};
    write_raw(tmp("ldm.safetensors"), ldm, 2, 16, 16);
    expect_error("SDXL original layout, unknown block", sdxl, tmp("ldm.safetensors"),
                 "input_blocks_4_7", "original layout");
    const char *half[] = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"};
    write_raw(tmp("half.safetensors"), half, 1, 16, 16);
    expect_error("down without up", sd15, tmp("half.safetensors"), "half.safetensors", "up");
    const char *hada[] = {"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a"};
    write_raw(tmp("hada.safetensors"), hada, 1, 16, 16);
    expect_error("LoHa without its other factors", sd15, tmp("hada.safetensors"), "hada_w1_a",
                 "hada_w1_b");
    const char *dora[] = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                          "lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"};
    write_raw(tmp("dora.safetensors"), dora, 2, 16, 16);
    expect_error("DoRA", sd15, tmp("dora.safetensors"), "dora_scale", "not supported");
    const char *tucker[] = {"lora_unet_down_blocks_0_resnets_0_conv1.hada_t1"};
    write_raw(tmp("tucker.safetensors"), tucker, 1, 16, 16);
    expect_error("LoHa Tucker form", sd15, tmp("tucker.safetensors"), "hada_t1", "not supported");
    const char *twice[] = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                           "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
                           "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
                           "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight"};
    write_raw(tmp("twice.safetensors"), twice, 4, 16, 16);
    expect_error("one module named twice", sd15, tmp("twice.safetensors"), "same module",
                 "proj_in.lora_A.weight");
    expect_error("missing file", sd15, tmp("absent.safetensors"), "absent.safetensors", "");

    /* A partial match loads, with a warning that counts. */
    const char *partial[] = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
                             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
                             "lora_unet_no_such_module.lora_down.weight",
                             "lora_unet_no_such_module.lora_up.weight"};
    write_raw(tmp("partial.safetensors"), partial, 4, 16, 16);
    warnings = 0;
    sd_set_log_callback(on_log, NULL);
    const sd_lora l[] = {{tmp("partial.safetensors"), 1.0f}};
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.loras = l;
    lp.n_loras = 1;
    sd_pipeline *p = NULL;
    CHECK(sd_pipeline_load(&p, sd15, &lp) == SD_OK, "partial match loads: %s", sd_last_error());
    CHECK(warnings == 1 && strstr(last_warning, "1 of 2 modules"), "partial match warns (%s)",
          last_warning);
    sd_set_log_callback(NULL, NULL);
    sd_pipeline_free(p);
}

static void test_tags(void) {
    char *text = NULL;
    sd_lora *l = NULL;
    int n = -1;
    CHECK_OK(sd_prompt_extract_loras("a cat <lora:kohya:0.5> on <lora:peft>a mat", tmpdir, &text,
                                     &l, &n));
    CHECK(n == 2 && text && !strcmp(text, "a cat  on a mat") && l[0].scale == 0.5f &&
              l[1].scale == 1.0f && !strcmp(l[0].path, tmp("kohya.safetensors")) &&
              !strcmp(l[1].path, tmp("peft.safetensors")),
          "tags parsed and removed ('%s', %d)", text ? text : "", n);
    sd_loras_free(l, n);
    free(text);
    CHECK(sd_prompt_extract_loras("x <lora:nope:1>", tmpdir, &text, &l, &n) != SD_OK &&
              strstr(sd_last_error(), "nope") && strstr(sd_last_error(), "kohya"),
          "unknown tag lists the folder (%s)", sd_last_error());
    CHECK(sd_prompt_extract_loras("x <lora:kohya:abc>", tmpdir, &text, &l, &n) != SD_OK &&
              strstr(sd_last_error(), "abc"), "bad scale refused");
    CHECK(sd_prompt_extract_loras("x <lora:kohya>", NULL, &text, &l, &n) != SD_OK &&
              strstr(sd_last_error(), "--lora-dir"), "a tag without a folder refused");
}

/* gen: --lora FILE:SCALE and the same LoRA as a prompt tag give the same pixels. */
static void test_gen(const char *model) {
    char lora_arg[600];
    snprintf(lora_arg, sizeof lora_arg, "%s:0.8", tmp("kohya.safetensors"));
    const char *out1 = tmp("g1.png"), *out2 = tmp("g2.png"), *out3 = tmp("g3.png");
    int rc = tool_run("gen", "-m", model, "-s", "3", "--steps", "2", "-q", "--lora", lora_arg, "-o",
                      out1, "a red cube", NULL);
    CHECK(rc == 0, "gen --lora: exit %d: %s", rc, tool_output);
    rc = tool_run("gen", "-m", model, "-s", "3", "--steps", "2", "-q", "--lora-dir", tmpdir, "-o",
                  out2, "a red cube<lora:kohya:0.8>", NULL);
    CHECK(rc == 0, "gen <lora:...>: exit %d: %s", rc, tool_output);
    rc = tool_run("gen", "-m", model, "-s", "3", "--steps", "2", "-q", "-o", out3, "a red cube",
                  NULL);
    CHECK(rc == 0, "gen plain: exit %d: %s", rc, tool_output);
    sd_image a = {0}, b = {0}, c = {0};
    CHECK(sd_image_read(out1, &a) == SD_OK && sd_image_read(out2, &b) == SD_OK &&
              sd_image_read(out3, &c) == SD_OK, "images read");
    const size_t bytes = (size_t)a.width * a.height * 3;
    CHECK(a.rgb && b.rgb && a.width == b.width && !memcmp(a.rgb, b.rgb, bytes),
          "--lora FILE:0.8 and <lora:kohya:0.8> give the same pixels");
    CHECK(a.rgb && c.rgb && a.width == c.width && memcmp(a.rgb, c.rgb, bytes),
          "the LoRA changes gen's pixels");
    sd_image_free(&a), sd_image_free(&b), sd_image_free(&c);
    rc = tool_run("gen", "-m", model, "-q", "--lora-dir", tmpdir, "-o", out3, "<lora:nothere>",
                  NULL);
    CHECK(rc == 1 && strstr(tool_output, "nothere") && strstr(tool_output, "peft"),
          "gen: unknown tag lists the folder: %s", tool_output);
    rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0 && strstr(tool_output, "--lora FILE[:SCALE]") && strstr(tool_output, "--lora-dir"),
          "gen --help lists --lora and --lora-dir");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-lora-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    char sd15[512], sdxl[512];
    snprintf(sd15, sizeof sd15, "%s", fixture("sd15-tiny/pipeline"));
    snprintf(sdxl, sizeof sdxl, "%s", fixture("sdxl-tiny/pipeline"));
    test_sd15(sd15);
    test_sdxl(sdxl);
    test_lycoris(sd15);
    test_dit(fixture("flux-tiny/pipeline"), "flux-peft", 31);
    test_dit(fixture("sd3-tiny/pipeline"), "sd3-peft", 32);
    test_errors(sd15, sdxl);
    test_tags();
    test_gen(sd15);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
