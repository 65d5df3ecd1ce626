/* Image reading of what image_write never produces: PNG colour types and bit depths, palettes,
 * interlacing, text chunks and eXIf written by libpng directly, grey and EXIF-rotated JPEGs
 * written by libjpeg directly. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "../core/image.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* A PNG written by libpng itself, to reach colour types and depths image_write never makes. */
typedef struct {
    int depth, ctype, interlace;
    const png_color *palette;
    int n_palette;
    const uint8_t *trns; /* palette alpha, or NULL */
    const png_color_16 *trns_color;
    const uint8_t *exif;
    int n_exif;
    const png_text *texts;
    int n_texts;
} raw_png;

static void write_png_raw(const char *path, int w, int h, const raw_png *o, const uint8_t *rows,
                          size_t row_bytes) {
    FILE *fp = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        CHECK(0, "libpng could not write %s", path);
    } else {
        png_init_io(png, fp);
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, o->depth, o->ctype, o->interlace,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        if (o->palette) png_set_PLTE(png, info, o->palette, o->n_palette);
        if (o->trns || o->trns_color)
            png_set_tRNS(png, info, o->trns, o->trns ? o->n_palette : 1, o->trns_color);
        if (o->exif) png_set_eXIf_1(png, info, (png_uint_32)o->n_exif, (png_bytep)o->exif);
        if (o->texts) png_set_text(png, info, o->texts, o->n_texts);
        png_write_info(png, info);
        int passes = png_set_interlace_handling(png);
        for (int p = 0; p < passes; p++)
            for (int y = 0; y < h; y++) png_write_row(png, rows + (size_t)y * row_bytes);
        png_write_end(png, NULL);
    }
    png_destroy_write_struct(&png, &info);
    fclose(fp);
}

static void expect_pixels(const char *what, const char *path, int w, int h, const uint8_t *want) {
    sd_image img;
    sd_status st = image_read(path, &img);
    CHECK(st == SD_OK, "%s: %s", what, sd_last_error());
    if (st != SD_OK) return;
    int same = img.width == w && img.height == h && memcmp(img.rgb, want, (size_t)w * h * 3) == 0;
    CHECK(same, "%s: got %dx%d, first pixel %d,%d,%d want %d,%d,%d", what, img.width, img.height,
          img.rgb[0], img.rgb[1], img.rgb[2], want[0], want[1], want[2]);
    image_free(&img);
}

static void test_png_variants(void) {
    uint8_t rows[512], want[512];
    const char *path = tmp("variant.png");

    raw_png grey8 = {.depth = 8, .ctype = PNG_COLOR_TYPE_GRAY};
    for (int i = 0; i < 15; i++) rows[i] = (uint8_t)(i * 17), memset(want + 3 * i, i * 17, 3);
    write_png_raw(path, 5, 3, &grey8, rows, 5);
    expect_pixels("grey 8-bit", path, 5, 3, want);

    png_color_16 grey_key = {.gray = 34};
    raw_png grey8t = {.depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .trns_color = &grey_key};
    write_png_raw(path, 5, 3, &grey8t, rows, 5);
    expect_pixels("grey 8-bit with a transparent key (ignored)", path, 5, 3, want);

    raw_png grey1 = {.depth = 1, .ctype = PNG_COLOR_TYPE_GRAY};
    rows[0] = 0xA5, rows[1] = 0x40, rows[2] = 0x3C, rows[3] = 0x80; /* 10 pixels a row */
    const char *bits = "1010010101"
                       "0011110010";
    for (int i = 0; i < 20; i++) memset(want + 3 * i, bits[i] == '1' ? 255 : 0, 3);
    write_png_raw(path, 10, 2, &grey1, rows, 2);
    expect_pixels("grey 1-bit", path, 10, 2, want);

    raw_png grey4 = {.depth = 4, .ctype = PNG_COLOR_TYPE_GRAY};
    const uint8_t nib[10] = {0, 1, 2, 3, 15, 14, 7, 8, 9, 10};
    memset(rows, 0, 6);
    for (int i = 0; i < 10; i++) {
        rows[(i / 5) * 3 + (i % 5) / 2] |= (uint8_t)(nib[i] << ((i % 5) % 2 ? 0 : 4));
        memset(want + 3 * i, nib[i] * 17, 3);
    }
    write_png_raw(path, 5, 2, &grey4, rows, 3);
    expect_pixels("grey 4-bit", path, 5, 2, want);

    raw_png grey16 = {.depth = 16, .ctype = PNG_COLOR_TYPE_GRAY};
    for (int i = 0; i < 6; i++) {
        rows[2 * i] = (uint8_t)(40 * i + 3), rows[2 * i + 1] = (uint8_t)(255 - i); /* big-endian */
        memset(want + 3 * i, 40 * i + 3, 3);
    }
    write_png_raw(path, 3, 2, &grey16, rows, 6);
    expect_pixels("grey 16-bit keeps the high byte", path, 3, 2, want);

    raw_png ga8 = {.depth = 8, .ctype = PNG_COLOR_TYPE_GRAY_ALPHA};
    for (int i = 0; i < 6; i++) {
        rows[2 * i] = (uint8_t)(200 - 30 * i), rows[2 * i + 1] = (uint8_t)(i * 50);
        memset(want + 3 * i, 200 - 30 * i, 3);
    }
    write_png_raw(path, 3, 2, &ga8, rows, 6);
    expect_pixels("grey+alpha: alpha dropped", path, 3, 2, want);

    raw_png rgba8 = {.depth = 8, .ctype = PNG_COLOR_TYPE_RGBA};
    for (int i = 0; i < 6; i++) {
        for (int c = 0; c < 3; c++) rows[4 * i + c] = want[3 * i + c] = (uint8_t)(i * 40 + c * 7);
        rows[4 * i + 3] = (uint8_t)(i == 0 ? 0 : 128); /* colour kept even where fully clear */
    }
    write_png_raw(path, 3, 2, &rgba8, rows, 12);
    expect_pixels("RGBA 8-bit: colour kept, alpha dropped", path, 3, 2, want);

    raw_png rgb16 = {.depth = 16, .ctype = PNG_COLOR_TYPE_RGB};
    raw_png rgba16 = {.depth = 16, .ctype = PNG_COLOR_TYPE_RGBA};
    for (int a = 0; a < 2; a++) {
        int ch = a ? 4 : 3;
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < ch; c++) {
                rows[2 * (ch * i + c)] = (uint8_t)(i * 41 + c * 5);
                rows[2 * (ch * i + c) + 1] = 0xFF;
                if (c < 3) want[3 * i + c] = (uint8_t)(i * 41 + c * 5);
            }
        write_png_raw(path, 3, 2, a ? &rgba16 : &rgb16, rows, (size_t)6 * ch);
        expect_pixels(a ? "RGBA 16-bit" : "RGB 16-bit", path, 3, 2, want);
    }

    const png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {250, 128, 3}};
    const uint8_t pal_alpha[4] = {255, 0, 128, 255};
    raw_png pal8 = {.depth = 8,
                    .ctype = PNG_COLOR_TYPE_PALETTE,
                    .palette = pal,
                    .n_palette = 4,
                    .trns = pal_alpha};
    const uint8_t idx[8] = {3, 2, 1, 0, 0, 1, 2, 3};
    for (int i = 0; i < 8; i++) {
        rows[i] = idx[i];
        want[3 * i] = pal[idx[i]].red, want[3 * i + 1] = pal[idx[i]].green;
        want[3 * i + 2] = pal[idx[i]].blue;
    }
    write_png_raw(path, 4, 2, &pal8, rows, 4);
    expect_pixels("palette 8-bit with tRNS", path, 4, 2, want);
    raw_png pal2 = {.depth = 2, .ctype = PNG_COLOR_TYPE_PALETTE, .palette = pal, .n_palette = 4};
    rows[0] = 3 << 6 | 2 << 4 | 1 << 2 | 0, rows[1] = 0 << 6 | 1 << 4 | 2 << 2 | 3;
    write_png_raw(path, 8, 1, &pal2, rows, 2);
    expect_pixels("palette 2-bit", path, 8, 1, want);

    raw_png inter = {.depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .interlace = PNG_INTERLACE_ADAM7};
    for (int i = 0; i < 9 * 9 * 3; i++) rows[i] = want[i] = (uint8_t)(i * 7 + 1);
    write_png_raw(path, 9, 9, &inter, rows, 27);
    expect_pixels("RGB interlaced (Adam7)", path, 9, 9, want);

    /* zTXt, and tEXt carrying Latin-1 (0xE9 is e-acute), come back as UTF-8. */
    char k1[] = "parameters", v1[] = "steps: 4", k2[] = "Title", v2[] = "caf\xe9";
    png_text texts[2] = {{.compression = PNG_TEXT_COMPRESSION_zTXt, .key = k1, .text = v1},
                         {.compression = PNG_TEXT_COMPRESSION_NONE, .key = k2, .text = v2}};
    texts[0].text_length = strlen(v1), texts[1].text_length = strlen(v2);
    raw_png texted = {.depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .texts = texts, .n_texts = 2};
    write_png_raw(path, 5, 3, &texted, rows, 5);
    char *v = NULL;
    CHECK_OK(image_read_png_text(path, "parameters", &v));
    CHECK(v && strcmp(v, "steps: 4") == 0, "zTXt read back: '%s'", v ? v : "(null)");
    free(v);
    CHECK_OK(image_read_png_text(path, "Title", &v));
    CHECK(v && strcmp(v, "caf\xc3\xa9") == 0, "Latin-1 tEXt converted to UTF-8");
    free(v);
}

/* ---- EXIF orientation ---- */

/* A TIFF block with one IFD0 entry: the orientation (SHORT), little- or big-endian. */
static size_t make_exif(uint8_t *out, int orientation, int big, int prefix) {
    size_t o = 0;
    if (prefix) memcpy(out, "Exif\0\0", 6), o = 6;
    const uint8_t le[] = {
        'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, (uint8_t)orientation,
        0,   0,   0,  0, 0, 0, 0, 0, 0};
    const uint8_t be[] = {'M',  'M',  0, 42, 0, 0, 0, 8, 0, 1,
                          0x01, 0x12, 0, 3,  0, 0, 0, 1, 0, (uint8_t)orientation,
                          0,    0,    0, 0,  0, 0, 0, 0};
    memcpy(out + o, big ? be : le, sizeof le);
    return o + sizeof le;
}

static void test_exif_png(void) {
    /* Pixels a..f of a 3x2 picture, and the upright layouts EXIF's eight orientations call for
     * (orientation 6: the stored top row is the displayed right column, and so on). */
    // clang-format off
    static const char *const layouts[9] = {
        NULL,
        "abc" "def",      /* 1: as stored */
        "cba" "fed",      /* 2: mirrored left-right */
        "fed" "cba",      /* 3: half turn */
        "def" "abc",      /* 4: mirrored top-bottom */
        "ad" "be" "cf",   /* 5: transposed */
        "da" "eb" "fc",   /* 6: quarter turn clockwise */
        "fc" "eb" "da",   /* 7: transposed across the other diagonal */
        "cf" "be" "ad",   /* 8: quarter turn counter-clockwise */
    };
    // clang-format on
    uint8_t rows[18], want[18], exif[64];
    for (int i = 0; i < 6; i++)
        for (int c = 0; c < 3; c++) rows[3 * i + c] = (uint8_t)('a' + i + 40 * c);
    for (int o = 1; o <= 8; o++) {
        size_t n = make_exif(exif, o, o % 2 == 0, 0);
        raw_png p = {.depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .exif = exif, .n_exif = (int)n};
        write_png_raw(tmp("exif.png"), 3, 2, &p, rows, 9);
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < 3; c++) want[3 * i + c] = (uint8_t)(layouts[o][i] + 40 * c);
        char what[64];
        snprintf(what, sizeof what, "PNG eXIf orientation %d", o);
        int swap = o >= 5;
        expect_pixels(what, tmp("exif.png"), swap ? 2 : 3, swap ? 3 : 2, want);
    }
    /* An IFD offset past the end is ignored, not followed. */
    size_t n = make_exif(exif, 6, 0, 0);
    exif[4] = 200;
    raw_png p = {.depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .exif = exif, .n_exif = (int)n};
    write_png_raw(tmp("exif.png"), 3, 2, &p, rows, 9);
    expect_pixels("malformed eXIf ignored", tmp("exif.png"), 3, 2, rows);
}

/* A JPEG written by libjpeg itself: grey or RGB, with an optional APP1 Exif segment. */
static void write_jpeg_raw(const char *path, int w, int h, int grey, const uint8_t *px,
                           const uint8_t *exif, size_t n_exif) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    FILE *fp = fopen(path, "wb");
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, fp);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = grey ? 1 : 3;
    c.in_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (exif) jpeg_write_marker(&c, JPEG_APP0 + 1, exif, (unsigned)n_exif);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)(px + (size_t)c.next_scanline * w * c.input_components);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(fp);
}

static int near(const uint8_t *p, int r, int g, int b, int tol) {
    return abs(p[0] - r) <= tol && abs(p[1] - g) <= tol && abs(p[2] - b) <= tol;
}

static void test_exif_jpeg(void) {
    /* 16x8, left half red, right half blue; orientation 6 turns it a quarter clockwise, so the
     * left half becomes the top. */
    uint8_t px[16 * 8 * 3], exif[64];
    for (int i = 0; i < 16 * 8; i++) {
        int left = i % 16 < 8;
        px[3 * i] = left ? 255 : 0, px[3 * i + 1] = 0, px[3 * i + 2] = left ? 0 : 255;
    }
    size_t n = make_exif(exif, 6, 1, 1);
    write_jpeg_raw(tmp("exif.jpg"), 16, 8, 0, px, exif, n);
    sd_image img;
    CHECK_OK(image_read(tmp("exif.jpg"), &img));
    CHECK(img.width == 8 && img.height == 16, "JPEG orientation 6: %dx%d, want 8x16", img.width,
          img.height);
    if (img.width == 8 && img.height == 16)
        CHECK(near(img.rgb + (3 * 8 + 4) * 3, 255, 0, 0, 40) &&
                  near(img.rgb + (12 * 8 + 4) * 3, 0, 0, 255, 40),
              "JPEG orientation 6: red on top, blue below");
    image_free(&img);
}

static void test_grey_jpeg(void) {
    sd_image got;
    uint8_t grey[24 * 16];
    for (int i = 0; i < 24 * 16; i++) grey[i] = (uint8_t)(i % 24 * 10);
    write_jpeg_raw(tmp("grey.jpg"), 24, 16, 1, grey, NULL, 0);
    CHECK_OK(image_read(tmp("grey.jpg"), &got));
    int ok = got.width == 24 && got.height == 16;
    for (int i = 0; ok && i < 24 * 16; i++)
        ok = got.rgb[3 * i] == got.rgb[3 * i + 1] && got.rgb[3 * i] == got.rgb[3 * i + 2] &&
             abs(got.rgb[3 * i] - grey[i]) <= 8;
    CHECK(ok, "grey JPEG expands to R=G=B close to the source");
    image_free(&got);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-image-formats-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    test_png_variants();
    test_exif_png();
    test_exif_jpeg();
    test_grey_jpeg();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
