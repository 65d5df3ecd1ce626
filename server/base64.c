/* Base64 both ways. Decoding is strict about the alphabet (a stray byte is the client's bug and is
 * reported, not skipped) but lenient about what browsers and clients add around the data: a data
 * URL prefix, line breaks, missing padding. */
#include "base64.h"

#include <stdlib.h>
#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *srv_base64_encode(const uint8_t *data, size_t len) {
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = alphabet[v >> 18], *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63], *o++ = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        *o++ = alphabet[v >> 18], *o++ = alphabet[v >> 12 & 63];
        *o++ = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

static int digit(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62; /* '-' and '_': the URL-safe alphabet, as Python accepts */
    if (c == '/' || c == '_') return 63;
    return -1;
}

bool srv_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    if (len >= 5 && !strncmp(text, "data:", 5)) {
        const char *comma = memchr(text, ',', len);
        if (!comma) return false;
        len -= (size_t)(comma + 1 - text), text = comma + 1;
    }
    uint8_t *buf = malloc(len / 4 * 3 + 3);
    if (!buf) return false;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int d = digit(c);
        if (d < 0 || pad) { /* a foreign byte, or data after the padding */
            free(buf);
            return false;
        }
        acc = acc << 6 | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6 || pad > 2) { /* one character of a group alone carries no byte */
        free(buf);
        return false;
    }
    *out = buf, *out_len = n;
    return true;
}
