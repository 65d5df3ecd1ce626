/* Per-instruction-set pieces of the group norm (not a public header). The driver in norm.c splits
 * pixels into chunks that depend on the shape only and combines their sums in a fixed order, so
 * the statistics do not depend on the thread count. */
#ifndef SD_NORM_INTERNAL_H
#define SD_NORM_INTERNAL_H

typedef struct {
    /* sum[ch] += x, sq[ch] += x * x over `pixels` rows of c channels, in double. */
    void (*sums)(const float *x, long pixels, int c, double *sum, double *sq);
    /* y = (x - mean[ch]) * scale[ch] + beta[ch], then SiLU if asked, over `pixels` rows. */
    void (*apply)(const float *x, float *y, long pixels, int c, const float *mean,
                  const float *scale, const float *beta, int silu);
    /* Sum and sum of squares of one row of c values, in double. */
    void (*row_sums)(const float *x, int c, double *sum, double *sq);
    /* y = (x - mean) * rstd * gamma + beta over one row (gamma, beta may be NULL). */
    void (*row_apply)(const float *x, float *y, int c, float mean, float rstd, const float *gamma,
                      const float *beta);
} norm_kernels;

const norm_kernels *norm_kernels_avx512(void);

#endif
