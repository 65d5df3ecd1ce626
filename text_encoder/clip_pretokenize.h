/* The CLIP tokenizer's normalizer and pre-tokenizer regexes, over code points. Internal to
 * text_encoder/ (clip_tokenizer.c strings them together). */
#ifndef SD_CLIP_PRETOKENIZE_H
#define SD_CLIP_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/error.h"

/* NFC, then every run of white space -> one " ", then each character lower-cased on its own
 * (the tokenizers Sequence[NFC, Replace(\s+, " "), Lowercase]). *out is malloc'd. */
sd_status clip_normalize(const uint32_t *s, size_t n, uint32_t **out, size_t *out_n);

/* CLIP's split regex tried at s[0..n) (n > 0): the match length, 0 at white space. */
size_t clip_split(const uint32_t *s, size_t n);

/* The byte-level pre-tokenizer's GPT-2 regex tried at s[0..n) (n > 0, no white space in it). */
size_t clip_gpt2_split(const uint32_t *s, size_t n);

#endif
