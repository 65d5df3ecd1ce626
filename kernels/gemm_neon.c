/* GEMM microkernel for aarch64 NEON: an 8 x 8 tile of C in 16 q registers, run on each quarter of
 * a 32-column panel. Each element is one chain of fused multiply-adds in k order, as in every
 * other microkernel, so the products are the same bits as on x86.
 *
 * Four k steps at a time: one 128-bit load brings a row's next four values of A, and the by-lane
 * form of fmla (vfmaq_laneq_f32) multiplies a row of B by one of them, so A costs one load per
 * four steps instead of a broadcast per step. 16 accumulators + 8 rows of A + 2 vectors of B fit
 * the 32 registers. */
#include "gemm_internal.h"

#include "target.h"

#if KERN_ARM64
#include <arm_neon.h>

enum { MR = 8, STRIP = 8 };

/* Columns [0, nr) of an 8-wide strip of the panel; b rows are GEMM_NR apart. */
KERN_INLINE void strip(const int rows, int kc, const float *a, const float *b, float *c, long ldc,
                       int nr, const float *bias, int load_c) {
    float32x4_t c0[MR], c1[MR];
KERN_UNROLL
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = vdupq_n_f32(0.0f);
    int p = 0;
    for (; p + 4 <= kc; p += 4) {
        float32x4_t av[MR];
KERN_UNROLL
        for (int r = 0; r < rows; r++) av[r] = vld1q_f32(a + r * GEMM_APITCH + p);
        /* The lane must be a constant: one step per lane, spelled out. */
#define STEP(L)                                                                                    \
    {                                                                                              \
        const float32x4_t b0 = vld1q_f32(b + (p + L) * GEMM_NR), b1 = vld1q_f32(b + (p + L) * GEMM_NR + 4); \
        KERN_UNROLL                                                                                \
        for (int r = 0; r < rows; r++) {                                                           \
            c0[r] = vfmaq_laneq_f32(c0[r], b0, av[r], L);                                          \
            c1[r] = vfmaq_laneq_f32(c1[r], b1, av[r], L);                                          \
        }                                                                                          \
    }
        STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
    }
    for (; p < kc; p++) {
        const float32x4_t b0 = vld1q_f32(b + p * GEMM_NR), b1 = vld1q_f32(b + p * GEMM_NR + 4);
KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            const float32x4_t av = vld1q_dup_f32(a + r * GEMM_APITCH + p);
            c0[r] = vfmaq_f32(c0[r], b0, av);
            c1[r] = vfmaq_f32(c1[r], b1, av);
        }
    }
    if (nr == STRIP) {
        float32x4_t bias0 = vdupq_n_f32(0.0f), bias1 = bias0;
        if (bias) bias0 = vld1q_f32(bias), bias1 = vld1q_f32(bias + 4);
KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * ldc;
            float32x4_t v0 = c0[r], v1 = c1[r];
            if (load_c) v0 = vaddq_f32(vld1q_f32(cr), v0), v1 = vaddq_f32(vld1q_f32(cr + 4), v1);
            if (bias) v0 = vaddq_f32(v0, bias0), v1 = vaddq_f32(v1, bias1);
            vst1q_f32(cr, v0);
            vst1q_f32(cr + 4, v1);
        }
        return;
    }
    /* Partial width: through a small buffer, with the same additions in the same order. */
    float t[STRIP];
KERN_UNROLL
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        vst1q_f32(t, c0[r]);
        vst1q_f32(t + 4, c1[r]);
        for (int j = 0; j < nr; j++) {
            float v = t[j];
            if (load_c) v = cr[j] + v;
            if (bias) v = v + bias[j];
            cr[j] = v;
        }
    }
}

static void ukernel(int kc, const float *a, const float *b, float *c, long ldc, int mr, int nr,
                    const float *bias, int load_c) {
    for (int s = 0; s < GEMM_NR / STRIP && nr > STRIP * s; s++) {
        const int w = nr - STRIP * s < STRIP ? nr - STRIP * s : STRIP;
        const float *bs = bias ? bias + STRIP * s : NULL;
        switch (mr) {
#define CASE(R)                                                                                    \
    case R: strip(R, kc, a, b + STRIP * s, c + STRIP * s, ldc, w, bs, load_c); break;
            CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
        default: break;
        }
    }
}

const gemm_kernel *gemm_kernel_neon(void) {
    static const gemm_kernel k = {MR, ukernel, NULL};
    return &k;
}

#else
typedef int gemm_neon_unused; /* ISO C wants something in a translation unit */
#endif
