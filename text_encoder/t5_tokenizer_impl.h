/* Internals shared by t5_tokenizer.c (encoding) and t5_tokenizer_load.c (reading the folder). */
#ifndef SD_T5_TOKENIZER_IMPL_H
#define SD_T5_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "t5_tokenizer.h"
#include "tok_normalizer.h"
#include "unigram.h"

/* An added token (tokenizers' AddedToken): matched in the raw text, or in the normalized text when
 * `normalized`, before the model sees anything. */
typedef struct {
    char *content;
    uint32_t *cps; /* what is matched: the content, normalized when `normalized` */
    size_t n;
    int32_t id;
    bool lstrip, rstrip, single_word, normalized, special;
} t5_added_token;

struct t5_tokenizer {
    unigram model;
    tok_normalizer *normalizer;
    t5_added_token *added;
    int n_added, cap_added;
    int32_t eos_id, pad_id, unk_id;
    int max_length;
};

#define T5_METASPACE 0x2581u /* the SentencePiece word-boundary mark */

#endif
