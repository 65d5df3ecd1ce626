/* Base64 (RFC 4648, standard alphabet, padded) for images inside JSON bodies: A1111's
 * init_images / images / current_image and OpenAI's b64_json. */
#ifndef SRV_BASE64_H
#define SRV_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* malloc'd NUL-terminated text of 4 * ceil(len / 3) characters; NULL when out of memory. */
char *srv_base64_encode(const uint8_t *data, size_t len);

/* Decodes `len` characters. A leading data URL header ("data:image/png;base64,"), as browsers and
 * A1111 clients send, is skipped; whitespace is ignored; padding is optional. Any other character
 * or a dangling single character is an error (false, *out NULL). *out is malloc'd. */
bool srv_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

#endif
