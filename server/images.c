/* Encoding and decoding go through sd_image_write / sd_image_read on a private temporary folder:
 * the public API has no in-memory codec, and writing through the library keeps the server's PNGs
 * identical in layout and metadata to gen's. On Linux /tmp is usually tmpfs, and even on disk a
 * file this small lives in the page cache for its whole short life. */
#include "images.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[512];
static atomic_uint tmp_counter;

bool srv_images_init(char *err, size_t err_size) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/sd-server-XXXXXX", base);
    if (!mkdtemp(tmp_dir)) {
        snprintf(err, err_size, "cannot make a temporary folder under %s", base);
        tmp_dir[0] = 0;
        return false;
    }
    return true;
}

void srv_images_cleanup(void) {
    if (tmp_dir[0]) rmdir(tmp_dir);
    tmp_dir[0] = 0;
}

static void tmp_path(char *buf, size_t size, const char *ext) {
    snprintf(buf, size, "%s/%u-%u.%s", tmp_dir, (unsigned)getpid(),
             atomic_fetch_add(&tmp_counter, 1), ext);
}

static sd_status slurp(const char *path, uint8_t **out, size_t *out_len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return SD_ERR_IO;
    sd_status st = SD_ERR_IO;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        rewind(fp);
        uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
        if (buf && fread(buf, 1, (size_t)n, fp) == (size_t)n) {
            *out = buf, *out_len = (size_t)n;
            st = SD_OK;
        } else {
            free(buf);
            st = buf || n <= 0 ? SD_ERR_IO : SD_ERR_NOMEM;
        }
    }
    fclose(fp);
    return st;
}

sd_status srv_image_encode(const sd_image *img, bool jpeg, int quality, const char *parameters,
                           uint8_t **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    char path[600];
    tmp_path(path, sizeof path, jpeg ? "jpg" : "png");
    const char *text[2] = {"parameters", parameters};
    sd_status st = sd_image_write(path, img, text, parameters ? 1 : 0, quality);
    if (st == SD_OK) st = slurp(path, out, out_len);
    unlink(path);
    return st;
}

sd_status srv_image_decode(const uint8_t *data, size_t len, sd_image *out) {
    memset(out, 0, sizeof *out);
    char path[600];
    tmp_path(path, sizeof path, "img");
    FILE *fp = fopen(path, "wb");
    if (!fp) return SD_ERR_IO;
    bool ok = fwrite(data, 1, len, fp) == len;
    ok = (fclose(fp) == 0) && ok;
    sd_status st = ok ? sd_image_read(path, out) : SD_ERR_IO;
    unlink(path);
    return st;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

char *srv_png_text(const uint8_t *data, size_t len, const char *key) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(data, sig, 8)) return NULL;
    size_t key_len = strlen(key);
    for (size_t pos = 8; pos + 12 <= len;) {
        uint32_t n = be32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;
        if (n > len - pos - 12) return NULL; /* truncated chunk */
        bool text = !memcmp(type, "tEXt", 4), itxt = !memcmp(type, "iTXt", 4);
        if ((text || itxt) && n > key_len && !memcmp(body, key, key_len) && body[key_len] == 0) {
            const uint8_t *v = body + key_len + 1, *end = body + n;
            if (itxt) { /* compression flag, method, language\0, translated keyword\0 */
                if (end - v < 2 || v[0] != 0) return NULL; /* compressed: not written by us */
                v += 2;
                for (int field = 0; field < 2; field++) {
                    const uint8_t *z = memchr(v, 0, (size_t)(end - v));
                    if (!z) return NULL;
                    v = z + 1;
                }
            }
            char *s = malloc((size_t)(end - v) + 1);
            if (!s) return NULL;
            memcpy(s, v, (size_t)(end - v));
            s[end - v] = 0;
            return s;
        }
        if (!memcmp(type, "IEND", 4)) break;
        pos += 12 + (size_t)n;
    }
    return NULL;
}
