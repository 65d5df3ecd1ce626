/* Pieces shared by the diffusion transformers (SD3 MMDiT, Flux): sinusoidal embeddings, AdaLN
 * modulation and gated residuals, per-head q/k normalisation, unpatchify.
 *
 * Activations are row-major token matrices [batch][tokens][dim]. Modulation vectors come from one
 * Linear over silu(temb) per batch item, [batch][k * dim] with chunk i at offset i * dim, so each
 * helper takes the chunk's base pointer and the stride between batch items (k * dim). */
#ifndef SD_DIT_COMMON_H
#define SD_DIT_COMMON_H

#include <stdbool.h>

/* diffusers' get_timestep_embedding for one timestep, in float32 as torch computes it:
 * freq_i = exp(-ln(max_period) * i / (dim/2 - shift)), then [sin(t f) | cos(t f)] (or [cos | sin]
 * with flip_sin_to_cos), times `scale` before the sin/cos; a zero is appended when dim is odd. */
void dit_timestep_embedding(float t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                            float scale, float max_period, float *out);

/* diffusers' get_2d_sincos_pos_embed(dim, (grid_h, grid_w), base_size, interpolation_scale, "pt"),
 * the block of `rows` x `cols` tokens starting at (top, left) of that grid (SD3 crops the middle of
 * a pos_embed_max_size grid): out[rows * cols][dim], row-major. The first dim/2 values encode the
 * column position, the last dim/2 the row, each as [sin | cos] over dim/4 frequencies; positions
 * are float32 (arange / (grid / base_size) / interp) and the sines float64 rounded to float32, as
 * torch computes them. dim must be a multiple of 4. */
void dit_sincos_pos_embed_2d(int dim, int grid_h, int grid_w, int top, int left, int rows, int cols,
                             double base_size, double interp, float *out);

/* y = x * (1 + scale) + shift over `rows` tokens of each batch item (x, y: [batch][rows][dim]);
 * y may be x. */
void dit_modulate(const float *x, float *y, int batch, int rows, int dim, const float *shift,
                  const float *scale, int emb_stride);

/* h += gate * x over [batch][rows][dim]. */
void dit_gated_add(float *h, const float *x, int batch, int rows, int dim, const float *gate,
                   int emb_stride);

/* In place, per token and head: the `heads * d` floats starting at x + r * stride are normalised
 * per head as RMSNorm (x / sqrt(mean(x^2) + eps) * gamma). */
void dit_head_rms_norm(float *x, int rows, int stride, int heads, int d, const float *gamma,
                       float eps);

/* Patch tokens [batch][gh * gw][p * p * c] (each token's values ordered (py, px, c), as diffusers'
 * reshape to (n, h, w, p, q, c) has them) -> NHWC [batch][gh * p][gw * p][c]. */
void dit_unpatchify(const float *tokens, int batch, int gh, int gw, int p, int c, float *out);

#endif
