/* The portable attention path (attention_generic.c) compiled again for AVX2 + FMA CPUs, so its
 * softmax loops use 8-wide vectors; the GEMMs inside choose their own kernels. */
#if defined(__x86_64__) || defined(__i386__)

#pragma GCC target("avx2,fma")
#define ATT_GENERIC_NAME(name) name##_avx2
#include "attention_generic.c"

#else

#include "attention_internal.h"

void attn_generic_block_avx2(const attn_shape *s, const float *q, const float *kp, const float *v,
                             float *out, int i0, float *work) {
    attn_generic_block(s, q, kp, v, out, i0, work);
}

#endif
