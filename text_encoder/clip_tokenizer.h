/* CLIP's byte-level BPE tokenizer, producing the same ids as transformers' CLIPTokenizer (v5,
 * tokenizers backend) from a tokenizer folder: vocab.json, merges.txt, tokenizer_config.json
 * (bos/eos/pad/unk tokens and model_max_length). */
#ifndef SD_CLIP_TOKENIZER_H
#define SD_CLIP_TOKENIZER_H

#include <stdint.h>

#include "../core/error.h"

typedef struct clip_tokenizer clip_tokenizer;

sd_status clip_tokenizer_load(clip_tokenizer **out, const char *dir);
void clip_tokenizer_free(clip_tokenizer *t);

/* All ids of `text` (UTF-8): BOS, the tokens, EOS; no truncation. *ids is malloc'd. Invalid UTF-8
 * is an SD_ERR_ARG. */
sd_status clip_tokenize(const clip_tokenizer *t, const char *text, int32_t **ids, int *n_ids);

/* The same without the tokens added at run time (clip_tokenizer_add_token): the tokenizer's files
 * alone, as A1111's prompt chunking sees text. */
sd_status clip_tokenize_vocab(const clip_tokenizer *t, const char *text, int32_t **ids,
                              int *n_ids);

/* ids[max_length] as the pipelines call the tokenizer (padding="max_length", truncation=True):
 * too long keeps BOS, the first max_length - 2 tokens and EOS; too short is filled with the pad
 * token's id. */
sd_status clip_tokenize_padded(const clip_tokenizer *t, const char *text, int32_t *ids,
                               int max_length);

int clip_tokenizer_max_length(const clip_tokenizer *t); /* model_max_length (77) */
int clip_tokenizer_pad_id(const clip_tokenizer *t);
int clip_tokenizer_bos_id(const clip_tokenizer *t);
int clip_tokenizer_eos_id(const clip_tokenizer *t);

/* The token spelled by an id (an added token's content, else its vocab.json key, in byte-level
 * form), or NULL for an unknown id. Lives as long as the tokenizer. */
const char *clip_tokenizer_token(const clip_tokenizer *t, int id);

/* Adds a token as transformers' add_tokens does (diffusers' load_textual_inversion): cut out of
 * the lower-cased text wherever it occurs, given the next id past the vocabulary and the tokens
 * added before (*id). An SD_ERR_ARG when the content is a vocabulary key or already added. */
sd_status clip_tokenizer_add_token(clip_tokenizer *t, const char *content, int32_t *id);
/* The id of a token spelled `content` (an added token's content, else a vocab.json key), or -1. */
int32_t clip_tokenizer_lookup(const clip_tokenizer *t, const char *content);
/* len(tokenizer): the vocabulary and the added tokens. */
int clip_tokenizer_size(const clip_tokenizer *t);

#endif
