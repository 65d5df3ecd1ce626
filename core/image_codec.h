/* Internal to core/image*.c: the codecs behind image_read / image_write. Each decoder works on
 * the whole file in memory and names `path` in its errors; each encoder streams into an open
 * sd_file_writer and leaves committing or aborting it to the caller. */
#ifndef SD_IMAGE_CODEC_H
#define SD_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "fileutil.h"
#include "image.h"

/* libjpeg's largest side (JPEG_MAX_DIMENSION, not in its public header). */
#define JPEG_MAX_SIDE 65500

/* Checks a decoded size against IMAGE_MAX_SIDE / IMAGE_MAX_PIXELS; the error names `path`. */
sd_status image_check_size(const char *path, long long width, long long height);

/* Decodes a PNG to 8-bit RGB. *orientation gets the eXIf chunk's EXIF orientation (1 when absent).
 * With text_key set, *text_value gets that key's text (malloc'd UTF-8) or NULL. */
sd_status image_png_decode(const char *path, const uint8_t *data, size_t len, sd_image *out,
                           int *orientation, const char *text_key, char **text_value);
/* Validates image_write's text list (PNG keywords, UTF-8 values); errors name `path` and the key.
 */
sd_status image_png_check_text(const char *path, const char *const *text, int n_text);
sd_status image_png_encode(const char *path, sd_file_writer *w, const sd_image *img,
                           const char *const *text, int n_text);

/* Decodes a baseline or progressive JPEG (grey, YCbCr or RGB) to 8-bit RGB; *orientation as above
 * from an APP1 Exif segment. */
sd_status image_jpeg_decode(const char *path, const uint8_t *data, size_t len, sd_image *out,
                            int *orientation);
sd_status image_jpeg_encode(const char *path, sd_file_writer *w, const sd_image *img, int quality);

/* The orientation tag (1..8) of a TIFF-structured EXIF block (starting at the byte-order mark,
 * after any "Exif\0\0" prefix); 1 when absent or malformed, as there is nothing to undo. */
int image_exif_orientation(const uint8_t *tiff, size_t len);

/* Rotates/mirrors `img` in place (new buffer) so that it displays upright, as
 * PIL.ImageOps.exif_transpose does for orientations 2..8. */
sd_status image_apply_orientation(sd_image *img, int orientation);

#endif
