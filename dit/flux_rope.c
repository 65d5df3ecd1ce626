/* FluxPosEmbed and apply_rotary_emb: 3-axis rotary position embedding over interleaved pairs. */
#include <math.h>

#include "flux_internal.h"

void flux_rope_table(const int axes[3], const float *ids, int n, float *cos_out, float *sin_out) {
    int d = 0;
    for (int a = 0; a < 3; a++) d += axes[a];
    for (int i = 0; i < n; i++) {
        float *c = cos_out + (long)i * d, *s = sin_out + (long)i * d;
        int col = 0;
        for (int a = 0; a < 3; a++) {
            const int dim = axes[a];
            /* diffusers computes the frequencies and angles in float64 (freqs_dtype for Flux)
             * and rounds cos/sin to float32 at the end; positions are float32 ids. */
            const double pos = (double)ids[(long)i * 3 + a];
            for (int j = 0; j < dim / 2; j++) {
                const double freq = 1.0 / pow(10000.0, (double)(2 * j) / dim);
                const double angle = pos * freq;
                /* repeat_interleave_real: each value serves both members of a pair. */
                c[col] = c[col + 1] = (float)cos(angle);
                s[col] = s[col + 1] = (float)sin(angle);
                col += 2;
            }
        }
    }
}

void flux_rope_apply(float *x, int batch, int n, int heads, int d, const float *cos_t,
                     const float *sin_t) {
    const long rows = (long)batch * n;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const long tok = r % n;
        const float *c = cos_t + tok * d, *s = sin_t + tok * d;
        for (int h = 0; h < heads; h++) {
            float *v = x + (r * heads + h) * d;
            for (int j = 0; j < d; j += 2) {
                /* x * cos + rotate(x) * sin with rotate(a, b) = (-b, a), as torch rounds it:
                 * both products in float32, then the sum. */
                const float re = v[j], im = v[j + 1];
                const float p0 = re * c[j], q0 = -im * s[j];
                const float p1 = im * c[j + 1], q1 = re * s[j + 1];
                v[j] = p0 + q0;
                v[j + 1] = p1 + q1;
            }
        }
    }
}
