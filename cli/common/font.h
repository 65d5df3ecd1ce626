/* A built-in bitmap font for printable ASCII, drawn crisp (no smoothing) at an integer scale, so
 * the tools can label images without a font library. Glyphs are 5x7 above the baseline with two
 * more rows below it for the descenders of g j p q y (and , ;): 5x9 cells. */
#ifndef SD_CLI_FONT_H
#define SD_CLI_FONT_H

#include <stdbool.h>
#include <stdint.h>

#include "../../include/sd.h"

#define FONT_GLYPH_W 5
#define FONT_GLYPH_H 9 /* 7 rows down to the baseline, 2 for descenders */
#define FONT_ADVANCE 6 /* glyph plus one blank column */
#define FONT_LINE 11   /* glyph plus two blank rows */

/* Whether pixel (x, y) of the glyph for byte c is set (x < FONT_GLYPH_W, y < FONT_GLYPH_H). Bytes
 * outside printable ASCII use the '?' glyph. */
bool font_pixel(unsigned char c, int x, int y);

/* Characters drawn for a UTF-8 text: one per code point (those outside ASCII are drawn as '?'). */
int font_text_chars(const char *text);

/* Width in pixels: font_text_chars(text) * FONT_ADVANCE * scale. */
int font_text_width(const char *text, int scale);

/* Draws text with its top-left corner at (x, y), each font pixel as a scale x scale block of
 * `rgb`; whatever falls outside the image is clipped. */
void font_draw(sd_image *img, int x, int y, const char *text, int scale, const uint8_t rgb[3]);

#endif
