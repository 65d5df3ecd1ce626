/* SD3 / SD3.5 single files in Stability's layout (model.diffusion_model.joint_blocks.*,
 * first_stage_model.*, text_encoders.*): each tiny fixture is written as one file by an
 * independent writer (tests/sd3_writer.c) and must give the SAME image, bit for bit, as the
 * folder diffusers' from_single_file builds from it (the fixture with CLIP-L's text_projection an
 * identity): SD3 (no qk norm), SD3.5 medium (qk norm, dual attention in block 0, the last
 * context block pre-only) and SD3 with T5 in the file. Also: detection on real key shapes, the
 * bundled configs against the released models' shapes (sparse files), the file's architecture
 * against a config that disagrees (named), an unknown MMDiT key (named),
 * --text-encoder-3 (T5 from a file of its own; FLUX's T5 as --text-encoder-2), SD3's CLIP files
 * (bare or out of a whole SD3 file) and gen's printout. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../convert/ldm_source.h"
#include "../core/safetensors.h"
#include "manifest.h"
#include "sd3_writer.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* Component files of their own (NULL: none): text_encoder_file, _2, _3, the denoiser's. */
static const char *te_file, *te2_file, *te3_file, *unet_file, *transformer_file;

static sd_status generate(const char *model, const char *config, sd_result *r, char *info,
                          size_t info_size) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    lp.text_encoder_file = te_file;
    lp.text_encoder_2_file = te2_file;
    lp.text_encoder_3_file = te3_file;
    lp.unet_file = unet_file;
    lp.transformer_file = transformer_file;
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    if (info) snprintf(info, info_size, "%s", sd_pipeline_checkpoint_info(p) ? sd_pipeline_checkpoint_info(p) : "");
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.negative_prompt = "blurry";
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

static void check_family(const char *model, int with_t5, const char *file, const char *ref,
                         const char *want_family) {
    char folder[700];
    snprintf(folder, sizeof folder, "%s", fixture(model));
    CHECK_OK(sd3w_write(folder, tmp(file), with_t5, NULL, tmpdir));
    /* The file is the one diffusers' from_single_file was recorded reading (without T5 only). */
    if (!with_t5) manifest_check_dit_file(file, tmp(file));
    char ref_dir[700];
    snprintf(ref_dir, sizeof ref_dir, "%s", tmp(ref));
    CHECK_OK(sd3w_reference_folder(folder, ref_dir));
    sd_result want, got;
    memset(&want, 0, sizeof want);
    memset(&got, 0, sizeof got);
    char info[1024] = "";
    CHECK_OK(generate(ref_dir, NULL, &want, NULL, 0));
    CHECK_OK(generate(tmp(file), ref_dir, &got, info, sizeof info));
    CHECK(same_result(&want, &got), "%s: the single file's image is the folder's, bit for bit",
          model);
    CHECK(strstr(info, want_family) == info && strstr(info, "2 joint blocks"),
          "%s detected as '%s'", model, info);
    sd_result_free(&want);
    sd_result_free(&got);
}

static void test_families(void) {
    check_family("sd3-tiny/pipeline", 0, "sd3.safetensors", "sd3-ref", "SD3 medium,");
    check_family("sd35-tiny/pipeline", 0, "sd35.safetensors", "sd35-ref", "SD3.5 medium,");
    check_family("sd3t5-tiny/pipeline", 1, "sd3t5.safetensors", "sd3t5-ref", "SD3 medium,");
}

/* The identity projection matters: against the fixture's own CLIP-L projection the image differs
 * (otherwise the test above could not tell a file's projection from diffusers' identity). */
static void test_identity_projection(void) {
    sd_result folder, file;
    memset(&folder, 0, sizeof folder);
    memset(&file, 0, sizeof file);
    CHECK_OK(generate(fixture("sd3-tiny/pipeline"), NULL, &folder, NULL, 0));
    CHECK_OK(generate(tmp("sd3.safetensors"), tmp("sd3-ref"), &file, NULL, 0));
    CHECK(folder.n_images == 1 && file.n_images == 1 && !same_result(&folder, &file),
          "CLIP-L's projection is diffusers' identity, not the file's");
    sd_result_free(&folder);
    sd_result_free(&file);
}

static void test_bad_input(void) {
    sd_pipeline *p = NULL;
    sd_load_params lp;
    sd_load_params_init(&lp);
    /* SD3.5 medium's tensors (ln_q, attn2) against SD3's config: named, not half-loaded. */
    lp.config_dir = tmp("sd3-ref");
    sd_status st = sd_pipeline_load(&p, tmp("sd35.safetensors"), &lp);
    CHECK(st == SD_ERR_CONFIG && !p && strstr(sd_last_error(), "qk_norm") &&
              strstr(sd_last_error(), "ln_q"),
          "an SD3.5 file with an SD3 config: %s", sd_last_error());
    /* The bundled SD3 medium config (24 blocks) against the tiny file (2). */
    st = sd_pipeline_load(&p, tmp("sd3.safetensors"), NULL);
    CHECK(st == SD_ERR_CONFIG && !p && strstr(sd_last_error(), "num_layers 2") &&
              strstr(sd_last_error(), "sd3-medium/transformer/config.json"),
          "the bundled SD3 config against the tiny file: %s", sd_last_error());
    /* A key of no MMDiT: named whole. */
    const char *odd = "model.diffusion_model.joint_blocks.0.x_block.odd.weight";
    CHECK_OK(sd3w_write(fixture("sd3-tiny/pipeline"), tmp("odd.safetensors"), 0, odd, tmpdir));
    st = sd_pipeline_load(&p, tmp("odd.safetensors"), &lp);
    CHECK(st == SD_ERR_FORMAT && !p && strstr(sd_last_error(), odd) &&
              strstr(sd_last_error(), "odd.safetensors"),
          "an unknown MMDiT key is named with its file: %s", sd_last_error());
    /* An encoder SD3 files do not have: named. */
    const char *enc = "text_encoders.clip_x.transformer.text_model.final_layer_norm.weight";
    CHECK_OK(sd3w_write(fixture("sd3-tiny/pipeline"), tmp("odd-enc.safetensors"), 0, enc, tmpdir));
    st = sd_pipeline_load(&p, tmp("odd-enc.safetensors"), &lp);
    CHECK(st == SD_ERR_FORMAT && !p && strstr(sd_last_error(), enc),
          "an unknown text encoder key is named: %s", sd_last_error());
}

/* Detection on real key names and shapes (SD3.5 medium: 24 blocks, attn2 in 0-12, qk norm; SD3.5
 * large: 38 blocks, qk norm only), headers and small tensors only. */
static void test_detection(void) {
    static const char *const names[] = {
        "model.diffusion_model.x_embedder.proj.weight",
        "model.diffusion_model.joint_blocks.0.x_block.attn.ln_q.weight",
        "model.diffusion_model.joint_blocks.12.x_block.attn2.qkv.bias",
        "model.diffusion_model.joint_blocks.23.x_block.attn.qkv.bias",
        "text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight",
    };
    static const int64_t shapes[][4] = {{1536, 16, 2, 2}, {64}, {4608}, {4608}, {4096}};
    st_entry e[5];
    uint16_t *zeros = calloc(1536 * 16 * 4, sizeof *zeros);
    for (int i = 0; i < 5; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].name = names[i];
        e[i].dtype = ST_BF16;
        while (e[i].ndim < 4 && shapes[i][e[i].ndim]) e[i].shape[e[i].ndim] = shapes[i][e[i].ndim], e[i].ndim++;
        e[i].data = zeros;
    }
    CHECK_OK(st_write(tmp("det-sd35m.safetensors"), e, 5, NULL, 0));
    e[2].name = "model.diffusion_model.joint_blocks.37.x_block.attn.qkv.bias";
    CHECK_OK(st_write(tmp("det-sd35l.safetensors"), e, 4, NULL, 0));
    free(zeros);
    ldm_checkpoint c;
    CHECK_OK(ldm_checkpoint_open(&c, tmp("det-sd35m.safetensors")));
    CHECK(c.family == LDM_SD35_MEDIUM && c.sd3_layers == 24 && c.sd3_dual_mask == 1ull << 12 &&
              c.sd3_qk_norm && c.in_channels == 16 && !strcmp(c.unet_dtype, "bf16") &&
              ldm_checkpoint_source(&c, "transformer") && ldm_checkpoint_source(&c, "text_encoder_3") &&
              !ldm_checkpoint_source(&c, "vae") && !ldm_checkpoint_source(&c, "text_encoder"),
          "SD3.5 medium shapes: family %d, %d blocks, dual %llx", c.family, c.sd3_layers,
          (unsigned long long)c.sd3_dual_mask);
    ldm_checkpoint_close(&c);
    CHECK_OK(ldm_checkpoint_open(&c, tmp("det-sd35l.safetensors")));
    CHECK(c.family == LDM_SD35_LARGE && c.sd3_layers == 38 && !c.sd3_dual_mask,
          "SD3.5 large shapes: family %d, %d blocks", c.family, c.sd3_layers);
    ldm_checkpoint_close(&c);
}

/* --text-encoder-3: SD3's T5 from a file of its own, in transformers' names (t5xxl_fp16's) or
 * under a whole SD3 checkpoint's text_encoders.t5xxl.transformer.; the image is the folder's with
 * that T5. A CLIP file is refused as such. */
static void test_text_encoder_3(void) {
    sd_result want, got;
    memset(&want, 0, sizeof want);
    CHECK_OK(generate(tmp("sd3t5-ref"), NULL, &want, NULL, 0));
    char t5[700], whole[700], info[1024] = "";
    snprintf(t5, sizeof t5, "%s", fixture("sd3t5-tiny/pipeline/text_encoder_3/model.safetensors"));
    snprintf(whole, sizeof whole, "%s", tmp("sd3t5.safetensors"));
    /* configs whose text_encoder_3/ holds no weights: the T5 can only come from the file */
    char cfg[700], te3[800], link[900];
    snprintf(cfg, sizeof cfg, "%s", tmp("sd3t5-noweights"));
    snprintf(te3, sizeof te3, "%s/text_encoder_3", cfg);
    snprintf(link, sizeof link, "%s/config.json", te3);
    unlink(link), rmdir(te3); /* an earlier run's */
    CHECK_OK(sd3w_reference_folder(fixture("sd3t5-tiny/pipeline"), cfg));
    char *abs = realpath(fixture("sd3t5-tiny/pipeline/text_encoder_3/config.json"), NULL);
    CHECK(abs && unlink(te3) == 0 && mkdir(te3, 0755) == 0 && symlink(abs, link) == 0,
          "a config folder without T5 weights");
    free(abs);
    const char *files[] = {t5, whole};
    for (int i = 0; i < 2; i++) {
        memset(&got, 0, sizeof got);
        te3_file = files[i];
        CHECK_OK(generate(tmp("sd3.safetensors"), cfg, &got, info, sizeof info));
        CHECK(same_result(&want, &got), "--text-encoder-3 %s: the folder's image with its T5",
              i ? "(a whole SD3 file)" : "(t5xxl names)");
        char note[800];
        snprintf(note, sizeof note, "; text_encoder_3 from %s", files[i]);
        CHECK(strstr(info, note) != NULL, "the checkpoint info names the T5 file: %s", info);
        sd_result_free(&got);
    }
    sd_result_free(&want);
    char clip[700];
    snprintf(clip, sizeof clip, "%s", fixture("sd3-tiny/pipeline/text_encoder/model.safetensors"));
    te3_file = clip;
    sd_pipeline *p = NULL;
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.text_encoder_3_file = clip;
    sd_status st = sd_pipeline_load(&p, tmp("sd3t5-ref"), &lp);
    CHECK(st == SD_ERR_FORMAT && !p && strstr(sd_last_error(), "--text-encoder-3") &&
              strstr(sd_last_error(), "CLIP text encoder, not the text_encoder_3"),
          "a CLIP file as --text-encoder-3: %s", sd_last_error());
    /* FLUX: the T5 is text_encoder_2, which takes a T5 file; --text-encoder-3 says so. */
    lp.text_encoder_3_file = t5;
    st = sd_pipeline_load(&p, fixture("flux-tiny/pipeline"), &lp);
    CHECK(st == SD_ERR_ARG && !p && strstr(sd_last_error(), "--text-encoder-2"),
          "--text-encoder-3 on FLUX: %s", sd_last_error());
    te3_file = NULL;
}

/* SD3's CLIPs from files of their own: a bare CLIP-L without text_projection (ComfyUI's
 * clip_l.safetensors) or out of a whole SD3 file gets the identity projection (the reference
 * folder's image); a CLIP-L file with its own projection keeps it (the fixture folder's image);
 * CLIP-G out of a whole SD3 file. */
static void test_sd3_clip_files(void) {
    st_file f;
    CHECK_OK(st_open(&f, fixture("sd3-tiny/pipeline/text_encoder/model.safetensors")));
    st_entry e[512];
    int n = 0;
    for (int i = 0; i < f.n_tensors && n < 512; i++) {
        const st_tensor *t = &f.tensors[i];
        if (!strcmp(t->name, "text_projection.weight")) continue;
        e[n] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    CHECK_OK(st_write(tmp("clip_l.safetensors"), e, n, NULL, 0));
    st_close(&f);
    sd_result ref, plain, got;
    memset(&ref, 0, sizeof ref), memset(&plain, 0, sizeof plain);
    CHECK_OK(generate(tmp("sd3-ref"), NULL, &ref, NULL, 0));
    CHECK_OK(generate(fixture("sd3-tiny/pipeline"), NULL, &plain, NULL, 0));
    char bare[700], whole[700], own[700];
    snprintf(bare, sizeof bare, "%s", tmp("clip_l.safetensors"));
    snprintf(whole, sizeof whole, "%s", tmp("sd3.safetensors"));
    snprintf(own, sizeof own, "%s", fixture("sd3-tiny/pipeline/text_encoder/model.safetensors"));
    const struct { const char *te, *te2; const sd_result *want; const char *what; } cases[] = {
        {bare, NULL, &ref, "a bare CLIP-L without projection: identity"},
        {whole, NULL, &ref, "CLIP-L out of a whole SD3 file: identity"},
        {own, NULL, &plain, "a CLIP-L file with its projection keeps it"},
        {NULL, whole, &plain, "CLIP-G out of a whole SD3 file (CLIP-L the folder's)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memset(&got, 0, sizeof got);
        te_file = cases[i].te, te2_file = cases[i].te2;
        CHECK_OK(generate(fixture("sd3-tiny/pipeline"), NULL, &got, NULL, 0));
        CHECK(same_result(cases[i].want, &got), "--text-encoder%s: %s", cases[i].te ? "" : "-2",
              cases[i].what);
        sd_result_free(&got);
    }
    te_file = te2_file = NULL;
    sd_result_free(&ref), sd_result_free(&plain);
}

/* FLUX's T5 (text_encoder_2) from a file of its own: the folder's image, bit for bit. */
static void test_flux_t5(void) {
    char folder[700], t5[700];
    snprintf(folder, sizeof folder, "%s", fixture("flux-tiny/pipeline"));
    snprintf(t5, sizeof t5, "%s", fixture("flux-tiny/pipeline/text_encoder_2/model.safetensors"));
    sd_result want, got;
    memset(&want, 0, sizeof want);
    memset(&got, 0, sizeof got);
    CHECK_OK(generate(folder, NULL, &want, NULL, 0));
    te2_file = t5;
    CHECK_OK(generate(folder, NULL, &got, NULL, 0));
    te2_file = NULL;
    CHECK(same_result(&want, &got), "FLUX --text-encoder-2 with a T5 file: the folder's image");
    sd_result_free(&want);
    sd_result_free(&got);
}

/* A safetensors file whose header lists `n` BF16 tensors of the given shapes and whose data is a
 * hole (ftruncate: no disk, no memory): real-size shapes for detection, without gigabytes. */
static bool write_sparse(const char *path, int n, char names[][160], const int64_t (*shapes)[4]) {
    cJSON *root = cJSON_CreateObject();
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, names[i]);
        cJSON_AddStringToObject(t, "dtype", "BF16");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        uint64_t bytes = 2;
        for (int d = 0; d < 4 && shapes[i][d]; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)shapes[i][d]));
            bytes *= (uint64_t)shapes[i][d];
        }
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    uint64_t hlen = strlen(json);
    const uint64_t padded = (hlen + 7) / 8 * 8;
    FILE *fp = fopen(path, "wb");
    bool ok = fp && fwrite(&hlen, 8, 1, fp) == 1 && fwrite(json, 1, hlen, fp) == hlen;
    for (uint64_t i = hlen; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    if (fp) ok = fclose(fp) == 0 && ok;
    free(json);
    if (ok) { /* the header length counts its padding */
        fp = fopen(path, "r+b");
        ok = fp && fwrite(&(uint64_t){padded}, 8, 1, fp) == 1;
        if (fp) ok = fclose(fp) == 0 && ok;
    }
    return ok && truncate(path, (off_t)(8 + padded + off)) == 0;
}

/* The bundled SD3 configs against files with the released models' shapes: hidden width (24 or
 * 38 heads of 64), depth, pos_embed positions (diffusers' model type inference: 36864 = 192^2 for
 * SD3 medium and SD3.5 large, 147456 = 384^2 for SD3.5 medium), T5's 4096-wide context, dual
 * attention in blocks 0-12 (SD3.5 medium), qk norm (SD3.5). Each file passes its family's config
 * and fails another's, naming what differs. */
static void test_bundled_sd3_configs(void) {
    static const struct {
        const char *file, *config, *family;
        int heads, depth, positions, dual, qk;
    } models[] = {
        {"real-sd3m.safetensors", "sd3-medium", "SD3 medium", 24, 24, 36864, 0, 0},
        {"real-sd35m.safetensors", "sd35-medium", "SD3.5 medium", 24, 24, 147456, 13, 1},
        {"real-sd35l.safetensors", "sd35-large", "SD3.5 large", 38, 38, 36864, 0, 1},
    };
    for (int m = 0; m < 3; m++) {
        char names[32][160];
        int64_t shapes[32][4];
        memset(shapes, 0, sizeof shapes);
        int n = 0;
        const int64_t hidden = 64 * models[m].heads;
        const char *const pre = "model.diffusion_model.";
#define T(NAME, A, B, C, D)                                                                        \
    (snprintf(names[n], 160, "%s%s", pre, NAME), shapes[n][0] = A, shapes[n][1] = B,                \
     shapes[n][2] = C, shapes[n][3] = D, n++)
        T("x_embedder.proj.weight", hidden, 16, 2, 2);
        T("pos_embed", 1, models[m].positions, hidden, 0);
        T("context_embedder.weight", hidden, 4096, 0, 0);
        char key[96];
        snprintf(key, sizeof key, "joint_blocks.%d.x_block.attn.qkv.bias", models[m].depth - 1);
        T(key, 3 * hidden, 0, 0, 0);
        if (models[m].qk) T("joint_blocks.0.x_block.attn.ln_q.weight", 64, 0, 0, 0);
        for (int b = 0; b < models[m].dual; b++) {
            snprintf(key, sizeof key, "joint_blocks.%d.x_block.attn2.qkv.bias", b);
            T(key, 3 * hidden, 0, 0, 0);
        }
#undef T
        CHECK(write_sparse(tmp(models[m].file), n, names, (const int64_t(*)[4])shapes),
              "write %s", models[m].file);
        ldm_checkpoint c;
        CHECK_OK(ldm_checkpoint_open(&c, tmp(models[m].file)));
        CHECK(!strcmp(ldm_family_name(c.family), models[m].family), "%s detected as %s",
              models[m].file, ldm_family_name(c.family));
        for (int k = 0; k < 3; k++) {
            char json[1200];
            snprintf(json, sizeof json, "%s/%s/transformer/config.json", sd_configs_dir(),
                     models[k].config);
            const sd_status st = ldm_checkpoint_check_sd3(&c, json);
            if (k == m)
                CHECK(st == SD_OK, "%s fits the bundled %s config: %s", models[m].file,
                      models[k].config, sd_last_error());
            else
                CHECK(st == SD_ERR_CONFIG && strstr(sd_last_error(), models[k].config),
                      "%s against the %s config: %s", models[m].file, models[k].config,
                      sd_last_error());
        }
        ldm_checkpoint_close(&c);
    }
}

/* The tensors of `from` under `prefix` into `to`, with the prefix kept or cut: the transformer
 * alone, as ComfyUI's diffusion_models files hold it. */
static sd_status extract(const char *from, const char *prefix, bool keep_prefix, const char *to) {
    st_file f;
    SD_TRY(st_open(&f, from));
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    int n = 0;
    const size_t l = strlen(prefix);
    for (int i = 0; e && i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (strncmp(t->name, prefix, l)) continue;
        e[n] = (st_entry){.name = keep_prefix ? t->name : t->name + l, .dtype = t->dtype,
                          .ndim = t->ndim, .data = t->data};
        memcpy(e[n].shape, t->shape, sizeof e[n].shape);
        n++;
    }
    const sd_status st = e ? st_write(to, e, n, NULL, 0) : SD_ERR_NOMEM;
    free(e);
    st_close(&f);
    return st;
}

/* SD3 / SD3.5 transformers in a file of their own, in Stability's layout (prefixed as in the
 * whole file, or bare) through --transformer or --unet: the folder's image, bit for bit (the
 * whole file's transformer is the folder's: dit_file_refs.json). */
static void test_transformer_files(void) {
    static const struct {
        const char *whole, *model;
    } cases[] = {{"sd3.safetensors", "sd3-tiny/pipeline"}, {"sd35.safetensors", "sd35-tiny/pipeline"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char folder[700], prefixed[700], bare[700];
        snprintf(folder, sizeof folder, "%s", fixture(cases[i].model));
        snprintf(prefixed, sizeof prefixed, "%s", tmp("mmdit-prefixed.safetensors"));
        snprintf(bare, sizeof bare, "%s", tmp("mmdit-bare.safetensors"));
        CHECK_OK(extract(tmp(cases[i].whole), "model.diffusion_model.", true, prefixed));
        CHECK_OK(extract(tmp(cases[i].whole), "model.diffusion_model.", false, bare));
        sd_result want;
        memset(&want, 0, sizeof want);
        CHECK_OK(generate(folder, NULL, &want, NULL, 0));
        const char *files[] = {prefixed, bare};
        for (int f = 0; f < 2; f++)
            for (int flag = 0; flag < 2; flag++) {
                sd_result got;
                memset(&got, 0, sizeof got);
                unet_file = flag ? files[f] : NULL;
                transformer_file = flag ? NULL : files[f];
                const sd_status st = generate(folder, NULL, &got, NULL, 0);
                CHECK(st == SD_OK && same_result(&want, &got),
                      "%s: the MMDiT %s through %s gives the folder's image (%s)", cases[i].model,
                      f ? "bare" : "under model.diffusion_model.", flag ? "--unet" : "--transformer",
                      st == SD_OK ? "ran" : sd_last_error());
                sd_result_free(&got);
            }
        sd_result_free(&want);
    }
    /* Both flags naming different files, and --transformer on a UNet pipeline: errors that say so. */
    sd_result r;
    memset(&r, 0, sizeof r);
    unet_file = tmp("mmdit-bare.safetensors");
    transformer_file = tmp("mmdit-prefixed.safetensors");
    sd_status st = generate(fixture("sd3-tiny/pipeline"), NULL, &r, NULL, 0);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "pass one of them"),
          "--unet and --transformer both: %s", sd_last_error());
    unet_file = NULL;
    st = generate(fixture("sd15-tiny/pipeline"), NULL, &r, NULL, 0);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "--unet FILE"),
          "--transformer on SD 1.5: %s", sd_last_error());
    /* An SD3 transformer file as the VAE: named for what it holds. */
    transformer_file = NULL;
    const char *vae_only[] = {"-m", fixture("sd3-tiny/pipeline"), "--vae", tmp("mmdit-bare.safetensors"),
                              "-o", tmp("x.png"), "a cat", NULL};
    const int rc = tool_run_args("gen", vae_only);
    CHECK(rc != 0 && strstr(tool_output, "an SD3 transformer (MMDiT)"),
          "an MMDiT file as --vae is named (rc %d): %s", rc, tool_output);
    sd_result_free(&r);
}

static void test_gen_cli(void) {
    char file[700], ref[700];
    snprintf(file, sizeof file, "%s", tmp("sd3.safetensors"));
    snprintf(ref, sizeof ref, "%s", tmp("sd3-ref"));
    const char *args[] = {"-m", file, "--config", ref, "--steps", "1", "-W", "64", "-H", "64",
                          "-o", tmp("cli.png"), "a cat", NULL};
    const int rc = tool_run_args("gen", args);
    CHECK(rc == 0 && strstr(tool_output, "SD3 medium, 2 joint blocks"),
          "gen on an SD3 file prints what it detected (rc %d): %s", rc, tool_output);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("sd3_file"));
    test_families();
    test_identity_projection();
    test_bad_input();
    test_detection();
    test_bundled_sd3_configs();
    test_text_encoder_3();
    test_sd3_clip_files();
    test_flux_t5();
    test_gen_cli();
    test_transformer_files();
    return test_summary();
}
