/* sd-regress: seed-reproducible regression images.
 *
 *   sd-regress record MANIFEST [options]   render every case and write its golden PNG
 *   sd-regress check MANIFEST [options]    render again and compare with the goldens
 *
 * The manifest format is in cli/common/regress_manifest.h and README.md. Cases render through the
 * public API (sd_generate), so a golden is what `gen` writes for the same settings. check prints
 * one line per case and then "N passed, N failed"; it exits 1 when a case failed, 2 when the
 * manifest or the command line is wrong. A failing case leaves a heat-map and its render beside
 * the golden, or in the folder --out names (a test suite keeps them out of the source tree). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../include/sd.h"
#include "common/imgcmp.h"
#include "common/options.h"
#include "common/regress_manifest.h"
#include "common/settings.h"
#include "common/util.h"

#define MAX_ONLY 64

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: sd-regress record MANIFEST [options]\n"
            "       sd-regress check MANIFEST [options]\n\n"
            "Seed-reproducible regression images. MANIFEST (JSON) lists cases: a model, a prompt and\n"
            "the generation settings, and the golden PNG each renders to. 'record' renders every case\n"
            "and writes its golden (with the settings in a 'parameters' text chunk); 'check' renders\n"
            "again and compares pixels with the golden: per case the largest and the mean absolute\n"
            "difference of the 8-bit values and the PSNR, pass or fail against the tolerance (default:\n"
            "identical pixels), and on failure a heat-map NAME.diff.png and the render\n"
            "NAME.actual.png (the golden being NAME.png) beside the golden or in --out's folder.\n"
            "It prints one line per case, then 'N passed, N failed'.\n\n"
            "options:\n"
            "  -t, --threads N   threads (default: all cores); the pixels do not depend on it\n"
            "      --only NAME   only the case NAME (repeatable)\n"
            "      --out DIR     write failing cases' heat-maps and renders into DIR (created when\n"
            "                    missing) instead of beside their goldens\n"
            "  -h, --help        this text\n"
            "      --version     the version\n\n"
            "manifest: {\"tolerance\": {...}, \"defaults\": {...}, \"cases\": [{...}, ...]}\n"
            "  paths are relative to the manifest's folder; a key a case lacks comes from \"defaults\"\n"
            "  case keys: name (required; letters, digits, _ - .), model (required), prompt\n"
            "    (required), negative_prompt, prompt_2, negative_prompt_2, seed (default 0), width,\n"
            "    height, steps, guidance, guidance_rescale, eta, batch, clip_skip,\n"
            "    max_sequence_length, scheduler, scheduler_opts (object of scheduler config\n"
            "    overrides), init_image, mask_image, strength, golden (default golden/NAME.png;\n"
            "    batches: NAME-0.png ...), tolerance, note (ignored)\n"
            "  tolerance: {\"max_abs\": N} largest difference of any 8-bit value, {\"max_mean\": X}\n"
            "    mean absolute difference, {\"min_psnr\": DB}; every limit given must hold. The\n"
            "    manifest's applies to every case without its own (default {\"max_abs\": 0}).\n"
            "exit status: 0 all passed (or recorded), 1 a case failed, 2 bad command line or manifest\n");
}

typedef struct {
    bool record;
    const char *manifest;
    const char *out_dir; /* --out: where failure images go; NULL: beside the goldens */
    int threads;
    int n_only;
    const char *only[MAX_ONLY];
} options;

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

/* 0: run; 1: exit 0 (help, version); 2: usage error (printed). */
static int parse_args(options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--version")) {
            printf("sd-regress %s (sd engine)\n", sd_version());
            return 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!value || !parse_int(value, 0, 4096, &o->threads)) {
                fprintf(stderr, "sd-regress: %s needs a thread count 0..4096 (got '%s')\n", a,
                        value ? value : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--only")) {
            if (!value) {
                fprintf(stderr, "sd-regress: --only needs a case name\n");
                return 2;
            }
            if (o->n_only == MAX_ONLY) {
                fprintf(stderr, "sd-regress: more than %d --only options\n", MAX_ONLY);
                return 2;
            }
            o->only[o->n_only++] = value;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!value || !*value) {
                fprintf(stderr, "sd-regress: --out needs a folder\n");
                return 2;
            }
            o->out_dir = value;
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sd-regress: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "sd-regress: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (n_pos < 2 || (strcmp(pos[0], "record") && strcmp(pos[0], "check"))) {
        fprintf(stderr, "sd-regress: usage: sd-regress record|check MANIFEST [options] (see --help)\n");
        return 2;
    }
    o->record = !strcmp(pos[0], "record");
    o->manifest = pos[1];
    return 0;
}

/* mkdir -p of the folder holding `path`. */
static sd_status make_parent_dirs(const char *path) {
    char *dir = strdup(path);
    if (!dir) return cli_fail(SD_ERR_NOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    sd_status st = SD_OK;
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; st == SD_OK; p++) {
            if (*p != '/' && *p) continue;
            const char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) != 0 && errno != EEXIST)
                st = cli_fail(SD_ERR_IO, "%s: %s", dir, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    free(dir);
    return st;
}

/* Where a failure image (suffix ".diff.png", ".actual.png") of the golden .../NAME.png goes:
 * .../NAME<suffix> beside it, or DIR/NAME<suffix> with --out DIR. */
static char *failure_path(const char *out_dir, const char *golden, const char *suffix) {
    if (!out_dir) return cli_strfmt("%.*s%s", (int)(strlen(golden) - 4), golden, suffix);
    const char *slash = strrchr(golden, '/'), *base = slash ? slash + 1 : golden;
    return cli_strfmt("%s/%.*s%s", out_dir, (int)(strlen(base) - 4), base, suffix);
}

/* Failure images of an earlier check no longer describe the golden. */
static void remove_stale(const char *out_dir, const char *golden) {
    char *d = failure_path(out_dir, golden, ".diff.png");
    char *a = failure_path(out_dir, golden, ".actual.png");
    if (d) unlink(d);
    if (a) unlink(a);
    free(d), free(a);
}

static bool within(const regress_tolerance *t, const imgcmp_stats *s) {
    if (t->max_abs >= 0 && s->max_abs > t->max_abs) return false;
    if (!isnan(t->max_mean) && s->mean_abs > t->max_mean) return false;
    if (!isnan(t->min_psnr) && s->psnr < t->min_psnr) return false;
    return true;
}

static void tolerance_text(const regress_tolerance *t, char *buf, size_t len) {
    size_t n = 0;
    buf[0] = '\0';
    if (t->max_abs >= 0) n += (size_t)snprintf(buf + n, len - n, "max_abs %d", t->max_abs);
    if (!isnan(t->max_mean) && n < len)
        n += (size_t)snprintf(buf + n, len - n, "%smax_mean %g", n ? ", " : "", t->max_mean);
    if (!isnan(t->min_psnr) && n < len)
        snprintf(buf + n, len - n, "%smin_psnr %g", n ? ", " : "", t->min_psnr);
}

/* The loaded pipeline, kept while consecutive cases use the same model. */
typedef struct {
    sd_pipeline *p;
    char *model;
    int threads, tile_limit_mb;
} model_cache;

static sd_status get_pipeline(model_cache *mc, const char *model, sd_pipeline **out) {
    if (!mc->model || strcmp(mc->model, model)) {
        sd_pipeline_free(mc->p);
        free(mc->model);
        mc->p = NULL;
        mc->model = NULL;
        sd_load_params lp;
        sd_load_params_init(&lp);
        lp.threads = mc->threads;
        CLI_TRY(sd_pipeline_load(&mc->p, model, &lp));
        mc->model = strdup(model);
    }
    *out = mc->p;
    return SD_OK;
}

/* Renders one case (init and mask images read from their files). */
static sd_status render(model_cache *mc, const regress_case *c, sd_result *r) {
    sd_pipeline *p;
    CLI_TRY(get_pipeline(mc, c->model, &p));
    sd_gen_params g = c->g;
    g.vae_tile_limit_mb = mc->tile_limit_mb;
    sd_image init = {0}, mask = {0};
    sd_status st = SD_OK;
    if (c->init_image) st = sd_image_read(c->init_image, &init);
    if (st == SD_OK && c->mask_image) st = sd_image_read(c->mask_image, &mask);
    if (c->init_image) g.init_image = &init;
    if (c->mask_image) g.mask_image = &mask;
    if (st == SD_OK) st = sd_generate(p, &g, r);
    sd_image_free(&init), sd_image_free(&mask);
    return st;
}

/* Appends to a fixed buffer, truncating. */
static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...) {
    const size_t used = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    if (used + 1 < len) vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static bool record_case(const regress_case *c, const sd_result *r, const char *out_dir) {
    char *params = cli_parameters_text(&r->used, r->scheduler_class, r->images[0].width,
                                       r->images[0].height, c->model);
    const char *text[4] = {"parameters", params ? params : "", "sd-regress case", c->json};
    char written[1024] = "";
    bool ok = true;
    for (int b = 0; b < r->n_images && ok; b++) {
        char *path = cli_indexed_path(c->golden, b, r->n_images);
        if (!path || make_parent_dirs(path) != SD_OK ||
            sd_image_write(path, &r->images[b], text, 2, 90) != SD_OK) {
            printf("FAIL %s: %s\n", c->name, path ? cli_error() : "out of memory");
            ok = false;
        } else {
            remove_stale(out_dir, path);
            append(written, sizeof written, "%s%s", b ? ", " : "", path);
        }
        free(path);
    }
    if (ok)
        printf("recorded %s: %s (%dx%d, %.1f s)\n", c->name, written, r->images[0].width,
               r->images[0].height, r->seconds);
    free(params);
    return ok;
}

/* Writes the heat-map and the render of a failing golden (failure_path), and says where in
 * `note`. */
static void write_failure_images(const char *out_dir, const char *golden, const sd_image *got,
                                 const sd_image *want, char *note, size_t len) {
    char *diff = failure_path(out_dir, golden, ".diff.png");
    char *actual = failure_path(out_dir, golden, ".actual.png");
    sd_image heat = {0};
    if (diff && actual && make_parent_dirs(diff) == SD_OK &&
        imgcmp_heatmap(want, got, &heat) == SD_OK &&
        sd_image_write(diff, &heat, NULL, 0, 90) == SD_OK &&
        sd_image_write(actual, got, NULL, 0, 90) == SD_OK)
        append(note, len, "; heat-map %s, render %s", diff, actual);
    else
        append(note, len, "; could not write the heat-map: %s", cli_error());
    sd_image_free(&heat);
    free(diff), free(actual);
}

static bool check_case(const regress_case *c, const sd_result *r, const char *out_dir) {
    imgcmp_stats worst = {.psnr = INFINITY};
    double mean_sum = 0;
    bool ok = true;
    char problems[1024] = "";
    for (int b = 0; b < r->n_images; b++) {
        char *path = cli_indexed_path(c->golden, b, r->n_images);
        sd_image want;
        imgcmp_stats s;
        if (!path) return false;
        if (!cli_file_exists(path)) {
            append(problems, sizeof problems, "; no golden %s (run sd-regress record)", path);
            ok = false;
        } else if (sd_image_read(path, &want) != SD_OK) {
            append(problems, sizeof problems, "; %s", cli_error());
            ok = false;
        } else {
            if (imgcmp_compare(&r->images[b], &want, &s) != SD_OK) {
                append(problems, sizeof problems, "; render %dx%d, golden %s is %dx%d",
                       r->images[b].width, r->images[b].height, path, want.width, want.height);
                ok = false;
            } else {
                if (s.max_abs > worst.max_abs) worst.max_abs = s.max_abs;
                if (s.psnr < worst.psnr) worst.psnr = s.psnr;
                mean_sum += s.mean_abs;
                if (!within(&c->tol, &s)) {
                    write_failure_images(out_dir, path, &r->images[b], &want, problems,
                                         sizeof problems);
                    ok = false;
                } else {
                    remove_stale(out_dir, path);
                }
            }
            sd_image_free(&want);
        }
        free(path);
    }
    char psnr[32], tol[96];
    tolerance_text(&c->tol, tol, sizeof tol);
    printf("%s %s: max %d, mean %.4f, psnr %s (%dx%d%s, %.1f s)%s%s%s\n", ok ? "ok  " : "FAIL", c->name,
           worst.max_abs, mean_sum / r->n_images, imgcmp_psnr_text(worst.psnr, psnr, sizeof psnr),
           r->images[0].width, r->images[0].height, r->n_images > 1 ? ", batch" : "", r->seconds,
           ok ? "" : "; tolerance ", ok ? "" : tol, problems);
    return ok;
}

static bool selected(const options *o, const char *name) {
    if (!o->n_only) return true;
    for (int i = 0; i < o->n_only; i++)
        if (!strcmp(o->only[i], name)) return true;
    return false;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    regress_manifest m;
    if (regress_manifest_load(&m, o.manifest) != SD_OK) {
        fprintf(stderr, "sd-regress: %s\n", cli_error());
        return 2;
    }
    for (int i = 0; i < o.n_only; i++) {
        int found = 0;
        for (int k = 0; k < m.n_cases; k++) found |= !strcmp(m.cases[k].name, o.only[i]);
        if (!found) {
            fprintf(stderr, "sd-regress: --only %s: %s has no case of that name\n", o.only[i], o.manifest);
            regress_manifest_free(&m);
            return 2;
        }
    }
    int tile_limit_mb = 0;
    const char *err = NULL;
    if (!cli_settings_from_env(&tile_limit_mb, &err)) {
        fprintf(stderr, "sd-regress: %s\n", err);
        regress_manifest_free(&m);
        return 2;
    }
    cli_log_to_stderr("sd-regress", SD_LOG_WARN);
    model_cache mc = {.threads = o.threads, .tile_limit_mb = tile_limit_mb};
    int passed = 0, failed = 0;
    for (int i = 0; i < m.n_cases; i++) {
        const regress_case *c = &m.cases[i];
        if (!selected(&o, c->name)) continue;
        sd_result r;
        if (render(&mc, c, &r) != SD_OK) {
            printf("FAIL %s: %s\n", c->name, cli_error());
            failed++;
            continue;
        }
        bool ok = o.record ? record_case(c, &r, o.out_dir) : check_case(c, &r, o.out_dir);
        ok ? passed++ : failed++;
        sd_result_free(&r);
        fflush(stdout);
    }
    printf("%d %s, %d failed\n", passed, o.record ? "recorded" : "passed", failed);
    sd_pipeline_free(mc.p);
    free(mc.model);
    regress_manifest_free(&m);
    return failed ? 1 : 0;
}
