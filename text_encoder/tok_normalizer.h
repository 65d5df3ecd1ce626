/* The normalizers of a tokenizers-library tokenizer.json that SentencePiece-style tokenizers use:
 * Sequence, Precompiled (sp_charsmap.h), Replace (a literal string, or a regex that is one
 * character or \s with a quantifier, such as " {2,}"), Strip, Prepend, NFC and Lowercase. Any other
 * type is an SD_ERR_UNSUPPORTED naming it. */
#ifndef SD_TOK_NORMALIZER_H
#define SD_TOK_NORMALIZER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/error.h"

typedef struct tok_normalizer tok_normalizer;

/* Builds the chain from the "normalizer" value (NULL or JSON null: no normalization, *out is an
 * empty chain). `path` names the file in errors. */
sd_status tok_normalizer_load(tok_normalizer **out, const cJSON *json, const char *path);
void tok_normalizer_free(tok_normalizer *n);

/* Normalizes in[0..n) into a malloc'd *out of *n_out code points. */
sd_status tok_normalizer_apply(const tok_normalizer *nz, const uint32_t *in, size_t n,
                               uint32_t **out, size_t *n_out);

#endif
