/* Image I/O: the float -> 8-bit rule against every fixture PNG, PNG and JPEG round trips, text
 * chunks, PNG colour types and bit depths written with libpng directly, EXIF orientation, and
 * bad files / bad writes (errors that name the file, nothing left behind). */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    char *buf = NULL;
    if (sd_read_file(path, &buf, len) != SD_OK) CHECK(0, "read %s: %s", path, sd_last_error());
    return (uint8_t *)buf;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, len, fp) != len) CHECK(0, "cannot write %s", path);
    if (fp) fclose(fp);
}

/* Any "<name>.tmp-<pid>" left in the scratch folder means a failed write did not clean up. */
static int temp_files_left(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

static void random_image(sd_image *img, int w, int h, uint64_t seed) {
    CHECK_OK(image_alloc(img, w, h));
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        img->rgb[i] = (uint8_t)(seed >> 56);
    }
}

/* ---- the float -> 8-bit rule ---- */

/* Each <run>-<k>.png is image[k] of <run>.safetensors as (image * 255).round(). The VAE output
 * x satisfies image = (x/2 + 0.5).clamp(0, 1), so feeding 2*image - 1 to image_from_float must
 * give the PNG back, except where the float round trip (2t - 1)/2 + 0.5 != t moved a value across
 * a rounding boundary: such pixels may be one level off, any other difference is a bug. */
static void check_fixture_png(const char *dir, const char *name, int *covered) {
    char run[256], path[768], st_name[320];
    snprintf(run, sizeof run, "%s", name);
    run[strlen(run) - 4] = '\0';
    char *dash = strrchr(run, '-');
    if (!dash) return;
    *dash = '\0';
    const char *suffix = dash + 1;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(st_name, sizeof st_name, "sd15-tiny/expected/%s.safetensors", run);
    int64_t shape[8];
    float *t = fixture_tensor(st_name, "image", shape, NULL);
    sd_image img;
    CHECK_OK(image_read(path, &img));
    if (!t || !img.rgb) goto done;
    int64_t b = shape[0], h = shape[1], w = shape[2];
    CHECK(img.width == w && img.height == h, "%s: %dx%d, fixture image %lldx%lld", name, img.width,
          img.height, (long long)w, (long long)h);
    if (img.width != w || img.height != h) goto done;
    size_t n = (size_t)w * h * 3;
    char *end;
    long k = strtol(suffix, &end, 10);
    if (*end != '\0') {
        /* An input image of an img2img/inpaint run: its size is the run's output size. */
        if (strcmp(suffix, "mask_image") == 0) {
            int grey = 1, levels = 0, seen[256] = {0};
            for (size_t i = 0; i < n; i += 3) {
                grey &= img.rgb[i] == img.rgb[i + 1] && img.rgb[i] == img.rgb[i + 2];
                levels += !seen[img.rgb[i]]++;
            }
            CHECK(grey && levels >= 2, "%s: grey mask expands to R=G=B (%d levels)", name, levels);
        }
        ++*covered;
        goto done;
    }
    CHECK(k >= 0 && k < b, "%s: batch index %ld of %lld", name, k, (long long)b);
    if (k < 0 || k >= b) goto done;
    const float *tk = t + (size_t)k * n;
    float *x = malloc(n * sizeof *x);
    uint8_t *q = malloc(n);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * tk[i] - 1.0f;
    image_from_float(x, (int)w, (int)h, q);
    /* Ties below an even level are where numpy's rounding differs from rounding half up. */
    int off_by_one = 0, unexplained = 0, ties = 0, even_ties = 0;
    for (size_t i = 0; i < n; i++) {
        float scaled = (float)((double)tk[i] * 255.0);
        if (scaled == floorf(scaled) + 0.5f) ties++, even_ties += (int)floorf(scaled) % 2 == 0;
        if (q[i] == img.rgb[i]) continue;
        int moved = x[i] * 0.5f + 0.5f != tk[i];
        if (abs(q[i] - img.rgb[i]) == 1 && moved)
            off_by_one++;
        else
            unexplained++;
    }
    printf("%-30s %lldx%lld: %d pixels one level off after the 2t-1 round trip; %d exact ties "
           "(%d below an even level)\n",
           name, (long long)w, (long long)h, off_by_one, ties, even_ties);
    CHECK(unexplained == 0, "%s: %d pixels differ beyond the float round trip", name, unexplained);
    CHECK(off_by_one <= 8, "%s: %d one-level differences is more than a handful", name, off_by_one);
    ++*covered;
    free(x);
    free(q);
done:
    free(t);
    image_free(&img);
}

static int is_png_name(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".png") == 0;
}

static void test_fixture_pngs(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", fixture("sd15-tiny/expected"));
    struct dirent **list;
    int n = scandir(dir, &list, is_png_name, alphasort), covered = 0;
    CHECK(n >= 18, "%s: %d PNG fixtures", dir, n);
    for (int i = 0; i < n; i++) {
        check_fixture_png(dir, list[i]->d_name, &covered);
        free(list[i]);
    }
    if (n > 0) free(list);
    CHECK(covered == n, "%d of %d fixture PNGs checked", covered, n);
}

/* numpy rounds halves to even. Find floats v in [0.5, 1] whose float32 product v * 255 is exactly
 * k + 0.5 and check that 2v - 1 (exact there) comes out as the even neighbour. */
static void test_rounding(void) {
    /* One value per channel: 7 values fill a 7x1 image's red channels, the rest is zero. */
    float edge_in[21] = {-1.0f, 1.0f, -3.0f, 3.0f, NAN, 0.0f, -INFINITY};
    uint8_t edge_out[21], edge_want[21] = {0, 255, 0, 255, 0, 128, 0};
    for (int i = 7; i < 21; i++) edge_want[i] = 128;
    image_from_float(edge_in, 7, 1, edge_out);
    for (int i = 0; i < 21; i++)
        CHECK(edge_out[i] == edge_want[i], "from_float(%g) = %d, want %d", edge_in[i], edge_out[i],
              edge_want[i]);
    int found = 0, right = 0;
    for (int k = 128; k < 255; k++) {
        float v = (float)((k + 0.5) / 255.0);
        for (int s = 0; s < 64; s++) v = nextafterf(v, 0.0f);
        for (int s = 0; s < 128; s++, v = nextafterf(v, 2.0f)) {
            if ((float)((double)v * 255.0) != (float)(k + 0.5)) continue;
            float x = 2.0f * v - 1.0f, px[3] = {x, x, x};
            uint8_t got[3];
            image_from_float(px, 1, 1, got);
            found++;
            right += got[0] == (k % 2 == 0 ? k : k + 1);
            break;
        }
    }
    printf("ties k+0.5 found for %d of 127 levels, %d rounded to even\n", found, right);
    CHECK(found >= 60 && right == found, "ties to even: %d of %d", right, found);

    /* Every level as one grey pixel of a 256x1 image. */
    uint8_t levels[256 * 3], back[256 * 3];
    float x[256 * 3];
    for (int i = 0; i < 256 * 3; i++) levels[i] = (uint8_t)(i / 3);
    image_to_float(levels, 256, 1, x);
    int close = 1;
    for (int i = 0; i < 256 * 3; i++) close &= fabs(x[i] - (2.0 * (i / 3) / 255.0 - 1.0)) < 1.2e-7;
    CHECK(close && x[0] == -1.0f && x[255 * 3] == 1.0f, "to_float: v/255*2-1 (x[0]=%g, x[255]=%g)",
          x[0], x[255 * 3]);
    image_from_float(x, 256, 1, back);
    CHECK(memcmp(levels, back, sizeof back) == 0, "from_float(to_float(v)) == v for every level");
}

/* ---- PNG writing and reading ---- */

static void test_png_roundtrip(void) {
    sd_image a, b, got;
    random_image(&a, 37, 23, 1);
    random_image(&b, 10, 7, 2);
    CHECK_OK(image_write(tmp("rt.png"), &a, NULL, 0, 0));
    CHECK_OK(image_read(tmp("rt.png"), &got));
    CHECK(got.width == 37 && got.height == 23 && memcmp(got.rgb, a.rgb, 37 * 23 * 3) == 0,
          "PNG round trip is exact");
    image_free(&got);
    /* Overwriting replaces the file whole, here with a smaller image. */
    CHECK_OK(image_write(tmp("rt.png"), &b, NULL, 0, 0));
    CHECK_OK(image_read(tmp("rt.png"), &got));
    CHECK(got.width == 10 && got.height == 7 && memcmp(got.rgb, b.rgb, 10 * 7 * 3) == 0,
          "overwrite replaces the image");
    image_free(&got);
    CHECK_OK(image_write(tmp("UPPER.PNG"), &a, NULL, 0, 0));
    CHECK_OK(image_read(tmp("UPPER.PNG"), &got));
    CHECK(got.rgb && memcmp(got.rgb, a.rgb, 37 * 23 * 3) == 0, ".PNG is PNG");
    image_free(&got);
    CHECK(temp_files_left() == 0, "no temporary files after successful writes");
    image_free(&a);
    image_free(&b);
}

static int contains(const uint8_t *data, size_t len, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(data + i, needle, n) == 0) return 1;
    return 0;
}

static void test_png_text(void) {
    sd_image a;
    random_image(&a, 8, 8, 3);
    const char *params = "a lighthouse at dawn, watercolor\nNegative prompt: blurry\nSteps: 20, "
                         "Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512";
    const char *utf8 = "caf\xc3\xa9 \xe2\x98\x95 \xe6\x97\xa5\xe6\x9c\xac";
    const char *text[4] = {"parameters", params, "Comment", utf8};
    CHECK_OK(image_write(tmp("text.png"), &a, text, 2, 0));
    char *v = NULL;
    CHECK_OK(image_read_png_text(tmp("text.png"), "parameters", &v));
    CHECK(v && strcmp(v, params) == 0, "parameters read back: '%s'", v ? v : "(null)");
    free(v);
    CHECK_OK(image_read_png_text(tmp("text.png"), "Comment", &v));
    CHECK(v && strcmp(v, utf8) == 0, "UTF-8 text read back: '%s'", v ? v : "(null)");
    free(v);
    CHECK_OK(image_read_png_text(tmp("text.png"), "Software", &v));
    CHECK(v == NULL, "absent key gives NULL");
    free(v);
    /* A1111 and ComfyUI look for a tEXt chunk named "parameters". */
    size_t len;
    uint8_t *raw = read_bytes(tmp("text.png"), &len);
    CHECK(raw && contains(raw, len, "tEXtparameters\0", 15), "ASCII text is a tEXt chunk");
    CHECK(raw && contains(raw, len, "iTXtComment\0", 12), "non-ASCII text is an iTXt chunk");
    free(raw);

    const char *bad_keys[4] = {"", " lead", "two  spaces", "caf\xc3\xa9"};
    for (int i = 0; i < 4; i++) {
        const char *t[2] = {bad_keys[i], "x"};
        sd_status st = image_write(tmp("badkey.png"), &a, t, 1, 0);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "badkey.png"), "bad key '%s' refused: %s",
              bad_keys[i], sd_last_error());
    }
    const char *bad_value[2] = {"k", "\xff\xfe not UTF-8"};
    CHECK(image_write(tmp("badkey.png"), &a, bad_value, 1, 0) == SD_ERR_ARG &&
              strstr(sd_last_error(), "'k'"),
          "invalid UTF-8 refused: %s", sd_last_error());
    CHECK(!sd_file_exists(tmp("badkey.png")), "refused writes create no file");
    CHECK_OK(image_write(tmp("text.jpg"), &a, NULL, 0, 90));
    CHECK(image_read_png_text(tmp("text.jpg"), "parameters", &v) == SD_ERR_FORMAT && !v,
          "PNG text of a JPEG is an error: %s", sd_last_error());
    image_free(&a);
}

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

/* ---- JPEG ---- */

static void test_jpeg(void) {
    sd_image a, got;
    CHECK_OK(image_alloc(&a, 64, 48));
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++) {
            uint8_t *p = a.rgb + (y * 64 + x) * 3;
            p[0] = (uint8_t)(x * 4), p[1] = (uint8_t)(y * 5), p[2] = (uint8_t)(128 + (x - y));
        }
    CHECK_OK(image_write(tmp("q95.jpg"), &a, NULL, 0, 95));
    CHECK_OK(image_read(tmp("q95.jpg"), &got));
    if (got.rgb && got.width == 64 && got.height == 48) {
        int max = 0;
        double sum = 0;
        for (int i = 0; i < 64 * 48 * 3; i++) {
            int d = abs(got.rgb[i] - a.rgb[i]);
            max = d > max ? d : max;
            sum += d;
        }
        printf("JPEG q95 round trip: mean abs diff %.3f, max %d levels\n", sum / (64 * 48 * 3),
               max);
        CHECK(sum / (64 * 48 * 3) < 1.5 && max <= 12, "JPEG q95 close to the original");
    } else {
        CHECK(0, "JPEG round trip size %dx%d", got.width, got.height);
    }
    image_free(&got);
    CHECK_OK(image_write(tmp("q10.JPEG"), &a, NULL, 0, 10));
    CHECK_OK(image_write(tmp("q95.Jpg"), &a, NULL, 0, 95));
    size_t n95, n10;
    free(read_bytes(tmp("q95.jpg"), &n95));
    free(read_bytes(tmp("q10.JPEG"), &n10));
    CHECK(n10 < n95, "quality 10 (%zu bytes) smaller than 95 (%zu)", n10, n95);
    const int bad_q[2] = {0, 101};
    for (int i = 0; i < 2; i++) {
        sd_status st = image_write(tmp("badq.jpg"), &a, NULL, 0, bad_q[i]);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "badq.jpg"), "quality %d refused: %s",
              bad_q[i], sd_last_error());
    }
    CHECK(!sd_file_exists(tmp("badq.jpg")), "refused JPEG write creates no file");

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
    image_free(&a);
}

/* ---- bad files ---- */

static void expect_read_error(const char *what, const char *path, sd_status want,
                              const char *needle) {
    sd_image img = {1, 1, (uint8_t *)&img};
    sd_status st = image_read(path, &img);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    CHECK(st == want && strstr(sd_last_error(), base) &&
              (!needle || strstr(sd_last_error(), needle)),
          "%s: got %s '%s', want %s naming %s%s%s", what, sd_status_name(st), sd_last_error(),
          sd_status_name(want), base, needle ? " and " : "", needle ? needle : "");
    CHECK(img.rgb == NULL && img.width == 0 && img.height == 0, "%s: image left empty", what);
    if (st == SD_OK) image_free(&img);
}

static void test_read_errors(void) {
    expect_read_error("missing file", tmp("nothing-here.png"), SD_ERR_IO, NULL);
    expect_read_error("a folder", tmpdir, SD_ERR_IO, NULL);
    write_bytes(tmp("empty.png"), "", 0);
    expect_read_error("empty file", tmp("empty.png"), SD_ERR_FORMAT, NULL);
    write_bytes(tmp("notes.png"), "just some text\n", 15);
    expect_read_error("text file", tmp("notes.png"), SD_ERR_FORMAT, "not a PNG or JPEG");
    write_bytes(tmp("garbage.png"), "\x89PNG\r\n\x1a\nthis is not a chunk at all....", 38);
    expect_read_error("PNG magic then garbage", tmp("garbage.png"), SD_ERR_FORMAT, "PNG");
    write_bytes(tmp("garbage.jpg"), "\xff\xd8\xff\x01garbage garbage garbage", 27);
    expect_read_error("JPEG magic then garbage", tmp("garbage.jpg"), SD_ERR_FORMAT, "JPEG");

    sd_image a;
    random_image(&a, 64, 64, 4); /* noise: a long IDAT, a long entropy-coded segment */
    CHECK_OK(image_write(tmp("good.png"), &a, NULL, 0, 0));
    CHECK_OK(image_write(tmp("good.jpg"), &a, NULL, 0, 90));
    image_free(&a);
    size_t len;
    uint8_t *png = read_bytes(tmp("good.png"), &len);
    /* Cut inside IHDR, right after it, inside IDAT, before IEND, and by one byte. */
    size_t cuts[5] = {20, 33, len / 2, len - 12, len - 1};
    for (int i = 0; png && i < 5; i++) {
        write_bytes(tmp("cut.png"), png, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "PNG truncated to %zu of %zu bytes", cuts[i], len);
        expect_read_error(what, tmp("cut.png"), SD_ERR_FORMAT, "truncated");
    }
    if (png) {
        png[20] ^= 0x01; /* IHDR width: its CRC no longer matches */
        write_bytes(tmp("crc.png"), png, len);
        expect_read_error("PNG with a bad IHDR CRC", tmp("crc.png"), SD_ERR_FORMAT, "CRC");
        png[20] ^= 0x01;
        png[len / 2] ^= 0x55; /* inside IDAT */
        write_bytes(tmp("crc.png"), png, len);
        expect_read_error("PNG with corrupt image data", tmp("crc.png"), SD_ERR_FORMAT, NULL);
    }
    free(png);

    uint8_t *jpg = read_bytes(tmp("good.jpg"), &len);
    size_t jcuts[3] = {100, len / 2, len - 2};
    for (int i = 0; jpg && i < 3; i++) {
        write_bytes(tmp("cut.jpg"), jpg, jcuts[i]);
        char what[64];
        snprintf(what, sizeof what, "JPEG truncated to %zu of %zu bytes", jcuts[i], len);
        expect_read_error(what, tmp("cut.jpg"), SD_ERR_FORMAT, "truncated");
    }
    for (size_t i = 2; jpg && i + 4 < len; i++) {
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) { /* SOF0: the sample precision follows */
            jpg[i + 4] = 7;
            write_bytes(tmp("sof.jpg"), jpg, len);
            expect_read_error("JPEG with a bad frame header", tmp("sof.jpg"), SD_ERR_FORMAT,
                              "precision");
            break;
        }
    }
    free(jpg);
}

/* ---- bad writes ---- */

static void test_write_errors(void) {
    sd_image a;
    random_image(&a, 6, 4, 5);
    const char *bad_ext[4] = {"out.bmp", "noext", "out.png.txt", "out."};
    for (int i = 0; i < 4; i++) {
        sd_status st = image_write(tmp(bad_ext[i]), &a, NULL, 0, 90);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), bad_ext[i]), "%s refused: %s", bad_ext[i],
              sd_last_error());
        CHECK(!sd_file_exists(tmp(bad_ext[i])), "%s not created", bad_ext[i]);
    }
    sd_status st = image_write(tmp("no-such-dir/out.png"), &a, NULL, 0, 0);
    CHECK(st == SD_ERR_IO && strstr(sd_last_error(), "no-such-dir"), "missing folder named: %s",
          sd_last_error());
    CHECK(!sd_dir_exists(tmp("no-such-dir")), "missing folder not created");

    /* The rename over a folder fails after the data is written: the temporary must go. */
    mkdir(tmp("taken.png"), 0755);
    st = image_write(tmp("taken.png"), &a, NULL, 0, 0);
    CHECK(st == SD_ERR_IO && strstr(sd_last_error(), "taken.png"), "rename failure: %s",
          sd_last_error());
    CHECK(temp_files_left() == 0, "no temporary file left after failed writes");

    /* A refused write leaves an existing file as it was. */
    CHECK_OK(image_write(tmp("keep.jpg"), &a, NULL, 0, 80));
    size_t n0, n1;
    uint8_t *before = read_bytes(tmp("keep.jpg"), &n0);
    CHECK(image_write(tmp("keep.jpg"), &a, NULL, 0, 101) == SD_ERR_ARG, "quality 101 refused");
    uint8_t *after = read_bytes(tmp("keep.jpg"), &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0, "existing file intact");
    free(before);
    free(after);

    sd_image none = {0}, zero = {0, 4, a.rgb};
    CHECK(image_write(tmp("none.png"), &none, NULL, 0, 0) == SD_ERR_ARG, "empty image refused");
    CHECK(image_write(tmp("none.png"), &zero, NULL, 0, 0) == SD_ERR_ARG, "zero width refused");
    CHECK(image_write(tmp("none.png"), NULL, NULL, 0, 0) == SD_ERR_ARG, "NULL image refused");
    sd_image wide;
    CHECK_OK(image_alloc(&wide, 65501, 1));
    CHECK(image_write(tmp("wide.jpg"), &wide, NULL, 0, 90) == SD_ERR_ARG &&
              strstr(sd_last_error(), "65500"),
          "JPEG wider than 65500 refused: %s", sd_last_error());
    image_free(&wide);
    CHECK(image_alloc(&wide, 0, 5) == SD_ERR_ARG && wide.rgb == NULL, "image_alloc(0, 5) refused");
    CHECK(image_alloc(&wide, 65536, 1) == SD_ERR_ARG, "image_alloc(65536, 1) refused");
    CHECK(temp_files_left() == 0, "no temporary files at the end");
    image_free(&a);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-image-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    test_fixture_pngs();
    test_rounding();
    test_png_roundtrip();
    test_png_text();
    test_png_variants();
    test_exif_png();
    test_exif_jpeg();
    test_jpeg();
    test_read_errors();
    test_write_errors();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
