/* Unicode lookups over the generated range tables, and NFC as UAX #15 defines it: full canonical
 * decomposition, canonical ordering of combining marks, then canonical composition. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

const char *unicode_version(void) {
    return unicode_tables_version;
}

long unicode_utf8_decode(const char *s, size_t len, uint32_t *out, size_t *bad_at) {
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        uint32_t cp, min;
        int extra;
        if (c < 0x80) {
            out[n++] = c;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F, extra = 1, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F, extra = 2, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07, extra = 3, min = 0x10000;
        } else {
            goto bad;
        }
        if (len - i <= (size_t)extra) goto bad;
        for (int k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80) goto bad;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
        out[n++] = cp;
        i += (size_t)extra + 1;
    }
    return n;
bad:
    if (bad_at) *bad_at = i;
    return -1;
}

int unicode_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The value of the range holding cp, or 0. */
static uint32_t range_lookup(const unicode_range *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].first)
            hi = mid - 1;
        else if (cp > r[mid].last)
            lo = mid + 1;
        else
            return r[mid].value;
    }
    return 0;
}

static uint32_t char_class(uint32_t cp) {
    if (cp < 0x80) { /* the common case, without a search */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return 1;
        if (cp >= '0' && cp <= '9') return 2;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return 3;
        return 0;
    }
    return range_lookup(unicode_class_ranges, unicode_class_ranges_count, cp);
}

bool unicode_is_letter(uint32_t cp) {
    return char_class(cp) == 1;
}
bool unicode_is_number(uint32_t cp) {
    return char_class(cp) == 2;
}
bool unicode_is_space(uint32_t cp) {
    return char_class(cp) == 3;
}

int unicode_lower(uint32_t cp, uint32_t out[3]) {
    if (cp < 0x80) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    for (int i = 0; i < unicode_lower_multis_count; i++)
        if (unicode_lower_multis[i].cp == cp) {
            for (int k = 0; k < unicode_lower_multis[i].n; k++)
                out[k] = unicode_lower_multis[i].to[k];
            return unicode_lower_multis[i].n;
        }
    int lo = 0, hi = unicode_lower_runs_count - 1;
    out[0] = cp;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const unicode_lower_run *r = &unicode_lower_runs[mid];
        if (cp < r->first) {
            hi = mid - 1;
        } else if (cp > r->last) {
            lo = mid + 1;
        } else {
            if ((cp - r->first) % r->stride == 0) out[0] = (uint32_t)((int32_t)cp + r->delta);
            break;
        }
    }
    return 1;
}

int unicode_combining_class(uint32_t cp) {
    if (cp < 0x300) return 0;
    return (int)range_lookup(unicode_ccc_ranges, unicode_ccc_ranges_count, cp);
}

/* Hangul syllables compose and decompose by arithmetic (Unicode section 3.12). */
enum {
    HANGUL_S = 0xAC00,
    HANGUL_L = 0x1100,
    HANGUL_V = 0x1161,
    HANGUL_T = 0x11A7,
    HANGUL_LCOUNT = 19,
    HANGUL_VCOUNT = 21,
    HANGUL_TCOUNT = 28,
    HANGUL_NCOUNT = HANGUL_VCOUNT * HANGUL_TCOUNT,
    HANGUL_SCOUNT = HANGUL_LCOUNT * HANGUL_NCOUNT,
};

static const unicode_decomp *find_decomp(uint32_t cp) {
    int lo = 0, hi = unicode_decomps_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < unicode_decomps[mid].cp)
            hi = mid - 1;
        else if (cp > unicode_decomps[mid].cp)
            lo = mid + 1;
        else
            return &unicode_decomps[mid];
    }
    return NULL;
}

/* Appends the full canonical decomposition of cp to out; returns the count written. */
static size_t decompose(uint32_t cp, uint32_t *out) {
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SCOUNT) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / HANGUL_NCOUNT;
        out[1] = HANGUL_V + (s % HANGUL_NCOUNT) / HANGUL_TCOUNT;
        if (s % HANGUL_TCOUNT == 0) return 2;
        out[2] = HANGUL_T + s % HANGUL_TCOUNT;
        return 3;
    }
    const unicode_decomp *d = cp >= 0xC0 ? find_decomp(cp) : NULL;
    if (!d) {
        out[0] = cp;
        return 1;
    }
    size_t n = decompose(d->a, out);
    if (d->b) n += decompose(d->b, out + n);
    return n;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V &&
        b < HANGUL_V + HANGUL_VCOUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_TCOUNT)
        return a + (b - HANGUL_T);
    int lo = 0, hi = unicode_compositions_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const unicode_decomp *d = &unicode_decomps[unicode_compositions[mid]];
        if (a < d->a || (a == d->a && b < d->b))
            hi = mid - 1;
        else if (a > d->a || b > d->b)
            lo = mid + 1;
        else
            return d->cp;
    }
    return 0;
}

size_t unicode_nfc(const uint32_t *in, size_t n, uint32_t *out) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += decompose(in[i], out + len);

    /* Canonical ordering: a stable insertion sort of each run of combining marks by class. */
    for (size_t i = 1; i < len; i++) {
        uint32_t c = out[i];
        int cc = unicode_combining_class(c);
        if (cc == 0) continue;
        size_t j = i;
        while (j > 0 && unicode_combining_class(out[j - 1]) > cc) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = c;
    }

    /* Canonical composition. After the ordering, the marks between the last starter and the
     * current character have non-decreasing classes, so the character is blocked exactly when
     * the previous kept one is not the starter and has a class of 0 or >= its own. */
    size_t kept = 0, starter = 0;
    int have_starter = 0, last_cc = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t c = out[i];
        int cc = unicode_combining_class(c);
        if (have_starter) {
            int adjacent = kept == starter + 1;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                uint32_t composite = compose(out[starter], c);
                if (composite) {
                    out[starter] = composite;
                    continue;
                }
            }
        }
        if (cc == 0) starter = kept, have_starter = 1;
        last_cc = cc;
        out[kept++] = c;
    }
    return kept;
}

sd_status unicode_check_prompt_length(const char *text, const char *who) {
    /* strnlen: a 10 MB prompt costs no more than a 64 KiB one to refuse. */
    if (strnlen(text, SD_PROMPT_MAX_BYTES + 1) > SD_PROMPT_MAX_BYTES)
        return sd_set_error(SD_ERR_ARG, "%s: the prompt is longer than %d bytes "
                            "(SD_PROMPT_MAX_BYTES); refused", who, SD_PROMPT_MAX_BYTES);
    return SD_OK;
}

sd_status unicode_decode_prompt(const char *text, const char *who, uint32_t **cps, long *n) {
    *cps = NULL, *n = 0;
    if (!text) return sd_set_error(SD_ERR_ARG, "%s: prompt is NULL", who);
    SD_TRY(unicode_check_prompt_length(text, who));
    size_t len = strlen(text), bad_at = 0;
    uint32_t *out = malloc((len + 1) * sizeof *out);
    if (!out) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for a %zu-byte prompt", who, len);
    long k = unicode_utf8_decode(text, len, out, &bad_at);
    if (k < 0) {
        free(out);
        return sd_set_error(SD_ERR_ARG, "prompt is not valid UTF-8 (bad byte 0x%02X at offset %zu)",
                            (unsigned char)text[bad_at], bad_at);
    }
    *cps = out, *n = k;
    return SD_OK;
}
