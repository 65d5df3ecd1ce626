/* Components from files of their own (sd_load_params.vae_file, unet_file, text_encoder_file,
 * text_encoder_2_file; gen --vae, --unet, --text-encoder, --text-encoder-2), over a folder or a
 * single checkpoint. The component files are written by the independent tests/ldm_writer.c in
 * the original layout, bare and under their checkpoint prefix: the same weights give the plain
 * folder's image bit for bit. A changed component (one tensor perturbed, in diffusers names)
 * gives another image, the same as a folder whose component folder holds that file. Errors name
 * the file: another component's file, a shape that disagrees with the config, a pickled file, a
 * component the pipeline lacks. */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/safetensors.h"
#include "ldm_writer.h"
#include "test.h"
#include "tool_run.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

typedef struct {
    const char *vae, *unet, *te, *te2;
} files;

static sd_status run(const char *model, const char *config, const files *f, sd_image *out) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    if (f) {
        lp.vae_file = f->vae;
        lp.unet_file = f->unet;
        lp.text_encoder_file = f->te;
        lp.text_encoder_2_file = f->te2;
    }
    sd_pipeline *p = NULL;
    SD_TRY(sd_pipeline_load(&p, model, &lp));
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red cube on a table";
    g.negative_prompt = "blurry";
    g.width = 64, g.height = 64;
    g.steps = 3;
    g.seed = 42;
    sd_result r;
    memset(&r, 0, sizeof r);
    const sd_status st = sd_generate(p, &g, &r);
    sd_pipeline_free(p);
    if (st != SD_OK) return st;
    const size_t n = (size_t)r.images[0].width * r.images[0].height * 3;
    *out = r.images[0];
    out->rgb = malloc(n);
    memcpy(out->rgb, r.images[0].rgb, n);
    sd_result_free(&r);
    return SD_OK;
}

static bool same(const sd_image *a, const sd_image *b) {
    return a->rgb && b->rgb && a->width == b->width && a->height == b->height &&
           !memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3);
}

static const char *weights_name(const char *component) {
    return strncmp(component, "text_encoder", 12) ? "diffusion_pytorch_model.safetensors"
                                                  : "model.safetensors";
}

/* The component's diffusers file with `tensor` shifted by 0.05 (or, `cut` set, one element
 * shorter in dim 0: a shape the config disagrees with), written to `out`. 16-bit tensors get
 * their lowest mantissa bit flipped instead. */
static void write_changed(const char *model, const char *component, const char *tensor, int cut,
                          const char *out) {
    char path[900];
    snprintf(path, sizeof path, "%s/%s/%s", fixture(model), component, weights_name(component));
    st_file f;
    CHECK_OK(st_open(&f, path));
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    float *changed = NULL;
    bool found = false;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof e[i].shape);
        e[i].data = t->data;
        if (strcmp(t->name, tensor)) continue;
        found = t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16;
        if (cut) {
            e[i].shape[0]--;
            continue;
        }
        const size_t n = (size_t)st_numel(t);
        changed = malloc(t->nbytes);
        memcpy(changed, t->data, t->nbytes);
        if (t->dtype == ST_F32)
            for (size_t j = 0; j < n; j++) changed[j] += 0.05f;
        else /* 16-bit: each value's lowest mantissa bit flipped */
            for (size_t j = 0; j < n; j++) ((uint16_t *)changed)[j] ^= 1;
        e[i].data = changed;
    }
    CHECK(found, "%s: float tensor %s found", path, tensor);
    CHECK_OK(st_write(out, e, f.n_tensors, NULL, 0));
    free(changed);
    free(e);
    st_close(&f);
}

/* A symbolic link at `to` to the real path of `from`, replacing one a previous run left. */
static bool link_real(const char *from, const char *to) {
    char real[PATH_MAX];
    unlink(to);
    return realpath(from, real) && symlink(real, to) == 0;
}

/* A folder like `model` (its parts linked) whose `component` folder holds `weights`. */
static void folder_with(const char *model, const char *component, const char *weights,
                        const char *dst) {
    mkdir(dst, 0755);
    const char *src = fixture(model);
    char from[PATH_MAX + 400], to[PATH_MAX + 400];
    DIR *d = opendir(src);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, component)) continue;
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dst, e->d_name);
        CHECK(link_real(from, to), "link %s", to);
    }
    if (d) closedir(d);
    snprintf(to, sizeof to, "%s/%s", dst, component);
    mkdir(to, 0755);
    snprintf(from, sizeof from, "%s/%s/config.json", src, component);
    snprintf(to, sizeof to, "%s/%s/config.json", dst, component);
    CHECK(link_real(from, to), "link %s", to);
    snprintf(to, sizeof to, "%s/%s/%s", dst, component, weights_name(component));
    CHECK(link_real(weights, to), "link %s", to);
}

/* The fixture's own component in the original layout, bare and prefixed: the folder's image. */
static void check_same(const char *model, ldmw_flavour flavour, const char *component,
                       const sd_image *want) {
    for (int prefixed = 0; prefixed < 2; prefixed++) {
        char name[200];
        snprintf(name, sizeof name, "%s-%s-%s.safetensors", flavour == LDMW_SDXL ? "xl" : "sd15",
                 component, prefixed ? "prefixed" : "bare");
        const char *path = tmp(name);
        CHECK_OK(ldmw_write_component(fixture(model), component, path, flavour, prefixed));
        files f = {0};
        if (!strcmp(component, "vae")) f.vae = path;
        if (!strcmp(component, "unet")) f.unet = path;
        if (!strcmp(component, "text_encoder")) f.te = path;
        if (!strcmp(component, "text_encoder_2")) f.te2 = path;
        sd_image got = {0};
        const sd_status st = run(fixture(model), NULL, &f, &got);
        CHECK(st == SD_OK && same(&got, want), "%s: %s from %s: the folder's image bit for bit (%s)",
              model, component, name, st == SD_OK ? "" : sd_last_error());
        free(got.rgb);
    }
}

/* A changed component from its file gives another image: the one of a folder holding it. */
static void check_changed(const char *model, const char *component, const char *tensor,
                          const sd_image *plain, sd_image *changed_out) {
    char file[900], dir[1000]; /* dir = file + "-folder": room for it, so no truncation */
    snprintf(file, sizeof file, "%s-changed.safetensors", tmp(component));
    snprintf(dir, sizeof dir, "%s-folder", file);
    write_changed(model, component, tensor, 0, file);
    folder_with(model, component, file, dir);
    files f = {0};
    if (!strcmp(component, "vae")) f.vae = file;
    if (!strcmp(component, "unet") || !strcmp(component, "transformer")) f.unet = file;
    if (!strcmp(component, "text_encoder")) f.te = file;
    sd_image got = {0}, want = {0};
    CHECK_OK(run(fixture(model), NULL, &f, &got));
    CHECK_OK(run(dir, NULL, NULL, &want));
    CHECK(same(&got, &want) && !same(&got, plain),
          "%s changed (%s): --%s FILE gives the image of a folder holding it, not the plain one",
          component, tensor, component);
    free(want.rgb);
    if (changed_out) *changed_out = got;
    else free(got.rgb);
}

static void test_sd15(void) {
    const char *model = "sd15-tiny/pipeline";
    sd_image plain = {0}, vae_changed = {0};
    CHECK_OK(run(fixture(model), NULL, NULL, &plain));
    check_same(model, LDMW_SD1, "vae", &plain);
    check_same(model, LDMW_SD1, "unet", &plain);
    check_same(model, LDMW_SD1, "text_encoder", &plain);
    check_changed(model, "vae", "decoder.conv_out.bias", &plain, &vae_changed);
    check_changed(model, "unet", "conv_out.bias", &plain, NULL);
    check_changed(model, "text_encoder", "text_model.final_layer_norm.bias", &plain, NULL);

    /* A single file with --vae: the file's own VAE is replaced (with --config for the tiny
     * shapes); a file without a VAE takes it from --vae. */
    const ldmw_options all = {0}, no_vae = {.skip_vae = 1};
    CHECK_OK(ldmw_write(fixture(model), tmp("sd15.safetensors"), LDMW_SD1, &all));
    CHECK_OK(ldmw_write(fixture(model), tmp("sd15-novae.safetensors"), LDMW_SD1, &no_vae));
    const files vae = {.vae = tmp("vae-changed.safetensors")};
    sd_image got = {0};
    CHECK_OK(run(tmp("sd15.safetensors"), fixture(model), &vae, &got));
    CHECK(same(&got, &vae_changed), "single file + --vae: the changed VAE's image");
    free(got.rgb);
    got.rgb = NULL;
    const files vae_ldm = {.vae = tmp("sd15-vae-bare.safetensors")};
    CHECK_OK(run(tmp("sd15-novae.safetensors"), fixture(model), &vae_ldm, &got));
    CHECK(same(&got, &plain), "single file without a VAE + --vae (original layout): the folder's image");
    free(got.rgb);
    free(plain.rgb);
    free(vae_changed.rgb);
}

static void test_sdxl(void) {
    const char *model = "sdxl-tiny/pipeline";
    sd_image plain = {0};
    CHECK_OK(run(fixture(model), NULL, NULL, &plain));
    check_same(model, LDMW_SDXL, "vae", &plain);
    check_same(model, LDMW_SDXL, "unet", &plain);
    check_same(model, LDMW_SDXL, "text_encoder_2", &plain);
    free(plain.rgb);
}

/* SD3: --transformer (unet_file) in diffusers names; no original layout there. */
static void test_sd3(void) {
    const char *model = "sd3-tiny/pipeline";
    sd_image plain = {0};
    CHECK_OK(run(fixture(model), NULL, NULL, &plain));
    check_changed(model, "transformer", "proj_out.bias", &plain, NULL);
    files f = {.unet = tmp("sd15-vae-prefixed.safetensors")};
    sd_image got = {0};
    CHECK(run(fixture(model), NULL, &f, &got) != SD_OK &&
              strstr(sd_last_error(), "sd15-vae-prefixed.safetensors"),
          "a VAE file as SD3's --transformer: %s", sd_last_error());
    free(got.rgb);
    free(plain.rgb);
}

static void expect_error(const files *f, const char *model, const char *what, const char *a,
                         const char *b) {
    sd_image got = {0};
    const sd_status st = run(fixture(model), NULL, f, &got);
    CHECK(st != SD_OK && strstr(sd_last_error(), a) && (!b || strstr(sd_last_error(), b)),
          "%s: %s", what, st == SD_OK ? "loaded" : sd_last_error());
    free(got.rgb);
}

static void test_errors(void) {
    const char *model = "sd15-tiny/pipeline";
    char unet[900];
    snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.safetensors", fixture(model));
    files f = {.vae = unet};
    expect_error(&f, model, "a UNet file as --vae", unet, "holds a UNet, not the vae");
    f = (files){.unet = tmp("sd15-vae-prefixed.safetensors")};
    expect_error(&f, model, "a VAE file as --unet", "sd15-vae-prefixed.safetensors", "a VAE");
    write_changed(model, "vae", "decoder.conv_out.bias", 1, tmp("vae-cut.safetensors"));
    f = (files){.vae = tmp("vae-cut.safetensors")};
    expect_error(&f, model, "a shape the config disagrees with", "vae-cut.safetensors",
                 "decoder.conv_out.bias");
    FILE *fp = fopen(tmp("vae.ckpt"), "wb");
    if (fp) fputs("PK\x03\x04 not really a zip", fp), fclose(fp);
    f = (files){.vae = tmp("vae.ckpt")};
    expect_error(&f, model, "a pickled --vae", "vae.ckpt", "never unpickles");
    f = (files){.te2 = tmp("sd15-vae-prefixed.safetensors")};
    expect_error(&f, model, "--text-encoder-2 on SD 1.5", "text_encoder_2_file", "has no text_encoder_2");
    /* A bare original-layout VAE key no table knows: named, with the file. */
    static const float one = 1.0f;
    const st_entry odd = {.name = "encoder.down.0.zzz.weight", .dtype = ST_F32, .ndim = 1,
                          .shape = {1}, .data = &one};
    CHECK_OK(st_write(tmp("vae-odd.safetensors"), &odd, 1, NULL, 0));
    f = (files){.vae = tmp("vae-odd.safetensors")};
    expect_error(&f, model, "an unknown bare VAE key", "vae-odd.safetensors", "down.0.zzz.weight");
    f = (files){.vae = tmp("missing.safetensors")};
    expect_error(&f, model, "a missing --vae file", "missing.safetensors", NULL);
}

static void test_cli(void) {
    const char *args[] = {"-m", fixture("sd15-tiny/pipeline"), "--vae",
                          tmp("sd15-vae-bare.safetensors"), "--steps", "2", "-W", "64", "-H", "64",
                          "-o", tmp("cli.png"), "a cat", NULL};
    const int rc = tool_run_args("gen", args);
    CHECK(rc == 0, "gen --vae FILE (rc %d): %s", rc, tool_output);
    const int help = tool_run("gen", "--help", NULL);
    CHECK(help == 0 && strstr(tool_output, "--vae FILE") && strstr(tool_output, "--unet FILE") &&
              strstr(tool_output, "--text-encoder-2 FILE"),
          "gen --help lists the component flags");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("components"));
    test_sd15();
    test_sdxl();
    test_errors();
    test_sd3();
    test_cli();
    return test_summary();
}
