/* Portable flash attention (any CPU; the path below AVX-512): blocks of ATT_GQ queries against
 * blocks of ATT_GK keys, scores and the output update as GEMM calls (so they run on the best GEMM
 * microkernel the CPU has), the online softmax in plain loops the compiler vectorises: maxima and
 * sums go through ATT_LANES partial results (combined in a fixed order), since a single running
 * sum cannot be vectorised without reordering it. attention_generic_avx2.c compiles this file
 * again for AVX2 under other names. Not trapping on floating-point exceptions (never enabled here)
 * lets the compiler turn the clamps and selects into vector code. */
#pragma GCC optimize("vect-cost-model=dynamic", "no-trapping-math")
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "attention_internal.h"
#include "gemm.h"

/* e^x to about 1 ulp for x >= -87 and 0 below, in operations a vectoriser accepts (Cephes'
 * polynomial; the rounding constant 1.5 * 2^23 rounds to nearest without a library call). */
static inline float exp_poly(float x0) {
    const float x = x0 < -87.0f ? -87.0f : x0 > 88.7f ? 88.7f : x0;
    const float big = 12582912.0f;
    float n = x * 1.44269504088896341f + big;
    n = n - big;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + (r + 1.0f);
    const int e = (int)n + 127;
    const int bits = (e > 0 ? e : 0) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x0 < -87.0f ? 0.0f : p * scale;
}

#ifndef ATT_GENERIC_NAME
#define ATT_GENERIC_NAME(name) name
#endif

enum { ATT_LANES = 16 };

/* Queries [i0, i0 + rows) of one (batch, head); pointers as for attn_tile_fn. */
void ATT_GENERIC_NAME(attn_generic_block)(const attn_shape *s, const float *q, const float *kp,
                                          const float *v, float *out, int i0, float *work) {
    const int d = s->d, rows = s->nq - i0 < ATT_GQ ? s->nq - i0 : ATT_GQ;
    float *sc = work, *o = sc + ATT_GQ * ATT_GK, *m = o + ATT_GQ * d, *l = m + ATT_GQ;
    for (int r = 0; r < rows; r++) m[r] = -FLT_MAX, l[r] = 0.0f;
    memset(o, 0, (size_t)rows * d * sizeof *o);
    const int kend = s->causal && i0 + rows < s->nk ? i0 + rows : s->nk;
    for (int j0 = 0; j0 < kend; j0 += ATT_GK) {
        const int nb = kend - j0 < ATT_GK ? kend - j0 : ATT_GK;
        /* Key blocks start at multiples of ATT_GK, hence of the packed panel width. */
        gemm_nt_packed(rows, nb, d, q + (long)i0 * s->q_stride, s->q_stride, kp + (long)j0 * d, sc,
                       ATT_GK, NULL, 0);
        for (int r = 0; r < rows; r++) {
            float *row = sc + r * ATT_GK;
            /* Query i sees keys j <= i when causal. */
            const int lim = s->causal && i0 + r + 1 - j0 < nb ? i0 + r + 1 - j0 : nb;
            /* Up to a whole number of lanes (ATT_GK is one), masked keys at -inf, i.e. p = 0. */
            const int lim_up = (lim + ATT_LANES - 1) / ATT_LANES * ATT_LANES;
            for (int j = lim > 0 ? lim : 0; j < lim_up; j++) row[j] = -INFINITY;
            float part[ATT_LANES];
            for (int u = 0; u < ATT_LANES; u++) part[u] = -FLT_MAX;
            for (int j = 0; j < lim_up; j += ATT_LANES)
                for (int u = 0; u < ATT_LANES; u++) {
                    const float x = row[j + u] * s->scale;
                    row[j + u] = x;
                    part[u] = x > part[u] ? x : part[u];
                }
            float mx = m[r];
            for (int u = 0; u < ATT_LANES; u++) mx = part[u] > mx ? part[u] : mx;
            const float alpha = exp_poly(m[r] - mx);
            for (int j = 0; j < lim_up; j++) row[j] = exp_poly(row[j] - mx);
            for (int u = 0; u < ATT_LANES; u++) part[u] = 0.0f;
            for (int j = 0; j < lim_up; j += ATT_LANES)
                for (int u = 0; u < ATT_LANES; u++) part[u] += row[j + u];
            float sum = 0.0f;
            for (int u = 0; u < ATT_LANES; u++) sum += part[u];
            for (int j = lim_up; j < nb; j++) row[j] = 0.0f;
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
            float *orow = o + r * d;
            for (int t = 0; t < d; t++) orow[t] *= alpha;
        }
        gemm_nn(rows, d, nb, sc, ATT_GK, v + (long)j0 * s->v_stride, s->v_stride, o, d, NULL, 1);
    }
    for (int r = 0; r < rows; r++) {
        const float inv = 1.0f / l[r];
        float *dst = out + (long)(i0 + r) * s->out_stride;
        for (int t = 0; t < d; t++) dst[t] = o[r * d + t] * inv;
    }
}
