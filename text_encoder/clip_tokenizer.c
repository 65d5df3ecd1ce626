/* CLIPTokenizer as transformers 5 builds it on the tokenizers library, step by step:
 *
 *   1. added (special) tokens are cut out of the raw text first (leftmost-longest match);
 *   2. each remaining piece is normalized: NFC, every run of white space -> " ", lower case;
 *   3. pre-tokenized: the pieces that CLIP's split regex matches are kept, the rest (white space)
 *      dropped, and each kept piece is split again by the byte-level pre-tokenizer's GPT-2 regex;
 *   4. each word goes through byte-level BPE (clip_bpe.c) with "</w>" on its last byte;
 *   5. the post-processor wraps the ids in BOS ... EOS (after truncation, when asked).
 *
 * The normalizer and the regexes are in clip_pretokenize.c, the Unicode data in unicode.c. */
#include "clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "clip_bpe.h"
#include "clip_pretokenize.h"
#include "unicode.h"

typedef struct {
    char *content; /* as configured (UTF-8) */
    uint32_t *cps; /* what is matched: the content, normalized when `normalized` is set */
    size_t n;
    int32_t id;
    bool lstrip, rstrip, normalized;
} special_token;

struct clip_tokenizer {
    clip_bpe bpe;
    special_token *special; /* the configured special tokens, then tokens added at run time */
    int n_special, cap_special;
    int n_configured; /* special[0, n_configured) come from the tokenizer's files */
    int32_t bos_id, eos_id, pad_id;
    int32_t unk_id; /* the BPE model's unknown token (vocab.json only), -1 if absent */
    int max_length;
};

/* A growing id list. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} id_list;

static sd_status ids_reserve(id_list *l, size_t more) {
    if (l->n + more <= l->cap) return SD_OK;
    size_t cap = l->cap ? l->cap : 64;
    while (cap < l->n + more) cap *= 2;
    int32_t *v = realloc(l->v, cap * sizeof *v);
    if (!v) return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
    l->v = v, l->cap = cap;
    return SD_OK;
}

/* Byte-level BPE of the word s[0..n) (code points), appended to ids. */
static sd_status bpe_word(const clip_tokenizer *t, clip_bpe_scratch *scratch, const uint32_t *s,
                          size_t n, id_list *ids, char **buf, size_t *buf_cap) {
    if (*buf_cap < 4 * n) {
        char *b = realloc(*buf, 4 * n);
        if (!b) return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory");
        *buf = b, *buf_cap = 4 * n;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += (size_t)unicode_utf8_encode(s[i], *buf + len);
    SD_TRY(ids_reserve(ids, len));
    return clip_bpe_word(&t->bpe, scratch, (const unsigned char *)*buf, len, t->unk_id, ids->v,
                         &ids->n);
}

/* Pre-tokenizes and encodes a normalized piece of text. */
static sd_status encode_words(const clip_tokenizer *t, const uint32_t *s, size_t n, id_list *ids) {
    clip_bpe_scratch scratch = {0};
    char *buf = NULL;
    size_t buf_cap = 0;
    sd_status st = SD_OK;
    for (size_t i = 0; i < n && st == SD_OK;) {
        size_t piece = clip_split(s + i, n - i);
        if (!piece) { /* white space: dropped (the split keeps only the matches) */
            i++;
            continue;
        }
        for (size_t j = i; j < i + piece && st == SD_OK;) {
            size_t word = clip_gpt2_split(s + j, i + piece - j);
            st = bpe_word(t, &scratch, s + j, word, ids, &buf, &buf_cap);
            j += word;
        }
        i += piece;
    }
    clip_bpe_scratch_free(&scratch);
    free(buf);
    return st;
}

/* ---- added tokens ---- */

/* The leftmost-longest match at or after `from` among the special tokens of one kind
 * (normalized or not), widened over white space by lstrip / rstrip (never back past `from`).
 * Returns the token's index, or -1 when none occurs. */
static int find_special(const clip_tokenizer *t, int n_spec, const uint32_t *s, size_t n,
                        size_t from, bool normalized, size_t *start, size_t *end) {
    for (size_t pos = from; pos < n; pos++) {
        int best = -1;
        for (int k = 0; k < n_spec; k++) {
            const special_token *sp = &t->special[k];
            if (sp->normalized != normalized || sp->n > n - pos) continue;
            if (best >= 0 && sp->n <= t->special[best].n) continue;
            if (memcmp(s + pos, sp->cps, sp->n * sizeof *s) == 0) best = k;
        }
        if (best < 0) continue;
        size_t a = pos, b = pos + t->special[best].n;
        if (t->special[best].lstrip)
            while (a > from && unicode_is_space(s[a - 1])) a--;
        if (t->special[best].rstrip)
            while (b < n && unicode_is_space(s[b])) b++;
        *start = a, *end = b;
        return best;
    }
    return -1;
}

/* Normalizes a piece between raw-text special tokens, cuts out the normalized special tokens,
 * and encodes the rest. */
static sd_status encode_plain(const clip_tokenizer *t, int n_spec, const uint32_t *raw, size_t n,
                              id_list *ids) {
    uint32_t *s;
    size_t m;
    SD_TRY(clip_normalize(raw, n, &s, &m));
    sd_status st = SD_OK;
    size_t pos = 0;
    while (st == SD_OK && pos < m) {
        size_t a, b;
        int k = find_special(t, n_spec, s, m, pos, true, &a, &b);
        if (k < 0) {
            st = encode_words(t, s + pos, m - pos, ids);
            break;
        }
        st = encode_words(t, s + pos, a - pos, ids);
        if (st == SD_OK && (st = ids_reserve(ids, 1)) == SD_OK) ids->v[ids->n++] = t->special[k].id;
        pos = b;
    }
    free(s);
    return st;
}

/* The ids of `text` without BOS / EOS, with the first n_spec special tokens. */
static sd_status encode(const clip_tokenizer *t, int n_spec, const char *text, id_list *ids) {
    uint32_t *cps;
    long n;
    SD_TRY(unicode_decode_prompt(text, "tokenizer", &cps, &n));
    sd_status st = SD_OK;
    size_t pos = 0;
    while (st == SD_OK && pos < (size_t)n) {
        size_t a, b;
        int k = find_special(t, n_spec, cps, (size_t)n, pos, false, &a, &b);
        if (k < 0) {
            st = encode_plain(t, n_spec, cps + pos, (size_t)n - pos, ids);
            break;
        }
        if (a > pos) st = encode_plain(t, n_spec, cps + pos, a - pos, ids);
        if (st == SD_OK && (st = ids_reserve(ids, 1)) == SD_OK) ids->v[ids->n++] = t->special[k].id;
        pos = b;
    }
    free(cps);
    return st;
}

static sd_status tokenize(const clip_tokenizer *t, int n_spec, const char *text, int32_t **ids,
                          int *n_ids) {
    *ids = NULL, *n_ids = 0;
    id_list l = {0};
    sd_status st = ids_reserve(&l, 2);
    if (st == SD_OK) {
        l.v[l.n++] = t->bos_id;
        st = encode(t, n_spec, text, &l);
    }
    if (st == SD_OK && (st = ids_reserve(&l, 1)) == SD_OK) l.v[l.n++] = t->eos_id;
    if (st == SD_OK && l.n > (size_t)INT32_MAX)
        st = sd_set_error(SD_ERR_ARG, "tokenizer: prompt gives too many tokens");
    if (st != SD_OK) {
        free(l.v);
        return st;
    }
    *ids = l.v, *n_ids = (int)l.n;
    return SD_OK;
}

sd_status clip_tokenize(const clip_tokenizer *t, const char *text, int32_t **ids, int *n_ids) {
    return tokenize(t, t->n_special, text, ids, n_ids);
}

sd_status clip_tokenize_vocab(const clip_tokenizer *t, const char *text, int32_t **ids,
                              int *n_ids) {
    return tokenize(t, t->n_configured, text, ids, n_ids);
}

sd_status clip_tokenize_padded(const clip_tokenizer *t, const char *text, int32_t *ids,
                               int max_length) {
    if (max_length < 2)
        return sd_set_error(SD_ERR_ARG, "tokenizer: max_length %d leaves no room for BOS and EOS",
                            max_length);
    id_list l = {0};
    sd_status st = encode(t, t->n_special, text, &l);
    if (st != SD_OK) {
        free(l.v);
        return st;
    }
    /* Truncation happens before the post-processor, to max_length minus its two added tokens. */
    size_t keep = l.n < (size_t)max_length - 2 ? l.n : (size_t)max_length - 2;
    ids[0] = t->bos_id;
    if (keep) memcpy(ids + 1, l.v, keep * sizeof *ids);
    ids[keep + 1] = t->eos_id;
    for (size_t i = keep + 2; i < (size_t)max_length; i++) ids[i] = t->pad_id;
    free(l.v);
    return SD_OK;
}

int clip_tokenizer_max_length(const clip_tokenizer *t) {
    return t->max_length;
}
int clip_tokenizer_pad_id(const clip_tokenizer *t) {
    return t->pad_id;
}
int clip_tokenizer_bos_id(const clip_tokenizer *t) {
    return t->bos_id;
}
int clip_tokenizer_eos_id(const clip_tokenizer *t) {
    return t->eos_id;
}

const char *clip_tokenizer_token(const clip_tokenizer *t, int id) {
    for (int k = 0; k < t->n_special; k++) /* added tokens shadow the vocabulary */
        if (t->special[k].id == id) return t->special[k].content;
    if (id < 0 || id > t->bpe.max_id) return NULL;
    return t->bpe.id_to_token[id];
}

/* ---- loading ---- */

/* Adds a special token the way the tokenizers library's AddedVocabulary does: a content already
 * added keeps its id but takes the newer flags; a new one takes its vocab.json id, or else the
 * next id past both the vocabulary and the added tokens. */
static sd_status add_special(clip_tokenizer *t, const char *content, bool lstrip, bool rstrip,
                             bool normalized, const char *where) {
    special_token *sp = NULL;
    for (int k = 0; k < t->n_special; k++)
        if (strcmp(t->special[k].content, content) == 0) sp = &t->special[k];
    if (!sp) {
        int32_t id = clip_bpe_lookup(&t->bpe, content, strlen(content));
        if (id < 0) {
            id = clip_bpe_vocab_size(&t->bpe);
            for (int k = 0; k < t->n_special; k++)
                if (t->special[k].id >= id) id = t->special[k].id + 1;
        }
        if (t->n_special == t->cap_special) {
            const int cap = t->cap_special ? 2 * t->cap_special : 8;
            special_token *v = realloc(t->special, (size_t)cap * sizeof *v);
            if (!v) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", where);
            t->special = v, t->cap_special = cap;
        }
        sp = &t->special[t->n_special++];
        *sp = (special_token){0};
        sp->content = strdup(content);
        if (!sp->content) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", where);
        sp->id = id;
    }
    sp->lstrip = lstrip, sp->rstrip = rstrip, sp->normalized = normalized;
    return SD_OK;
}

/* Reads one of bos_token / eos_token / unk_token / pad_token: a string, or an object with a
 * "content" string and optional AddedToken flags; absent or null takes the default. */
static sd_status read_special(clip_tokenizer *t, sd_cfg *c, const char *key, const char *def,
                              int32_t *id) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    const char *content = def;
    bool flags[4] = {false, false, false, false}; /* lstrip, rstrip, normalized, single_word */
    static const char *const flag_names[4] = {"lstrip", "rstrip", "normalized", "single_word"};
    if (cJSON_IsString(v)) {
        content = v->valuestring;
    } else if (cJSON_IsObject(v)) {
        const cJSON *cv = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!cJSON_IsString(cv))
            return sd_set_error(SD_ERR_CONFIG, "%s: key '%s' has no string \"content\"", c->path,
                                key);
        content = cv->valuestring;
        for (int f = 0; f < 4; f++) {
            const cJSON *fv = cJSON_GetObjectItemCaseSensitive(v, flag_names[f]);
            if (fv && !cJSON_IsNull(fv) && !cJSON_IsBool(fv))
                return sd_set_error(SD_ERR_CONFIG, "%s: key '%s.%s' should be a boolean", c->path,
                                    key, flag_names[f]);
            flags[f] = cJSON_IsTrue(fv);
        }
    } else if (v && !cJSON_IsNull(v)) {
        return sd_set_error(SD_ERR_CONFIG,
                            "%s: key '%s' should be a string or an object with "
                            "\"content\"",
                            c->path, key);
    }
    if (!*content)
        return sd_set_error(SD_ERR_CONFIG, "%s: key '%s' is an empty token", c->path, key);
    if (flags[3])
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: key '%s': single_word tokens are not supported", c->path, key);
    SD_TRY(add_special(t, content, flags[0], flags[1], flags[2], c->path));
    for (int k = 0; k < t->n_special; k++)
        if (strcmp(t->special[k].content, content) == 0) *id = t->special[k].id;
    return SD_OK;
}

/* transformers applies special_tokens_map.json over tokenizer_config.json (as the T5 loader does
 * here): SD 2.x releases say pad_token "<|endoftext|>" in the config and "!" in the map, and pad
 * with "!" (id 0). The map's non-null entries replace the config's before they are read. */
static sd_status apply_special_map(sd_cfg *c, const char *map_path) {
    if (!sd_file_exists(map_path)) return SD_OK;
    char *text = NULL;
    SD_TRY(sd_read_file(map_path, &text, NULL));
    cJSON *map = NULL;
    sd_status st = sd_json_parse(text, map_path, &map);
    free(text);
    if (st == SD_OK && !cJSON_IsObject(map))
        st = sd_set_error(SD_ERR_FORMAT, "%s: not a JSON object", map_path);
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    for (size_t k = 0; st == SD_OK && k < sizeof keys / sizeof *keys; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(map, keys[k]);
        if (!v || cJSON_IsNull(v)) continue;
        cJSON *copy = cJSON_Duplicate(v, true);
        if (!copy) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", map_path);
            break;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(c->root, keys[k]);
        cJSON_AddItemToObject(c->root, keys[k], copy);
    }
    cJSON_Delete(map);
    return st;
}

/* added_tokens_decoder (what transformers saves after add_tokens, e.g. a pipeline saved with
 * textual-inversion tokens): entries past the vocabulary and the special tokens are added in id
 * order, each of which must get the id it is saved under. */
static sd_status read_added_tokens(clip_tokenizer *t, sd_cfg *c) {
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(c->root, "added_tokens_decoder");
    if (!cJSON_IsObject(dec)) return SD_OK;
    for (int want = clip_bpe_vocab_size(&t->bpe);; want++) {
        char key[16];
        snprintf(key, sizeof key, "%d", want);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(dec, key);
        if (!e) break;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsString(content) || !*content->valuestring)
            return sd_set_error(SD_ERR_CONFIG, "%s: added_tokens_decoder[\"%s\"] has no content",
                                c->path, key);
        bool present = false;
        for (int k = 0; k < t->n_special; k++) present |= t->special[k].id == want;
        if (present) continue; /* a special token read before */
        const int k = t->n_special;
        SD_TRY(add_special(t, content->valuestring,
                           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip")),
                           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip")),
                           !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(e, "normalized")),
                           c->path));
        if (t->n_special == k || t->special[k].id != want)
            return sd_set_error(SD_ERR_CONFIG, "%s: added token \"%s\" is saved as id %d, which "
                                "does not follow the vocabulary", c->path, content->valuestring,
                                want);
    }
    return SD_OK;
}

static sd_status load_config(clip_tokenizer *t, const char *path, const char *map_path) {
    sd_cfg c;
    SD_TRY(cfg_open(&c, path));
    sd_status map_st = apply_special_map(&c, map_path);
    if (map_st != SD_OK) {
        cfg_close(&c);
        return map_st;
    }
    int32_t unk_added = -1;
    /* The order in which transformers adds them, which decides whose flags a shared content gets.
     */
    sd_status st = read_special(t, &c, "bos_token", "<|startoftext|>", &t->bos_id);
    if (st == SD_OK) st = read_special(t, &c, "eos_token", "<|endoftext|>", &t->eos_id);
    if (st == SD_OK) st = read_special(t, &c, "unk_token", "<|endoftext|>", &unk_added);
    if (st == SD_OK) st = read_special(t, &c, "pad_token", "<|endoftext|>", &t->pad_id);
    if (st == SD_OK) st = read_added_tokens(t, &c);
    double max_len = cfg_num(&c, "model_max_length", 77);
    if (st == SD_OK) st = cfg_status(&c);
    /* transformers writes 1e30 for "no limit"; a CLIP text model has 77 positions, and a pipeline
     * pads every prompt to this length, so anything huge is refused rather than guessed. */
    if (st == SD_OK && !(max_len >= 2 && max_len <= 65536 && max_len == (int)max_len))
        st = sd_set_error(SD_ERR_CONFIG,
                          "%s: key 'model_max_length' is %g, expected an integer "
                          "in [2, 65536]",
                          path, max_len);
    /* Only once in range: converting 1e30 or inf to int is undefined (found by fuzzing). */
    if (st == SD_OK) t->max_length = (int)max_len;
    /* The BPE model's unknown token is looked up in vocab.json alone. */
    for (int k = 0; st == SD_OK && k < t->n_special; k++)
        if (t->special[k].id == unk_added)
            t->unk_id =
                clip_bpe_lookup(&t->bpe, t->special[k].content, strlen(t->special[k].content));
    cfg_close(&c);
    return st;
}

/* What special token k is matched against: its content, or its normalized form. */
static sd_status prepare_special(clip_tokenizer *t, int k, const char *path) {
    special_token *sp = &t->special[k];
    size_t len = strlen(sp->content), bad_at;
    uint32_t *cps = malloc((len + 1) * sizeof *cps);
    if (!cps) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    long n = unicode_utf8_decode(sp->content, len, cps, &bad_at);
    if (n < 0) {
        free(cps);
        return sd_set_error(SD_ERR_CONFIG, "%s: token \"%s\" is not valid UTF-8", path,
                            sp->content);
    }
    if (sp->normalized) {
        sd_status st = clip_normalize(cps, (size_t)n, &sp->cps, &sp->n);
        free(cps);
        SD_TRY(st);
        if (sp->n == 0)
            return sd_set_error(SD_ERR_CONFIG, "%s: token \"%s\" normalizes to nothing", path,
                                sp->content);
    } else {
        sp->cps = cps, sp->n = (size_t)n;
    }
    return SD_OK;
}

static sd_status prepare_specials(clip_tokenizer *t, const char *path) {
    for (int k = 0; k < t->n_special; k++) SD_TRY(prepare_special(t, k, path));
    return SD_OK;
}

sd_status clip_tokenizer_load(clip_tokenizer **out, const char *dir) {
    *out = NULL;
    if (!dir || !sd_dir_exists(dir))
        return sd_set_error(SD_ERR_IO, "%s: tokenizer folder not found", dir ? dir : "(null)");
    char *vocab = sd_path_join(dir, "vocab.json"), *merges = sd_path_join(dir, "merges.txt");
    char *config = sd_path_join(dir, "tokenizer_config.json");
    char *json = sd_path_join(dir, "tokenizer.json");
    char *map = sd_path_join(dir, "special_tokens_map.json");
    clip_tokenizer *t = calloc(1, sizeof *t);
    sd_status st = SD_OK;
    if (!vocab || !merges || !config || !json || !map || !t)
        st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
    /* Releases saved by transformers 4 have vocab.json + merges.txt; transformers 5 saves only
     * tokenizer.json, which holds the same vocabulary and merges. */
    else if (!sd_file_exists(vocab) && sd_file_exists(json))
        st = clip_bpe_load_tokenizer_json(&t->bpe, json);
    else
        st = clip_bpe_load(&t->bpe, vocab, merges);
    if (st == SD_OK) st = load_config(t, config, map);
    if (st == SD_OK) st = prepare_specials(t, config);
    if (st == SD_OK) t->n_configured = t->n_special;
    free(vocab), free(merges), free(config), free(json), free(map);
    if (st != SD_OK) {
        clip_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SD_OK;
}

void clip_tokenizer_free(clip_tokenizer *t) {
    if (!t) return;
    clip_bpe_free(&t->bpe);
    for (int k = 0; k < t->n_special; k++) free(t->special[k].content), free(t->special[k].cps);
    free(t->special);
    free(t);
}

/* ---- tokens added at run time ---- */

sd_status clip_tokenizer_add_token(clip_tokenizer *t, const char *content, int32_t *id) {
    for (int k = 0; k < t->n_special; k++)
        if (!strcmp(t->special[k].content, content))
            return sd_set_error(SD_ERR_ARG, "tokenizer: token \"%s\" is already added", content);
    const int k = t->n_special;
    /* add_tokens' AddedToken: normalized (matched in the lower-cased text), no strip flags. */
    SD_TRY(add_special(t, content, false, false, true, "tokenizer"));
    sd_status st = SD_OK;
    if (t->special[k].id < clip_bpe_vocab_size(&t->bpe)) /* a vocab.json key: not a new token */
        st = sd_set_error(SD_ERR_ARG, "tokenizer: \"%s\" is already a vocabulary token", content);
    else
        st = prepare_special(t, k, "tokenizer");
    if (st != SD_OK) {
        free(t->special[k].content), free(t->special[k].cps);
        t->n_special = k;
        return st;
    }
    *id = t->special[k].id;
    return SD_OK;
}

int32_t clip_tokenizer_lookup(const clip_tokenizer *t, const char *content) {
    for (int k = 0; k < t->n_special; k++)
        if (!strcmp(t->special[k].content, content)) return t->special[k].id;
    return clip_bpe_lookup(&t->bpe, content, strlen(content));
}

int clip_tokenizer_size(const clip_tokenizer *t) {
    int n = clip_bpe_vocab_size(&t->bpe);
    for (int k = 0; k < t->n_special; k++)
        if (t->special[k].id >= n) n = t->special[k].id + 1;
    return n;
}
