/* Images in and out of HTTP bodies: encoded bytes <-> sd_image through the library's own PNG/JPEG
 * reader and writer (so the server's files are what gen writes: same "parameters" text chunk,
 * same EXIF handling on input), and the A1111 "parameters" text read back from a PNG. */
#ifndef SRV_IMAGES_H
#define SRV_IMAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../include/sd.h"

/* The library reads and writes files only: the server keeps a private folder (mode 0700, under
 * $TMPDIR or /tmp) for the few milliseconds a conversion takes. Call once before the others. */
bool srv_images_init(char *err, size_t err_size);
void srv_images_cleanup(void);

/* PNG (jpeg false) with `parameters` (may be NULL) as its "parameters" text chunk, or JPEG at
 * `quality`. *out malloc'd. Thread-safe. */
sd_status srv_image_encode(const sd_image *img, bool jpeg, int quality, const char *parameters,
                           uint8_t **out, size_t *out_len);
/* PNG or JPEG bytes to RGB (grey expanded, alpha dropped, EXIF orientation applied). */
sd_status srv_image_decode(const uint8_t *data, size_t len, sd_image *out);

/* The text of the PNG's tEXt (or uncompressed iTXt) chunk with keyword `key`, malloc'd; NULL
 * when the bytes are not a PNG or carry no such chunk. Pure: walks the chunk list with bounds
 * checks. */
char *srv_png_text(const uint8_t *data, size_t len, const char *key);

#endif
