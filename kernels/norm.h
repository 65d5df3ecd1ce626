/* Normalisations over NHWC / row-major activations. Statistics are accumulated in double, so the
 * result does not depend on summation order (and hence not on the thread count). */
#ifndef SD_NORM_H
#define SD_NORM_H

/* x, y: [n][hw][c]; channels split into `groups` contiguous groups; gamma/beta: [c].
 * y may equal x. With `silu`, applies SiLU after the affine transform (ResNet blocks). */
void group_norm_nhwc(const float *x, float *y, int n, int hw, int c, int groups, float eps,
                     const float *gamma, const float *beta, int silu);
void group_norm_nhwc_ref(const float *x, float *y, int n, int hw, int c, int groups, float eps,
                         const float *gamma, const float *beta, int silu);

/* Per row of `c` values: (x - mean) / sqrt(var + eps) * gamma + beta. gamma/beta may be NULL. */
void layer_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma,
                const float *beta);
void layer_norm_ref(const float *x, float *y, int rows, int c, float eps, const float *gamma,
                    const float *beta);

/* Per row: x / sqrt(mean(x^2) + eps) * gamma (gamma may be NULL). */
void rms_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma);
void rms_norm_ref(const float *x, float *y, int rows, int c, float eps, const float *gamma);

#endif
