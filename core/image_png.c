/* PNG through libpng. libpng reports errors by calling a handler that must not return, so both
 * directions install handlers that record the message and longjmp back to the one function
 * that owns the png struct; everything that has to be freed after such a jump lives in a context
 * struct outside that function's frame (locals changed after setjmp are indeterminate after the
 * jump). Warnings (odd colour profiles, bad ancillary CRCs) are dropped: the library never
 * prints. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_codec.h"

typedef struct {
    const char *path;
    const uint8_t *data; /* reading: the whole file */
    size_t len, pos;
    sd_file_writer *writer; /* writing */
    char msg[256];          /* libpng's last error */
    sd_status status;       /* set before a jump when the cause is not libpng's (size, memory) */
    uint8_t *rgb;
    png_text *texts;
} image_png_ctx;

static void image_png_on_error(png_structp png, png_const_charp msg) {
    image_png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void image_png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void image_png_read_fn(png_structp png, png_bytep out, size_t n) {
    image_png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "file is truncated");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

static void image_png_write_fn(png_structp png, png_bytep data, size_t n) {
    image_png_ctx *c = png_get_io_ptr(png);
    sd_writer_put(c->writer, data, n);
    if (c->writer->failed) png_error(png, "write failed");
}

static void image_png_flush_fn(png_structp png) {
    (void)png;
}

/* tEXt and zTXt hold Latin-1, which is UTF-8 only below 0x80. */
static char *image_latin1_to_utf8(const char *s, size_t n) {
    char *out = malloc(2 * n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80) {
            *o++ = (char)ch;
        } else {
            *o++ = (char)(0xC0 | ch >> 6);
            *o++ = (char)(0x80 | (ch & 0x3F));
        }
    }
    *o = '\0';
    return out;
}

/* Looks `key` up among the text chunks libpng collected (before and after the image data). */
static sd_status image_png_find_text(png_structp png, png_infop info, image_png_ctx *c,
                                     const char *key, char **value) {
    png_textp texts;
    int n = png_get_text(png, info, &texts, NULL);
    for (int i = 0; i < n; i++) {
        if (strcmp(texts[i].key, key) != 0) continue;
        int utf8 = texts[i].compression >= PNG_ITXT_COMPRESSION_NONE;
        size_t len = utf8 ? texts[i].itxt_length : texts[i].text_length;
        *value = utf8 ? strndup(texts[i].text, len) : image_latin1_to_utf8(texts[i].text, len);
        if (!*value) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory reading text", c->path);
        break;
    }
    return SD_OK;
}

/* The largest chunk, or decompressed text, a PNG may make libpng allocate. */
#define IMAGE_PNG_CHUNK_MAX (16u << 20)

/* Runs libpng over the file; a longjmp lands here with c->msg set. */
static sd_status image_png_run_decode(png_structp png, png_infop info, image_png_ctx *c,
                                      sd_image *out, int *orientation, const char *text_key,
                                      char **text_value) {
    if (setjmp(png_jmpbuf(png))) return c->status != SD_OK ? c->status : SD_ERR_FORMAT;
    png_set_read_fn(png, c, image_png_read_fn);
    png_set_user_limits(png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    /* libpng allocates an ancillary chunk (text, eXIf, ICC profile) by the length its header
     * claims, and a decompressed zTXt/iTXt/iCCP up to this limit: the distribution's libpng sets
     * none, so a 100-byte file claiming a 1 GB iTXt chunk allocated 1 GB (found by fuzzing). */
    png_set_chunk_malloc_max(png, IMAGE_PNG_CHUNK_MAX);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if ((c->status = image_check_size(c->path, w, h)) != SD_OK) png_error(png, "size");

    /* Everything to 8-bit RGB. Palette expansion also turns tRNS into alpha, stripped below;
     * 16-bit keeps the high byte, which is what Pillow's RGB;16B unpacking does. */
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t row = (size_t)w * 3;
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != row)
        png_error(png, "unexpected pixel layout after conversion to RGB");

    c->rgb = malloc(row * h);
    if (!c->rgb) {
        c->status = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for %ux%u pixels", c->path,
                                 (unsigned)w, (unsigned)h);
        png_error(png, "memory");
    }
    /* Interlaced images take several passes over the same rows; each fills in more pixels. */
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, c->rgb + y * row, NULL);
    /* Reading up to IEND catches truncation after the image data and collects late chunks. */
    png_read_end(png, info);

    png_bytep exif;
    png_uint_32 exif_len;
    *orientation =
        png_get_eXIf_1(png, info, &exif_len, &exif) ? image_exif_orientation(exif, exif_len) : 1;
    if (text_key && (c->status = image_png_find_text(png, info, c, text_key, text_value)) != SD_OK)
        png_error(png, "text");
    out->width = (int)w;
    out->height = (int)h;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return SD_OK;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* PNG's CRC-32 (the zlib one; libsd does not link zlib itself), for one short chunk. */
static uint32_t image_png_crc(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* Every chunk must fit in the file: libpng 1.6.39 allocates an ancillary chunk (iTXt, eXIf, ...)
 * by the length its header claims before reading it, so a 100-byte file claiming a 1 GB iTXt
 * made it allocate 1 GB (found by fuzzing). With the file whole in memory, no chunk can hold more
 * than what is left of it. */
static sd_status image_png_check_chunks(const char *path, const uint8_t *data, size_t len) {
    for (size_t at = 8; at + 8 <= len;) {
        const uint32_t n = be32(data + at);
        if (n > len - at - 8 || len - at - 8 - n < 4)
            return sd_set_error(SD_ERR_FORMAT, "%s: not a valid PNG: truncated: chunk '%.4s' at "
                                "byte %zu claims %u bytes, %zu are left", path,
                                (const char *)data + at + 4, at, n, len - at - 8);
        if (!memcmp(data + at + 4, "IEND", 4)) break;
        at += 12 + (size_t)n;
    }
    return SD_OK;
}

sd_status image_png_decode(const char *path, const uint8_t *data, size_t len, sd_image *out,
                           int *orientation, const char *text_key, char **text_value) {
    /* The size in IHDR (always the first chunk, at byte 16) is checked before libpng runs: its
     * own limit (png_set_user_limits below) refuses a decompression bomb only as "Invalid IHDR
     * data", which does not say what was wrong. A chunk whose CRC is wrong is left to libpng,
     * which says so. */
    if (len >= 33 && !memcmp(data + 12, "IHDR", 4) && image_png_crc(data + 12, 17) == be32(data + 29))
        SD_TRY(image_check_size(path, be32(data + 16), be32(data + 20)));
    SD_TRY(image_png_check_chunks(path, data, len));
    image_png_ctx c = {.path = path, .data = data, .len = len};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, image_png_on_error, image_png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory starting the PNG decoder", path);
    }
    if (text_value) *text_value = NULL;
    sd_status st = image_png_run_decode(png, info, &c, out, orientation, text_key, text_value);
    png_destroy_read_struct(&png, &info, NULL);
    free(c.rgb);
    if (st == SD_ERR_FORMAT && c.status == SD_OK)
        sd_set_error(st, "%s: not a valid PNG: %s", path, c.msg);
    if (st != SD_OK && text_value) {
        free(*text_value);
        *text_value = NULL;
    }
    return st;
}

static int image_utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *p < 0xC2) || (n == 3 && *p > 0xF4)) return 0;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80) return 0;
    }
    return 1;
}

static int image_is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

sd_status image_png_check_text(const char *path, const char *const *text, int n_text) {
    if (n_text < 0 || (n_text > 0 && !text))
        return sd_set_error(SD_ERR_ARG, "%s: %d text entries but no list", path, n_text);
    for (int i = 0; i < n_text; i++) {
        const char *key = text[2 * i], *value = text[2 * i + 1];
        if (!key || !value) return sd_set_error(SD_ERR_ARG, "%s: text entry %d is NULL", path, i);
        /* The PNG keyword rules; libpng would otherwise quietly rewrite the key. */
        size_t n = strlen(key);
        int ok = n >= 1 && n <= 79 && key[0] != ' ' && key[n - 1] != ' ';
        for (size_t j = 0; ok && j < n; j++)
            ok = key[j] >= 32 && key[j] <= 126 && !(key[j] == ' ' && key[j + 1] == ' ');
        if (!ok)
            return sd_set_error(SD_ERR_ARG,
                                "%s: text key '%s' is not a PNG keyword (1-79 printable ASCII "
                                "characters, no leading, trailing or double spaces)",
                                path, key);
        if (!image_utf8_valid(value))
            return sd_set_error(SD_ERR_ARG, "%s: text for key '%s' is not valid UTF-8", path, key);
    }
    return SD_OK;
}

static sd_status image_png_run_encode(png_structp png, png_infop info, image_png_ctx *c,
                                      const sd_image *img, const char *const *text, int n_text) {
    if (setjmp(png_jmpbuf(png))) return c->writer->failed ? SD_ERR_IO : SD_ERR_FORMAT;
    png_set_write_fn(png, c, image_png_write_fn, image_png_flush_fn);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < n_text; i++) {
        png_text *t = &c->texts[i];
        /* libpng copies keys and texts and never writes through these pointers. */
        t->key = (char *)text[2 * i];
        t->text = (char *)text[2 * i + 1];
        t->text_length = strlen(t->text);
        t->compression =
            image_is_ascii(t->text) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    }
    if (n_text > 0) png_set_text(png, info, c->texts, n_text);
    png_write_info(png, info);
    size_t row = (size_t)img->width * 3;
    for (int y = 0; y < img->height; y++) png_write_row(png, img->rgb + (size_t)y * row);
    png_write_end(png, NULL);
    return SD_OK;
}

sd_status image_png_encode(const char *path, sd_file_writer *w, const sd_image *img,
                           const char *const *text, int n_text) {
    image_png_ctx c = {.path = path, .writer = w};
    if (n_text > 0 && !(c.texts = calloc((size_t)n_text, sizeof *c.texts)))
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, image_png_on_error,
                                              image_png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        free(c.texts);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory starting the PNG encoder", path);
    }
    sd_status st = image_png_run_encode(png, info, &c, img, text, n_text);
    png_destroy_write_struct(&png, &info);
    free(c.texts);
    if (st == SD_ERR_IO)
        sd_set_error(st, "%s: write failed: %s", path, strerror(w->failed));
    else if (st != SD_OK)
        sd_set_error(st, "%s: PNG encoder: %s", path, c.msg);
    return st;
}
