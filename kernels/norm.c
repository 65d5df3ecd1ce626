#include "norm.h"

#include <math.h>
#include <stddef.h>

#include "cpu.h"
#include "norm_internal.h"
#include "target.h"

static const norm_kernels *kernels(void) {
    switch (kern_isa_active()) {
#if KERN_X86
    case KERN_ISA_AVX512: return norm_kernels_avx512();
    case KERN_ISA_AVX2: return norm_kernels_avx2();
    default: return kern_fma_supported() ? norm_kernels_generic_fma() : norm_kernels_generic();
#elif KERN_ARM64
    case KERN_ISA_NEON: return norm_kernels_neon();
    default: return norm_kernels_generic();
#else
    default: return norm_kernels_generic();
#endif
    }
}

/* The _ref versions' SiLU: PyTorch's definition in plain C (the fast kernels use vec_math.h). */
static inline float silu(float v) { return v / (1.0f + expf(-v)); }

enum { GN_MAX_CHUNKS = 64, GN_MIN_CHUNK = 64, GN_PART_MAX = 8192 };

/* Statistics from one pass of double sums (sum and sum of squares) over fixed pixel chunks, the
 * chunks' per-group totals added in chunk order; then one pass that normalises. */
void group_norm_nhwc(const float *x, float *y, int n, int hw, int c, int groups, float eps,
                     const float *gamma, const float *beta, int silu_after) {
    if (n <= 0 || hw <= 0 || c <= 0 || groups <= 0) return;
    const norm_kernels *k = kernels();
    const int cpg = c / groups;
    /* The chunks depend on the shape only; their per-group sums live on the stack (at most
     * GN_PART_MAX doubles, whatever the group count). */
    int chunks = hw / GN_MIN_CHUNK;
    if (chunks > GN_MAX_CHUNKS) chunks = GN_MAX_CHUNKS;
    if (chunks > GN_PART_MAX / (2 * groups)) chunks = GN_PART_MAX / (2 * groups);
    if (chunks < 1) chunks = 1;
    for (int b = 0; b < n; b++) {
        const float *xb = x + (long)b * hw * c;
        float *yb = y + (long)b * hw * c;
        double gsum[groups], gsq[groups];
        for (int g = 0; g < groups; g++) gsum[g] = gsq[g] = 0.0;
        double cpart[chunks][2][groups];
#pragma omp parallel for schedule(static)
        for (int ck = 0; ck < chunks; ck++) {
            const long p0 = (long)hw * ck / chunks, p1 = (long)hw * (ck + 1) / chunks;
            double acc[2 * c];
            for (int i = 0; i < 2 * c; i++) acc[i] = 0.0;
            k->sums(xb + p0 * c, p1 - p0, c, acc, acc + c);
            for (int g = 0; g < groups; g++) {
                double s = 0.0, q = 0.0;
                for (int i = 0; i < cpg; i++) s += acc[g * cpg + i], q += acc[c + g * cpg + i];
                cpart[ck][0][g] = s, cpart[ck][1][g] = q;
            }
        }
        for (int ck = 0; ck < chunks; ck++)
            for (int g = 0; g < groups; g++) gsum[g] += cpart[ck][0][g], gsq[g] += cpart[ck][1][g];
        float mean[c], scale[c];
        const double count = (double)hw * cpg;
        for (int g = 0; g < groups; g++) {
            const double mu = gsum[g] / count;
            double var = gsq[g] / count - mu * mu;
            if (var < 0.0) var = 0.0;
            const double rstd = 1.0 / sqrt(var + eps);
            for (int i = 0; i < cpg; i++) {
                mean[g * cpg + i] = (float)mu;
                scale[g * cpg + i] = (float)(rstd * gamma[g * cpg + i]);
            }
        }
#pragma omp parallel for schedule(static)
        for (int ck = 0; ck < 4 * chunks; ck++) {
            const long p0 = (long)hw * ck / (4 * chunks), p1 = (long)hw * (ck + 1) / (4 * chunks);
            k->apply(xb + p0 * c, yb + p0 * c, p1 - p0, c, mean, scale, beta, silu_after);
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

/* One pass of double sums per row (mean and variance from sum and sum of squares), then one
 * that normalises; rows are independent, so threads split them freely. */
void layer_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma,
                const float *beta) {
    if (rows <= 0 || c <= 0) return;
    const norm_kernels *k = kernels();
#pragma omp parallel for schedule(static) if ((long)rows * c > (1L << 15))
    for (int r = 0; r < rows; r++) {
        double sum, sq;
        k->row_sums(x + (long)r * c, c, &sum, &sq);
        const double mean = sum / c;
        double var = sq / c - mean * mean;
        if (var < 0.0) var = 0.0;
        k->row_apply(x + (long)r * c, y + (long)r * c, c, (float)mean, (float)(1.0 / sqrt(var + eps)),
                     gamma, beta);
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

/* Sum of squares through the same lanes as layer_norm, then one scaling pass per row. */
void rms_norm(const float *x, float *y, int rows, int c, float eps, const float *gamma) {
    if (rows <= 0 || c <= 0) return;
    const norm_kernels *k = kernels();
#pragma omp parallel for schedule(static) if ((long)rows * c > (1L << 15))
    for (int r = 0; r < rows; r++) {
        double sq;
        k->row_sums(x + (long)r * c, c, NULL, &sq);
        k->row_scale(x + (long)r * c, y + (long)r * c, c, (float)(1.0 / sqrt(sq / c + eps)), gamma);
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

void softmax_rows(float *x, int rows, int c) {
    if (rows <= 0 || c <= 0) return;
    const norm_kernels *k = kernels();
#pragma omp parallel for schedule(static) if ((long)rows * c > (1L << 15))
    for (int r = 0; r < rows; r++) k->row_softmax(x + (long)r * c, c);
}

void softmax_rows_ref(float *x, int rows, int c) {
    for (int r = 0; r < rows; r++) {
        float *row = x + (long)r * c, mx = row[0];
        for (int j = 1; j < c; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < c; j++) sum += row[j] = expf(row[j] - mx);
        for (int j = 0; j < c; j++) row[j] = (float)(row[j] / sum);
    }
}
