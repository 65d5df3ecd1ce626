/* torch.Generator("cpu") + torch.randn(float32), bit for bit (see docs/TORCH_RNG.md).
 *
 * torch draws a float32 tensor of >= 16 elements with its vectorised Box-Muller over blocks of 16
 * uniforms, using single-precision Cephes log/sincos polynomials compiled with fused multiply-adds;
 * smaller tensors take a scalar double-precision Box-Muller that caches its second value in the
 * generator. Both are reproduced here operation by operation: fmaf where torch fuses, plain float
 * arithmetic elsewhere, so that every element rounds exactly as torch's does. */
#include "rng.h"

#include <math.h>
#include <string.h>

#define MT_N 624
#define MT_M 397

void rng_seed(sd_rng *r, uint64_t seed) {
    /* torch seeds its mt19937 with the low 32 bits of the 64-bit seed. */
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->index = MT_N;
    r->has_next_normal = 0;
    r->next_normal = 0.0;
}

static void mt_twist(sd_rng *r) {
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % MT_N] & 0x7fffffffu);
        uint32_t v = r->mt[(i + MT_M) % MT_N] ^ (y >> 1);
        if (y & 1u) v ^= 0x9908b0dfu;
        r->mt[i] = v;
    }
    r->index = 0;
}

uint32_t rng_next_u32(sd_rng *r) {
    if (r->index >= MT_N) mt_twist(r);
    uint32_t y = r->mt[r->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* uniform_real_distribution<float>(0, 1): 24 random bits scaled by 2^-24 (exact in float). */
static float uniform_f32(sd_rng *r) {
    return (float)(rng_next_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* uniform_real_distribution<double>(0, 1) from random64 = (first << 32) | second: 53 bits. */
static double uniform_f64(sd_rng *r) {
    uint64_t hi = rng_next_u32(r);
    uint64_t lo = rng_next_u32(r);
    uint64_t v = (hi << 32) | lo;
    return (double)(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* log(x) for x in (0, 1], as torch's vectorised Cephes polynomial computes it. */
static float cephes_logf(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    float e = (float)((int)(bits >> 23) - 127) + 1.0f;
    uint32_t mbits = (bits & ~0x7f800000u) | 0x3f000000u; /* exponent of 0.5: m in [0.5, 1) */
    float m;
    memcpy(&m, &mbits, 4);
    float t;
    if (m < 0.707106781186547524f) {
        e = e - 1.0f;
        t = (m - 1.0f) + m;
    } else {
        t = m - 1.0f;
    }
    float z = t * t;
    float y = 7.0376836292e-2f;
    y = fmaf(y, t, -1.1514610310e-1f);
    y = fmaf(y, t, 1.1676998740e-1f);
    y = fmaf(y, t, -1.2420140846e-1f);
    y = fmaf(y, t, 1.4249322787e-1f);
    y = fmaf(y, t, -1.6668057665e-1f);
    y = fmaf(y, t, 2.0000714765e-1f);
    y = fmaf(y, t, -2.4999993993e-1f);
    y = fmaf(y, t, 3.3333331174e-1f);
    y = y * t;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(z, -0.5f, y);
    float res = t + y;
    return fmaf(e, 0.693359375f, res);
}

/* sin and cos of theta >= 0, as torch's vectorised Cephes sincos computes them. */
static void cephes_sincosf(float theta, float *s_out, float *c_out) {
    int j = (int)(theta * 1.27323954473516f);
    j = (j + 1) & ~1;
    float y = (float)j;
    float x = fmaf(y, -0.78515625f, theta);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    float z = x * x;
    float c = 2.443315711809948e-5f;
    c = fmaf(c, z, -1.388731625493765e-3f);
    c = fmaf(c, z, 4.166664568298827e-2f);
    c = c * z;
    c = fmaf(c, z, -(z * 0.5f));
    c = c + 1.0f;
    float s = -1.9515295891e-4f;
    s = fmaf(s, z, 8.3321608736e-3f);
    s = fmaf(s, z, -1.6666654611e-1f);
    s = s * z;
    s = fmaf(s, x, x);
    float sn = s, cs = c;
    if (j & 2) sn = c, cs = s;
    if (j & 4) sn = -sn;
    if (((j - 2) & 4) == 0) cs = -cs;
    *s_out = sn;
    *c_out = cs;
}

/* Box-Muller in place on 16 uniforms: d[0..8) become the cosine half, d[8..16) the sine half. */
static void normal_fill_16(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = 6.2831855f * u2;
        float sn, cs;
        cephes_sincosf(theta, &sn, &cs);
        d[j] = radius * cs;
        d[j + 8] = radius * sn;
    }
}

/* torch's at::normal_distribution<double>: one value per call, the pair's sine half cached. */
static double normal_f64(sd_rng *r) {
    if (r->has_next_normal) {
        r->has_next_normal = 0;
        return r->next_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double radius = sqrt(-2.0 * log1p(-u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    r->next_normal = radius * sin(theta);
    r->has_next_normal = 1;
    return radius * cos(theta);
}

void rng_randn(sd_rng *r, float *out, size_t n) {
    if (n < 16) {
        for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
    if (n % 16 != 0) {
        /* torch redraws the last 16 values from fresh uniforms rather than finishing a block. */
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        normal_fill_16(tail);
    }
}
