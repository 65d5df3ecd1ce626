/* SentencePiece's precompiled normalization rules (the `precompiled_charsmap` of a tokenizers
 * "Precompiled" normalizer: base64 of [u32 trie size in bytes][Darts double-array trie of u32
 * units][NUL-separated replacement strings]), applied the way the tokenizers library applies them:
 * text is cut into extended grapheme clusters; a cluster shorter than 6 UTF-8 bytes is replaced
 * whole when the trie knows a prefix of it, otherwise each character is replaced on its own. */
#ifndef SD_SP_CHARSMAP_H
#define SD_SP_CHARSMAP_H

#include <stddef.h>
#include <stdint.h>

#include "../core/error.h"

typedef struct {
    uint32_t *units; /* the double-array trie */
    size_t n_units;
    char *normalized; /* replacement strings, each ended by a NUL */
    size_t normalized_len;
} sp_charsmap;

/* Decodes and checks the blob; `what` (e.g. the file) names it in errors. */
sd_status sp_charsmap_init(sp_charsmap *m, const char *base64, const char *what);
void sp_charsmap_free(sp_charsmap *m);

/* The replacement for the shortest key of the trie that is a prefix of s[0..len) (the lookup
 * stops at a NUL byte), as UTF-8 bytes inside the charsmap; NULL when no key matches. */
const char *sp_charsmap_lookup(const sp_charsmap *m, const unsigned char *s, size_t len,
                               size_t *out_len);

/* Normalizes in[0..n) into a malloc'd *out of *n_out code points. */
sd_status sp_charsmap_normalize(const sp_charsmap *m, const uint32_t *in, size_t n, uint32_t **out,
                                size_t *n_out);

#endif
