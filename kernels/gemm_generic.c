/* Portable GEMM microkernel (any CPU): a 4 x 32 tile in plain C that the compiler vectorises for
 * the baseline instruction set. Same contract as the SIMD kernels. */
#include "gemm_internal.h"

enum { MR = 4 };

static void ukernel(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                    const float *bias, int load_c) {
    float acc[MR][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        const float *bp = b + (long)p * GEMM_NR;
        for (int r = 0; r < mr; r++) {
            const float av = a[r * GEMM_APITCH + p];
            for (int j = 0; j < GEMM_NR; j++) acc[r][j] += av * bp[j];
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

const gemm_kernel *gemm_kernel_generic(void) {
    static const gemm_kernel k = {MR, ukernel, NULL};
    return &k;
}
