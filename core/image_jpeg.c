/* JPEG through libjpeg(-turbo). Its default error handler prints and calls exit(); ours formats
 * the message and longjmps back to the function that owns the codec struct. The decoder keeps
 * libjpeg's defaults (islow DCT, fancy upsampling), which are Pillow's, so pixels match what
 * diffusers sees when Pillow is built on the same libjpeg-turbo. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "image_codec.h"

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us a pointer to it */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int truncated;
} image_jpeg_error;

static void image_jpeg_on_error(j_common_ptr cinfo) {
    image_jpeg_error *e = (image_jpeg_error *)cinfo->err;
    (*e->pub.format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings (level -1) report corrupt data that libjpeg decodes past, filling in what it cannot
 * read; Pillow ignores those too. Running out of data is different: libjpeg pads with a fake end
 * marker and warns, but the picture is then partly invented, and Pillow refuses such a file
 * ("image file is truncated"), so that one warning is fatal here. */
static void image_jpeg_on_message(j_common_ptr cinfo, int level) {
    image_jpeg_error *e = (image_jpeg_error *)cinfo->err;
    if (level == -1 && e->pub.msg_code == JWRN_JPEG_EOF) {
        e->truncated = 1;
        (*e->pub.error_exit)(cinfo);
    }
}

static void image_jpeg_on_output(j_common_ptr cinfo) {
    (void)cinfo;
}

static void image_jpeg_init_error(image_jpeg_error *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = image_jpeg_on_error;
    e->pub.emit_message = image_jpeg_on_message;
    e->pub.output_message = image_jpeg_on_output;
}

typedef struct {
    struct jpeg_decompress_struct d;
    image_jpeg_error err;
    const char *path;
    sd_status status; /* set before a jump when the cause is not libjpeg's */
    uint8_t *rgb;
} image_jpeg_dctx;

static sd_status image_jpeg_run_decode(image_jpeg_dctx *c, const uint8_t *data, size_t len,
                                       sd_image *out, int *orientation) {
    j_decompress_ptr d = &c->d;
    d->err = &c->err.pub;
    if (setjmp(c->err.jump)) return c->status != SD_OK ? c->status : SD_ERR_FORMAT;
    jpeg_create_decompress(d);
    jpeg_mem_src(d, data, (unsigned long)len);
    jpeg_save_markers(d, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(d, TRUE);
    /* Saved markers live in the image pool, which jpeg_finish_decompress frees: read them now. */
    *orientation = 1;
    for (jpeg_saved_marker_ptr m = d->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            *orientation = image_exif_orientation(m->data, m->data_length);
            break;
        }
    }
    if (d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK) {
        c->status =
            sd_set_error(SD_ERR_UNSUPPORTED, "%s: CMYK JPEG images are not supported", c->path);
        ERREXIT(d, JERR_CONVERSION_NOTIMPL);
    }
    if ((c->status = image_check_size(c->path, d->image_width, d->image_height)) != SD_OK)
        ERREXIT(d, JERR_IMAGE_TOO_BIG);
    d->out_color_space = JCS_RGB;
    jpeg_start_decompress(d);
    if (d->output_components != 3) ERREXIT(d, JERR_CONVERSION_NOTIMPL);

    size_t row = (size_t)d->output_width * 3;
    c->rgb = malloc(row * d->output_height);
    if (!c->rgb) {
        c->status = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for %ux%u pixels", c->path,
                                 (unsigned)d->output_width, (unsigned)d->output_height);
        ERREXIT1(d, JERR_OUT_OF_MEMORY, 0);
    }
    while (d->output_scanline < d->output_height) {
        JSAMPROW r = c->rgb + (size_t)d->output_scanline * row;
        jpeg_read_scanlines(d, &r, 1);
    }
    /* Reading up to the end marker catches a file cut short after the last scanline. */
    jpeg_finish_decompress(d);

    out->width = (int)d->output_width;
    out->height = (int)d->output_height;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return SD_OK;
}

sd_status image_jpeg_decode(const char *path, const uint8_t *data, size_t len, sd_image *out,
                            int *orientation) {
    image_jpeg_dctx *c = calloc(1, sizeof *c);
    if (!c) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory starting the JPEG decoder", path);
    c->path = path;
    image_jpeg_init_error(&c->err);
    sd_status st = image_jpeg_run_decode(c, data, len, out, orientation);
    jpeg_destroy_decompress(&c->d);
    free(c->rgb);
    if (st == SD_ERR_FORMAT && c->status == SD_OK) {
        if (c->err.truncated)
            sd_set_error(st, "%s: not a valid JPEG: file is truncated", path);
        else
            sd_set_error(st, "%s: not a valid JPEG: %s", path, c->err.msg);
    }
    free(c);
    return st;
}

enum { IMAGE_JPEG_CHUNK = 1 << 16 };

/* A destination that streams the encoder's output into the atomic file writer. */
typedef struct {
    struct jpeg_compress_struct cinfo;
    struct jpeg_destination_mgr dest;
    image_jpeg_error err;
    sd_file_writer *writer;
    JOCTET buf[IMAGE_JPEG_CHUNK];
} image_jpeg_cctx;

static void image_jpeg_dest_init(j_compress_ptr cinfo) {
    image_jpeg_cctx *c = cinfo->client_data;
    c->dest.next_output_byte = c->buf;
    c->dest.free_in_buffer = sizeof c->buf;
}

static boolean image_jpeg_dest_empty(j_compress_ptr cinfo) {
    image_jpeg_cctx *c = cinfo->client_data;
    sd_writer_put(c->writer, c->buf, sizeof c->buf);
    if (c->writer->failed) ERREXIT(cinfo, JERR_FILE_WRITE);
    image_jpeg_dest_init(cinfo);
    return TRUE;
}

static void image_jpeg_dest_term(j_compress_ptr cinfo) {
    image_jpeg_cctx *c = cinfo->client_data;
    sd_writer_put(c->writer, c->buf, sizeof c->buf - c->dest.free_in_buffer);
    if (c->writer->failed) ERREXIT(cinfo, JERR_FILE_WRITE);
}

static sd_status image_jpeg_run_encode(image_jpeg_cctx *c, const sd_image *img, int quality) {
    j_compress_ptr cinfo = &c->cinfo;
    cinfo->err = &c->err.pub;
    if (setjmp(c->err.jump)) return c->writer->failed ? SD_ERR_IO : SD_ERR_FORMAT;
    jpeg_create_compress(cinfo);
    cinfo->client_data = c;
    c->dest.init_destination = image_jpeg_dest_init;
    c->dest.empty_output_buffer = image_jpeg_dest_empty;
    c->dest.term_destination = image_jpeg_dest_term;
    cinfo->dest = &c->dest;
    cinfo->image_width = (JDIMENSION)img->width;
    cinfo->image_height = (JDIMENSION)img->height;
    cinfo->input_components = 3;
    cinfo->in_color_space = JCS_RGB;
    jpeg_set_defaults(cinfo);
    jpeg_set_quality(cinfo, quality, TRUE);
    jpeg_start_compress(cinfo, TRUE);
    size_t row = (size_t)img->width * 3;
    while (cinfo->next_scanline < cinfo->image_height) {
        /* libjpeg's row type is not const, but the compressor only reads rows. */
        JSAMPROW r = (JSAMPROW)(img->rgb + (size_t)cinfo->next_scanline * row);
        jpeg_write_scanlines(cinfo, &r, 1);
    }
    jpeg_finish_compress(cinfo);
    return SD_OK;
}

sd_status image_jpeg_encode(const char *path, sd_file_writer *w, const sd_image *img, int quality) {
    image_jpeg_cctx *c = calloc(1, sizeof *c);
    if (!c) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory starting the JPEG encoder", path);
    c->writer = w;
    image_jpeg_init_error(&c->err);
    sd_status st = image_jpeg_run_encode(c, img, quality);
    jpeg_destroy_compress(&c->cinfo);
    if (st == SD_ERR_IO)
        sd_set_error(st, "%s: write failed: %s", path, strerror(w->failed));
    else if (st != SD_OK)
        sd_set_error(st, "%s: JPEG encoder: %s", path, c->err.msg);
    free(c);
    return st;
}
