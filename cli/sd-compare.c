/* sd-compare: one prompt and seed rendered with several schedulers (and step counts), side by side.
 *
 *   sd-compare -m DIR "PROMPT" --schedulers A,B,C [--steps 10,20] [gen options] -o OUTDIR
 *
 * Writes OUTDIR/<scheduler>[-<steps>].png (the suffix when several step counts are compared),
 * OUTDIR/grid.png (columns: schedulers, rows: step counts) and OUTDIR/report.json. Every image is
 * what `gen` writes for the same settings with --scheduler and --steps set: the same library call
 * on one loaded pipeline, whose prompt-encoding cache encodes the texts once for all of them.
 * Scheduler names, options and step counts are all checked before anything is rendered. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "../include/sd.h"
#include "common/grid.h"
#include "common/options.h"
#include "common/settings.h"
#include "common/util.h"

#define MAX_ITEMS 64

typedef struct {
    const char *schedulers, *steps, *outdir; /* as typed */
    char err[512];
} compare_args;

typedef struct {
    char *names[MAX_ITEMS];
    int n_names;
    int steps[MAX_ITEMS];
    int n_steps; /* 0: the pipeline's default */
} compare_plan;

typedef struct {
    const char *name;      /* as the user typed it */
    const char *cls;       /* the class that ran */
    int steps, batch_index, model_calls;
    double seconds, diff;  /* diff: mean |pixel - first image's pixel|, NAN when sizes differ */
    char *file;            /* name inside OUTDIR */
    char label[3][64];
    sd_image image;
} compare_entry;

static void usage(FILE *fp) {
    fprintf(fp, "usage: sd-compare [options] \"PROMPT\" --schedulers A,B,C [-o OUTDIR]\n\n"
                "Renders PROMPT with the same seed and settings once per scheduler (and step count)\n"
                "and writes OUTDIR/<scheduler>[-<steps>].png, a labelled OUTDIR/grid.png and\n"
                "OUTDIR/report.json.\n\noptions:\n"
                "      --schedulers LIST    comma-separated class names or aliases; 'help' lists them\n"
                "      --steps LIST         step counts, e.g. 10,20,30 (default: the pipeline's)\n"
                "  -o, --output DIR         output folder, created if missing (default: compare)\n"
                "  -q, --quiet              no progress lines\n"
                "  -h, --help               this text\n"
                "      --version            the version\n"
                "and every generation option of gen:\n%s",
            cli_gen_options_help());
}

/* Whether `arg` is --long_name (or --long_name=...) or -short_name (or -sVALUE). */
static bool is_opt(const char *arg, const char *long_name, char short_name) {
    if (arg[1] == '-') {
        size_t n = strlen(long_name);
        return !strncmp(arg + 2, long_name, n) && (arg[2 + n] == '\0' || arg[2 + n] == '=');
    }
    return short_name && arg[1] == short_name;
}

static int extra_option(void *ctx, const char *arg, const char *value, const char **err) {
    compare_args *a = ctx;
    const char **slot = is_opt(arg, "schedulers", 0) ? &a->schedulers
                        : is_opt(arg, "steps", 0)    ? &a->steps
                        : is_opt(arg, "output", 'o') ? &a->outdir
                                                     : NULL;
    if (is_opt(arg, "save-latents", 0)) {
        snprintf(a->err, sizeof a->err, "%s: not available in sd-compare (run gen with the "
                 "settings of an image)", arg);
        *err = a->err;
        return -2;
    }
    if (!slot) return -1;
    if (!value) {
        snprintf(a->err, sizeof a->err, "option '%s' needs a value", arg);
        *err = a->err;
        return -2;
    }
    *slot = value;
    return 1;
}

/* Splits a comma-separated list into trimmed items (malloc'd); empty items are errors. */
static bool split_list(const char *opt, const char *list, char **items, int *n, char *err,
                       size_t err_size) {
    *n = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if (end == p) {
            snprintf(err, err_size, "%s: '%s' has an empty item (expected A,B,C)", opt, list);
            return false;
        }
        if (*n == MAX_ITEMS) {
            snprintf(err, err_size, "%s: more than %d items", opt, MAX_ITEMS);
            return false;
        }
        items[(*n)++] = strndup(p, (size_t)(end - p));
        if (!comma) return true;
        p = comma + 1;
    }
}

static void plan_free(compare_plan *pl) {
    for (int i = 0; i < pl->n_names; i++) free(pl->names[i]);
    pl->n_names = 0;
}

/* Scheduler names (each must build, with the --scheduler-opt options, as the class it names) and
 * step counts, all checked before any rendering. */
static bool make_plan(const compare_args *a, const cli_options *o, compare_plan *pl, char *err,
                      size_t err_size) {
    memset(pl, 0, sizeof *pl);
    if (!a->schedulers) {
        snprintf(err, err_size, "no --schedulers given (e.g. --schedulers euler,dpm++2m,pndm; "
                 "--schedulers help lists them)");
        return false;
    }
    if (!split_list("--schedulers", a->schedulers, pl->names, &pl->n_names, err, err_size)) {
        plan_free(pl);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < pl->n_names && ok; i++) {
        for (int j = 0; j < i && ok; j++)
            if (!strcasecmp(pl->names[i], pl->names[j])) {
                snprintf(err, err_size, "--schedulers: '%s' is listed twice", pl->names[i]);
                ok = false;
            }
        if (ok && sd_scheduler_check(pl->names[i], o->gen.scheduler_overrides) != SD_OK) {
            snprintf(err, err_size, "--schedulers: %s", cli_error());
            ok = false;
        }
    }
    if (ok && a->steps) {
        char *items[MAX_ITEMS];
        int n;
        ok = split_list("--steps", a->steps, items, &n, err, err_size);
        for (int i = 0; i < n; i++) {
            char *end;
            errno = 0;
            long v = strtol(items[i], &end, 10);
            if (ok && (*end || errno || v < 1 || v > 10000)) {
                snprintf(err, err_size, "--steps: '%s' is not a step count in 1..10000", items[i]);
                ok = false;
            }
            for (int j = 0; j < i && ok; j++)
                if (pl->steps[j] == v) {
                    snprintf(err, err_size, "--steps: %ld is listed twice", v);
                    ok = false;
                }
            pl->steps[i] = (int)v;
            free(items[i]);
        }
        pl->n_steps = ok ? n : 0;
    }
    if (!ok) plan_free(pl);
    return ok;
}

/* mkdir -p. */
static bool make_dirs(const char *path, char *err, size_t err_size) {
    char *p = strdup(path);
    if (!p) {
        snprintf(err, err_size, "out of memory");
        return false;
    }
    bool ok = true;
    for (char *c = p + 1; ok && *p && *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) ok = false;
        *c = '/';
    }
    if (ok && mkdir(p, 0777) != 0 && errno != EEXIST) ok = false;
    if (ok && !cli_dir_exists(path)) errno = ENOTDIR, ok = false;
    if (!ok) snprintf(err, err_size, "-o %s: cannot create the folder: %s", path, strerror(errno));
    free(p);
    return ok;
}

static double mean_abs_diff(const sd_image *a, const sd_image *b) {
    if (a->width != b->width || a->height != b->height) return NAN;
    const size_t n = (size_t)a->width * a->height * 3;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += abs((int)a->rgb[i] - (int)b->rgb[i]);
    return n ? sum / (double)n : 0;
}

/* "euler_a-20.png" (with "-<i>" for batch item i when there are several). */
static char *file_name(const char *name, int steps, bool with_steps, int b, int batch) {
    char *base = with_steps ? cli_strfmt("%s-%d.png", name, steps) : cli_strfmt("%s.png", name);
    char *out = base ? cli_indexed_path(base, b, batch) : NULL;
    free(base);
    for (char *c = out; c && *c; c++) /* names are validated scheduler names; be safe anyway */
        if (*c == '/') *c = '_';
    return out;
}

static cJSON *number_or_null(double x) { return isnan(x) ? cJSON_CreateNull() : cJSON_CreateNumber(x); }

static bool write_report(const char *path, const cli_options *o, const sd_pipeline *p,
                         const sd_gen_params *used, const compare_plan *pl,
                         const compare_entry *e, int n, double total_seconds) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", o->model);
    cJSON_AddStringToObject(r, "pipeline_class", sd_pipeline_class(p));
    cJSON_AddStringToObject(r, "prompt", o->gen.prompt);
    if (o->gen.negative_prompt) cJSON_AddStringToObject(r, "negative_prompt", o->gen.negative_prompt);
    else cJSON_AddNullToObject(r, "negative_prompt");
    /* JSON numbers are doubles: seeds beyond 2^53 would change, so those are written as text. */
    if (o->gen.seed <= (1ull << 53)) cJSON_AddNumberToObject(r, "seed", (double)o->gen.seed);
    else {
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->gen.seed);
        cJSON_AddStringToObject(r, "seed", seed);
    }
    cJSON_AddNumberToObject(r, "width", used->width);
    cJSON_AddNumberToObject(r, "height", used->height);
    cJSON_AddNumberToObject(r, "guidance", used->guidance);
    cJSON_AddNumberToObject(r, "guidance_rescale", used->guidance_rescale);
    cJSON_AddNumberToObject(r, "eta", used->eta);
    cJSON_AddNumberToObject(r, "clip_skip", used->clip_skip);
    cJSON_AddNumberToObject(r, "batch", used->batch);
    cJSON *ov = o->gen.scheduler_overrides ? cJSON_Parse(o->gen.scheduler_overrides) : NULL;
    cJSON_AddItemToObject(r, "scheduler_options", ov ? ov : cJSON_CreateObject());
    cJSON *names = cJSON_AddArrayToObject(r, "schedulers");
    for (int i = 0; i < pl->n_names; i++) cJSON_AddItemToArray(names, cJSON_CreateString(pl->names[i]));
    cJSON *steps = cJSON_AddArrayToObject(r, "steps");
    for (int i = 0; i < n; i += pl->n_names * used->batch)
        cJSON_AddItemToArray(steps, cJSON_CreateNumber(e[i].steps));
    sd_stats st;
    sd_pipeline_stats(p, &st);
    cJSON_AddNumberToObject(r, "text_encoder_calls", (double)st.text_encoder_calls);
    cJSON_AddNumberToObject(r, "total_seconds", total_seconds);
    cJSON_AddStringToObject(r, "grid", "grid.png");
    cJSON *images = cJSON_AddArrayToObject(r, "images");
    for (int i = 0; i < n; i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "name", e[i].name);
        cJSON_AddStringToObject(it, "scheduler", e[i].cls);
        cJSON_AddNumberToObject(it, "steps", e[i].steps);
        cJSON_AddNumberToObject(it, "batch_index", e[i].batch_index);
        cJSON_AddNumberToObject(it, "model_calls", e[i].model_calls);
        cJSON_AddNumberToObject(it, "seconds", e[i].seconds);
        cJSON_AddItemToObject(it, "mean_abs_diff", number_or_null(e[i].diff));
        cJSON_AddStringToObject(it, "file", e[i].file);
        cJSON_AddItemToArray(images, it);
    }
    char *text = cJSON_Print(r);
    cJSON_Delete(r);
    char *line = text ? cli_strfmt("%s\n", text) : NULL;
    const sd_status s = line ? cli_write_file(path, line, strlen(line))
                             : cli_fail(SD_ERR_NOMEM, "out of memory");
    cJSON_free(text);
    free(line);
    return s == SD_OK;
}

static bool write_grid(const char *path, const cli_options *o, const sd_gen_params *used,
                       compare_entry *e, int rows, int cols) {
    grid_cell *cells = calloc((size_t)rows * cols, sizeof *cells);
    char *title = cli_strfmt("\"%s\"  seed %llu, %dx%d, guidance %g", o->gen.prompt,
                             (unsigned long long)o->gen.seed, used->width, used->height,
                             used->guidance);
    sd_status s = cells && title ? SD_OK : cli_fail(SD_ERR_NOMEM, "out of memory");
    for (int i = 0; s == SD_OK && i < rows * cols; i++) {
        cells[i].image = &e[i].image;
        for (int k = 0; k < 3; k++) cells[i].label[k] = e[i].label[k];
    }
    sd_image sheet = {0};
    if (s == SD_OK) s = grid_render(&(grid_spec){rows, cols, cells, title, 0}, &sheet);
    if (s == SD_OK) s = sd_image_write(path, &sheet, NULL, 0, 90);
    sd_image_free(&sheet);
    free(cells), free(title);
    return s == SD_OK;
}

/* Renders every (step count, scheduler) pair into entries laid out [steps][batch][scheduler]. */
static int render_all(sd_pipeline *p, cli_options *o, const compare_plan *pl, const char *outdir,
                      compare_entry *e, int n, sd_gen_params *used) {
    const int n_steps = pl->n_steps ? pl->n_steps : 1, B = o->gen.batch, cols = pl->n_names;
    int done = 0;
    for (int si = 0; si < n_steps; si++)
        for (int k = 0; k < cols; k++) {
            sd_gen_params g = o->gen;
            g.scheduler = pl->names[k];
            if (pl->n_steps) g.steps = pl->steps[si];
            sd_result r;
            if (sd_generate(p, &g, &r) != SD_OK) {
                fprintf(stderr, "sd-compare: %s: %s\n", pl->names[k], cli_error());
                return 1;
            }
            if (si == 0 && k == 0) *used = r.used;
            char *params = cli_parameters_text(&r.used, r.scheduler_class, r.images[0].width,
                                               r.images[0].height, o->model);
            const char *text[2] = {"parameters", params ? params : ""};
            for (int b = 0; b < B && b < r.n_images; b++) {
                compare_entry *x = &e[(si * B + b) * cols + k];
                x->name = pl->names[k];
                x->cls = r.scheduler_class;
                x->steps = r.used.steps;
                x->batch_index = b;
                x->model_calls = r.model_calls;
                x->seconds = r.seconds;
                x->image = r.images[b];
                r.images[b] = (sd_image){0}; /* the entry owns it now */
                x->file = file_name(pl->names[k], x->steps, pl->n_steps > 1, b, B);
                x->diff = mean_abs_diff(&x->image, &e[b * cols].image);
                snprintf(x->label[0], sizeof x->label[0], "%s", x->name);
                snprintf(x->label[1], sizeof x->label[1], B > 1 ? "%d steps #%d" : "%d steps",
                         x->steps, b);
                snprintf(x->label[2], sizeof x->label[2], "%.1fs", x->seconds);
                char *path = x->file ? cli_path_join(outdir, x->file) : NULL;
                bool ok = path && sd_image_write(path, &x->image, text, 1, 90) == SD_OK;
                if (!ok) fprintf(stderr, "sd-compare: %s\n", path ? cli_error() : "out of memory");
                else if (!o->quiet)
                    fprintf(stderr, "[%d/%d] %s, %d steps: %d model calls, %.2f s, mean abs diff "
                            "%.2f -> %s\n", ++done, n, x->name, x->steps, x->model_calls,
                            x->seconds, x->diff, path);
                free(path);
                if (!ok) {
                    free(params);
                    sd_result_free(&r);
                    return 1;
                }
            }
            free(params);
            sd_result_free(&r);
        }
    return 0;
}

static void list_schedulers(void) {
    printf("schedulers (diffusers class names; aliases in brackets):\n");
    for (int i = 0; i < sd_scheduler_count(); i++) {
        const sd_scheduler_info *info = sd_scheduler_get(i);
        printf("  %-34s [%s]\n      %s\n", info->class_name, info->aliases, info->description);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The init image and mask of img2img / inpainting, read as gen reads them. */
static bool read_inputs(cli_options *o, sd_image *init, sd_image *mask) {
    if (o->init_image && sd_image_read(o->init_image, init) != SD_OK) return false;
    if (o->mask && !o->init_image) {
        cli_fail(SD_ERR_ARG, "--mask needs --init-image (the image to repaint)");
        return false;
    }
    if (o->mask && sd_image_read(o->mask, mask) != SD_OK) return false;
    if (o->init_image) o->gen.init_image = init;
    if (o->mask) o->gen.mask_image = mask;
    return true;
}

/* After the options are checked: load, render, write the sheet and the report. Nothing is
 * created in OUTDIR until the model and the input images have loaded. */
static int run(cli_options *o, const compare_plan *pl, const char *outdir) {
    const double t0 = now_s();
    sd_load_params lp;
    cli_load_params(o, &lp);
    sd_pipeline *p;
    if (sd_pipeline_load(&p, o->model, &lp) != SD_OK) {
        fprintf(stderr, "sd-compare: %s\n", cli_error());
        return 1;
    }
    if (cli_load_embeddings(o, p) != SD_OK) { /* --embedding, --embeddings-dir */
        fprintf(stderr, "sd-compare: %s\n", cli_error());
        sd_pipeline_free(p);
        return 1;
    }
    if (o->print_tokens) { /* as gen does: the ids, then nothing else */
        char *json;
        int rc = sd_tokenize_json(p, o->gen.prompt, &json) == SD_OK ? 0 : 1;
        if (rc == 0) printf("%s\n", json), free(json);
        else fprintf(stderr, "sd-compare: %s\n", cli_error());
        sd_pipeline_free(p);
        return rc;
    }
    const int rows = (pl->n_steps ? pl->n_steps : 1) * o->gen.batch, cols = pl->n_names;
    const int n = rows * cols;
    sd_image init = {0}, mask = {0};
    compare_entry *e = calloc((size_t)n, sizeof *e);
    char *grid = cli_path_join(outdir, "grid.png"), *report = cli_path_join(outdir, "report.json");
    char err[600] = "";
    int rc = 0;
    if (!e || !grid || !report) snprintf(err, sizeof err, "out of memory");
    else if (!read_inputs(o, &init, &mask)) snprintf(err, sizeof err, "%s", cli_error());
    else make_dirs(outdir, err, sizeof err);
    if (err[0]) fprintf(stderr, "sd-compare: %s\n", err), rc = 1;
    sd_gen_params used = o->gen;
    if (rc == 0) rc = render_all(p, o, pl, outdir, e, n, &used); /* it reports its errors */
    if (rc == 0 && (!write_grid(grid, o, &used, e, rows, cols) ||
                    !write_report(report, o, p, &used, pl, e, n, now_s() - t0))) {
        fprintf(stderr, "sd-compare: %s\n", cli_error());
        rc = 1;
    }
    if (rc == 0 && !o->quiet) fprintf(stderr, "wrote %s and %s\n", grid, report);
    free(grid), free(report);
    for (int i = 0; e && i < n; i++) sd_image_free(&e[i].image), free(e[i].file);
    free(e);
    sd_image_free(&init), sd_image_free(&mask);
    sd_pipeline_free(p);
    return rc;
}

int main(int argc, char **argv) {
    cli_options o;
    compare_args a = {0};
    const char *err = NULL;
    if (!cli_parse(&o, argc, argv, extra_option, &a, &err)) {
        fprintf(stderr, "sd-compare: %s\n", err);
        return 2;
    }
    if (o.show_help) {
        usage(stdout);
        return 0;
    }
    if (o.show_version) {
        printf("sd-compare %s (sd engine)\n", sd_version());
        return 0;
    }
    if ((a.schedulers && !strcmp(a.schedulers, "help")) ||
        (o.gen.scheduler && !strcmp(o.gen.scheduler, "help"))) {
        list_schedulers();
        return 0;
    }
    if (o.gen.scheduler) {
        fprintf(stderr, "sd-compare: --scheduler: give the schedulers to compare with --schedulers "
                "A,B,C\n");
        return 2;
    }
    if (!cli_build_sched_overrides(&o, &err)) {
        fprintf(stderr, "sd-compare: %s\n", err);
        return 2;
    }
    if (!cli_settings_from_env(&o.gen.vae_tile_limit_mb, &err)) {
        fprintf(stderr, "sd-compare: %s\n", err);
        cli_options_free(&o);
        return 1;
    }
    if (!o.quiet) cli_log_to_stderr("sd-compare", SD_LOG_WARN);
    compare_plan pl = {0};
    char msg[600];
    if (!o.print_tokens && !make_plan(&a, &o, &pl, msg, sizeof msg)) {
        fprintf(stderr, "sd-compare: %s\n", msg);
        cli_options_free(&o);
        return 2;
    }
    int rc = 2;
    if (!o.model)
        fprintf(stderr, "sd-compare: no model: pass -m DIR or set SD_MODEL to a diffusers model "
                "folder\n");
    else if (!o.gen.prompt)
        fprintf(stderr, "sd-compare: no prompt given (usage: sd-compare [options] \"PROMPT\" "
                "--schedulers A,B,C; see --help)\n");
    else {
        /* One seed for every image, random only when none was given (as gen). */
        if (!o.seed_given) {
            FILE *fp = fopen("/dev/urandom", "rb");
            uint64_t s = 0;
            if (!fp || fread(&s, sizeof s, 1, fp) != 1) s = (uint64_t)time(NULL) * 2654435761u;
            if (fp) fclose(fp);
            o.gen.seed = s & 0xffffffffu;
        }
        rc = run(&o, &pl, a.outdir ? a.outdir : "compare");
    }
    plan_free(&pl);
    cli_options_free(&o);
    return rc;
}
