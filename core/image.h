/* Images in and out: 8-bit RGB PNG (libpng) and JPEG (libjpeg-turbo), chosen by file extension.
 * Writes go through a temporary file and a rename (core/fileutil), so a failed write never leaves
 * a half-written image where the user's file was. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include <stdint.h>

#include "error.h"

typedef struct {
    int width, height;
    uint8_t *rgb; /* [height][width][3] */
} sd_image;

/* Reads a PNG or JPEG (by content, not extension) as 8-bit RGB: grey is expanded, alpha dropped
 * (composited on nothing: the colour channels are kept), 16-bit reduced. */
sd_status image_read(const char *path, sd_image *out);

/* Writes .png or .jpg/.jpeg (case-insensitive extension; anything else is SD_ERR_ARG).
 * `text` is an optional list of n_text key/value pairs stored as PNG tEXt chunks (ignored for
 * JPEG, which stores none); quality is used for JPEG only (1..100). */
sd_status image_write(const char *path, const sd_image *img, const char *const *text, int n_text,
                      int quality);

void image_free(sd_image *img);

/* Converts a [h][w][3] float image in [-1, 1] (the VAE's output) into 8-bit pixels the way
 * diffusers does: (x / 2 + 0.5).clamp(0, 1), then (v * 255).round() (ties to even, like numpy). */
void image_from_float(const float *x, int width, int height, uint8_t *rgb);

/* The reverse for encoding: 8-bit RGB to floats in [-1, 1] (v / 255 * 2 - 1), [h][w][3]. */
void image_to_float(const uint8_t *rgb, int width, int height, float *x);

#endif
