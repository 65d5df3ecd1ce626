/* vocab.json and merges.txt in open-addressing hash tables, and BPE merging by rank exactly as the
 * tokenizers library does it (a min-heap of candidate merges ordered by rank, then position). */
#include "clip_bpe.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "unicode.h"

struct clip_bpe_entry {
    uint32_t off, len; /* token bytes: pool + off */
    int32_t id;
};

struct clip_bpe_symbol {
    int32_t id;
    int32_t prev, next; /* neighbouring live symbols, -1 at the ends */
    int alive;
};

struct clip_bpe_merge {
    uint32_t rank, pos;
    int32_t new_id;
};

/* Ids beyond this are refused: they would make the id -> token table absurdly large. */
#define CLIP_BPE_MAX_ID 0xFFFFFF

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static uint32_t table_size(size_t n) {
    uint32_t size = 16;
    while (size < 2 * n) size *= 2;
    return size;
}

/* The slot holding s, or the empty slot where it would go. */
static int32_t *vocab_slot(const clip_bpe *b, const char *s, size_t len) {
    uint32_t i = (uint32_t)hash_bytes(s, len) & b->slot_mask;
    for (;; i = (i + 1) & b->slot_mask) {
        int32_t e = b->slots[i];
        if (e < 0) return &b->slots[i];
        const struct clip_bpe_entry *en = &b->entries[e];
        if (en->len == len && memcmp(b->pool + en->off, s, len) == 0) return &b->slots[i];
    }
}

int32_t clip_bpe_lookup(const clip_bpe *b, const char *s, size_t len) {
    int32_t e = *vocab_slot(b, s, len);
    return e < 0 ? -1 : b->entries[e].id;
}

int clip_bpe_vocab_size(const clip_bpe *b) {
    return b->n_entries;
}

static sd_status vocab_alloc(clip_bpe *b, size_t max_entries, size_t pool_size, const char *path) {
    b->pool = malloc(pool_size ? pool_size : 1);
    b->entries = malloc((max_entries ? max_entries : 1) * sizeof *b->entries);
    b->slot_mask = table_size(max_entries) - 1;
    b->slots = malloc(((size_t)b->slot_mask + 1) * sizeof *b->slots);
    if (!b->pool || !b->entries || !b->slots)
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for %zu tokens", path, max_entries);
    memset(b->slots, 0xFF, ((size_t)b->slot_mask + 1) * sizeof *b->slots);
    b->max_id = -1;
    return SD_OK;
}

/* Adds key -> id; the key is copied to the pool at *pool_used unless already there. A repeated
 * key takes the last id, as a JSON map does. */
static void vocab_insert(clip_bpe *b, const char *key, size_t len, int32_t id, size_t *pool_used) {
    int32_t *slot = vocab_slot(b, key, len);
    if (*slot >= 0) {
        b->entries[*slot].id = id;
    } else {
        if (b->pool + *pool_used != key) memmove(b->pool + *pool_used, key, len);
        b->pool[*pool_used + len] = 0;
        b->entries[b->n_entries] = (struct clip_bpe_entry){(uint32_t)*pool_used, (uint32_t)len, id};
        *slot = b->n_entries++;
        *pool_used += len + 1;
    }
    if (id > b->max_id) b->max_id = id;
}

static void vocab_reset(clip_bpe *b) {
    free(b->pool), free(b->entries), free(b->slots);
    b->pool = NULL, b->entries = NULL, b->slots = NULL;
    b->n_entries = 0;
}

static size_t skip_ws(const char *t, size_t i, size_t len) {
    while (i < len && (t[i] == ' ' || t[i] == '\n' || t[i] == '\r' || t[i] == '\t')) i++;
    return i;
}

static int hex4(const char *t, size_t i, size_t len, uint32_t *v) {
    if (i + 4 > len) return 0;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = t[i + k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        *v = *v * 16 + (uint32_t)d;
    }
    return 1;
}

/* Decodes the JSON string starting after its opening quote at t[*i] into out (never longer than
 * its escaped form); returns its length, or -1 for anything unusual. */
static long json_string(const char *t, size_t *i, size_t len, char *out) {
    size_t o = 0, p = *i;
    while (p < len && t[p] != '"') {
        unsigned char c = (unsigned char)t[p++];
        if (c < 0x20) return -1;
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (p >= len) return -1;
        char e = t[p++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            out[o++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        uint32_t cp, lo;
        if (e != 'u' || !hex4(t, p, len, &cp)) return -1;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p + 6 > len || t[p] != '\\' || t[p + 1] != 'u' || !hex4(t, p + 2, len, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
            return -1;
        }
        o += (size_t)unicode_utf8_encode(cp, out + o);
    }
    if (p >= len) return -1;
    *i = p + 1;
    return (long)o;
}

/* The usual vocab.json, {"token": id, ...} with integer ids, read in one pass straight into the
 * tables (cJSON takes several times longer on its 49408 entries). Returns 0 when the file holds
 * anything else; the caller then reads it with cJSON, which handles (or reports) every case. */
static int vocab_fast(clip_bpe *b, const char *t, size_t len, const char *path) {
    size_t colons = 0, used = 0;
    for (const char *p = t; (p = memchr(p, ':', len - (size_t)(p - t))); p++) colons++;
    if (vocab_alloc(b, colons, len + 1, path) != SD_OK) return 0;
    size_t i = skip_ws(t, 0, len);
    if (i >= len || t[i++] != '{') return 0;
    i = skip_ws(t, i, len);
    if (i < len && t[i] == '}') return skip_ws(t, i + 1, len) == len;
    for (;;) {
        if (i >= len || t[i++] != '"') return 0;
        /* The key is decoded in place into the pool, which is as large as the file. */
        char *key = b->pool + used;
        long klen = json_string(t, &i, len, key);
        if (klen < 0) return 0;
        i = skip_ws(t, i, len);
        if (i >= len || t[i++] != ':') return 0;
        i = skip_ws(t, i, len);
        int64_t id = 0;
        size_t digits = 0;
        while (i < len && t[i] >= '0' && t[i] <= '9' && digits < 9)
            id = id * 10 + (t[i++] - '0'), digits++;
        if (!digits || (digits > 1 && t[i - digits] == '0') || id > CLIP_BPE_MAX_ID) return 0;
        if (i < len && (t[i] == '.' || t[i] == 'e' || t[i] == 'E' || (t[i] >= '0' && t[i] <= '9')))
            return 0;
        vocab_insert(b, key, (size_t)klen, (int32_t)id, &used);
        i = skip_ws(t, i, len);
        if (i < len && t[i] == ',') {
            i = skip_ws(t, i + 1, len);
            continue;
        }
        if (i < len && t[i] == '}') return skip_ws(t, i + 1, len) == len;
        return 0;
    }
}

/* {"token": id, ...} from a parsed object (vocab.json, or tokenizer.json's model.vocab). */
static sd_status vocab_from_object(clip_bpe *b, const cJSON *root, const char *path) {
    if (!cJSON_IsObject(root))
        return sd_set_error(SD_ERR_FORMAT, "%s: expected a JSON object mapping tokens to ids",
                            path);
    size_t n = 0, pool_size = 0, used = 0;
    for (cJSON *it = root->child; it; it = it->next) n++, pool_size += strlen(it->string) + 1;
    sd_status st = vocab_alloc(b, n, pool_size, path);
    for (cJSON *it = root->child; it && st == SD_OK; it = it->next) {
        /* Like the tokenizers library: entries whose value is not a number are skipped. */
        if (!cJSON_IsNumber(it)) continue;
        double v = it->valuedouble;
        if (!(v >= 0 && v <= CLIP_BPE_MAX_ID) || v != (double)(int32_t)v)
            st =
                sd_set_error(SD_ERR_FORMAT, "%s: token \"%s\" has id %g, not an integer in [0, %d]",
                             path, it->string, v, CLIP_BPE_MAX_ID);
        else
            vocab_insert(b, it->string, strlen(it->string), (int32_t)v, &used);
    }
    return st;
}

static sd_status vocab_cjson(clip_bpe *b, const char *text, const char *path) {
    cJSON *root;
    SD_TRY(sd_json_parse(text, path, &root));
    sd_status st = vocab_from_object(b, root, path);
    cJSON_Delete(root);
    return st;
}

static sd_status vocab_index(clip_bpe *b, const char *path) {
    b->id_to_token = calloc((size_t)b->max_id + 2, sizeof *b->id_to_token);
    if (!b->id_to_token) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < b->n_entries; i++)
        b->id_to_token[b->entries[i].id] = b->pool + b->entries[i].off;
    return SD_OK;
}

static sd_status load_vocab(clip_bpe *b, const char *path) {
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, &text, &len));
    sd_status st = SD_OK;
    if (!vocab_fast(b, text, len, path)) {
        vocab_reset(b);
        st = vocab_cjson(b, text, path);
    }
    free(text);
    SD_TRY(st);
    return vocab_index(b, path);
}

static uint64_t pair_key(int32_t a, int32_t c) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)c;
}

static uint32_t pair_slot(const clip_bpe *b, uint64_t key) {
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & b->merge_mask;
    while (b->merge_keys[i] != UINT64_MAX && b->merge_keys[i] != key) i = (i + 1) & b->merge_mask;
    return i;
}

/* The merge of (left, right): its rank and the merged token's id. */
static int find_merge(const clip_bpe *b, int32_t left, int32_t right, uint32_t *rank,
                      int32_t *new_id) {
    uint32_t i = pair_slot(b, pair_key(left, right));
    if (b->merge_keys[i] == UINT64_MAX) return 0;
    *rank = b->merge_rank[i];
    *new_id = b->merge_new[i];
    return 1;
}

static sd_status merges_alloc(clip_bpe *b, size_t n, const char *path) {
    b->merge_mask = table_size(n + 1) - 1;
    size_t slots = (size_t)b->merge_mask + 1;
    b->merge_keys = malloc(slots * sizeof *b->merge_keys);
    b->merge_rank = malloc(slots * sizeof *b->merge_rank);
    b->merge_new = malloc(slots * sizeof *b->merge_new);
    if (!b->merge_keys || !b->merge_rank || !b->merge_new)
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    memset(b->merge_keys, 0xFF, slots * sizeof *b->merge_keys);
    return SD_OK;
}

/* Merge number `rank`: left + right -> their concatenation, all three in the vocabulary.
 * `joined` has room for both; `where` names the entry in messages ("line 12", "merge 12"). */
static sd_status merge_add(clip_bpe *b, const char *l, size_t ll, const char *r, size_t lr,
                           uint32_t rank, char *joined, const char *path, const char *where) {
    int32_t a = clip_bpe_lookup(b, l, ll), c = clip_bpe_lookup(b, r, lr);
    memcpy(joined, l, ll);
    memcpy(joined + ll, r, lr);
    int32_t merged = clip_bpe_lookup(b, joined, ll + lr);
    if (a < 0 || c < 0 || merged < 0) {
        const char *missing = a < 0 ? l : c < 0 ? r : joined;
        int mlen = (int)(a < 0 ? ll : c < 0 ? lr : ll + lr);
        return sd_set_error(SD_ERR_FORMAT, "%s %s: token \"%.*s\" is not in the vocabulary", path,
                            where, mlen, missing);
    }
    /* A pair listed twice keeps its last rank, as a map built from the list would. */
    uint32_t i = pair_slot(b, pair_key(a, c));
    if (b->merge_keys[i] == UINT64_MAX) b->n_merges++;
    b->merge_keys[i] = pair_key(a, c);
    b->merge_rank[i] = rank;
    b->merge_new[i] = merged;
    return SD_OK;
}

/* merges.txt: one "left right" pair per line, ranked by order; lines starting with "#version"
 * are skipped wherever they are (as the tokenizers library reads it). */
static sd_status load_merges(clip_bpe *b, const char *path) {
    char *text;
    size_t size;
    SD_TRY(sd_read_file(path, &text, &size));
    size_t n_lines = 0;
    for (size_t i = 0; i < size; i++) n_lines += text[i] == '\n';
    char *joined = malloc(size + 1);
    sd_status st = joined ? merges_alloc(b, n_lines, path) : sd_set_error(SD_ERR_NOMEM, "out of memory");
    uint32_t rank = 0;
    size_t line_no = 0;
    for (size_t pos = 0; pos < size && st == SD_OK;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - line) : size - pos;
        pos += len + (nl != NULL);
        line_no++;
        if (len && line[len - 1] == '\r') len--;
        if (len >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', len);
        char where[32];
        snprintf(where, sizeof where, "line %zu", line_no);
        if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line)))
            st = sd_set_error(SD_ERR_FORMAT, "%s %s: expected two tokens separated by one space",
                              path, where);
        else
            st = merge_add(b, line, (size_t)(sp - line), sp + 1, len - (size_t)(sp - line) - 1,
                           rank++, joined, path, where);
    }
    free(joined);
    free(text);
    return st;
}

/* tokenizer.json's model.merges: ["left right", ...] (older files) or [["left", "right"], ...]. */
static sd_status merges_from_array(clip_bpe *b, const cJSON *arr, const char *path) {
    size_t longest = 0;
    for (const cJSON *it = arr->child; it; it = it->next) {
        const cJSON *l = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, 0) : it;
        const cJSON *r = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, 1) : NULL;
        size_t n = (cJSON_IsString(l) ? strlen(l->valuestring) : 0) +
                   (cJSON_IsString(r) ? strlen(r->valuestring) : 0);
        if (n > longest) longest = n;
    }
    char *joined = malloc(longest + 1);
    sd_status st = joined ? merges_alloc(b, (size_t)cJSON_GetArraySize(arr), path)
                          : sd_set_error(SD_ERR_NOMEM, "out of memory");
    uint32_t rank = 0;
    for (const cJSON *it = arr->child; it && st == SD_OK; it = it->next, rank++) {
        char where[32];
        snprintf(where, sizeof where, "merge %u", rank);
        const char *l = NULL, *r = NULL, *sp = NULL;
        if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
            cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            l = cJSON_GetArrayItem(it, 0)->valuestring, r = cJSON_GetArrayItem(it, 1)->valuestring;
            st = merge_add(b, l, strlen(l), r, strlen(r), rank, joined, path, where);
        } else if (cJSON_IsString(it) && (sp = strchr(it->valuestring, ' ')) && !strchr(sp + 1, ' ')) {
            l = it->valuestring;
            st = merge_add(b, l, (size_t)(sp - l), sp + 1, strlen(sp + 1), rank, joined, path, where);
        } else {
            st = sd_set_error(SD_ERR_FORMAT, "%s %s: expected \"left right\" or [left, right]",
                              path, where);
        }
    }
    free(joined);
    return st;
}

/* The byte-level alphabet (GPT-2's bytes_to_unicode): printable bytes stand for themselves, the
 * others (controls, space, 0x7F-0xA0, soft hyphen) for U+0100 upwards in byte order. */
static uint32_t byte_char(int byte) {
    int printable =
        (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
    if (printable) return (uint32_t)byte;
    int n = 0;
    for (int k = 0; k < byte; k++)
        n += !((k >= 0x21 && k <= 0x7E) || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE);
    return 256u + (uint32_t)n;
}

/* The ids of every byte's byte-level character, alone and word-final. */
static void byte_ids(clip_bpe *b) {
    for (int byte = 0; byte < 256; byte++) {
        uint32_t ch = byte_char(byte);
        char buf[8];
        /* The alphabet is U+0021..U+0143: one or two UTF-8 bytes. */
        size_t n = ch < 0x80 ? 1 : 2;
        if (n == 1)
            buf[0] = (char)ch;
        else
            buf[0] = (char)(0xC0 | (ch >> 6)), buf[1] = (char)(0x80 | (ch & 0x3F));
        b->byte_id[byte] = clip_bpe_lookup(b, buf, n);
        memcpy(buf + n, "</w>", 4);
        b->byte_eow_id[byte] = clip_bpe_lookup(b, buf, n + 4);
    }
}

sd_status clip_bpe_load(clip_bpe *b, const char *vocab_path, const char *merges_path) {
    memset(b, 0, sizeof *b);
    sd_status st = load_vocab(b, vocab_path);
    if (st == SD_OK) st = load_merges(b, merges_path);
    if (st != SD_OK) {
        clip_bpe_free(b);
        return st;
    }
    byte_ids(b);
    return SD_OK;
}

sd_status clip_bpe_load_tokenizer_json(clip_bpe *b, const char *path) {
    memset(b, 0, sizeof *b);
    char *text;
    SD_TRY(sd_read_file(path, &text, NULL));
    cJSON *root = NULL;
    sd_status st = sd_json_parse(text, path, &root);
    free(text);
    const cJSON *model = st == SD_OK ? cJSON_GetObjectItemCaseSensitive(root, "model") : NULL;
    const cJSON *type = model ? cJSON_GetObjectItemCaseSensitive(model, "type") : NULL;
    const cJSON *suffix = model ? cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix") : NULL;
    const cJSON *vocab = model ? cJSON_GetObjectItemCaseSensitive(model, "vocab") : NULL;
    const cJSON *merges = model ? cJSON_GetObjectItemCaseSensitive(model, "merges") : NULL;
    if (st == SD_OK && (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE")))
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: model.type is not \"BPE\": not a CLIP tokenizer",
                          path);
    else if (st == SD_OK && (!cJSON_IsString(suffix) || strcmp(suffix->valuestring, "</w>")))
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: model.end_of_word_suffix is not \"</w>\": not a "
                          "CLIP tokenizer", path);
    else if (st == SD_OK && (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)))
        st = sd_set_error(SD_ERR_FORMAT, "%s: model.vocab (object) and model.merges (list) are "
                          "required", path);
    if (st == SD_OK) st = vocab_from_object(b, vocab, path);
    if (st == SD_OK) st = vocab_index(b, path);
    if (st == SD_OK) st = merges_from_array(b, merges, path);
    cJSON_Delete(root);
    if (st != SD_OK) {
        clip_bpe_free(b);
        return st;
    }
    byte_ids(b);
    return SD_OK;
}

void clip_bpe_free(clip_bpe *b) {
    free(b->pool);
    free(b->entries);
    free(b->slots);
    free(b->id_to_token);
    free(b->merge_keys);
    free(b->merge_rank);
    free(b->merge_new);
    memset(b, 0, sizeof *b);
}

void clip_bpe_scratch_free(clip_bpe_scratch *s) {
    free(s->symbols);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static int merge_before(const struct clip_bpe_merge *x, const struct clip_bpe_merge *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(struct clip_bpe_merge *h, size_t *n, struct clip_bpe_merge m) {
    size_t i = (*n)++;
    while (i > 0 && merge_before(&m, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = m;
}

static struct clip_bpe_merge heap_pop(struct clip_bpe_merge *h, size_t *n) {
    struct clip_bpe_merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_before(&h[c + 1], &h[c])) c++;
        if (!merge_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

sd_status clip_bpe_word(const clip_bpe *b, clip_bpe_scratch *s, const unsigned char *word,
                        size_t len, int32_t unk_id, int32_t *out, size_t *n_out) {
    if (len == 0) return SD_OK;
    /* Each merge pushes at most two candidates and there are at most len - 1 merges. */
    if (s->cap < len) {
        free(s->symbols);
        free(s->heap);
        s->symbols = malloc(len * sizeof *s->symbols);
        s->heap = malloc(3 * len * sizeof *s->heap);
        s->cap = s->symbols && s->heap ? len : 0;
        if (!s->cap)
            return sd_set_error(SD_ERR_NOMEM, "BPE: out of memory for a %zu-byte word", len);
    }
    struct clip_bpe_symbol *sym = s->symbols;
    for (size_t i = 0; i < len; i++) {
        int32_t id = i + 1 == len ? b->byte_eow_id[word[i]] : b->byte_id[word[i]];
        if (id < 0) id = unk_id; /* unknown pieces are not fused: one unk per byte */
        if (id < 0)
            return sd_set_error(SD_ERR_FORMAT,
                                "BPE: byte 0x%02X has no token and the unknown token "
                                "is not in the vocabulary",
                                word[i]);
        sym[i] =
            (struct clip_bpe_symbol){id, (int32_t)i - 1, i + 1 == len ? -1 : (int32_t)i + 1, 1};
    }
    size_t n_heap = 0;
    uint32_t rank;
    int32_t new_id;
    for (size_t i = 0; i + 1 < len; i++)
        if (find_merge(b, sym[i].id, sym[i + 1].id, &rank, &new_id))
            heap_push(s->heap, &n_heap, (struct clip_bpe_merge){rank, (uint32_t)i, new_id});
    while (n_heap) {
        struct clip_bpe_merge top = heap_pop(s->heap, &n_heap);
        struct clip_bpe_symbol *left = &sym[top.pos];
        if (!left->alive || left->next < 0) continue;
        struct clip_bpe_symbol *right = &sym[left->next];
        /* Skip candidates made stale by an earlier merge of either side. */
        if (!find_merge(b, left->id, right->id, &rank, &new_id) || new_id != top.new_id) continue;
        left->id = top.new_id;
        left->next = right->next;
        right->alive = 0;
        if (left->next >= 0) sym[left->next].prev = (int32_t)top.pos;
        if (left->prev >= 0 && find_merge(b, sym[left->prev].id, left->id, &rank, &new_id))
            heap_push(s->heap, &n_heap,
                      (struct clip_bpe_merge){rank, (uint32_t)left->prev, new_id});
        if (left->next >= 0 && find_merge(b, left->id, sym[left->next].id, &rank, &new_id))
            heap_push(s->heap, &n_heap, (struct clip_bpe_merge){rank, top.pos, new_id});
    }
    for (size_t i = 0; i < len; i++)
        if (sym[i].alive) out[(*n_out)++] = sym[i].id;
    return SD_OK;
}
