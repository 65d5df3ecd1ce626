#include "dit_common.h"

#include <math.h>
#include <string.h>

void dit_timestep_embedding(float t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                            float scale, float max_period, float *out) {
    const int half = dim / 2;
    /* torch multiplies arange (float32) by the Python scalar -log(max_period) rounded to float32,
     * then divides by (half - shift), also as a float32 scalar: same roundings here. */
    const float neg_log = (float)(-log((double)max_period));
    const float denom = (float)((double)half - (double)downscale_freq_shift);
    for (int i = 0; i < half; i++) {
        float exponent = neg_log * (float)i / denom;
        float arg = scale * (t * expf(exponent));
        float s = sinf(arg), c = cosf(arg);
        out[flip_sin_to_cos ? half + i : i] = s;
        out[flip_sin_to_cos ? i : half + i] = c;
    }
    if (dim % 2) out[dim - 1] = 0.0f;
}

/* One axis: out[0 .. dim/2) of a row for a float32 position, [sin | cos] over dim/4 frequencies
 * omega_k = 1 / 10000^(k / (dim/4)), in float64 as get_1d_sincos_pos_embed_from_grid does. */
static void sincos_1d(float pos, int half_dim, float *out) {
    const int quarter = half_dim / 2;
    for (int k = 0; k < quarter; k++) {
        double omega = 1.0 / pow(10000.0, (double)k / (half_dim / 2.0));
        double a = (double)pos * omega;
        out[k] = (float)sin(a);
        out[quarter + k] = (float)cos(a);
    }
}

void dit_sincos_pos_embed_2d(int dim, int grid_h, int grid_w, int top, int left, int rows, int cols,
                             double base_size, double interp, float *out) {
    const int half = dim / 2;
    const float sh = (float)((double)grid_h / base_size), sw = (float)((double)grid_w / base_size);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float *row = out + ((long)i * cols + j) * dim;
            /* torch: arange(grid, float32) / (grid / base_size) / interpolation_scale, in float32
             */
            float pw = (float)(left + j) / sw / (float)interp;
            float ph = (float)(top + i) / sh / (float)interp;
            sincos_1d(pw, half, row);
            sincos_1d(ph, half, row + half);
        }
}

void dit_modulate(const float *x, float *y, int batch, int rows, int dim, const float *shift,
                  const float *scale, int emb_stride) {
    for (int b = 0; b < batch; b++) {
        const float *sh = shift + (long)b * emb_stride, *sc = scale + (long)b * emb_stride;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *xr = x + ((long)b * rows + r) * dim;
            float *yr = y + ((long)b * rows + r) * dim;
            /* (1 + scale) is rounded first, as torch evaluates it. */
            for (int i = 0; i < dim; i++) yr[i] = xr[i] * (1.0f + sc[i]) + sh[i];
        }
    }
}

void dit_gated_add(float *h, const float *x, int batch, int rows, int dim, const float *gate,
                   int emb_stride) {
    for (int b = 0; b < batch; b++) {
        const float *g = gate + (long)b * emb_stride;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            float *hr = h + ((long)b * rows + r) * dim;
            const float *xr = x + ((long)b * rows + r) * dim;
            for (int i = 0; i < dim; i++) hr[i] += g[i] * xr[i];
        }
    }
}

void dit_head_rms_norm(float *x, int rows, int stride, int heads, int d, const float *gamma,
                       float eps) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            float *v = x + (long)r * stride + (long)h * d;
            double sq = 0.0;
            for (int i = 0; i < d; i++) sq += (double)v[i] * v[i];
            /* torch: x * rsqrt(mean(x^2) + eps), then * weight, each rounded to float32 */
            const float var = (float)(sq / d), rs = 1.0f / sqrtf(var + eps);
            for (int i = 0; i < d; i++) {
                float n = v[i] * rs;
                v[i] = gamma ? n * gamma[i] : n;
            }
        }
}

void dit_unpatchify(const float *tokens, int batch, int gh, int gw, int p, int c, float *out) {
    const int w = gw * p;
    for (int b = 0; b < batch; b++)
        for (int ty = 0; ty < gh; ty++)
            for (int tx = 0; tx < gw; tx++) {
                const float *tok = tokens + (((long)b * gh + ty) * gw + tx) * p * p * c;
                for (int py = 0; py < p; py++) {
                    float *dst = out + (((long)b * gh * p + ty * p + py) * w + tx * p) * c;
                    /* p consecutive output pixels hold p * c consecutive token values */
                    memcpy(dst, tok + (long)py * p * c, sizeof(float) * p * c);
                }
            }
}
