/* Unigram segmentation as tokenizers' Unigram::encode_optimized does it (SentencePiece's
 * algorithm): one forward pass over character starts keeping, for every end position, the best
 * scoring path, ties going to the first candidate found (earlier start); then a backward walk. */
#include "unigram.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Score of a character no piece covers: tokenizers' kUnkPenalty below the lowest score. */
#define UNK_PENALTY 10.0

sd_status unigram_ids_push(unigram_ids *l, int32_t id) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        int32_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = id;
    return SD_OK;
}

/* ---- trie ---- */

static uint64_t edge_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key;
}

static int32_t trie_child(const unigram *u, int32_t node, unsigned char byte) {
    const uint64_t key = ((uint64_t)node << 8 | byte) + 1;
    for (size_t i = edge_hash(key) & (u->edge_cap - 1);; i = (i + 1) & (u->edge_cap - 1)) {
        if (u->edge_keys[i] == key) return u->edge_child[i];
        if (u->edge_keys[i] == 0) return -1;
    }
}

/* Inserts piece `id`; the table has room for every byte of every piece. */
static void trie_insert(unigram *u, const char *s, int32_t id) {
    int32_t node = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int32_t child = trie_child(u, node, *p);
        if (child < 0) {
            const uint64_t key = ((uint64_t)node << 8 | *p) + 1;
            size_t i = edge_hash(key) & (u->edge_cap - 1);
            while (u->edge_keys[i]) i = (i + 1) & (u->edge_cap - 1);
            child = u->n_nodes++;
            u->node_piece[child] = -1;
            u->edge_keys[i] = key, u->edge_child[i] = child;
        }
        node = child;
    }
    if (node) u->node_piece[node] = id; /* HashMap insert order: a later duplicate wins */
}

int32_t unigram_piece_id(const unigram *u, const char *s, size_t len) {
    int32_t node = 0;
    for (size_t i = 0; i < len && node >= 0; i++) node = trie_child(u, node, (unsigned char)s[i]);
    return node > 0 ? u->node_piece[node] : -1;
}

/* ---- loading ---- */

sd_status unigram_load(unigram *u, const cJSON *model, const char *path) {
    memset(u, 0, sizeof *u);
    u->unk_id = -1;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_id");
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(model, "byte_fallback");
    if (!cJSON_IsArray(vocab))
        return sd_set_error(SD_ERR_FORMAT, "%s: Unigram model has no \"vocab\" list", path);
    const int n = cJSON_GetArraySize(vocab);
    if (n < 1 || n > (1 << 24))
        return sd_set_error(SD_ERR_FORMAT, "%s: Unigram vocab has %d pieces", path, n);
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsNumber(unk) || unk->valuedouble < 0 || unk->valuedouble >= n ||
            unk->valuedouble != (int)unk->valuedouble)
            return sd_set_error(SD_ERR_FORMAT,
                                "%s: Unigram unk_id is not an index of the %d pieces", path, n);
        u->unk_id = unk->valueint;
    }
    if (fb && !cJSON_IsNull(fb) && !cJSON_IsBool(fb))
        return sd_set_error(SD_ERR_FORMAT, "%s: Unigram byte_fallback should be a boolean", path);
    u->byte_fallback = cJSON_IsTrue(fb);

    u->n_pieces = n;
    u->pieces = calloc((size_t)n, sizeof *u->pieces);
    u->scores = malloc((size_t)n * sizeof *u->scores);
    if (!u->pieces || !u->scores) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    size_t total = 0;
    u->min_score = INFINITY;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        const cJSON *piece = cJSON_GetArrayItem(e, 0), *score = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || !cJSON_IsString(piece) || !cJSON_IsNumber(score))
            return sd_set_error(SD_ERR_FORMAT, "%s: Unigram vocab entry %d is not [piece, score]",
                                path, i);
        u->pieces[i] = strdup(piece->valuestring);
        if (!u->pieces[i]) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
        u->scores[i] = score->valuedouble;
        if (u->scores[i] < u->min_score) u->min_score = u->scores[i];
        total += strlen(piece->valuestring);
        i++;
    }
    u->edge_cap = 16;
    while (u->edge_cap < 2 * total + 2) u->edge_cap *= 2;
    u->edge_keys = calloc(u->edge_cap, sizeof *u->edge_keys);
    u->edge_child = malloc(u->edge_cap * sizeof *u->edge_child);
    u->node_piece = malloc((total + 1) * sizeof *u->node_piece);
    if (!u->edge_keys || !u->edge_child || !u->node_piece)
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for the vocabulary trie", path);
    u->n_nodes = 1;
    u->node_piece[0] = -1;
    for (i = 0; i < n; i++) trie_insert(u, u->pieces[i], i);
    return SD_OK;
}

void unigram_free(unigram *u) {
    if (u->pieces)
        for (int i = 0; i < u->n_pieces; i++) free(u->pieces[i]);
    free(u->pieces);
    free(u->scores);
    free(u->edge_keys);
    free(u->edge_child);
    free(u->node_piece);
    memset(u, 0, sizeof *u);
}

/* ---- encoding ---- */

typedef struct {
    double score; /* best path score ending here */
    int32_t id;   /* the last piece of that path */
    int32_t from; /* where that piece starts; -1: not reached yet */
} best_node;

static size_t utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* The <0xXX> piece of a byte, or -1. */
static int32_t byte_piece(const unigram *u, unsigned char byte) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", byte);
    return unigram_piece_id(u, name, 6);
}

/* Emits one token of the best path: its piece id, or for a (fused) unknown span, the id the
 * vocabulary gives the text, else its <0xXX> pieces under byte fallback when every byte has one,
 * else the unknown id. */
static sd_status emit(const unigram *u, const char *s, size_t len, int32_t id, unigram_ids *out) {
    if (id != u->unk_id) return unigram_ids_push(out, id);
    int32_t known = unigram_piece_id(u, s, len);
    if (known >= 0) return unigram_ids_push(out, known);
    bool bytes = u->byte_fallback;
    for (size_t k = 0; k < len && bytes; k++) bytes = byte_piece(u, (unsigned char)s[k]) >= 0;
    if (!bytes) return unigram_ids_push(out, u->unk_id);
    for (size_t k = 0; k < len; k++)
        SD_TRY(unigram_ids_push(out, byte_piece(u, (unsigned char)s[k])));
    return SD_OK;
}

sd_status unigram_encode(const unigram *u, const char *s, size_t len, unigram_ids *out) {
    if (len == 0) return SD_OK;
    if (len > (size_t)INT32_MAX / 2)
        return sd_set_error(SD_ERR_ARG, "tokenizer: word of %zu bytes is too long", len);
    best_node *best = malloc((len + 1) * sizeof *best);
    if (!best)
        return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte word", len);
    for (size_t i = 0; i <= len; i++) best[i] = (best_node){0.0, 0, -1};
    const double unk_score = u->min_score - UNK_PENALTY;
    sd_status st = SD_OK;
    for (size_t start = 0; start < len && st == SD_OK;) {
        const double here = best[start].score;
        size_t mblen = utf8_len((unsigned char)s[start]);
        if (mblen > len - start) mblen = len - start;
        bool single = false;
        int32_t node = 0;
        for (size_t end = start; end < len;) {
            node = trie_child(u, node, (unsigned char)s[end++]);
            if (node < 0) break;
            const int32_t id = u->node_piece[node];
            if (id < 0) continue;
            const double cand = u->scores[id] + here;
            if (best[end].from < 0 || cand > best[end].score)
                best[end] = (best_node){cand, id, (int32_t)start};
            if (end - start == mblen) single = true;
        }
        if (!single) {
            best_node *t = &best[start + mblen];
            const double cand = unk_score + here;
            if (t->from < 0 || cand > t->score) {
                if (u->unk_id < 0)
                    st = sd_set_error(SD_ERR_ARG,
                                      "tokenizer: a character has no piece and the model has no "
                                      "unknown token");
                *t = (best_node){cand, u->unk_id, (int32_t)start};
            }
        }
        start += mblen;
    }
    /* Walk back, collecting (start, id); fuse runs of unknown pieces. */
    size_t n_tok = 0;
    int32_t *starts = NULL, *ids = NULL;
    if (st == SD_OK) {
        starts = malloc((len + 1) * sizeof *starts);
        ids = malloc((len + 1) * sizeof *ids);
        if (!starts || !ids) st = sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (size_t end = len; st == SD_OK && end > 0;) {
        const best_node *b = &best[end];
        if (b->id == u->unk_id && n_tok > 0 && ids[n_tok - 1] == u->unk_id)
            starts[n_tok - 1] = b->from; /* extend the fused unknown span leftwards */
        else
            starts[n_tok] = b->from, ids[n_tok++] = b->id;
        end = (size_t)b->from;
    }
    /* Tokens are in reverse order; token k spans [starts[k], end of token k - 1 or len). */
    for (size_t k = n_tok; st == SD_OK && k-- > 0;) {
        size_t a = (size_t)starts[k], b = k > 0 ? (size_t)starts[k - 1] : len;
        st = emit(u, s + a, b - a, ids[k], out);
    }
    free(starts);
    free(ids);
    free(best);
    return st;
}
