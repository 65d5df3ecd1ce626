/* Comparing 8-bit RGB images (sd-regress, vae-check): per-value differences, PSNR, SSIM, and a
 * heat-map of where two images differ. */
#ifndef SD_CLI_IMGCMP_H
#define SD_CLI_IMGCMP_H

#include <stddef.h>

#include "../../include/sd.h"

typedef struct {
    int max_abs;      /* largest |a - b| over every value (0..255) */
    double mean_abs;  /* mean |a - b| over every value */
    double psnr;      /* 10 log10(255^2 / MSE) in dB over every value; INFINITY when identical */
    size_t differing; /* values that differ */
    size_t values;    /* width * height * 3 */
} imgcmp_stats;

/* The statistics of a against b; SD_ERR_ARG (naming both sizes) when their sizes differ. */
sd_status imgcmp_compare(const sd_image *a, const sd_image *b, imgcmp_stats *out);

/* Mean SSIM (Wang, Bovik, Sheikh and Simoncelli 2004) of a against b: an 11x11 Gaussian window of
 * sigma 1.5 (weights normalised), K1 = 0.01, K2 = 0.03, L = 255, population (not sample) moments,
 * averaged over the window positions that lie wholly inside the image, computed on each of R, G
 * and B and averaged over the three. This is scikit-image's structural_similarity(a, b,
 * channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
 * data_range=255). Images narrower or shorter than 11 pixels use the largest odd window that
 * fits. Sizes must match (SD_ERR_ARG otherwise). */
sd_status imgcmp_ssim(const sd_image *a, const sd_image *b, double *ssim);

/* A heat-map of |a - b| (sizes must match): where the images agree, `a` dimmed to a quarter of its
 * brightness in grey, for orientation; where they differ, the largest channel difference as a
 * colour from dark red (a difference of 1) through red to yellow (the largest difference present).
 * *out is allocated. */
sd_status imgcmp_heatmap(const sd_image *a, const sd_image *b, sd_image *out);

/* A PSNR as printed by the tools: "inf" when infinite, else "%.4f". Writes buf, returns it. */
const char *imgcmp_psnr_text(double psnr, char *buf, size_t len);

#endif
