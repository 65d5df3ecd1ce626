/* Per-instruction-set activation loops (not a public header). */
#ifndef SD_ACT_INTERNAL_H
#define SD_ACT_INTERNAL_H

#include <stddef.h>

typedef enum { ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_QUICK_GELU } act_kind;

/* x[0..n) = f(x) in place. */
void act_avx512_apply(act_kind kind, float *x, size_t n);
/* One GEGLU row: out[i] = in[i] * gelu(in[d + i]); out may equal in. */
void act_avx512_geglu_row(const float *in, float *out, int d);

#endif
