/* The precompiled charsmap: a Darts-clone double array (as SentencePiece builds it) read with
 * the same unit encoding, and the grapheme-then-character replacement of the tokenizers
 * library's Precompiled normalizer, including its quirk that a cluster is replaced by the rule of
 * its shortest matching prefix (so "\r\n" becomes whatever "\r" maps to). */
#include "sp_charsmap.h"

#include <stdlib.h>
#include <string.h>

#include "grapheme.h"
#include "unicode.h"

static int base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with '=' padding (what the tokenizers library writes). */
static sd_status base64_decode(const char *s, unsigned char **out, size_t *out_len,
                               const char *what) {
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '=') len--;
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (!buf) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for precompiled_charsmap", what);
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = base64_value((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return sd_set_error(SD_ERR_FORMAT,
                                "%s: precompiled_charsmap is not base64 (character %zu)", what, i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (bits >= 6) { /* one leftover character cannot carry a byte */
        free(buf);
        return sd_set_error(SD_ERR_FORMAT, "%s: precompiled_charsmap has a truncated base64 end",
                            what);
    }
    *out = buf, *out_len = n;
    return SD_OK;
}

static uint32_t read_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

sd_status sp_charsmap_init(sp_charsmap *m, const char *base64, const char *what) {
    memset(m, 0, sizeof *m);
    unsigned char *blob = NULL;
    size_t len = 0;
    SD_TRY(base64_decode(base64, &blob, &len, what));
    sd_status st = SD_OK;
    size_t trie_bytes = len >= 4 ? read_u32le(blob) : 0;
    if (len < 4 || trie_bytes > len - 4 || trie_bytes < 4) {
        st = sd_set_error(SD_ERR_FORMAT,
                          "%s: precompiled_charsmap of %zu bytes has a bad trie size %zu", what,
                          len, trie_bytes);
        goto done;
    }
    m->n_units = trie_bytes / 4;
    m->normalized_len = len - 4 - trie_bytes;
    m->units = malloc(m->n_units * sizeof *m->units);
    m->normalized = malloc(m->normalized_len + 1);
    if (!m->units || !m->normalized) {
        st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for precompiled_charsmap", what);
        goto done;
    }
    for (size_t i = 0; i < m->n_units; i++) m->units[i] = read_u32le(blob + 4 + 4 * i);
    memcpy(m->normalized, blob + 4 + trie_bytes, m->normalized_len);
    m->normalized[m->normalized_len] = 0;
    /* The library refuses a charsmap whose strings are not UTF-8 as a whole. */
    uint32_t *tmp = malloc((m->normalized_len + 1) * sizeof *tmp);
    size_t bad_at = 0;
    if (!tmp) {
        st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for precompiled_charsmap", what);
    } else if (unicode_utf8_decode(m->normalized, m->normalized_len, tmp, &bad_at) < 0) {
        st = sd_set_error(SD_ERR_FORMAT,
                          "%s: precompiled_charsmap replacement strings are not UTF-8 "
                          "(byte %zu)",
                          what, bad_at);
    }
    free(tmp);
done:
    free(blob);
    if (st != SD_OK) sp_charsmap_free(m);
    return st;
}

void sp_charsmap_free(sp_charsmap *m) {
    free(m->units);
    free(m->normalized);
    memset(m, 0, sizeof *m);
}

/* Darts unit fields. */
static size_t unit_offset(uint32_t u) {
    return (size_t)(u >> 10) << ((u & (1u << 9)) >> 6);
}
static uint32_t unit_label(uint32_t u) {
    return u & ((1u << 31) | 0xFF);
}
static int unit_has_leaf(uint32_t u) {
    return (u >> 8) & 1;
}
static uint32_t unit_value(uint32_t u) {
    return u & ((1u << 31) - 1);
}

const char *sp_charsmap_lookup(const sp_charsmap *m, const unsigned char *s, size_t len,
                               size_t *out_len) {
    if (m->n_units == 0) return NULL;
    size_t pos = unit_offset(m->units[0]);
    for (size_t i = 0; i < len && s[i]; i++) {
        pos ^= s[i];
        /* An index past the array (a malformed trie) ends the search like a missing label. */
        if (pos >= m->n_units || unit_label(m->units[pos]) != s[i]) return NULL;
        const uint32_t unit = m->units[pos];
        pos ^= unit_offset(unit);
        if (unit_has_leaf(unit)) {
            if (pos >= m->n_units) return NULL;
            size_t at = unit_value(m->units[pos]);
            if (at > m->normalized_len) return NULL; /* == len: the empty string */
            *out_len = strlen(m->normalized + at);
            return m->normalized + at;
        }
    }
    return NULL;
}

/* A growing code point buffer. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} cp_buf;

static int push(cp_buf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return -1;
        b->v = v, b->cap = cap;
    }
    b->v[b->n++] = cp;
    return 0;
}

/* Appends a replacement string (UTF-8 that may start mid-character when the trie points into
 * one: the library would fail there, this refuses with an error). */
static sd_status push_utf8(cp_buf *b, const char *s, size_t len) {
    uint32_t cps[64];
    size_t bad_at;
    while (len > 0) {
        /* Decode in chunks that end on a character boundary. */
        size_t chunk = len < 64 ? len : 64;
        while (chunk < len && ((unsigned char)s[chunk] & 0xC0) == 0x80) chunk--;
        long n = unicode_utf8_decode(s, chunk, cps, &bad_at);
        if (n < 0)
            return sd_set_error(SD_ERR_FORMAT,
                                "precompiled_charsmap: a replacement string is cut inside a "
                                "UTF-8 character");
        for (long k = 0; k < n; k++)
            if (push(b, cps[k])) return sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
        s += chunk, len -= chunk;
    }
    return SD_OK;
}

sd_status sp_charsmap_normalize(const sp_charsmap *m, const uint32_t *in, size_t n, uint32_t **out,
                                size_t *n_out) {
    cp_buf b = {0};
    sd_status st = SD_OK;
    if (push(&b, 0)) return sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
    b.n = 0;
    for (size_t i = 0; i < n && st == SD_OK;) {
        const size_t g = grapheme_next(in + i, n - i);
        unsigned char bytes[24];
        size_t nb = 0;
        for (size_t k = 0; k < g && nb < 6; k++)
            nb += (size_t)unicode_utf8_encode(in[i + k], (char *)bytes + nb);
        const char *rep;
        size_t rep_len;
        if (nb < 6 && (rep = sp_charsmap_lookup(m, bytes, nb, &rep_len))) {
            st = push_utf8(&b, rep, rep_len);
        } else {
            for (size_t k = 0; k < g && st == SD_OK; k++) {
                int len = unicode_utf8_encode(in[i + k], (char *)bytes);
                rep = sp_charsmap_lookup(m, bytes, (size_t)len, &rep_len);
                if (rep)
                    st = push_utf8(&b, rep, rep_len);
                else if (push(&b, in[i + k]))
                    st = sd_set_error(SD_ERR_NOMEM, "normalizer: out of memory");
            }
        }
        i += g;
    }
    if (st != SD_OK) {
        free(b.v);
        return st;
    }
    *out = b.v, *n_out = b.n;
    return SD_OK;
}
