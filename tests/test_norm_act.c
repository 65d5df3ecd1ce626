/* Normalisations and activations. Norms are compared with their plain references on awkward
 * shapes (one channel per group, a single pixel, rows shorter than a vector, in place); the
 * activations with the PyTorch formulas evaluated in double precision here. */
#include <omp.h>

#include "../kernels/act.h"
#include "../kernels/norm.h"
#include "kernel_check.h"

static void test_group_norm(void) {
    static const struct { int n, hw, c, groups; } sh[] = {
        {1, 1, 32, 32},  {2, 7, 37, 37}, {1, 13, 96, 32}, {2, 64, 320, 32}, {1, 5, 4, 1},
        {1, 9, 128, 32}, {3, 3, 60, 6},  {1, 100, 17, 1}, {2, 33, 1280, 32},
    };
    kc_group g;
    kc_begin(&g, "group_norm_nhwc", 1e-6);
    for (size_t i = 0; i < sizeof sh / sizeof *sh; i++)
        for (int variant = 0; variant < 4; variant++) {
            const int silu = variant & 1, inplace = variant & 2;
            const size_t n = (size_t)sh[i].n * sh[i].hw * sh[i].c;
            float *x = kc_random(n, 40 + i), *gamma = kc_random(sh[i].c, 41), *beta = kc_random(sh[i].c, 42);
            /* An offset and a spread make the variance computation matter. */
            for (size_t j = 0; j < n; j++) x[j] = 3.0f + 2.5f * x[j];
            float *want = malloc(n * sizeof *want), *got = inplace ? kc_copy(x, n) : malloc(n * sizeof *got);
            group_norm_nhwc(inplace ? got : x, got, sh[i].n, sh[i].hw, sh[i].c, sh[i].groups, 1e-5f,
                            gamma, beta, silu);
            group_norm_nhwc_ref(x, want, sh[i].n, sh[i].hw, sh[i].c, sh[i].groups, 1e-5f, gamma, beta, silu);
            kc_case(&g, got, want, n, "n%d hw%d c%d g%d silu%d inplace%d", sh[i].n, sh[i].hw, sh[i].c,
                    sh[i].groups, silu, inplace ? 1 : 0);
            free(x), free(gamma), free(beta), free(want), free(got);
        }
    kc_end(&g);
}

static void test_row_norms(void) {
    static const int widths[] = {1, 7, 16, 33, 320, 768, 1280};
    kc_group gl, gr;
    kc_begin(&gl, "layer_norm", 1e-6);
    kc_begin(&gr, "rms_norm", 1e-6);
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++)
        for (int variant = 0; variant < 3; variant++) {
            const int rows = 19, c = widths[i];
            const size_t n = (size_t)rows * c;
            float *x = kc_random(n, 50 + i), *gamma = kc_random(c, 51), *beta = kc_random(c, 52);
            for (size_t j = 0; j < n; j++) x[j] = -2.0f + 4.0f * x[j];
            float *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
            /* variant 0: affine; 1: no gamma/beta; 2: gamma only (and in place) */
            const float *gm = variant == 1 ? NULL : gamma, *bt = variant == 0 ? beta : NULL;
            layer_norm_ref(x, want, rows, c, 1e-5f, gm, bt);
            if (variant == 2) {
                memcpy(got, x, n * sizeof *got);
                layer_norm(got, got, rows, c, 1e-5f, gm, bt);
            } else {
                layer_norm(x, got, rows, c, 1e-5f, gm, bt);
            }
            kc_case(&gl, got, want, n, "c%d variant%d", c, variant);
            rms_norm_ref(x, want, rows, c, 1e-6f, gm);
            rms_norm(x, got, rows, c, 1e-6f, gm);
            kc_case(&gr, got, want, n, "c%d variant%d", c, variant);
            free(x), free(gamma), free(beta), free(got), free(want);
        }
    kc_end(&gl);
    kc_end(&gr);
}

/* The definitions PyTorch uses, in double, written without cancellation in the negative tail:
 * 1 + erf(u) = erfc(-u) and 1 + tanh(y) = 2 / (1 + e^(-2y)). */
static double silu_d(double v) { return v / (1.0 + exp(-v)); }
static double gelu_d(double v) { return 0.5 * v * erfc(-v / sqrt(2.0)); }
static double gelu_tanh_d(double v) {
    return v / (1.0 + exp(-2.0 * sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
}
static double quick_gelu_d(double v) { return v / (1.0 + exp(-1.702 * v)); }

static void test_activations(void) {
    /* Odd length, and values from -12 to 12 (saturated tails included). */
    const size_t n = 10007;
    float *x = kc_random(n, 60), *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++) x[i] *= 12.0f;
    x[0] = 0.0f, x[1] = -90.0f, x[2] = 90.0f;
    struct {
        const char *name;
        void (*fn)(float *, size_t);
        double (*ref)(double);
    } acts[] = {{"act_silu", act_silu, silu_d},
                {"act_gelu", act_gelu, gelu_d},
                {"act_gelu_tanh", act_gelu_tanh, gelu_tanh_d},
                {"act_quick_gelu", act_quick_gelu, quick_gelu_d}};
    for (size_t a = 0; a < sizeof acts / sizeof *acts; a++) {
        memcpy(got, x, n * sizeof *got);
        acts[a].fn(got, n);
        for (size_t i = 0; i < n; i++) want[i] = (float)acts[a].ref(x[i]);
        check_rel(acts[a].name, got, want, n, 1e-6);
        /* Element by element too, tails included (they vanish in an L2 norm): within [-6, 6]
         * every value, however small, keeps float precision (beyond, the rounding of x itself,
         * amplified by about x^2 in the tail, dominates). */
        double worst = 0.0;
        size_t at = 0;
        for (size_t i = 3; i < n; i++) {
            if (fabsf(x[i]) > 6.0f) continue;
            const double w = acts[a].ref(x[i]), e = fabs(got[i] - w) / (fabs(w) > 1e-35 ? fabs(w) : 1e-35);
            if (!(e <= worst)) worst = e, at = i;
        }
        CHECK(worst < 1e-5, "%s: relative error %.3g at x = %.9g", acts[a].name, worst, x[at]);
        printf("     %s: worst element-wise relative error %.3g at x = %.6g\n", acts[a].name, worst, x[at]);
    }
    /* GEGLU, separate and aliased output; d not a multiple of any vector width. */
    const int rows = 23, d = 37;
    float *in = kc_random((size_t)rows * 2 * d, 61), *g_out = malloc((size_t)rows * d * sizeof *g_out);
    for (int i = 0; i < rows * 2 * d; i++) in[i] *= 5.0f;
    float *g_want = malloc((size_t)rows * d * sizeof *g_want);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < d; i++)
            g_want[r * d + i] = (float)(in[r * 2 * d + i] * gelu_d(in[r * 2 * d + d + i]));
    act_geglu(in, g_out, rows, d);
    check_rel("act_geglu", g_out, g_want, (size_t)rows * d, 1e-6);
    act_geglu(in, in, rows, d);
    check_rel("act_geglu in place", in, g_want, (size_t)rows * d, 1e-6);
    free(x), free(got), free(want), free(in), free(g_out), free(g_want);
}

static void test_thread_invariance(void) {
    const int n = 2, hw = 1031, c = 320;
    const size_t len = (size_t)n * hw * c;
    float *x = kc_random(len, 70), *gamma = kc_random(c, 71), *beta = kc_random(c, 72);
    float *out[3];
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        out[t] = malloc(2 * len * sizeof *out[t]);
        group_norm_nhwc(x, out[t], n, hw, c, 32, 1e-5f, gamma, beta, 1);
        layer_norm(x, out[t] + len, n * hw, c, 1e-5f, gamma, beta);
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 3; t++)
        CHECK(!memcmp(out[0], out[t], 2 * len * sizeof *out[0]), "norms: %d threads differ from 1", t + 1);
    printf("ok   group_norm_nhwc and layer_norm bit-identical with 1, 2 and 3 threads\n");
    for (int t = 0; t < 3; t++) free(out[t]);
    free(x), free(gamma), free(beta);
}

int main(void) {
    test_group_norm();
    test_row_norms();
    test_activations();
    test_thread_invariance();
    return test_summary();
}
