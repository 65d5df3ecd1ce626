/* The built-in bitmap font and the labelled grid of sd-compare (cli/common/font, cli/common/grid):
 * glyphs complete and distinct, text drawn crisp at 1x and 2x, and the grid's documented geometry
 * (size, where each image and label goes) checked pixel for pixel. */
#include <stdlib.h>
#include <string.h>

#include "../cli/common/font.h"
#include "../cli/common/grid.h"
#include "test.h"

static const uint8_t bg[3] = {24, 24, 24}, ink[3] = {230, 230, 230};

static const uint8_t *px(const sd_image *im, int x, int y) {
    return im->rgb + ((size_t)y * im->width + x) * 3;
}

static bool is(const uint8_t *p, const uint8_t c[3]) { return !memcmp(p, c, 3); }

static void test_glyphs(void) {
    int empty = 0, dup = 0, below = 0;
    char below_chars[32] = "";
    for (int c = 0x20; c < 0x7f; c++) {
        int set = 0;
        for (int y = 0; y < FONT_GLYPH_H; y++)
            for (int x = 0; x < FONT_GLYPH_W; x++) set += font_pixel((unsigned char)c, x, y);
        empty += (set == 0) != (c == ' ');
        int desc = 0;
        for (int y = 7; y < FONT_GLYPH_H; y++)
            for (int x = 0; x < FONT_GLYPH_W; x++) desc += font_pixel((unsigned char)c, x, y);
        if (desc && below < 30) below_chars[below++] = (char)c;
        for (int d = 0x20; d < c; d++) {
            int same = 1;
            for (int y = 0; y < FONT_GLYPH_H && same; y++)
                for (int x = 0; x < FONT_GLYPH_W; x++)
                    same &= font_pixel((unsigned char)c, x, y) == font_pixel((unsigned char)d, x, y);
            if (same) printf("glyphs '%c' and '%c' are identical\n", c, d), dup++;
        }
    }
    CHECK(empty == 0, "every printable glyph but space draws something (%d do not)", empty);
    CHECK(dup == 0, "the 95 glyphs are distinct (%d pairs alike)", dup);
    /* Only descenders reach below the baseline (rows 7 and 8). */
    CHECK(!strcmp(below_chars, ",;gjpqy"), "characters below the baseline: '%s'", below_chars);
    /* An independent shape: 'L' is its left column (rows 0..6) and its bottom row. */
    int l_ok = 1;
    for (int y = 0; y < FONT_GLYPH_H; y++)
        for (int x = 0; x < FONT_GLYPH_W; x++)
            l_ok &= font_pixel('L', x, y) == ((x == 0 && y < 7) || (y == 6 && x < 5));
    CHECK(l_ok, "the glyph of 'L'");
    int q_same = 1;
    for (int y = 0; y < FONT_GLYPH_H; y++)
        for (int x = 0; x < FONT_GLYPH_W; x++)
            q_same &= font_pixel(0x07, x, y) == font_pixel('?', x, y) &&
                      font_pixel(0xc3, x, y) == font_pixel('?', x, y);
    CHECK(q_same, "control and non-ASCII bytes draw as '?'");
    CHECK(font_text_chars("caf\xc3\xa9 \xe2\x9c\x93") == 6, "UTF-8: one character per code point");
    CHECK(font_text_width("abc", 2) == 3 * 6 * 2, "text width");
}

/* Text at scale 1 and 2: only background and ink, every font pixel a uniform scale x scale block
 * at the documented place, and nothing drawn outside the text's box. */
static void test_draw(void) {
    for (int s = 1; s <= 2; s++) {
        sd_image im;
        CHECK_OK(image_alloc(&im, 40 * s, 16 * s));
        for (size_t i = 0; i < (size_t)im.width * im.height; i++) memcpy(im.rgb + i * 3, bg, 3);
        const char *text = "Ag1";
        const int x0 = 3, y0 = 2;
        font_draw(&im, x0, y0, text, s, ink);
        int wrong = 0;
        for (int y = 0; y < im.height; y++)
            for (int x = 0; x < im.width; x++) {
                int gx = x - x0, gy = y - y0, ch = gx / (6 * s), want = 0;
                if (gx >= 0 && gy >= 0 && ch < 3)
                    want = font_pixel((unsigned char)text[ch], (gx % (6 * s)) / s, gy / s);
                wrong += !is(px(&im, x, y), want ? ink : bg);
            }
        CHECK(wrong == 0, "scale %d: %d pixels differ from the glyphs", s, wrong);
        /* Clipped at every edge without writing outside the image (ASan watches). */
        font_draw(&im, -7, -5, "clip", s, ink);
        font_draw(&im, im.width - 4, im.height - 3, "clip", s, ink);
        image_free(&im);
    }
}

static void fill_pattern(sd_image *im, int w, int h, int seed) {
    CHECK_OK(image_alloc(im, w, h));
    for (size_t i = 0; i < (size_t)w * h * 3; i++) im->rgb[i] = (uint8_t)(i * 7 + seed * 31);
}

static void test_grid_layout(void) {
    enum { R = 2, C = 3, W = 20, H = 10 };
    sd_image imgs[R * C];
    grid_cell cells[R * C];
    memset(cells, 0, sizeof cells);
    const char *names[C] = {"a", "longer_name", "b"};
    for (int i = 0; i < R * C; i++) {
        fill_pattern(&imgs[i], W, H, i);
        cells[i].image = i == 4 ? NULL : &imgs[i]; /* one empty cell */
        cells[i].label[0] = names[i % C];
        cells[i].label[1] = i < C ? "2 steps" : NULL;
    }
    sd_image g;
    CHECK_OK(grid_render(&(grid_spec){R, C, cells, "title", 0}, &g));
    /* s = 1: pad 4, line 11, 2 label lines, cell_w = max(20, 6 * 11 ("longer_name")) = 66. */
    const int pad = 4, line = 11, L = 2, cell_w = 66, row_h = L * line + H + pad;
    const int want_w = pad + C * (cell_w + pad), want_h = pad + line + R * row_h;
    CHECK(g.width == want_w && g.height == want_h, "grid size %dx%d, want %dx%d", g.width, g.height,
          want_w, want_h);
    if (g.width == want_w && g.height == want_h) {
        int misplaced = 0, empty_ok = 1, labels = 0;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                const int x = pad + c * (cell_w + pad), y = pad + line + r * row_h;
                const int ix = x + (cell_w - W) / 2, iy = y + L * line;
                for (int yy = 0; yy < H; yy++)
                    for (int xx = 0; xx < W; xx++) {
                        if (r * C + c == 4) empty_ok &= is(px(&g, ix + xx, iy + yy), bg);
                        else misplaced += memcmp(px(&g, ix + xx, iy + yy), px(&imgs[r * C + c], xx, yy), 3) != 0;
                    }
                for (int yy = y; yy < y + line; yy++) /* the first label line has ink */
                    for (int xx = x; xx < x + cell_w; xx++) labels += is(px(&g, xx, yy), ink);
            }
        CHECK(misplaced == 0, "every image at its documented place (%d pixels differ)", misplaced);
        CHECK(empty_ok, "an empty cell stays background");
        CHECK(labels > 0, "labels drawn");
        int title = 0;
        for (int yy = pad; yy < pad + line; yy++)
            for (int xx = 0; xx < g.width; xx++) title += is(px(&g, xx, yy), ink);
        CHECK(title > 0, "title drawn");
        CHECK(is(px(&g, 0, 0), bg) && is(px(&g, g.width - 1, g.height - 1), bg), "background corners");
    }
    image_free(&g);

    /* A long title is cut to fit inside the padding; wide images switch to scale 2. */
    char title[400];
    memset(title, 'W', sizeof title - 1);
    title[sizeof title - 1] = '\0';
    CHECK_OK(grid_render(&(grid_spec){R, C, cells, title, 0}, &g));
    int beyond = 0;
    for (int yy = 0; yy < 4 + 11; yy++)
        for (int xx = g.width - 4; xx < g.width; xx++) beyond += is(px(&g, xx, yy), ink);
    CHECK(beyond == 0, "a long title stops before the right padding");
    image_free(&g);
    sd_image wide;
    fill_pattern(&wide, 256, 8, 1);
    grid_cell one = {&wide, {"x", NULL}};
    CHECK_OK(grid_render(&(grid_spec){1, 1, &one, NULL, 0}, &g));
    CHECK(g.width == 8 + 256 + 8 && g.height == 8 + 22 + 8 + 8,
          "scale 2 for 256-pixel images: %dx%d", g.width, g.height);
    image_free(&g);
    image_free(&wide);
    CHECK(grid_render(&(grid_spec){0, 1, &one, NULL, 0}, &g) == SD_ERR_ARG, "0 rows is an error");
    for (int i = 0; i < R * C; i++) image_free(&imgs[i]);
}

int main(void) {
    test_glyphs();
    test_draw();
    test_grid_layout();
    return test_summary();
}
