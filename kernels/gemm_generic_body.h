/* Portable GEMM microkernel (any CPU): a 4 x 32 tile in plain C, each element one chain of fmaf
 * in k order like the SIMD microkernels' fused multiply-adds, so the products are the same bits on
 * every instruction set. Included by isa_generic.c with a KERN_NAME(name) definition. */
#include "gemm_internal.h"

enum { KERN_NAME(gemm_mr) = 4 };

VEC_TARGET static void KERN_NAME(gemm_ukernel)(int kc, const float *a, const float *b, float *c,
                                               long ldc, int mr, int nr, const float *bias,
                                               int load_c) {
    float acc[KERN_NAME(gemm_mr)][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        const float *bp = b + (long)p * GEMM_NR;
        for (int r = 0; r < mr; r++) {
            const float av = a[r * GEMM_APITCH + p];
            for (int j = 0; j < GEMM_NR; j++) acc[r][j] = fmaf(av, bp[j], acc[r][j]);
        }
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        for (int j = 0; j < nr; j++) {
            float v = acc[r][j];
            if (load_c) v = cr[j] + v;
            if (bias) v = v + bias[j];
            cr[j] = v;
        }
    }
}

const gemm_kernel *KERN_NAME(gemm_kernel)(void) {
    static const gemm_kernel k = {KERN_NAME(gemm_mr), KERN_NAME(gemm_ukernel), NULL};
    return &k;
}
