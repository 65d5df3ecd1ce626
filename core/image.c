/* Image reading and writing (format chosen by content on read, by extension on write) and the
 * float <-> 8-bit conversions diffusers applies around the VAE. The codecs are in image_png.c
 * and image_jpeg.c, EXIF orientation in image_exif.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image_codec.h"

static const uint8_t image_png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
static const uint8_t image_jpeg_magic[3] = {0xFF, 0xD8, 0xFF};

sd_status image_check_size(const char *path, long long width, long long height) {
    if (width < 1 || height < 1 || width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE ||
        width * height > IMAGE_MAX_PIXELS)
        return sd_set_error(SD_ERR_UNSUPPORTED,
                            "%s: image size %lldx%lld is outside 1..%d per side and %lld pixels",
                            path, width, height, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    return SD_OK;
}

sd_status image_alloc(sd_image *img, int width, int height) {
    memset(img, 0, sizeof *img);
    if (image_check_size("image_alloc", width, height) != SD_OK)
        return sd_set_error(SD_ERR_ARG,
                            "image_alloc: size %dx%d is outside 1..%d per side and %lld pixels",
                            width, height, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    img->rgb = calloc((size_t)width * height, 3);
    if (!img->rgb)
        return sd_set_error(SD_ERR_NOMEM, "image_alloc: out of memory for %dx%d pixels", width,
                            height);
    img->width = width;
    img->height = height;
    return SD_OK;
}

void image_free(sd_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

typedef enum { IMAGE_UNKNOWN, IMAGE_PNG, IMAGE_JPEG } image_format;

static image_format image_sniff(const uint8_t *data, size_t len) {
    if (len >= sizeof image_png_magic && memcmp(data, image_png_magic, sizeof image_png_magic) == 0)
        return IMAGE_PNG;
    if (len >= sizeof image_jpeg_magic &&
        memcmp(data, image_jpeg_magic, sizeof image_jpeg_magic) == 0)
        return IMAGE_JPEG;
    return IMAGE_UNKNOWN;
}

sd_status image_read(const char *path, sd_image *out) {
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    SD_TRY(sd_read_file(path, &buf, &len));
    const uint8_t *data = (const uint8_t *)buf;
    int orientation = 1;
    sd_status st;
    switch (image_sniff(data, len)) {
    case IMAGE_PNG:
        st = image_png_decode(path, data, len, out, &orientation, NULL, NULL);
        break;
    case IMAGE_JPEG:
        st = image_jpeg_decode(path, data, len, out, &orientation);
        break;
    default:
        st = sd_set_error(SD_ERR_FORMAT, "%s: not a PNG or JPEG image (%zu bytes, unknown start)",
                          path, len);
    }
    free(buf);
    if (st == SD_OK && (st = image_apply_orientation(out, orientation)) != SD_OK) {
        sd_wrap_error(st, "%s", path);
        image_free(out);
    }
    return st;
}

sd_status image_read_png_text(const char *path, const char *key, char **value) {
    *value = NULL;
    char *buf;
    size_t len;
    SD_TRY(sd_read_file(path, &buf, &len));
    const uint8_t *data = (const uint8_t *)buf;
    sd_status st;
    if (image_sniff(data, len) != IMAGE_PNG) {
        st = sd_set_error(SD_ERR_FORMAT, "%s: not a PNG image, so it holds no PNG text", path);
    } else {
        sd_image img = {0};
        int orientation;
        st = image_png_decode(path, data, len, &img, &orientation, key, value);
        image_free(&img);
    }
    free(buf);
    return st;
}

/* The extension after the last '.' of the file name, or "" when there is none. */
static const char *image_extension(const char *path) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot + 1 : "";
}

/* Names the missing folder when the temporary file could not be created for that reason. */
static sd_status image_open_writer(sd_file_writer *w, const char *path) {
    sd_status st = sd_writer_open(w, path);
    if (st == SD_OK) return st;
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        char *dir = strndup(path, (size_t)(slash - path));
        if (dir && !sd_dir_exists(dir))
            st = sd_set_error(SD_ERR_IO, "%s: cannot write: folder '%s' does not exist", path, dir);
        free(dir);
    }
    return st;
}

sd_status image_write(const char *path, const sd_image *img, const char *const *text, int n_text,
                      int quality) {
    const char *ext = image_extension(path);
    image_format fmt = strcasecmp(ext, "png") == 0 ? IMAGE_PNG
                       : strcasecmp(ext, "jpg") == 0 || strcasecmp(ext, "jpeg") == 0
                           ? IMAGE_JPEG
                           : IMAGE_UNKNOWN;
    if (fmt == IMAGE_UNKNOWN)
        return sd_set_error(SD_ERR_ARG,
                            "%s: unsupported image extension '%s' (use .png, .jpg or .jpeg)", path,
                            ext);
    if (!img || !img->rgb || img->width < 1 || img->height < 1)
        return sd_set_error(SD_ERR_ARG, "%s: no image to write", path);
    SD_TRY(image_check_size(path, img->width, img->height));
    if (fmt == IMAGE_JPEG) {
        if (quality < 1 || quality > 100)
            return sd_set_error(SD_ERR_ARG, "%s: JPEG quality %d is outside 1..100", path, quality);
        if (img->width > JPEG_MAX_SIDE || img->height > JPEG_MAX_SIDE)
            return sd_set_error(SD_ERR_ARG, "%s: %dx%d is larger than JPEG's %d per side", path,
                                img->width, img->height, JPEG_MAX_SIDE);
    } else {
        SD_TRY(image_png_check_text(path, text, n_text));
    }

    sd_file_writer w;
    SD_TRY(image_open_writer(&w, path));
    sd_status st = fmt == IMAGE_PNG ? image_png_encode(path, &w, img, text, n_text)
                                    : image_jpeg_encode(path, &w, img, quality);
    if (st != SD_OK) {
        sd_writer_abort(&w);
        return st;
    }
    return sd_writer_commit(&w);
}

void image_from_float(const float *x, int width, int height, uint8_t *rgb) {
    size_t n = (size_t)width * height * 3;
    for (size_t i = 0; i < n; i++) {
        /* Same float32 operations as torch/numpy; x * 0.5f is exact, so it equals x / 2. */
        float v = x[i] * 0.5f + 0.5f;
        /* NaN (kept by clamp, undefined once cast to uint8) comes out as 0. */
        v = v > 0.0f ? v : 0.0f;
        v = v < 1.0f ? v : 1.0f;
        /* rintf rounds ties to even in the default rounding mode, as numpy's round does. */
        rgb[i] = (uint8_t)rintf(v * 255.0f);
    }
}

void image_to_float(const uint8_t *rgb, int width, int height, float *x) {
    size_t n = (size_t)width * height * 3;
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * ((float)rgb[i] / 255.0f) - 1.0f;
}
