/* Per-instruction-set pieces of the norms (not a public header): norm_body.h compiled once per
 * instruction set (isa_*.c). The driver in norm.c splits pixels into chunks that depend on the
 * shape only and combines their sums in a fixed order, so the statistics depend on neither the
 * thread count nor the vector width. */
#ifndef SD_NORM_INTERNAL_H
#define SD_NORM_INTERNAL_H

/* A row's sums are kept in NORM_LANES partial sums, element i in lane i % NORM_LANES, whatever
 * the vector width, and combined by norm_lanes_total. */
enum { NORM_LANES = 16 };

/* The fixed tree over the lanes (the order AVX-512's halving reduction adds them in):
 * lanes l and l + 8, then l and l + 4, then l and l + 2, then the last two. */
static inline double norm_lanes_total(const double lane[NORM_LANES]) {
    double t[8];
    for (int l = 0; l < 8; l++) t[l] = lane[l] + lane[l + 8];
    for (int l = 0; l < 4; l++) t[l] = t[l] + t[l + 4];
    for (int l = 0; l < 2; l++) t[l] = t[l] + t[l + 2];
    return t[0] + t[1];
}

typedef struct {
    /* sum[ch] += x, sq[ch] += x * x over `pixels` rows of c channels, in double, pixel by
     * pixel. */
    void (*sums)(const float *x, long pixels, int c, double *sum, double *sq);
    /* y = fma(x - mean[ch], scale[ch], beta[ch]), then SiLU if asked, over `pixels` rows. */
    void (*apply)(const float *x, float *y, long pixels, int c, const float *mean,
                  const float *scale, const float *beta, int silu);
    /* Sum and sum of squares of one row of c values, in double, through the NORM_LANES lanes
     * (sum may be NULL: squares only). */
    void (*row_sums)(const float *x, int c, double *sum, double *sq);
    /* y = (x - mean) * rstd, * gamma, + beta over one row, each rounded (gamma, beta may be
     * NULL). */
    void (*row_apply)(const float *x, float *y, int c, float mean, float rstd, const float *gamma,
                      const float *beta);
    /* y = x * rs, * gamma (may be NULL) over one row. */
    void (*row_scale)(const float *x, float *y, int c, float rs, const float *gamma);
    /* softmax of one row in place, the sum through the NORM_LANES lanes. */
    void (*row_softmax)(float *x, int c);
} norm_kernels;

const norm_kernels *norm_kernels_generic(void);
const norm_kernels *norm_kernels_generic_fma(void);
const norm_kernels *norm_kernels_avx2(void);
const norm_kernels *norm_kernels_avx512(void);
const norm_kernels *norm_kernels_neon(void);

#endif
