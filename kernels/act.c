#include "act.h"

#include <math.h>

#include "act_internal.h"
#include "cpu.h"

/* Chunks for threads: element-wise work, so any split gives the same numbers. */
enum { ACT_CHUNK = 1 << 14 };

/* 1 + erf(u) as erfc(-u), and 1 + tanh(y) as 2 / (1 + e^(-2y)): the same functions, without the
 * cancellation that loses all precision in the negative tail. */
static inline float gelu(float v) { return 0.5f * v * erfcf(-v * (float)M_SQRT1_2); }

static float apply1(act_kind kind, float v) {
    switch (kind) {
    case ACT_SILU: return v / (1.0f + expf(-v));
    case ACT_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    case ACT_GELU: return gelu(v);
    default: {
        const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
        return v / (1.0f + expf(-2.0f * k * (v + 0.044715f * v * v * v)));
    }
    }
}

static void apply(act_kind kind, float *x, size_t n) {
    const int fast = kern_isa_active() == KERN_ISA_AVX512;
    const long chunks = (long)((n + ACT_CHUNK - 1) / ACT_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (long c = 0; c < chunks; c++) {
        const size_t i0 = (size_t)c * ACT_CHUNK, len = n - i0 < ACT_CHUNK ? n - i0 : ACT_CHUNK;
        if (fast) {
            act_avx512_apply(kind, x + i0, len);
        } else {
            for (size_t i = i0; i < i0 + len; i++) x[i] = apply1(kind, x[i]);
        }
    }
}

void act_silu(float *x, size_t n) { apply(ACT_SILU, x, n); }
void act_gelu(float *x, size_t n) { apply(ACT_GELU, x, n); }
void act_gelu_tanh(float *x, size_t n) { apply(ACT_GELU_TANH, x, n); }
void act_quick_gelu(float *x, size_t n) { apply(ACT_QUICK_GELU, x, n); }

static void geglu_row(const float *in, float *out, int d, int fast) {
    if (fast) {
        act_avx512_geglu_row(in, out, d);
        return;
    }
    for (int i = 0; i < d; i++) out[i] = in[i] * gelu(in[d + i]);
}

void act_geglu(const float *in, float *out, int rows, int d) {
    const int fast = kern_isa_active() == KERN_ISA_AVX512;
    /* Sequential over rows when aliasing: row r's output [r*d, r*d+d) never overlaps the input of
     * a later row (starting at 2*d*(r+1)), but a parallel loop could write row r before row r/2
     * read its input. */
    if (in == out) {
        for (int r = 0; r < rows; r++) geglu_row(in + (long)r * 2 * d, out + (long)r * d, d, fast);
        return;
    }
#pragma omp parallel for schedule(static) if ((long)rows * d > ACT_CHUNK)
    for (int r = 0; r < rows; r++) geglu_row(in + (long)r * 2 * d, out + (long)r * d, d, fast);
}
