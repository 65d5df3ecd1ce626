/* GEMM microkernel for AVX-512: a 14 x 32 tile of C in 28 zmm registers. Per step of k: two
 * vector loads of B, fourteen broadcasts of A, 28 independent FMAs (enough to hide the FMA
 * latency on two FMA pipes). Compiled for AVX-512 whatever the build flags; only called when the
 * CPU has it. */
#include "gemm_internal.h"

#include "target.h"

/* x86 only (cpu.c reports no AVX elsewhere). */
#if KERN_X86
#include "vec_avx512.h"

enum { MR = 14 };

/* One tile with a compile-time row count (the switch below instantiates each), so edge tiles
 * run the same chain of FMAs per element as full ones: results do not depend on tiling. */
VEC_FN void tile(const int rows, int kc, const float *a, const float *b, float *c, long ldc, int nr,
                 const float *bias, int load_c) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        const __m512 b0 = _mm512_loadu_ps(b + p * GEMM_NR), b1 = _mm512_loadu_ps(b + p * GEMM_NR + 16);
#pragma GCC unroll 14
        for (int r = 0; r < rows; r++) {
            const __m512 av = _mm512_set1_ps(a[r * GEMM_APITCH + p]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        __m512 v0 = c0[r], v1 = c1[r];
        if (load_c) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), v1);
        }
        if (bias) v0 = _mm512_add_ps(v0, bias0), v1 = _mm512_add_ps(v1, bias1);
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}

VEC_TARGET static void ukernel(int kc, const float *a, const float *b, float *c, long ldc, int mr,
                               int nr, const float *bias, int load_c) {
    switch (mr) {
#define CASE(R)                                                                                    \
    case R:                                                                                        \
        tile(R, kc, a, b, c, ldc, nr, bias, load_c);                                               \
        break;
        CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8)
        CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
    default: break;
    }
}

/* gemm_pack_nt_panel with 16 x 16 register transposes. */
VEC_TARGET static void pack_nt(const float *b, long ldb, int n, int j0, int p0, int kc,
                               float *dst) {
    const int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
    for (int h = 0; h < 2; h++) {
        const int c0 = 16 * h, cn = cols - c0 < 0 ? 0 : cols - c0 < 16 ? cols - c0 : 16;
        for (int q = 0; q < kc; q += 16) {
            const int qn = kc - q < 16 ? kc - q : 16;
            const __mmask16 m = qn == 16 ? 0xFFFF : (__mmask16)((1u << qn) - 1);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = i < cn ? _mm512_maskz_loadu_ps(m, b + (j0 + c0 + i) * ldb + p0 + q)
                              : _mm512_setzero_ps();
            v_transpose16(r);
            for (int i = 0; i < qn; i++) _mm512_storeu_ps(dst + (q + i) * GEMM_NR + c0, r[i]);
        }
    }
}

const gemm_kernel *gemm_kernel_avx512(void) {
    static const gemm_kernel k = {MR, ukernel, pack_nt};
    return &k;
}

#else
typedef int gemm_avx512_unused; /* ISO C wants something in a translation unit */
#endif
