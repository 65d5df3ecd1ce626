#include "act.h"

#include <math.h>

void act_silu(float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

static inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)); }

void act_gelu(float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = gelu(x[i]);
}

void act_gelu_tanh(float *x, size_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void act_quick_gelu(float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void act_geglu(const float *in, float *out, int rows, int d) {
    /* Sequential over rows when aliasing: row r's output [r*d, r*d+d) never overlaps the input of
     * a later row (starting at 2*d*(r+1)), but a parallel loop could write row r before row r/2
     * read its input. */
    if (in == out) {
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) {
                const float *row = in + (long)r * 2 * d;
                out[(long)r * d + i] = row[i] * gelu(row[d + i]);
            }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *row = in + (long)r * 2 * d;
        for (int i = 0; i < d; i++) out[(long)r * d + i] = row[i] * gelu(row[d + i]);
    }
}
