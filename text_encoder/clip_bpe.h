/* The byte-level BPE model behind the CLIP tokenizer (the tokenizers library's BPE with
 * end_of_word_suffix "</w>", no continuing-subword prefix, unknown pieces not fused): vocab.json
 * and merges.txt in hash tables, and the merging of one pre-tokenized word. Internal to
 * text_encoder/. */
#ifndef SD_CLIP_BPE_H
#define SD_CLIP_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/error.h"

typedef struct {
    /* vocab.json: token string -> id, open addressing over `entries`. */
    char *pool; /* every token, NUL-terminated */
    struct clip_bpe_entry *entries;
    int n_entries;
    int32_t *slots; /* index into entries, -1 = empty */
    uint32_t slot_mask;
    const char **id_to_token; /* [max_id + 1], NULL where no token has the id */
    int32_t max_id;
    /* merges.txt: (left id, right id) -> (rank, merged id). */
    uint64_t *merge_keys; /* UINT64_MAX = empty */
    uint32_t *merge_rank;
    int32_t *merge_new;
    uint32_t merge_mask;
    int n_merges;
    /* The id of each byte's byte-level character, alone and as the last piece of a word (with
     * "</w>"); -1 when vocab.json lacks it. */
    int32_t byte_id[256], byte_eow_id[256];
} clip_bpe;

/* Loads vocab.json and merges.txt (paths used in messages). */
sd_status clip_bpe_load(clip_bpe *b, const char *vocab_path, const char *merges_path);
/* The same from a tokenizer.json (what transformers 5 saves instead of vocab.json + merges.txt):
 * its model must be BPE with end_of_word_suffix "</w>". */
sd_status clip_bpe_load_tokenizer_json(clip_bpe *b, const char *path);
void clip_bpe_free(clip_bpe *b);

/* Id of the token spelled s[0..len), or -1. */
int32_t clip_bpe_lookup(const clip_bpe *b, const char *s, size_t len);
/* Number of vocab.json entries (the first id the tokenizer gives a token it adds). */
int clip_bpe_vocab_size(const clip_bpe *b);

/* Scratch for clip_bpe_word, grown as needed; zero-initialise, free with clip_bpe_scratch_free. */
typedef struct {
    struct clip_bpe_symbol *symbols;
    struct clip_bpe_merge *heap;
    size_t cap;
} clip_bpe_scratch;
void clip_bpe_scratch_free(clip_bpe_scratch *s);

/* BPE of one pre-tokenized word, given as its UTF-8 bytes (each byte is one byte-level
 * character): appends the ids to out[*n_out...], which has room for len more. A byte missing from
 * the vocabulary becomes unk_id (an SD_ERR_FORMAT when unk_id is -1). */
sd_status clip_bpe_word(const clip_bpe *b, clip_bpe_scratch *s, const unsigned char *word,
                        size_t len, int32_t unk_id, int32_t *out, size_t *n_out);

#endif
