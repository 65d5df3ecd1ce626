/* Normalisations over NHWC / row-major activations. Statistics are sums in double over pieces
 * that depend on the shape only, added in a fixed order (a row's through 16 lanes whatever the
 * vector width, norm_internal.h), so results depend on neither the thread count nor the
 * instruction set: every level (cpu.h) computes the same bits. The _ref versions are plain loops
 * (libm's expf for SiLU), the definitions the fast ones are tested against. */
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

/* Per row of c values, in place: e^(x - max) / sum of them (float32 like PyTorch's softmax; the
 * sum in double, exp as the attention kernel computes it). */
void softmax_rows(float *x, int rows, int c);
void softmax_rows_ref(float *x, int rows, int c);

#endif
