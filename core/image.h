/* Images in and out: 8-bit RGB PNG (libpng) and JPEG (libjpeg-turbo), chosen by file extension.
 * Writes go through a temporary file and a rename (core/fileutil), so a failed write never leaves
 * a half-written image where the user's file was. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include <stdint.h>

#include "../include/sd.h"
#include "error.h"

/* Larger images are refused rather than allocated: the pixel limit is Pillow's
 * decompression-bomb limit, the side limit a 16-bit size. */
#define IMAGE_MAX_PIXELS SD_IMAGE_MAX_PIXELS
#define IMAGE_MAX_SIDE   SD_IMAGE_MAX_SIDE

/* sd_image ([height][width][3] 8-bit RGB) is public: sd.h. */

/* Reads a PNG or JPEG (by content, not extension) as 8-bit RGB: grey is expanded, alpha dropped
 * (composited on nothing: the colour channels are kept), 16-bit reduced (high byte, as Pillow
 * does for RGB), and an EXIF orientation (JPEG APP1 or PNG eXIf) applied, as diffusers'
 * load_image does with PIL.ImageOps.exif_transpose. A missing, truncated or corrupt file is an
 * error naming the path; *out is then empty. */
sd_status image_read(const char *path, sd_image *out);

/* Reads the text stored under `key` in a PNG's tEXt, zTXt or iTXt chunks (the first one), as a
 * malloc'd UTF-8 string (tEXt/zTXt are Latin-1 and are converted); *value is NULL when the PNG has
 * no such key. A file that is not a readable PNG is an error. */
sd_status image_read_png_text(const char *path, const char *key, char **value);

/* A zero-filled width x height image (sides 1..IMAGE_MAX_SIDE, at most IMAGE_MAX_PIXELS pixels). */
sd_status image_alloc(sd_image *img, int width, int height);

/* Writes .png or .jpg/.jpeg (case-insensitive extension; anything else is SD_ERR_ARG).
 * `text` is an optional list of n_text key/value pairs stored as PNG tEXt chunks (ignored for
 * JPEG, which stores none); quality is used for JPEG only (1..100).
 * text[2*i] is a key (1..79 printable ASCII characters, no leading, trailing or double spaces),
 * text[2*i+1] its UTF-8 value: ASCII values go in tEXt (where A1111 and ComfyUI read
 * "parameters"), others in iTXt (UTF-8), which the same readers understand. JPEG sides are at
 * most 65500 (libjpeg's limit). */
sd_status image_write(const char *path, const sd_image *img, const char *const *text, int n_text,
                      int quality);

void image_free(sd_image *img);

/* Converts a [h][w][3] float image in [-1, 1] (the VAE's output) into 8-bit pixels the way
 * diffusers does: (x / 2 + 0.5).clamp(0, 1), then (v * 255).round() (ties to even, like numpy). */
void image_from_float(const float *x, int width, int height, uint8_t *rgb);

/* The reverse for encoding: 8-bit RGB to floats in [-1, 1] (v / 255 * 2 - 1), [h][w][3]. */
void image_to_float(const uint8_t *rgb, int width, int height, float *x);

#endif
