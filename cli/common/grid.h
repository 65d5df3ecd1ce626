/* A labelled contact sheet: images in rows and columns, each with a few lines of text above it,
 * and an optional title line, drawn with the built-in font (cli/common/font.h).
 *
 * Geometry, in pixels, with s the scale (FONT_ADVANCE = 6, FONT_LINE = 11):
 *   pad = 4s, line = 11s, L = the most label lines any cell has,
 *   cell_w = max(widest image, 6s x the longest label line in characters), img_h = tallest image,
 *   title_h = line when there is a title, else 0,
 *   width  = pad + cols * (cell_w + pad),
 *   height = pad + title_h + rows * (L * line + img_h + pad).
 * Cell (r, c) starts at x = pad + c * (cell_w + pad), y = pad + title_h + r * (L * line + img_h +
 * pad); its label line i is drawn at (x, y + i * line), its image at (x + (cell_w - w) / 2,
 * y + L * line). The title, at (pad, pad), is shortened with "..." to fit. */
#ifndef SD_CLI_GRID_H
#define SD_CLI_GRID_H

#include "../../include/sd.h"

#define GRID_MAX_LINES 4

typedef struct {
    const sd_image *image;             /* NULL: an empty cell */
    const char *label[GRID_MAX_LINES]; /* lines, NULL after the last */
} grid_cell;

typedef struct {
    int rows, cols;
    const grid_cell *cells; /* [rows][cols] */
    const char *title;      /* NULL: none */
    int scale;              /* 0: 2 when the widest image is at least 256 pixels wide, else 1 */
} grid_spec;

/* Renders the sheet into *out (allocated here; image_free it). */
sd_status grid_render(const grid_spec *spec, sd_image *out);

#endif
