/* A normalizer chain: each step maps a code point string to a new one, in order. */
#include "tok_normalizer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sp_charsmap.h"
#include "unicode.h"

typedef enum {
    STEP_PRECOMPILED,
    STEP_REPLACE,
    STEP_STRIP,
    STEP_PREPEND,
    STEP_NFC,
    STEP_LOWERCASE
} step_kind;

typedef struct {
    step_kind kind;
    sp_charsmap charsmap; /* PRECOMPILED */
    /* REPLACE: a literal pattern (pat), or a regex run of min..max (max 0: unbounded) characters
     * equal to ch, or of white space when ch_space. */
    bool regex, ch_space;
    uint32_t ch;
    size_t min, max;
    uint32_t *pat, *content; /* REPLACE pattern / content, PREPEND text */
    size_t n_pat, n_content;
    bool left, right; /* STRIP */
} step;

struct tok_normalizer {
    step *steps;
    int n_steps, cap;
};

enum { MAX_DEPTH = 16 };

/* ---- growing buffers ---- */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} buf;

static bool buf_reserve(buf *b, size_t more) {
    if (b->n + more <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more) cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) return false;
    b->v = v, b->cap = cap;
    return true;
}

static bool buf_put(buf *b, const uint32_t *s, size_t n) {
    if (!buf_reserve(b, n + 1)) return false;
    if (n) memcpy(b->v + b->n, s, n * sizeof *s);
    b->n += n;
    return true;
}

/* ---- loading ---- */

/* UTF-8 JSON string -> malloc'd code points. */
static sd_status decode_string(const char *s, uint32_t **out, size_t *n, const char *path,
                               const char *what) {
    size_t len = strlen(s), bad_at;
    *out = malloc((len + 1) * sizeof **out);
    if (!*out) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    long k = unicode_utf8_decode(s, len, *out, &bad_at);
    if (k < 0) return sd_set_error(SD_ERR_FORMAT, "%s: %s is not valid UTF-8", path, what);
    *n = (size_t)k;
    return SD_OK;
}

static const char *get_string(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static size_t parse_count(const char **p) {
    size_t v = 0;
    while (**p >= '0' && **p <= '9' && v < 1000000) v = v * 10 + (size_t)(*(*p)++ - '0');
    return v;
}

/* The regexes this engine understands: one character (literal, or escaped, or \s) and an
 * optional greedy quantifier +, {n}, {n,} or {n,m} with n >= 1. */
static bool parse_regex(step *s, const char *re) {
    uint32_t cps[8];
    size_t bad;
    const char *p = re;
    if (p[0] == '\\') {
        if (p[1] == 's') {
            s->ch_space = true;
            p += 2;
        } else if (p[1] && strchr(".*+?()[]{}|^$\\/- ", p[1])) {
            s->ch = (unsigned char)p[1];
            p += 2;
        } else {
            return false;
        }
    } else {
        if (!p[0] || strchr(".*+?()[]{}|^$\\", p[0])) return false;
        int len = ((unsigned char)p[0] < 0x80)   ? 1
                  : ((unsigned char)p[0] < 0xE0) ? 2
                  : ((unsigned char)p[0] < 0xF0) ? 3
                                                 : 4;
        if ((int)strnlen(p, (size_t)len) < len ||
            unicode_utf8_decode(p, (size_t)len, cps, &bad) != 1)
            return false;
        s->ch = cps[0];
        p += len;
    }
    s->min = s->max = 1;
    if (*p == '+') {
        s->max = 0;
        p++;
    } else if (*p == '{') {
        p++;
        if (*p < '0' || *p > '9') return false;
        s->min = s->max = parse_count(&p);
        if (*p == ',') {
            p++;
            s->max = 0;
            if (*p != '}') {
                if (*p < '0' || *p > '9') return false;
                s->max = parse_count(&p);
                if (s->max < s->min) return false;
            }
        }
        if (*p++ != '}') return false;
    }
    return *p == 0 && s->min >= 1;
}

static sd_status add_step(tok_normalizer *nz, step **s, const char *path) {
    if (nz->n_steps == nz->cap) {
        int cap = nz->cap ? 2 * nz->cap : 4;
        step *v = realloc(nz->steps, (size_t)cap * sizeof *v);
        if (!v) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
        nz->steps = v, nz->cap = cap;
    }
    *s = &nz->steps[nz->n_steps++];
    memset(*s, 0, sizeof **s);
    return SD_OK;
}

static sd_status load_replace(step *s, const cJSON *j, const char *path) {
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(j, "pattern");
    const char *content = get_string(j, "content");
    const char *lit = get_string(pattern, "String"), *re = get_string(pattern, "Regex");
    if (!content || (!lit && !re))
        return sd_set_error(SD_ERR_FORMAT,
                            "%s: Replace normalizer needs a \"pattern\" (String or Regex) and a "
                            "\"content\" string",
                            path);
    SD_TRY(decode_string(content, &s->content, &s->n_content, path, "Replace content"));
    if (lit) {
        SD_TRY(decode_string(lit, &s->pat, &s->n_pat, path, "Replace pattern"));
        if (s->n_pat == 0)
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: Replace normalizer with an empty pattern",
                                path);
        return SD_OK;
    }
    s->regex = true;
    if (!parse_regex(s, re))
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: Replace normalizer regex \"%s\" is not supported (only one "
                            "character or \\s with +, {n}, {n,} or {n,m})",
                            path, re);
    return SD_OK;
}

static sd_status load_step(tok_normalizer *nz, const cJSON *j, const char *path, int depth) {
    if (cJSON_IsNull(j)) return SD_OK;
    const char *type = get_string(j, "type");
    if (!cJSON_IsObject(j) || !type)
        return sd_set_error(SD_ERR_FORMAT, "%s: a normalizer has no \"type\"", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers"), *e;
        if (!cJSON_IsArray(list))
            return sd_set_error(SD_ERR_FORMAT, "%s: Sequence normalizer has no \"normalizers\"",
                                path);
        if (depth >= MAX_DEPTH)
            return sd_set_error(SD_ERR_FORMAT, "%s: normalizers nested too deeply", path);
        cJSON_ArrayForEach(e, list) SD_TRY(load_step(nz, e, path, depth + 1));
        return SD_OK;
    }
    step *s;
    if (!strcmp(type, "Precompiled")) {
        const char *map = get_string(j, "precompiled_charsmap");
        if (!map)
            return sd_set_error(SD_ERR_FORMAT,
                                "%s: Precompiled normalizer has no \"precompiled_charsmap\"", path);
        SD_TRY(add_step(nz, &s, path));
        s->kind = STEP_PRECOMPILED;
        return sp_charsmap_init(&s->charsmap, map, path);
    }
    if (!strcmp(type, "Replace")) {
        SD_TRY(add_step(nz, &s, path));
        s->kind = STEP_REPLACE;
        return load_replace(s, j, path);
    }
    if (!strcmp(type, "Strip")) {
        SD_TRY(add_step(nz, &s, path));
        s->kind = STEP_STRIP;
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "strip_left");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "strip_right");
        s->left = !l || cJSON_IsTrue(l);
        s->right = !r || cJSON_IsTrue(r);
        return SD_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *text = get_string(j, "prepend");
        if (!text)
            return sd_set_error(SD_ERR_FORMAT, "%s: Prepend normalizer has no \"prepend\"", path);
        SD_TRY(add_step(nz, &s, path));
        s->kind = STEP_PREPEND;
        return decode_string(text, &s->content, &s->n_content, path, "Prepend text");
    }
    if (!strcmp(type, "NFC") || !strcmp(type, "Lowercase")) {
        SD_TRY(add_step(nz, &s, path));
        s->kind = type[0] == 'N' ? STEP_NFC : STEP_LOWERCASE;
        return SD_OK;
    }
    return sd_set_error(SD_ERR_UNSUPPORTED,
                        "%s: normalizer type \"%s\" is not supported (Sequence, Precompiled, "
                        "Replace, Strip, Prepend, NFC, Lowercase)",
                        path, type);
}

sd_status tok_normalizer_load(tok_normalizer **out, const cJSON *json, const char *path) {
    tok_normalizer *nz = calloc(1, sizeof *nz);
    if (!nz) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    sd_status st = json ? load_step(nz, json, path, 0) : SD_OK;
    if (st != SD_OK) {
        tok_normalizer_free(nz);
        return st;
    }
    *out = nz;
    return SD_OK;
}

void tok_normalizer_free(tok_normalizer *nz) {
    if (!nz) return;
    for (int i = 0; i < nz->n_steps; i++) {
        step *s = &nz->steps[i];
        if (s->kind == STEP_PRECOMPILED) sp_charsmap_free(&s->charsmap);
        free(s->pat);
        free(s->content);
    }
    free(nz->steps);
    free(nz);
}

/* ---- applying ---- */

/* Length of the match of a REPLACE step at s[0..n), 0 when none. */
static size_t replace_match(const step *st, const uint32_t *s, size_t n) {
    if (!st->regex) {
        if (st->n_pat > n || memcmp(s, st->pat, st->n_pat * sizeof *s)) return 0;
        return st->n_pat;
    }
    size_t run = 0;
    while (run < n && (st->max == 0 || run < st->max) &&
           (st->ch_space ? unicode_is_space(s[run]) : s[run] == st->ch))
        run++;
    return run >= st->min ? run : 0;
}

static sd_status apply_step(const step *st, const uint32_t *in, size_t n, buf *out) {
    bool ok = true;
    switch (st->kind) {
    case STEP_PRECOMPILED: {
        uint32_t *v;
        size_t m;
        SD_TRY(sp_charsmap_normalize(&st->charsmap, in, n, &v, &m));
        ok = buf_put(out, v, m);
        free(v);
        break;
    }
    case STEP_REPLACE:
        for (size_t i = 0; i < n && ok;) {
            size_t m = replace_match(st, in + i, n - i);
            if (m) {
                ok = buf_put(out, st->content, st->n_content);
                i += m;
            } else {
                ok = buf_put(out, in + i, 1);
                i++;
            }
        }
        break;
    case STEP_STRIP: {
        size_t a = 0, b = n;
        if (st->left)
            while (a < b && unicode_is_space(in[a])) a++;
        if (st->right)
            while (b > a && unicode_is_space(in[b - 1])) b--;
        ok = buf_put(out, in + a, b - a);
        break;
    }
    case STEP_PREPEND:
        if (n) ok = buf_put(out, st->content, st->n_content) && buf_put(out, in, n);
        break;
    case STEP_NFC:
        ok = buf_reserve(out, 4 * n + 1);
        if (ok) out->n = unicode_nfc(in, n, out->v);
        break;
    case STEP_LOWERCASE:
        for (size_t i = 0; i < n && ok; i++) {
            uint32_t low[3];
            int k = unicode_lower(in[i], low);
            ok = buf_put(out, low, (size_t)k);
        }
        break;
    }
    return ok ? SD_OK : sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
}

sd_status tok_normalizer_apply(const tok_normalizer *nz, const uint32_t *in, size_t n,
                               uint32_t **out, size_t *n_out) {
    buf cur = {0};
    if (!buf_put(&cur, in, n)) return sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
    for (int i = 0; i < nz->n_steps; i++) {
        buf next = {0};
        sd_status st = apply_step(&nz->steps[i], cur.v, cur.n, &next);
        free(cur.v);
        if (st == SD_OK && !buf_reserve(&next, 1))
            st = sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
        if (st != SD_OK) {
            free(next.v);
            return st;
        }
        cur = next;
    }
    *out = cur.v, *n_out = cur.n;
    return SD_OK;
}
