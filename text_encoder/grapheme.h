/* Extended grapheme clusters (Unicode UAX #29, rules GB3-GB999 including GB9c, Unicode 16.0), as
 * the unicode-segmentation crate's graphemes(true) yields them: the tokenizers library's
 * Precompiled normalizer looks up whole clusters before single characters. */
#ifndef SD_GRAPHEME_H
#define SD_GRAPHEME_H

#include <stddef.h>
#include <stdint.h>

const char *grapheme_unicode_version_string(void);

/* The number of code points (1..n) of the cluster that starts at s[0]; 0 when n is 0. */
size_t grapheme_next(const uint32_t *s, size_t n);

#endif
