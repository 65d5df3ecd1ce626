#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fileutil.h"

static void cfg_fail(sd_cfg *c, const char *key, const char *want) {
    if (c->status == SD_OK)
        c->status = sd_set_error(SD_ERR_CONFIG, "%s: key '%s' should be %s", c->path, key, want);
}

/* Python's json module writes float('inf') and float('nan') as the bare words Infinity and NaN
 * (diffusers saves lambda_min_clipped = -inf that way); cJSON only knows standard JSON. Rewrite
 * them outside strings: Infinity -> 1e999 (strtod gives inf), NaN -> null (taken as absent). */
static char *replace_nonstandard_numbers(const char *text) {
    char *out = malloc(2 * strlen(text) + 1), *o = out; /* NaN -> null grows by 1 in 3 at most */
    if (!out) return NULL;
    bool in_string = false;
    for (const char *p = text; *p;) {
        if (in_string) {
            if (*p == '\\' && p[1]) *o++ = *p++;
            else if (*p == '"') in_string = false;
            *o++ = *p++;
        } else if (*p == '"') {
            in_string = true;
            *o++ = *p++;
        } else if (!strncmp(p, "Infinity", 8)) {
            memcpy(o, "1e999", 5), o += 5, p += 8;
        } else if (!strncmp(p, "NaN", 3)) {
            memcpy(o, "null", 4), o += 4, p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

/* Scans at most len bytes (stopping at a NUL) counting bracket depth outside strings: only to tell
 * cJSON's nesting limit (CJSON_NESTING_LIMIT, where it stops rather than recursing on) apart from a
 * syntax error in the message. */
bool sd_json_nested_too_deep(const char *text, size_t len) {
    int depth = 0;
    bool in_string = false;
    for (const char *p = text, *e = text + len; p < e && *p; p++) {
        if (in_string) {
            if (*p == '\\' && p + 1 < e && p[1]) p++;
            else if (*p == '"') in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '[' || *p == '{') {
            if (++depth > CJSON_NESTING_LIMIT) return true;
        } else if (*p == ']' || *p == '}') {
            depth--;
        }
    }
    return false;
}

sd_status sd_json_parse(const char *text, const char *name, cJSON **out) {
    const char *end = NULL;
    char *fixed = replace_nonstandard_numbers(text);
    if (!fixed) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", name);
    *out = cJSON_ParseWithOpts(fixed, &end, 0);
    if (end) end = text + (end - fixed); /* approximate position in the original for the message */
    free(fixed);
    if (*out) return SD_OK;
    if (sd_json_nested_too_deep(text, strlen(text)))
        return sd_set_error(SD_ERR_FORMAT, "%s: JSON nested deeper than %d levels; refused", name,
                            CJSON_NESTING_LIMIT);
    /* cJSON reports where it stopped: turn it into a line number for the message. */
    int line = 1;
    const char *stop = end ? end : text;
    for (const char *p = text; p < stop && *p; p++) line += *p == '\n';
    return sd_set_error(SD_ERR_FORMAT, "%s: invalid JSON near line %d", name, line);
}

sd_status cfg_open(sd_cfg *c, const char *path) {
    memset(c, 0, sizeof *c);
    char *text;
    SD_TRY(sd_read_file(path, &text, NULL));
    sd_status st = sd_json_parse(text, path, &c->root);
    free(text);
    if (st != SD_OK) return st;
    if (!cJSON_IsObject(c->root)) {
        cJSON_Delete(c->root);
        c->root = NULL;
        return sd_set_error(SD_ERR_FORMAT, "%s: expected a JSON object", path);
    }
    c->path = strdup(path);
    c->owned = true;
    return SD_OK;
}

void cfg_wrap(sd_cfg *c, cJSON *obj, const char *name) {
    memset(c, 0, sizeof *c);
    c->root = obj;
    c->path = strdup(name);
}

void cfg_close(sd_cfg *c) {
    if (c->owned) cJSON_Delete(c->root);
    free(c->path);
    memset(c, 0, sizeof *c);
}

sd_status cfg_status(const sd_cfg *c) { return c->status; }

static const cJSON *get(const sd_cfg *c, const char *key) {
    const cJSON *v = c->root ? cJSON_GetObjectItemCaseSensitive(c->root, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

bool cfg_has(const sd_cfg *c, const char *key) { return get(c, key) != NULL; }

int cfg_int(sd_cfg *c, const char *key, int def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9) {
        cfg_fail(c, key, "an integer");
        return def;
    }
    return (int)v->valuedouble;
}

double cfg_num(sd_cfg *c, const char *key, double def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v)) {
        cfg_fail(c, key, "a number");
        return def;
    }
    return v->valuedouble;
}

bool cfg_bool(sd_cfg *c, const char *key, bool def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsBool(v)) {
        cfg_fail(c, key, "true or false");
        return def;
    }
    return cJSON_IsTrue(v);
}

const char *cfg_str(sd_cfg *c, const char *key, const char *def) {
    const cJSON *v = get(c, key);
    if (!v) return def;
    if (!cJSON_IsString(v)) {
        cfg_fail(c, key, "a string");
        return def;
    }
    return v->valuestring;
}

int cfg_int_list(sd_cfg *c, const char *key, int *out, int max) {
    const cJSON *v = get(c, key);
    if (!v) return -1;
    if (!cJSON_IsArray(v)) {
        cfg_fail(c, key, "a list of integers");
        return -1;
    }
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next, n++) {
        /* Bounded as cfg_int's: converting 1e10 to int is undefined behaviour (found by the
         * config fuzz harness, tests/fuzz/regress/config/). */
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            fabs(it->valuedouble) > 2e9) {
            cfg_fail(c, key, "a list of integers");
            return -1;
        }
        if (n < max) out[n] = (int)it->valuedouble;
    }
    return n;
}

int cfg_num_list(sd_cfg *c, const char *key, double *out, int max) {
    const cJSON *v = get(c, key);
    if (!v) return -1;
    if (!cJSON_IsArray(v)) {
        cfg_fail(c, key, "a list of numbers");
        return -1;
    }
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next, n++) {
        if (!cJSON_IsNumber(it)) {
            cfg_fail(c, key, "a list of numbers");
            return -1;
        }
        if (n < max) out[n] = it->valuedouble;
    }
    return n;
}

int cfg_str_list(sd_cfg *c, const char *key, const char **out, int max) {
    const cJSON *v = get(c, key);
    if (!v) return -1;
    if (!cJSON_IsArray(v)) {
        cfg_fail(c, key, "a list of strings");
        return -1;
    }
    int n = 0;
    for (const cJSON *it = v->child; it; it = it->next, n++) {
        if (!cJSON_IsString(it)) {
            cfg_fail(c, key, "a list of strings");
            return -1;
        }
        if (n < max) out[n] = it->valuestring;
    }
    return n;
}

void cfg_int_or_list(sd_cfg *c, const char *key, int *out, int n, int def) {
    const cJSON *v = get(c, key);
    for (int i = 0; i < n; i++) out[i] = def;
    if (!v) return;
    if (cJSON_IsNumber(v)) {
        int x = cfg_int(c, key, def);
        for (int i = 0; i < n; i++) out[i] = x;
        return;
    }
    int got = cfg_int_list(c, key, out, n);
    if (got >= 0 && got != n && c->status == SD_OK)
        c->status = sd_set_error(SD_ERR_CONFIG, "%s: key '%s' has %d entries, expected %d",
                                 c->path, key, got, n);
}

sd_status cfg_check_range(const char *file, const char *key, long v, long lo, long hi) {
    if (v < lo || v > hi)
        return sd_set_error(SD_ERR_CONFIG, "%s: %s = %ld is out of range [%ld, %ld]", file, key, v,
                            lo, hi);
    return SD_OK;
}
