/* The LoRA tests' common steps (tests/test_lora*.c): a copy of a fixture folder for the
 * reference merge to write into, and a short generation whose latents and prompt embeddings are
 * compared bit for bit. */
#ifndef SD_TEST_LORA_RUN_H
#define SD_TEST_LORA_RUN_H

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

/* Not every test file uses every helper. */
#define LORA_RUN_FN __attribute__((unused)) static

/* dst: a copy of model folder src where the components listed in `changed` are real folders
 * (their files linked, the weights left for the merge to write) and everything else a link. */
LORA_RUN_FN void link_folder(const char *src, const char *dst, const char *const *changed) {
    mkdir(dst, 0755);
    DIR *d = opendir(src);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char from[PATH_MAX], to[PATH_MAX], real[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dst, e->d_name);
        bool is_changed = false;
        for (int i = 0; changed[i]; i++) is_changed |= !strcmp(changed[i], e->d_name);
        if (!is_changed) {
            if (realpath(from, real)) CHECK(symlink(real, to) == 0, "link %s", to);
            continue;
        }
        mkdir(to, 0755);
        DIR *c = opendir(from);
        for (struct dirent *f; c && (f = readdir(c));) {
            if (f->d_name[0] == '.' || strstr(f->d_name, ".safetensors")) continue;
            char a[PATH_MAX + 300], b[PATH_MAX + 300];
            snprintf(a, sizeof a, "%s/%s", from, f->d_name);
            snprintf(b, sizeof b, "%s/%s", to, f->d_name);
            if (realpath(a, real)) CHECK(symlink(real, b) == 0, "link %s", b);
        }
        if (c) closedir(c);
    }
    if (d) closedir(d);
}

typedef struct {
    float *latents;
    size_t n;
    float *embeds; /* prompt embeddings */
    size_t n_embeds;
} run_out;

LORA_RUN_FN int grab_embeds(void *user, const sd_event *ev) {
    run_out *o = user;
    if (ev->kind != SD_EVENT_PROMPT_EMBEDS || ev->index != 0 || o->embeds) return 0;
    const size_t n = (size_t)ev->tensor.batch * ev->tensor.h * ev->tensor.w * ev->tensor.c;
    o->embeds = malloc(n * sizeof *o->embeds);
    memcpy(o->embeds, ev->tensor.data, n * sizeof *o->embeds);
    o->n_embeds = n;
    return 0;
}

/* Generates a few steps with pipeline p into `out`; false (error recorded) on failure. */
LORA_RUN_FN bool run_generate(sd_pipeline *p, run_out *out) {
    memset(out, 0, sizeof *out);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a photo of an astronaut riding a horse on mars";
    g.seed = 7, g.steps = 3, g.guidance = 5;
    g.on_event = grab_embeds;
    g.user = out;
    sd_result r;
    const sd_status st = sd_generate(p, &g, &r);
    if (st == SD_OK) {
        out->n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
        out->latents = malloc(out->n * sizeof *out->latents);
        memcpy(out->latents, r.latents, out->n * sizeof *out->latents);
        sd_result_free(&r);
    }
    return st == SD_OK;
}

/* Loads `model` (its transformer from `transformer_file` when set) with the LoRAs and generates a
 * few steps; false (error recorded) on failure.
 * mode: 0 --keep-resident, 1 --low-memory, 2 --weights-dtype f16 (resident). */
LORA_RUN_FN bool run_file(const char *model, const char *transformer_file, const sd_lora *loras,
                     int n, int mode, run_out *out) {
    memset(out, 0, sizeof *out);
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.transformer_file = transformer_file;
    lp.low_memory = mode == 1;
    lp.keep_resident = mode != 1;
    if (mode == 2) lp.weights_dtype = SD_WEIGHTS_F16;
    lp.loras = loras;
    lp.n_loras = n;
    sd_pipeline *p;
    if (sd_pipeline_load(&p, model, &lp) != SD_OK) return false;
    const bool ok = run_generate(p, out);
    sd_pipeline_free(p);
    return ok;
}

LORA_RUN_FN bool run_lm(const char *model, const sd_lora *loras, int n, int mode, run_out *out) {
    return run_file(model, NULL, loras, n, mode, out);
}

LORA_RUN_FN bool run(const char *model, const sd_lora *loras, int n, run_out *out) {
    return run_file(model, NULL, loras, n, 0, out);
}

LORA_RUN_FN void run_free(run_out *o) {
    free(o->latents);
    free(o->embeds);
}

LORA_RUN_FN bool same(const run_out *a, const run_out *b) {
    return a->latents && b->latents && a->n == b->n &&
           !memcmp(a->latents, b->latents, a->n * sizeof *a->latents);
}

LORA_RUN_FN double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

#endif
