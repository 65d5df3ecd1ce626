/* Per-instruction-set activation loops (not a public header): act_body.h compiled once per
 * instruction set (isa_*.c), all with the same arithmetic (vec_math.h). */
#ifndef SD_ACT_INTERNAL_H
#define SD_ACT_INTERNAL_H

#include <stddef.h>

typedef enum { ACT_SILU, ACT_GELU, ACT_GELU_TANH, ACT_QUICK_GELU } act_kind;

typedef struct {
    /* x[0..n) = f(x) in place. */
    void (*apply)(act_kind kind, float *x, size_t n);
    /* One GEGLU row: out[i] = in[i] * gelu(in[d + i]); out may equal in. */
    void (*geglu_row)(const float *in, float *out, int d);
} act_kernels;

const act_kernels *act_kernels_generic(void);
const act_kernels *act_kernels_generic_fma(void);
const act_kernels *act_kernels_avx2(void);
const act_kernels *act_kernels_avx512(void);
const act_kernels *act_kernels_neon(void);

#endif
