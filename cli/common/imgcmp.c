#include "imgcmp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static sd_status same_size(const sd_image *a, const sd_image *b) {
    if (a->width != b->width || a->height != b->height)
        return cli_fail(SD_ERR_ARG, "images of different sizes: %dx%d and %dx%d", a->width,
                        a->height, b->width, b->height);
    return SD_OK;
}

sd_status imgcmp_compare(const sd_image *a, const sd_image *b, imgcmp_stats *out) {
    CLI_TRY(same_size(a, b));
    memset(out, 0, sizeof *out);
    out->values = (size_t)a->width * a->height * 3;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < out->values; i++) {
        const int d = abs((int)a->rgb[i] - (int)b->rgb[i]);
        if (d > out->max_abs) out->max_abs = d;
        out->differing += d != 0;
        sum += d;
        sq += (double)d * d;
    }
    out->mean_abs = sum / (double)out->values;
    out->psnr = sq == 0 ? INFINITY : 10.0 * log10(255.0 * 255.0 / (sq / (double)out->values));
    return SD_OK;
}

/* The five Gaussian-filtered moments of one channel, row by row: each image row is filtered
 * horizontally once into a ring of `win` rows, and each output row sums the ring vertically. */
static double ssim_channel(const sd_image *a, const sd_image *b, int ch, int win, const double *g,
                           double *ring) {
    const int W = a->width, H = a->height, ow = W - win + 1, oh = H - win + 1;
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    double total = 0;
    for (int y = 0; y < H; y++) {
        double *row = ring + (size_t)(y % win) * 5 * ow; /* x, y, xx, yy, xy per output column */
        const uint8_t *pa = a->rgb + (size_t)y * W * 3 + ch, *pb = b->rgb + (size_t)y * W * 3 + ch;
        for (int x = 0; x < ow; x++) {
            double s[5] = {0};
            for (int k = 0; k < win; k++) {
                const double va = pa[(size_t)(x + k) * 3], vb = pb[(size_t)(x + k) * 3];
                s[0] += g[k] * va, s[1] += g[k] * vb;
                s[2] += g[k] * va * va, s[3] += g[k] * vb * vb, s[4] += g[k] * va * vb;
            }
            for (int q = 0; q < 5; q++) row[(size_t)q * ow + x] = s[q];
        }
        if (y < win - 1) continue;
        for (int x = 0; x < ow; x++) {
            double m[5] = {0};
            for (int k = 0; k < win; k++) {
                const double *r = ring + (size_t)((y - win + 1 + k) % win) * 5 * ow;
                for (int q = 0; q < 5; q++) m[q] += g[k] * r[(size_t)q * ow + x];
            }
            const double vx = m[2] - m[0] * m[0], vy = m[3] - m[1] * m[1], vxy = m[4] - m[0] * m[1];
            total += ((2 * m[0] * m[1] + c1) * (2 * vxy + c2)) /
                     ((m[0] * m[0] + m[1] * m[1] + c1) * (vx + vy + c2));
        }
    }
    return total / ((double)ow * oh);
}

sd_status imgcmp_ssim(const sd_image *a, const sd_image *b, double *ssim) {
    CLI_TRY(same_size(a, b));
    int win = 11, side = a->width < a->height ? a->width : a->height;
    if (side < win) win = side % 2 ? side : side - 1;
    if (win < 1) return cli_fail(SD_ERR_ARG, "SSIM of an empty image");
    double g[11], norm = 0;
    for (int k = 0; k < win; k++) {
        const double d = k - (win - 1) / 2;
        g[k] = exp(-d * d / (2 * 1.5 * 1.5));
        norm += g[k];
    }
    for (int k = 0; k < win; k++) g[k] /= norm;
    double *ring = malloc((size_t)win * 5 * (a->width - win + 1) * sizeof *ring);
    if (!ring) return cli_fail(SD_ERR_NOMEM, "SSIM: out of memory");
    double sum = 0;
    for (int ch = 0; ch < 3; ch++) sum += ssim_channel(a, b, ch, win, g, ring);
    free(ring);
    *ssim = sum / 3;
    return SD_OK;
}

sd_status imgcmp_heatmap(const sd_image *a, const sd_image *b, sd_image *out) {
    CLI_TRY(same_size(a, b));
    CLI_TRY(sd_image_alloc(out, a->width, a->height));
    const size_t n = (size_t)a->width * a->height;
    int dmax = 0;
    for (size_t i = 0; i < n * 3; i++) {
        const int d = abs((int)a->rgb[i] - (int)b->rgb[i]);
        if (d > dmax) dmax = d;
    }
    for (size_t p = 0; p < n; p++) {
        const uint8_t *pa = a->rgb + p * 3, *pb = b->rgb + p * 3;
        uint8_t *o = out->rgb + p * 3;
        int d = 0;
        for (int c = 0; c < 3; c++) {
            const int e = abs((int)pa[c] - (int)pb[c]);
            if (e > d) d = e;
        }
        if (d == 0) {
            const int luma = (299 * pa[0] + 587 * pa[1] + 114 * pa[2]) / 1000;
            o[0] = o[1] = o[2] = (uint8_t)(luma / 4);
            continue;
        }
        /* t in (0, 1]: dark red (128, 0, 0) -> red (255, 0, 0) at 0.5 -> yellow (255, 255, 0). */
        const double t = dmax > 1 ? (double)(d - 1) / (dmax - 1) : 0.0;
        o[0] = (uint8_t)lrint(t < 0.5 ? 128 + 254 * t : 255);
        o[1] = (uint8_t)lrint(t < 0.5 ? 0 : 510 * (t - 0.5));
        o[2] = 0;
    }
    return SD_OK;
}

const char *imgcmp_psnr_text(double psnr, char *buf, size_t len) {
    if (isinf(psnr))
        snprintf(buf, len, "inf");
    else
        snprintf(buf, len, "%.4f", psnr);
    return buf;
}
