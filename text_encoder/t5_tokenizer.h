/* The T5 tokenizer of FLUX.1 and SD3 pipelines, producing the ids of transformers' T5Tokenizer
 * (v5, tokenizers backend) from a tokenizer folder: tokenizer.json (a SentencePiece unigram model
 * with its normalizer and added tokens), plus tokenizer_config.json and special_tokens_map.json
 * when present (eos / pad / unk tokens, extra special tokens, model_max_length).
 *
 * The pipeline, as transformers runs it:
 *   1. added tokens (<pad>, </s>, <unk>, <extra_id_N>, ...) are cut out of the raw text;
 *   2. the rest goes through tokenizer.json's normalizer (for T5: SentencePiece's precompiled
 *      charsmap, i.e. NFKC-like rules, then runs of spaces -> one space);
 *   3. T5Tokenizer's own pre-tokenizer (it replaces tokenizer.json's): split on white space, then
 *      Metaspace: each word gets a leading U+2581 and is cut before every U+2581;
 *   4. each piece is segmented by the unigram model (unigram.h);
 *   5. </s> is appended (after truncation, when padding to a length). */
#ifndef SD_T5_TOKENIZER_H
#define SD_T5_TOKENIZER_H

#include <stdint.h>

#include "../core/error.h"

typedef struct t5_tokenizer t5_tokenizer;

sd_status t5_tokenizer_load(t5_tokenizer **out, const char *dir);
void t5_tokenizer_free(t5_tokenizer *t);

/* All ids of `text` (UTF-8), ending with EOS; no truncation. *ids is malloc'd. Invalid UTF-8 is an
 * SD_ERR_ARG naming the byte offset. */
sd_status t5_tokenize(const t5_tokenizer *t, const char *text, int32_t **ids, int *n_ids);

/* ids[max_length] as the pipelines call the tokenizer (padding="max_length", truncation=True):
 * the first max_length - 1 tokens, EOS, then the pad id. *n_real (may be NULL) receives the count
 * before padding (the attention mask's ones). */
sd_status t5_tokenize_padded(const t5_tokenizer *t, const char *text, int32_t *ids, int max_length,
                             int *n_real);

/* model_max_length from tokenizer_config.json (512 for T5 releases), or -1 when unlimited. */
int t5_tokenizer_max_length(const t5_tokenizer *t);
int t5_tokenizer_pad_id(const t5_tokenizer *t);
int t5_tokenizer_eos_id(const t5_tokenizer *t);
int t5_tokenizer_unk_id(const t5_tokenizer *t);
/* One past the largest id the tokenizer can produce (vocabulary plus added tokens). */
int t5_tokenizer_vocab_size(const t5_tokenizer *t);

/* The piece or added token spelled by an id, or NULL. Lives as long as the tokenizer. */
const char *t5_tokenizer_token(const t5_tokenizer *t, int id);

#endif
