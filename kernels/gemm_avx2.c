/* GEMM microkernel for AVX2 + FMA: a 6 x 16 tile of C in 12 ymm registers, run on each half of a
 * 32-column panel. Compiled for AVX2 whatever the build flags; only called when the CPU has it. */
#include "gemm_internal.h"

#include "target.h"

/* x86 only (cpu.c reports no AVX elsewhere). */
#if KERN_X86
#include "vec_avx2.h"

enum { MR = 6 };

/* Columns [0, nr) of a 16-wide half panel; b rows are GEMM_NR apart. */
VEC_FN void half(const int rows, int kc, const float *a, const float *b, float *c, long ldc, int nr,
                 const float *bias, int load_c) {
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm256_setzero_ps();
    for (int p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_loadu_ps(b + p * GEMM_NR), b1 = _mm256_loadu_ps(b + p * GEMM_NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++) {
            const __m256 av = _mm256_broadcast_ss(a + r * GEMM_APITCH + p);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    if (nr == 16) {
        __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
        if (bias) bias0 = _mm256_loadu_ps(bias), bias1 = _mm256_loadu_ps(bias + 8);
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * ldc;
            __m256 v0 = c0[r], v1 = c1[r];
            if (load_c) v0 = _mm256_add_ps(_mm256_loadu_ps(cr), v0), v1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), v1);
            if (bias) v0 = _mm256_add_ps(v0, bias0), v1 = _mm256_add_ps(v1, bias1);
            _mm256_storeu_ps(cr, v0);
            _mm256_storeu_ps(cr + 8, v1);
        }
        return;
    }
    /* Partial width: through a small buffer, with the same additions in the same order. */
    float t[16];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        _mm256_storeu_ps(t, c0[r]);
        _mm256_storeu_ps(t + 8, c1[r]);
        for (int j = 0; j < nr; j++) {
            float v = t[j];
            if (load_c) v = cr[j] + v;
            if (bias) v = v + bias[j];
            cr[j] = v;
        }
    }
}

VEC_TARGET static void ukernel(int kc, const float *a, const float *b, float *c, long ldc, int mr,
                               int nr, const float *bias, int load_c) {
    for (int h = 0; h < 2 && nr > 16 * h; h++) {
        const int w = nr - 16 * h < 16 ? nr - 16 * h : 16;
        const float *bh = bias ? bias + 16 * h : NULL;
        switch (mr) {
#define CASE(R)                                                                                    \
    case R: half(R, kc, a, b + 16 * h, c + 16 * h, ldc, w, bh, load_c); break;
            CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
        default: break;
        }
    }
}

const gemm_kernel *gemm_kernel_avx2(void) {
    static const gemm_kernel k = {MR, ukernel, NULL};
    return &k;
}

#else
typedef int gemm_avx2_unused; /* ISO C wants something in a translation unit */
#endif
