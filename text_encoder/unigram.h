/* The tokenizers library's Unigram model (SentencePiece unigram): pieces with log-probability
 * scores, Viterbi segmentation over a byte trie of the pieces, characters no piece covers becoming
 * the unknown piece (scored min_score - 10, consecutive ones fused), and optional byte fallback
 * to <0xXX> pieces. Ids are the pieces' positions in the vocabulary. */
#ifndef SD_UNIGRAM_H
#define SD_UNIGRAM_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/error.h"

typedef struct {
    int n_pieces;
    char **pieces;  /* UTF-8, as in the vocabulary */
    double *scores; /* [n_pieces] */
    double min_score;
    int unk_id; /* -1: none (an uncovered character is then an error) */
    bool byte_fallback;
    /* The trie: edges (node, byte) -> child in an open-addressing table; node 0 is the root. */
    uint64_t *edge_keys; /* (node << 8 | byte) + 1; 0 marks a free slot */
    int32_t *edge_child;
    size_t edge_cap;
    int32_t *node_piece; /* the id ending at each node (the last duplicate wins), or -1 */
    int n_nodes;
} unigram;

/* A growing id list. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} unigram_ids;

sd_status unigram_ids_push(unigram_ids *l, int32_t id);

/* Reads a "model" object of type Unigram (vocab [[piece, score], ...], unk_id, byte_fallback). */
sd_status unigram_load(unigram *u, const cJSON *model, const char *path);
void unigram_free(unigram *u);

/* The id of a piece, or -1. */
int32_t unigram_piece_id(const unigram *u, const char *s, size_t len);

/* Appends the ids of one pre-tokenized word s[0..len) (UTF-8, valid). */
sd_status unigram_encode(const unigram *u, const char *s, size_t len, unigram_ids *out);

#endif
