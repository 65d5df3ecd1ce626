/* Element-wise activations, in place, matching PyTorch's definitions in float32 to about an ulp:
 * exp and erfc are polynomials (vec_math.h) rather than libm's, the same on every instruction
 * set, so the results are the same bits on every CPU. */
#ifndef SD_ACT_H
#define SD_ACT_H

#include <stddef.h>

void act_silu(float *x, size_t n);       /* x * sigmoid(x) */
void act_gelu(float *x, size_t n);       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
void act_gelu_tanh(float *x, size_t n);  /* tanh approximation ("gelu_pytorch_tanh") */
void act_quick_gelu(float *x, size_t n); /* x * sigmoid(1.702 x), OpenAI CLIP */

/* GEGLU: in is [rows][2*d] = [value | gate]; out[rows][d] = value * gelu(gate). out may alias in
 * (rows are processed in order and each output row ends before its input row's gate starts). */
void act_geglu(const float *in, float *out, int rows, int d);

#endif
