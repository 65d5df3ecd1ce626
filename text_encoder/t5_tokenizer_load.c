/* Reading a T5 tokenizer folder: tokenizer.json (unigram model, normalizer, added tokens), then
 * tokenizer_config.json and special_tokens_map.json (the latter overriding), in the order
 * transformers adds tokens, which decides the ids of tokens the vocabulary lacks.
 * tokenizer.json may be stored gzip-compressed as tokenizer.json.gz (the bundled
 * configs/t5-tokenizer: the 32k-piece vocabulary is 2.4 MB as text, 0.6 MB compressed). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "t5_tokenizer_impl.h"
#include "unicode.h"

typedef struct {
    bool lstrip, rstrip, single_word, normalized, special;
} token_flags;

/* Adds a token the way the tokenizers library's AddedVocabulary does: a content already added
 * keeps its id and takes the newer flags; a new one takes `id` when given (>= 0), else its
 * vocabulary id, else the next id past both the vocabulary and the added tokens. */
static sd_status add_token(t5_tokenizer *t, const char *content, token_flags f, int32_t id,
                           const char *where) {
    if (!*content) return SD_OK; /* the library ignores empty tokens */
    t5_added_token *a = NULL;
    for (int k = 0; k < t->n_added; k++)
        if (!strcmp(t->added[k].content, content)) a = &t->added[k];
    if (!a) {
        if (id < 0) id = unigram_piece_id(&t->model, content, strlen(content));
        if (id < 0) {
            id = t->model.n_pieces;
            for (int k = 0; k < t->n_added; k++)
                if (t->added[k].id >= id) id = t->added[k].id + 1;
        }
        if (t->n_added == t->cap_added) {
            int cap = t->cap_added ? 2 * t->cap_added : 16;
            t5_added_token *v = realloc(t->added, (size_t)cap * sizeof *v);
            if (!v) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", where);
            t->added = v, t->cap_added = cap;
        }
        a = &t->added[t->n_added++];
        memset(a, 0, sizeof *a);
        a->content = strdup(content);
        if (!a->content) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", where);
        a->id = id;
    }
    a->lstrip = f.lstrip, a->rstrip = f.rstrip, a->single_word = f.single_word;
    a->normalized = f.normalized, a->special = f.special;
    return SD_OK;
}

/* A token given as a string (a special AddedToken, not normalized) or as an AddedToken object;
 * sets *content (NULL for JSON null). */
static sd_status read_token(const cJSON *v, const char *path, const char *key, const char **content,
                            token_flags *f) {
    static const char *const names[5] = {"lstrip", "rstrip", "single_word", "normalized",
                                         "special"};
    *f = (token_flags){.special = true};
    *content = NULL;
    if (!v || cJSON_IsNull(v)) return SD_OK;
    if (cJSON_IsString(v)) {
        *content = v->valuestring;
        return SD_OK;
    }
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsObject(v) || !cJSON_IsString(c))
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: '%s' should be a string or an object with a \"content\" string",
                            path, key);
    *content = c->valuestring;
    bool *fields[5] = {&f->lstrip, &f->rstrip, &f->single_word, &f->normalized, &f->special};
    f->normalized = false; /* AddedToken's default for special tokens */
    for (int i = 0; i < 5; i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(v, names[i]);
        if (!b || cJSON_IsNull(b)) continue;
        if (!cJSON_IsBool(b))
            return sd_set_error(SD_ERR_CONFIG, "%s: '%s.%s' should be a boolean", path, key,
                                names[i]);
        *fields[i] = cJSON_IsTrue(b);
    }
    return SD_OK;
}

/* ---- tokenizer.json ---- */

/* A decompressed tokenizer.json larger than this is not a tokenizer (a 250k-piece multilingual
 * vocabulary is ~20 MB): refused rather than inflated without bound. */
#define T5_GZ_MAX ((size_t)1 << 30)

/* The text of a gzip file (one member, as gzip writes it), NUL-terminated. zlib checks the
 * CRC-32 and length of the trailer: a corrupt or truncated file is an error naming it. */
static sd_status read_gz(const char *path, char **out) {
    *out = NULL;
    char *in = NULL;
    size_t n_in = 0;
    SD_TRY(sd_read_file(path, &in, &n_in));
    if (n_in > UINT_MAX) {
        free(in);
        return sd_set_error(SD_ERR_FORMAT, "%s: too large for a compressed tokenizer", path);
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK) { /* 15: the largest window; +16: gzip framing */
        free(in);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory (zlib)", path);
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n_in;
    size_t cap = 4 * n_in + 4096, len = 0; /* JSON compresses ~4x; grows as needed */
    char *buf = NULL;
    sd_status st = SD_OK;
    int zr = Z_OK;
    while (st == SD_OK && zr != Z_STREAM_END) {
        if (!buf || len == cap) {
            if (buf) cap *= 2;
            char *b = cap <= T5_GZ_MAX ? realloc(buf, cap + 1) : NULL;
            if (!b) {
                st = cap > T5_GZ_MAX ? sd_set_error(SD_ERR_FORMAT, "%s: decompresses to more "
                                                    "than %zu MB", path, T5_GZ_MAX >> 20)
                                     : sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = b;
        }
        const size_t room = cap - len < UINT_MAX ? cap - len : UINT_MAX;
        z.next_out = (Bytef *)buf + len;
        z.avail_out = (uInt)room;
        zr = inflate(&z, Z_NO_FLUSH);
        len += room - z.avail_out;
        if (zr == Z_BUF_ERROR && z.avail_in == 0)
            st = sd_set_error(SD_ERR_FORMAT, "%s: truncated gzip data (ends after %zu bytes of "
                              "tokenizer.json)", path, len);
        else if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            st = sd_set_error(SD_ERR_FORMAT, "%s: corrupt gzip data (%s)", path,
                              z.msg ? z.msg : "zlib error");
    }
    if (st == SD_OK && z.avail_in != 0)
        st = sd_set_error(SD_ERR_FORMAT, "%s: %u bytes after the end of the gzip data", path,
                          z.avail_in);
    inflateEnd(&z);
    free(in);
    if (st != SD_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    return SD_OK;
}

static bool ends_with_gz(const char *path) {
    const size_t n = strlen(path);
    return n >= 3 && !strcmp(path + n - 3, ".gz");
}

static sd_status load_tokenizer_json(t5_tokenizer *t, const char *path) {
    char *text = NULL;
    cJSON *root = NULL;
    SD_TRY(ends_with_gz(path) ? read_gz(path, &text) : sd_read_file(path, &text, NULL));
    sd_status st = sd_json_parse(text, path, &root);
    free(text);
    SD_TRY(st);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model))
        st = sd_set_error(SD_ERR_FORMAT, "%s: no \"model\" object", path);
    else if (cJSON_IsString(type) && strcmp(type->valuestring, "Unigram"))
        st = sd_set_error(SD_ERR_UNSUPPORTED,
                          "%s: model type \"%s\" is not supported (a T5 tokenizer is Unigram)",
                          path, type->valuestring);
    if (st == SD_OK) st = unigram_load(&t->model, model, path);
    if (st == SD_OK)
        st = tok_normalizer_load(&t->normalizer,
                                 cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
    if (st == SD_OK && added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        st = sd_set_error(SD_ERR_FORMAT, "%s: \"added_tokens\" is not a list", path);
    cJSON_ArrayForEach(e, added) {
        if (st != SD_OK) break;
        const char *content;
        token_flags f;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        st = read_token(e, path, "added_tokens[]", &content, &f);
        if (st == SD_OK &&
            (!content || !cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > (1 << 30)))
            st = sd_set_error(SD_ERR_FORMAT, "%s: an added token has no content or id", path);
        if (st == SD_OK) st = add_token(t, content, f, (int32_t)id->valuedouble, path);
    }
    cJSON_Delete(root);
    return st;
}

/* ---- tokenizer_config.json / special_tokens_map.json ---- */

typedef struct {
    cJSON *config, *map; /* either may be NULL */
    char *config_path, *map_path;
} config_files;

/* Opens an optional JSON file: absent is fine, unreadable or malformed is an error. */
static sd_status open_optional(const char *path, cJSON **out) {
    *out = NULL;
    if (!sd_file_exists(path)) return SD_OK;
    char *text = NULL;
    SD_TRY(sd_read_file(path, &text, NULL));
    sd_status st = sd_json_parse(text, path, out);
    free(text);
    if (st == SD_OK && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        st = sd_set_error(SD_ERR_FORMAT, "%s: not a JSON object", path);
    }
    return st;
}

/* A key of special_tokens_map.json when it has it, else of tokenizer_config.json. */
static const cJSON *lookup(const config_files *c, const char *key, const char **path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->map, key);
    *path = c->map_path;
    if (v && !cJSON_IsNull(v)) return v;
    *path = c->config_path;
    return cJSON_GetObjectItemCaseSensitive(c->config, key);
}

static sd_status read_named(t5_tokenizer *t, const config_files *c, const char *key,
                            const char *def, int32_t *id) {
    const char *path, *content;
    token_flags f;
    const cJSON *v = lookup(c, key, &path);
    SD_TRY(read_token(v, path, key, &content, &f));
    if (!content) content = def;
    if (!*content) return sd_set_error(SD_ERR_CONFIG, "%s: '%s' is an empty token", path, key);
    SD_TRY(add_token(t, content, f, -1, path));
    for (int k = 0; k < t->n_added; k++)
        if (!strcmp(t->added[k].content, content)) *id = t->added[k].id;
    return SD_OK;
}

/* T5Tokenizer's extra special tokens: the configured list, plus <extra_id_0..N-1> when it names
 * none of them. */
static sd_status read_extra(t5_tokenizer *t, const config_files *c) {
    const char *path = c->config_path;
    const cJSON *list = lookup(c, "extra_special_tokens", &path), *e;
    if (!list || cJSON_IsNull(list)) list = lookup(c, "additional_special_tokens", &path);
    bool has_extra_id = false;
    if (list && !cJSON_IsNull(list) && !cJSON_IsArray(list))
        return sd_set_error(SD_ERR_CONFIG, "%s: the extra special tokens should be a list", path);
    cJSON_ArrayForEach(e, list) {
        const char *content;
        token_flags f;
        SD_TRY(read_token(e, path, "extra_special_tokens[]", &content, &f));
        if (!content) continue;
        if (strstr(content, "<extra_id_")) has_extra_id = true;
        SD_TRY(add_token(t, content, f, -1, path));
    }
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(c->config, "extra_ids");
    int extra = cJSON_IsNumber(n) ? n->valueint : 100;
    if (extra < 0 || extra > 100000)
        return sd_set_error(SD_ERR_CONFIG, "%s: extra_ids = %d is out of range", c->config_path,
                            extra);
    for (int i = 0; i < extra && !has_extra_id; i++) {
        char name[32];
        snprintf(name, sizeof name, "<extra_id_%d>", i);
        SD_TRY(add_token(t, name, (token_flags){.special = true}, -1, c->config_path));
    }
    return SD_OK;
}

static sd_status load_configs(t5_tokenizer *t, config_files *c) {
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(c->config, "tokenizer_class");
    if (cJSON_IsString(cls) && strcmp(cls->valuestring, "T5Tokenizer") &&
        strcmp(cls->valuestring, "T5TokenizerFast"))
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: tokenizer_class \"%s\" is not supported (T5Tokenizer)",
                            c->config_path, cls->valuestring);
    /* Tokens the config lists with their ids. */
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(c->config, "added_tokens_decoder"), *e;
    if (!cJSON_IsObject(dec)) dec = NULL;
    cJSON_ArrayForEach(e, dec) {
        const char *content;
        token_flags f;
        char *end;
        long id = strtol(e->string, &end, 10);
        SD_TRY(read_token(e, c->config_path, "added_tokens_decoder", &content, &f));
        if (*end || id < 0 || id > (1 << 30) || !content)
            return sd_set_error(SD_ERR_CONFIG, "%s: bad added_tokens_decoder entry \"%s\"",
                                c->config_path, e->string);
        SD_TRY(add_token(t, content, f, (int32_t)id, c->config_path));
    }
    /* transformers' order: the named special tokens (eos, unk, pad), then the extra ones. */
    SD_TRY(read_named(t, c, "eos_token", "</s>", &t->eos_id));
    SD_TRY(read_named(t, c, "unk_token", "<unk>", &t->unk_id));
    SD_TRY(read_named(t, c, "pad_token", "<pad>", &t->pad_id));
    SD_TRY(read_extra(t, c));
    /* transformers' "no limit" is 1e30; a T5 release says 512. */
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(c->config, "model_max_length");
    t->max_length = -1;
    if (cJSON_IsNumber(ml) && ml->valuedouble >= 1 && ml->valuedouble <= (1 << 30))
        t->max_length = (int)ml->valuedouble;
    return SD_OK;
}

/* What each added token is matched against. */
static sd_status prepare_added(t5_tokenizer *t, const char *path) {
    for (int k = 0; k < t->n_added; k++) {
        t5_added_token *a = &t->added[k];
        size_t len = strlen(a->content), bad_at;
        uint32_t *cps = malloc((len + 1) * sizeof *cps);
        if (!cps) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
        long n = unicode_utf8_decode(a->content, len, cps, &bad_at);
        if (n < 0) {
            free(cps);
            return sd_set_error(SD_ERR_CONFIG, "%s: token \"%s\" is not valid UTF-8", path,
                                a->content);
        }
        if (a->normalized) {
            sd_status st = tok_normalizer_apply(t->normalizer, cps, (size_t)n, &a->cps, &a->n);
            free(cps);
            SD_TRY(st);
        } else {
            a->cps = cps, a->n = (size_t)n;
        }
    }
    return SD_OK;
}

sd_status t5_tokenizer_load(t5_tokenizer **out, const char *dir) {
    *out = NULL;
    if (!dir || !sd_dir_exists(dir))
        return sd_set_error(SD_ERR_IO, "%s: tokenizer folder not found", dir ? dir : "(null)");
    t5_tokenizer *t = calloc(1, sizeof *t);
    char *json = sd_path_join(dir, "tokenizer.json");
    config_files c = {NULL, NULL, sd_path_join(dir, "tokenizer_config.json"),
                      sd_path_join(dir, "special_tokens_map.json")};
    sd_status st = SD_OK;
    if (!t || !json || !c.config_path || !c.map_path)
        st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
    if (st == SD_OK && !sd_file_exists(json)) {
        /* The compressed copy only where the plain file is absent. */
        char *gz = sd_strfmt("%s.gz", json);
        if (!gz)
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
        else if (sd_file_exists(gz))
            free(json), json = gz;
        else {
            free(gz);
            st = sd_set_error(SD_ERR_IO, "%s: not found (a T5 tokenizer needs tokenizer.json, or "
                              "tokenizer.json.gz)", json);
        }
    }
    if (st == SD_OK) st = load_tokenizer_json(t, json);
    if (st == SD_OK) st = open_optional(c.config_path, &c.config);
    if (st == SD_OK) st = open_optional(c.map_path, &c.map);
    if (st == SD_OK) st = load_configs(t, &c);
    if (st == SD_OK) st = prepare_added(t, json);
    cJSON_Delete(c.config);
    cJSON_Delete(c.map);
    free(c.config_path), free(c.map_path), free(json);
    if (st != SD_OK) {
        t5_tokenizer_free(t);
        return sd_wrap_error(st, "loading T5 tokenizer");
    }
    *out = t;
    return SD_OK;
}

void t5_tokenizer_free(t5_tokenizer *t) {
    if (!t) return;
    unigram_free(&t->model);
    tok_normalizer_free(t->normalizer);
    for (int k = 0; k < t->n_added; k++) free(t->added[k].content), free(t->added[k].cps);
    free(t->added);
    free(t);
}
