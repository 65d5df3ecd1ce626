#include "regress_manifest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

typedef enum { K_STRING, K_PATH, K_INT, K_NUMBER, K_SEED, K_OBJECT } key_type;

static const struct {
    const char *name;
    key_type type;
    bool required, case_only; /* case_only: not allowed in "defaults" */
    int lo, hi;               /* K_INT range */
} keys[] = {
    {"name", K_STRING, true, true, 0, 0},
    {"model", K_PATH, true, false, 0, 0},
    {"prompt", K_STRING, true, false, 0, 0},
    {"negative_prompt", K_STRING, false, false, 0, 0},
    {"prompt_2", K_STRING, false, false, 0, 0},
    {"negative_prompt_2", K_STRING, false, false, 0, 0},
    {"seed", K_SEED, false, false, 0, 0},
    {"width", K_INT, false, false, 8, 16384},
    {"height", K_INT, false, false, 8, 16384},
    {"steps", K_INT, false, false, 1, 10000},
    {"guidance", K_NUMBER, false, false, 0, 0},
    {"guidance_rescale", K_NUMBER, false, false, 0, 0},
    {"eta", K_NUMBER, false, false, 0, 0},
    {"batch", K_INT, false, false, 1, 64},
    {"clip_skip", K_INT, false, false, 0, 64},
    {"max_sequence_length", K_INT, false, false, 1, 4096},
    {"scheduler", K_STRING, false, false, 0, 0},
    {"scheduler_opts", K_OBJECT, false, false, 0, 0},
    {"init_image", K_PATH, false, false, 0, 0},
    {"mask_image", K_PATH, false, false, 0, 0},
    {"strength", K_NUMBER, false, false, 0, 0},
    {"golden", K_PATH, false, true, 0, 0},
    {"tolerance", K_OBJECT, false, false, 0, 0},
    {"note", K_STRING, false, false, 0, 0},
};
enum { N_KEYS = sizeof keys / sizeof keys[0] };

/* Where an error is: "manifest.json: cases[2] \"fox\"" or "manifest.json: defaults". */
typedef struct {
    const char *file;
    char where[160];
} ctx;

static sd_status bad(const ctx *c, const char *key, const char *what) {
    return cli_fail(SD_ERR_CONFIG, "%s: %s: '%s' %s", c->file, c->where, key, what);
}

static char *resolve(const char *dir, const char *rel) {
    return rel[0] == '/' ? strdup(rel) : cli_path_join(dir, rel);
}

static sd_status check_type(const ctx *c, int k, const cJSON *v) {
    const char *key = keys[k].name;
    switch (keys[k].type) {
    case K_STRING:
    case K_PATH:
        if (!cJSON_IsString(v)) return bad(c, key, "must be a string");
        if (keys[k].type == K_PATH && !v->valuestring[0]) return bad(c, key, "must not be empty");
        return SD_OK;
    case K_INT:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            v->valuedouble < keys[k].lo || v->valuedouble > keys[k].hi) {
            char msg[96];
            snprintf(msg, sizeof msg, "must be an integer in %d..%d", keys[k].lo, keys[k].hi);
            return bad(c, key, msg);
        }
        return SD_OK;
    case K_NUMBER:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(c, key, "must be a number");
        return SD_OK;
    case K_SEED:
        if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= 0 &&
            v->valuedouble <= 9007199254740992.0)
            return SD_OK;
        if (cJSON_IsString(v) && v->valuestring[0] && strspn(v->valuestring, "0123456789") ==
                                                          strlen(v->valuestring) &&
            strlen(v->valuestring) <= 20)
            return SD_OK;
        return bad(c, key, "must be a non-negative integer (as a string of digits above 2^53)");
    case K_OBJECT:
        if (!cJSON_IsObject(v)) return bad(c, key, "must be an object");
        return SD_OK;
    }
    return SD_OK;
}

static int key_index(const char *name) {
    for (int k = 0; k < N_KEYS; k++)
        if (!strcmp(keys[k].name, name)) return k;
    return -1;
}

/* Every key of obj known, allowed here and of the right type (null is "absent"). */
static sd_status check_keys(const ctx *c, const cJSON *obj, bool is_defaults) {
    for (const cJSON *e = obj->child; e; e = e->next) {
        const int k = key_index(e->string);
        if (k < 0) return bad(c, e->string, "is not a case key (see sd-regress --help)");
        if (is_defaults && keys[k].case_only) return bad(c, e->string, "belongs in each case");
        if (!cJSON_IsNull(e)) CLI_TRY(check_type(c, k, e));
    }
    return SD_OK;
}

static sd_status parse_tolerance(const ctx *c, const cJSON *t, regress_tolerance *tol) {
    *tol = (regress_tolerance){-1, NAN, NAN};
    int given = 0;
    for (const cJSON *e = t->child; e; e = e->next) {
        given++;
        if (!strcmp(e->string, "max_abs")) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble > 255)
                return bad(c, "tolerance.max_abs", "must be an integer in 0..255");
            tol->max_abs = e->valueint;
        } else if (!strcmp(e->string, "max_mean")) {
            if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0))
                return bad(c, "tolerance.max_mean", "must be a number >= 0");
            tol->max_mean = e->valuedouble;
        } else if (!strcmp(e->string, "min_psnr")) {
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
                return bad(c, "tolerance.min_psnr", "must be a number (dB)");
            tol->min_psnr = e->valuedouble;
        } else {
            char key[128];
            snprintf(key, sizeof key, "tolerance.%s", e->string);
            return bad(c, key, "is not a tolerance (max_abs, max_mean, min_psnr)");
        }
    }
    if (!given) return bad(c, "tolerance", "needs at least one of max_abs, max_mean, min_psnr");
    return SD_OK;
}

/* The value of `key` for a case: its own, else the defaults', else NULL. */
static const cJSON *get(const cJSON *cs, const cJSON *defaults, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cs, key);
    if (!v && defaults) v = cJSON_GetObjectItemCaseSensitive(defaults, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static const char *str(const cJSON *cs, const cJSON *defaults, const char *key) {
    const cJSON *v = get(cs, defaults, key);
    return v ? v->valuestring : NULL;
}

static bool has_png_ext(const char *p) {
    size_t n = strlen(p);
    return n > 4 && !strcasecmp(p + n - 4, ".png");
}

static sd_status parse_case(regress_manifest *m, const ctx *c, const cJSON *cs,
                            const cJSON *defaults, const regress_tolerance *tol, regress_case *rc) {
    CLI_TRY(check_keys(c, cs, false));
    for (int k = 0; k < N_KEYS; k++)
        if (keys[k].required && !get(cs, keys[k].case_only ? NULL : defaults, keys[k].name))
            return bad(c, keys[k].name, "is missing");
    rc->name = str(cs, NULL, "name");
    if (strspn(rc->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
            strlen(rc->name) || !rc->name[0] || rc->name[0] == '.')
        return bad(c, "name", "must be letters, digits, '_', '-' or '.' (it names files)");
    sd_gen_params *g = &rc->g;
    sd_gen_params_init(g);
    g->prompt = str(cs, defaults, "prompt");
    g->negative_prompt = str(cs, defaults, "negative_prompt");
    g->prompt_2 = str(cs, defaults, "prompt_2");
    g->negative_prompt_2 = str(cs, defaults, "negative_prompt_2");
    g->scheduler = str(cs, defaults, "scheduler");
    const cJSON *v;
    if ((v = get(cs, defaults, "seed"))) {
        if (cJSON_IsString(v) && strlen(v->valuestring) == 20 &&
            strcmp(v->valuestring, "18446744073709551615") > 0)
            return bad(c, "seed", "is above 2^64 - 1");
        g->seed = cJSON_IsString(v) ? strtoull(v->valuestring, NULL, 10) : (uint64_t)v->valuedouble;
    }
    if ((v = get(cs, defaults, "width"))) g->width = v->valueint;
    if ((v = get(cs, defaults, "height"))) g->height = v->valueint;
    if ((v = get(cs, defaults, "steps"))) g->steps = v->valueint;
    if ((v = get(cs, defaults, "batch"))) g->batch = v->valueint;
    if ((v = get(cs, defaults, "clip_skip"))) g->clip_skip = v->valueint;
    if ((v = get(cs, defaults, "max_sequence_length"))) g->max_sequence_length = v->valueint;
    if ((v = get(cs, defaults, "guidance"))) g->guidance = v->valuedouble;
    if ((v = get(cs, defaults, "guidance_rescale"))) g->guidance_rescale = v->valuedouble;
    if ((v = get(cs, defaults, "eta"))) g->eta = v->valuedouble;
    if ((v = get(cs, defaults, "strength"))) g->strength = v->valuedouble;
    if ((v = get(cs, defaults, "scheduler_opts"))) {
        rc->scheduler_overrides = cJSON_PrintUnformatted(v);
        if (!rc->scheduler_overrides) return cli_fail(SD_ERR_NOMEM, "%s: out of memory", c->file);
        g->scheduler_overrides = rc->scheduler_overrides;
    }
    rc->model = resolve(m->dir, str(cs, defaults, "model"));
    const char *golden = str(cs, NULL, "golden");
    char *default_golden = golden ? NULL : cli_strfmt("golden/%s.png", rc->name);
    rc->golden = resolve(m->dir, golden ? golden : default_golden);
    free(default_golden);
    if (!has_png_ext(rc->golden)) return bad(c, "golden", "must be a .png file (JPEG is lossy)");
    if ((v = get(cs, defaults, "init_image"))) rc->init_image = resolve(m->dir, v->valuestring);
    if ((v = get(cs, defaults, "mask_image"))) rc->mask_image = resolve(m->dir, v->valuestring);
    if (rc->mask_image && !rc->init_image) return bad(c, "mask_image", "needs an init_image");
    rc->tol = *tol;
    if ((v = get(cs, NULL, "tolerance"))) CLI_TRY(parse_tolerance(c, v, &rc->tol));
    /* The case as rendered, defaults merged in, for the golden PNG's text chunk. */
    cJSON *merged = cJSON_Duplicate(cs, 1);
    for (const cJSON *e = defaults ? defaults->child : NULL; e && merged; e = e->next)
        if (!cJSON_GetObjectItemCaseSensitive(merged, e->string))
            cJSON_AddItemToObject(merged, e->string, cJSON_Duplicate(e, 1));
    rc->json = merged ? cJSON_PrintUnformatted(merged) : NULL;
    cJSON_Delete(merged);
    if (!rc->model || !rc->golden || !rc->json)
        return cli_fail(SD_ERR_NOMEM, "%s: out of memory", c->file);
    return SD_OK;
}

static sd_status parse(regress_manifest *m) {
    ctx c = {.file = m->path};
    snprintf(c.where, sizeof c.where, "top level");
    if (!cJSON_IsObject(m->root)) return cli_fail(SD_ERR_CONFIG, "%s: not a JSON object", m->path);
    for (const cJSON *e = m->root->child; e; e = e->next)
        if (strcmp(e->string, "cases") && strcmp(e->string, "tolerance") &&
            strcmp(e->string, "defaults") && strcmp(e->string, "note"))
            return bad(&c, e->string, "is not a manifest key (cases, defaults, tolerance, note)");
    regress_tolerance tol = {0, NAN, NAN}; /* identical pixels */
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m->root, "tolerance");
    if (t && !cJSON_IsObject(t)) return bad(&c, "tolerance", "must be an object");
    if (t) CLI_TRY(parse_tolerance(&c, t, &tol));
    const cJSON *defaults = cJSON_GetObjectItemCaseSensitive(m->root, "defaults");
    if (defaults && !cJSON_IsObject(defaults)) return bad(&c, "defaults", "must be an object");
    if (defaults) {
        snprintf(c.where, sizeof c.where, "defaults");
        CLI_TRY(check_keys(&c, defaults, true));
        snprintf(c.where, sizeof c.where, "top level");
    }
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(m->root, "cases");
    if (!cJSON_IsArray(cases) || cJSON_GetArraySize(cases) == 0)
        return bad(&c, "cases", "must be a non-empty array of case objects");
    m->cases = calloc((size_t)cJSON_GetArraySize(cases), sizeof *m->cases);
    if (!m->cases) return cli_fail(SD_ERR_NOMEM, "%s: out of memory", m->path);
    int i = 0;
    for (const cJSON *cs = cases->child; cs; cs = cs->next, i++) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(cs, "name");
        snprintf(c.where, sizeof c.where, "cases[%d]%s%s%s", i, cJSON_IsString(name) ? " \"" : "",
                 cJSON_IsString(name) ? name->valuestring : "", cJSON_IsString(name) ? "\"" : "");
        if (!cJSON_IsObject(cs))
            return cli_fail(SD_ERR_CONFIG, "%s: %s: not an object", m->path, c.where);
        m->n_cases = i + 1;
        CLI_TRY(parse_case(m, &c, cs, defaults, &tol, &m->cases[i]));
        for (int j = 0; j < i; j++) {
            if (!strcmp(m->cases[j].name, m->cases[i].name))
                return bad(&c, "name", "repeats an earlier case's name");
            if (!strcmp(m->cases[j].golden, m->cases[i].golden))
                return bad(&c, "golden", "is the golden image of an earlier case too");
        }
    }
    return SD_OK;
}

sd_status regress_manifest_load(regress_manifest *m, const char *path) {
    memset(m, 0, sizeof *m);
    char *text;
    CLI_TRY(cli_read_file(path, &text));
    m->path = strdup(path);
    const char *slash = strrchr(path, '/');
    m->dir = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup(".");
    const char *end = NULL;
    m->root = cJSON_ParseWithOpts(text, &end, 1);
    sd_status st = SD_OK;
    if (!m->path || !m->dir) {
        st = cli_fail(SD_ERR_NOMEM, "%s: out of memory", path);
    } else if (!m->root) {
        int line = 1;
        for (const char *p = text; end && p < end; p++) line += *p == '\n';
        st = cli_fail(SD_ERR_FORMAT, "%s: invalid JSON near line %d", path, line);
    }
    free(text);
    if (st == SD_OK) st = parse(m);
    if (st != SD_OK) regress_manifest_free(m);
    return st;
}

void regress_manifest_free(regress_manifest *m) {
    for (int i = 0; i < m->n_cases; i++) {
        regress_case *c = &m->cases[i];
        free(c->model), free(c->golden), free(c->init_image), free(c->mask_image);
        cJSON_free(c->scheduler_overrides);
        cJSON_free(c->json);
    }
    free(m->cases);
    cJSON_Delete(m->root);
    free(m->path), free(m->dir);
    memset(m, 0, sizeof *m);
}
