#include "grid.h"

#include <stdlib.h>
#include <string.h>

#include "font.h"
#include "util.h"

static const uint8_t background[3] = {24, 24, 24}, ink[3] = {230, 230, 230};

static int max_i(int a, int b) { return a > b ? a : b; }

/* The title cut to at most `chars` characters, ending in "..." when cut (malloc'd). */
static char *fit_title(const char *title, int chars) {
    if (font_text_chars(title) <= chars) return strdup(title);
    if (chars < 3) return strdup("");
    size_t len = strlen(title), bytes = 0;
    int kept = 0;
    /* Keep whole UTF-8 sequences: advance to the start of the next code point each time. */
    while (bytes < len && kept < chars - 3) {
        bytes++;
        while (bytes < len && ((unsigned char)title[bytes] & 0xc0) == 0x80) bytes++;
        kept++;
    }
    char *s = malloc(bytes + 4);
    if (!s) return NULL;
    memcpy(s, title, bytes);
    memcpy(s + bytes, "...", 4);
    return s;
}

sd_status grid_render(const grid_spec *spec, sd_image *out) {
    memset(out, 0, sizeof *out);
    if (spec->rows < 1 || spec->cols < 1)
        return cli_fail(SD_ERR_ARG, "grid: %d x %d cells", spec->rows, spec->cols);
    const int n = spec->rows * spec->cols;
    int img_w = 0, img_h = 0, lines = 0, label_chars = 0;
    for (int i = 0; i < n; i++) {
        const grid_cell *c = &spec->cells[i];
        if (c->image) img_w = max_i(img_w, c->image->width), img_h = max_i(img_h, c->image->height);
        for (int k = 0; k < GRID_MAX_LINES && c->label[k]; k++) {
            lines = max_i(lines, k + 1);
            label_chars = max_i(label_chars, font_text_chars(c->label[k]));
        }
    }
    const int s = spec->scale > 0 ? spec->scale : img_w >= 256 ? 2 : 1;
    const int pad = 4 * s, line = FONT_LINE * s, title_h = spec->title ? line : 0;
    const int cell_w = max_i(img_w, label_chars * FONT_ADVANCE * s);
    const int row_h = lines * line + img_h + pad;
    const long width = pad + (long)spec->cols * (cell_w + pad);
    const long height = pad + title_h + (long)spec->rows * row_h;
    if (width > SD_IMAGE_MAX_SIDE || height > SD_IMAGE_MAX_SIDE)
        return cli_fail(SD_ERR_ARG, "grid: %ld x %ld pixels is too large for an image", width,
                        height);
    CLI_TRY(sd_image_alloc(out, (int)width, (int)height));
    for (size_t i = 0; i < (size_t)width * height; i++) memcpy(out->rgb + i * 3, background, 3);
    if (spec->title) {
        char *t = fit_title(spec->title, (int)(width - 2 * pad) / (FONT_ADVANCE * s));
        if (!t) {
            sd_image_free(out);
            return cli_fail(SD_ERR_NOMEM, "grid: out of memory");
        }
        font_draw(out, pad, pad, t, s, ink);
        free(t);
    }
    for (int r = 0; r < spec->rows; r++)
        for (int col = 0; col < spec->cols; col++) {
            const grid_cell *c = &spec->cells[r * spec->cols + col];
            const int x = pad + col * (cell_w + pad), y = pad + title_h + r * row_h;
            for (int k = 0; k < GRID_MAX_LINES && c->label[k]; k++)
                font_draw(out, x, y + k * line, c->label[k], s, ink);
            const sd_image *im = c->image;
            if (!im) continue;
            const int x0 = x + (cell_w - im->width) / 2, y0 = y + lines * line;
            for (int row = 0; row < im->height; row++)
                memcpy(out->rgb + ((size_t)(y0 + row) * width + x0) * 3,
                       im->rgb + (size_t)row * im->width * 3, (size_t)im->width * 3);
        }
    return SD_OK;
}
