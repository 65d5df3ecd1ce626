/* The normalizer and the two pre-tokenizer regexes of CLIPTokenizer, matched by hand. Oniguruma
 * tries the alternatives of a regex in order at each position and takes the first that matches,
 * with greedy repetition; these functions do the same. */
#include "clip_pretokenize.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"

/* ---- normalizer: NFC, white-space runs -> " ", per-character lower case ---- */

sd_status clip_normalize(const uint32_t *s, size_t n, uint32_t **out, size_t *out_n) {
    uint32_t *nfc = malloc((4 * n + 1) * sizeof *nfc);
    uint32_t *low = malloc((12 * n + 1) * sizeof *low);
    if (!nfc || !low) {
        free(nfc), free(low);
        return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory normalizing %zu characters", n);
    }
    size_t m = unicode_nfc(s, n, nfc), k = 0;
    bool in_space = false;
    for (size_t i = 0; i < m; i++) {
        if (unicode_is_space(nfc[i])) {
            if (!in_space) low[k++] = ' ';
            in_space = true;
        } else {
            in_space = false;
            k += (size_t)unicode_lower(nfc[i], low + k);
        }
    }
    free(nfc);
    *out = low, *out_n = k;
    return SD_OK;
}

/* ---- pre-tokenizer ---- */

static bool is_other(uint32_t c) {
    return !unicode_is_space(c) && !unicode_is_letter(c) && !unicode_is_number(c);
}

static bool starts_with(const uint32_t *s, size_t n, const char *ascii) {
    size_t k = strlen(ascii);
    if (k > n) return false;
    for (size_t i = 0; i < k; i++)
        if (s[i] != (unsigned char)ascii[i]) return false;
    return true;
}

/* Length of the contraction 's 't 're 've 'm 'll 'd at s, or 0. */
static size_t contraction(const uint32_t *s, size_t n) {
    static const char *const forms[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++)
        if (starts_with(s, n, forms[i])) return strlen(forms[i]);
    return 0;
}

static size_t run_of(const uint32_t *s, size_t n, bool (*in_class)(uint32_t)) {
    size_t k = 0;
    while (k < n && in_class(s[k])) k++;
    return k;
}

/* CLIP's split regex, tried at s (an alternation, so the first alternative that matches wins):
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * Returns the match length; 0 at white space, which no alternative matches. */
size_t clip_split(const uint32_t *s, size_t n) {
    if (starts_with(s, n, "<|startoftext|>")) return 15;
    if (starts_with(s, n, "<|endoftext|>")) return 13;
    size_t k = contraction(s, n);
    if (k) return k;
    if (unicode_is_letter(s[0])) return run_of(s, n, unicode_is_letter);
    if (unicode_is_number(s[0])) return 1;
    return run_of(s, n, is_other);
}

/* The byte-level pre-tokenizer's GPT-2 regex, tried at s:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * It only sees pieces of clip_split, which hold no white space, so the space alternatives never
 * apply. It changes nothing but the special-token spellings that clip_split keeps whole:
 * "<|startoftext|>" becomes "<|", "startoftext", "|>". */
size_t clip_gpt2_split(const uint32_t *s, size_t n) {
    size_t k = contraction(s, n);
    if (k) return k;
    if (unicode_is_letter(s[0])) return run_of(s, n, unicode_is_letter);
    if (unicode_is_number(s[0])) return run_of(s, n, unicode_is_number);
    return run_of(s, n, is_other);
}
