#include "norm.h"

#include <math.h>

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

void group_norm_nhwc(const float *x, float *y, int n, int hw, int c, int groups, float eps,
                     const float *gamma, const float *beta, int silu_after) {
    const int cpg = c / groups;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            const float *xb = x + (long)b * hw * c + g * cpg;
            float *yb = y + (long)b * hw * c + g * cpg;
            double sum = 0.0, sq = 0.0;
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) sum += xb[p * c + i];
            const double count = (double)hw * cpg, mean = sum / count;
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) {
                    double d = xb[p * c + i] - mean;
                    sq += d * d;
                }
            const float m = (float)mean, rstd = (float)(1.0 / sqrt(sq / count + eps));
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) {
                    int ch = g * cpg + i;
                    float v = (xb[p * c + i] - m) * rstd * gamma[ch] + beta[ch];
                    yb[p * c + i] = silu_after ? silu(v) : v;
                }
        }
}

void group_norm_nhwc_ref(const float *x, float *y, int n, int hw, int c, int groups, float eps,
                         const float *gamma, const float *beta, int silu_after) {
    const int cpg = c / groups;
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            double sum = 0.0, sq = 0.0;
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) sum += x[((long)b * hw + p) * c + g * cpg + i];
            double mean = sum / ((double)hw * cpg);
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) {
                    double d = x[((long)b * hw + p) * c + g * cpg + i] - mean;
                    sq += d * d;
                }
            double rstd = 1.0 / sqrt(sq / ((double)hw * cpg) + eps);
            for (long p = 0; p < hw; p++)
                for (int i = 0; i < cpg; i++) {
                    long idx = ((long)b * hw + p) * c + g * cpg + i;
                    int ch = g * cpg + i;
                    float v = (float)((x[idx] - mean) * rstd) * gamma[ch] + beta[ch];
                    y[idx] = silu_after ? silu(v) : v;
                }
        }
}

void layer_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma,
                const float *beta) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * c;
        float *yr = y + (long)r * c;
        double sum = 0.0, sq = 0.0;
        for (int i = 0; i < c; i++) sum += xr[i];
        const double mean = sum / c;
        for (int i = 0; i < c; i++) {
            double d = xr[i] - mean;
            sq += d * d;
        }
        const float m = (float)mean, rstd = (float)(1.0 / sqrt(sq / c + eps));
        for (int i = 0; i < c; i++) {
            float v = (xr[i] - m) * rstd;
            yr[i] = v * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}

void layer_norm_ref(const float *x, float *y, int rows, int c, float eps, const float *gamma,
                    const float *beta) {
    for (int r = 0; r < rows; r++) {
        double sum = 0.0, sq = 0.0;
        for (int i = 0; i < c; i++) sum += x[(long)r * c + i];
        double mean = sum / c;
        for (int i = 0; i < c; i++) {
            double d = x[(long)r * c + i] - mean;
            sq += d * d;
        }
        double rstd = 1.0 / sqrt(sq / c + eps);
        for (int i = 0; i < c; i++) {
            float v = (float)((x[(long)r * c + i] - mean) * rstd);
            y[(long)r * c + i] = v * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}

void rms_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * c;
        float *yr = y + (long)r * c;
        double sq = 0.0;
        for (int i = 0; i < c; i++) sq += (double)xr[i] * xr[i];
        const float rs = (float)(1.0 / sqrt(sq / c + eps));
        for (int i = 0; i < c; i++) yr[i] = xr[i] * rs * (gamma ? gamma[i] : 1.0f);
    }
}

void rms_norm_ref(const float *x, float *y, int rows, int c, float eps, const float *gamma) {
    for (int r = 0; r < rows; r++) {
        double sq = 0.0;
        for (int i = 0; i < c; i++) sq += (double)x[(long)r * c + i] * x[(long)r * c + i];
        double rs = 1.0 / sqrt(sq / c + eps);
        for (int i = 0; i < c; i++)
            y[(long)r * c + i] = (float)(x[(long)r * c + i] * rs) * (gamma ? gamma[i] : 1.0f);
    }
}
