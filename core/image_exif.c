/* EXIF orientation: phone cameras store pixels as the sensor saw them and record how to turn
 * them upright. diffusers' load_image applies that turn (PIL.ImageOps.exif_transpose) before
 * anything else, so an image read here must be turned the same way or img2img starts from a
 * rotated picture. Only the orientation tag of IFD0 is read; everything else in EXIF is ignored. */
#include <stdlib.h>
#include <string.h>

#include "image_codec.h"

enum { EXIF_TAG_ORIENTATION = 0x0112, EXIF_TYPE_SHORT = 3, EXIF_TYPE_LONG = 4 };

static unsigned exif_u16(const uint8_t *p, int big) {
    return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t exif_u32(const uint8_t *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int image_exif_orientation(const uint8_t *tiff, size_t len) {
    /* PNG eXIf chunks should start at the byte-order mark, but some writers keep JPEG's prefix;
     * Pillow strips it in both cases. */
    if (len >= 6 && memcmp(tiff, "Exif\0\0", 6) == 0) {
        tiff += 6;
        len -= 6;
    }
    if (len < 8) return 1;
    int big;
    if (memcmp(tiff, "II", 2) == 0)
        big = 0;
    else if (memcmp(tiff, "MM", 2) == 0)
        big = 1;
    else
        return 1;
    if (exif_u16(tiff + 2, big) != 42) return 1;
    uint32_t ifd = exif_u32(tiff + 4, big);
    if (ifd > len - 2) return 1;
    unsigned n = exif_u16(tiff + ifd, big);
    for (unsigned i = 0; i < n; i++) {
        size_t at = (size_t)ifd + 2 + 12 * (size_t)i;
        if (at + 12 > len) return 1;
        const uint8_t *e = tiff + at;
        if (exif_u16(e, big) != EXIF_TAG_ORIENTATION || exif_u32(e + 4, big) != 1) continue;
        unsigned type = exif_u16(e + 2, big);
        uint32_t v = type == EXIF_TYPE_SHORT  ? exif_u16(e + 8, big)
                     : type == EXIF_TYPE_LONG ? exif_u32(e + 8, big)
                                              : 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

sd_status image_apply_orientation(sd_image *img, int orientation) {
    if (orientation < 2 || orientation > 8) return SD_OK;
    int w = img->width, h = img->height;
    int swap = orientation >= 5; /* 5..8 exchange rows and columns */
    int ow = swap ? h : w, oh = swap ? w : h;
    uint8_t *dst = malloc((size_t)ow * oh * 3);
    if (!dst) return sd_set_error(SD_ERR_NOMEM, "out of memory turning a %dx%d image", w, h);
    for (int oy = 0; oy < oh; oy++) {
        for (int ox = 0; ox < ow; ox++) {
            /* Source pixel of each output pixel, after PIL's transpose methods:
             * 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
             * 6 ROTATE_270 (clockwise quarter turn), 7 TRANSVERSE, 8 ROTATE_90. */
            int sx, sy;
            switch (orientation) {
            case 2:
                sx = w - 1 - ox;
                sy = oy;
                break;
            case 3:
                sx = w - 1 - ox;
                sy = h - 1 - oy;
                break;
            case 4:
                sx = ox;
                sy = h - 1 - oy;
                break;
            case 5:
                sx = oy;
                sy = ox;
                break;
            case 6:
                sx = oy;
                sy = h - 1 - ox;
                break;
            case 7:
                sx = w - 1 - oy;
                sy = h - 1 - ox;
                break;
            default:
                sx = w - 1 - oy;
                sy = ox;
                break;
            }
            memcpy(dst + ((size_t)oy * ow + ox) * 3, img->rgb + ((size_t)sy * w + sx) * 3, 3);
        }
    }
    free(img->rgb);
    img->rgb = dst;
    img->width = ow;
    img->height = oh;
    return SD_OK;
}
