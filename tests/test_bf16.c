/* The bf16 kernels (--precision bf16): rounding to bf16, the GEMM and the convolution against
 * their plain references on awkward shapes (odd k, sizes off every tile, padded rows, stride 2,
 * asymmetric padding, 1x1), on the avx512_bf16 kernel and on the portable emulation, and results
 * that do not depend on the number of threads.
 *
 * Tolerance: the fast kernels and the references multiply the same bf16 values (every product
 * exact in fp32) and differ only in the order of their fp32 sums. Each output is checked against
 * the exact (double) sum of those terms with the bound of recursive fp32 summation,
 * |error| <= (terms) * 2^-24 * sum |term|, so a wrong rounding of an input (2^-9 relative) or a
 * missing term fails, while any summation order passes. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

#include "../core/arena.h"
#include "../core/safetensors.h"
#include "../kernels/conv2d.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_bf16.h"
#include "../nn/layers.h"
#include "kernel_check.h"

static float rb(float x) { return bf16_to_f32(bf16_from_f32(x)); }

static float bits_f(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v = {u};
    return v.f;
}

static void test_rounding(void) {
    CHECK(bf16_from_f32(1.0f) == 0x3f80, "bf16(1) = %04x", bf16_from_f32(1.0f));
    CHECK(bf16_from_f32(-2.0f) == 0xc000, "bf16(-2) = %04x", bf16_from_f32(-2.0f));
    /* ties go to even, otherwise to nearest */
    CHECK(bf16_from_f32(bits_f(0x3f808000u)) == 0x3f80, "tie down to even");
    CHECK(bf16_from_f32(bits_f(0x3f818000u)) == 0x3f82, "tie up to even");
    CHECK(bf16_from_f32(bits_f(0x3f808001u)) == 0x3f81, "above the tie rounds up");
    CHECK(bf16_from_f32(bits_f(0x3f807fffu)) == 0x3f80, "below the tie rounds down");
    CHECK(bf16_from_f32(bits_f(0x7f7fffffu)) == 0x7f80, "FLT_MAX rounds to inf");
    CHECK(bf16_from_f32(INFINITY) == 0x7f80 && bf16_from_f32(-INFINITY) == 0xff80, "infinities");
    CHECK(isnan(bf16_to_f32(bf16_from_f32(NAN))), "NaN stays NaN");
    CHECK(bf16_from_f32(bits_f(0x00400000u)) == 0 && bf16_from_f32(bits_f(0x80000001u)) == 0x8000,
          "denormals flush to signed zero");
    CHECK(bf16_to_f32(0x4049) == bits_f(0x40490000u), "widening is exact");
}

/* got vs the exact sum of terms: worst |got - exact| / ((terms) 2^-24 sum|terms|). */
typedef struct {
    double worst;
    int bad;
} bound_check;

static void bound_one(bound_check *bc, double got, double exact, double abs_sum, int terms) {
    const double bound = terms * ldexp(1.0, -24) * abs_sum + 1e-30;
    const double r = fabs(got - exact) / bound;
    if (!(r <= bc->worst)) bc->worst = r;
    if (!(r <= 1.0)) bc->bad++;
}

typedef struct {
    int m, n, k, pad, bias, accumulate;
} gemm_case;

static void gemm_one(bound_check *fast, bound_check *ref, gemm_case c, uint64_t seed) {
    const int lda = c.k + c.pad, ldb = c.k + c.pad, ldc = c.n + c.pad;
    float *a = kc_random((size_t)c.m * lda, seed), *b = kc_random((size_t)c.n * ldb, seed + 1);
    float *bias = c.bias ? kc_random((size_t)c.n, seed + 2) : NULL;
    float *got = kc_random((size_t)c.m * ldc, seed + 3), *want = kc_copy(got, (size_t)c.m * ldc);
    float *before = kc_copy(got, (size_t)c.m * ldc);
    uint16_t *packed = aligned_alloc(64, (gemm_bf16_packed_size(c.n, c.k) * 2 + 63) / 64 * 64 + 64);
    gemm_bf16_pack_b_nt(c.n, c.k, b, ldb, packed);
    gemm_bf16_nt_packed(c.m, c.n, c.k, a, lda, packed, got, ldc, bias, c.accumulate);
    gemm_bf16_nt_ref(c.m, c.n, c.k, a, lda, b, ldb, want, ldc, bias, c.accumulate);
    int untouched = 1;
    for (int i = 0; i < c.m; i++) {
        for (int j = 0; j < c.n; j++) {
            double exact = 0.0, abs_sum = 0.0;
            for (int q = 0; q < c.k; q++) {
                const double t = (double)rb(a[(long)i * lda + q]) * rb(b[(long)j * ldb + q]);
                exact += t, abs_sum += fabs(t);
            }
            if (c.accumulate) exact += before[i * ldc + j], abs_sum += fabs(before[i * ldc + j]);
            if (bias) exact += bias[j], abs_sum += fabs(bias[j]);
            bound_one(fast, got[i * ldc + j], exact, abs_sum, c.k + 2);
            bound_one(ref, want[i * ldc + j], exact, abs_sum, c.k + 2);
        }
        for (int j = c.n; j < ldc; j++) untouched &= got[i * ldc + j] == before[i * ldc + j];
    }
    CHECK(untouched, "gemm_bf16 m=%d n=%d k=%d wrote past n", c.m, c.n, c.k);
    free(a), free(b), free(bias), free(got), free(want), free(before), free(packed);
}

static void test_gemm(void) {
    static const gemm_case cases[] = {
        {1, 1, 1, 0, 0, 0},     {1, 1, 2, 0, 1, 0},      {3, 5, 7, 1, 1, 1},     {14, 32, 64, 0, 0, 0},
        {15, 33, 65, 3, 1, 0},  {13, 31, 255, 0, 1, 1}, {29, 64, 256, 0, 0, 1}, {30, 65, 257, 2, 1, 0},
        {2, 100, 511, 0, 1, 0}, {77, 96, 513, 1, 0, 1}, {64, 320, 320, 0, 1, 0}, {5, 7, 1031, 0, 1, 1},
        {200, 40, 768, 0, 1, 0},
    };
    bound_check fast = {0, 0}, ref = {0, 0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) gemm_one(&fast, &ref, cases[i], 100 + 7 * i);
    CHECK(!fast.bad && !ref.bad, "gemm_bf16: %d fast and %d reference outputs beyond the fp32 "
          "summation bound", fast.bad, ref.bad);
    printf("%s gemm_bf16 (%zu shapes) [%s]: worst error / fp32 summation bound: fast %.3g, ref %.3g\n",
           fast.bad || ref.bad ? "FAIL" : "ok  ", sizeof cases / sizeof *cases,
           kern_bf16_active() ? "avx512_bf16" : "emulated", fast.worst, ref.worst);
}

/* bf16 really rounds: against the fp32 product the error is about bf16's 2^-9, not fp32's. */
static void test_is_bf16(void) {
    const int m = 33, n = 40, k = 300;
    float *a = kc_random((size_t)m * k, 1), *b = kc_random((size_t)n * k, 2);
    float *c16 = calloc((size_t)m * n, sizeof *c16), *c32 = calloc((size_t)m * n, sizeof *c32);
    uint16_t *packed = aligned_alloc(64, (gemm_bf16_packed_size(n, k) * 2 + 63) / 64 * 64);
    gemm_bf16_pack_b_nt(n, k, b, k, packed);
    gemm_bf16_nt_packed(m, n, k, a, k, packed, c16, n, NULL, 0);
    gemm_nt_ref(m, n, k, a, k, b, k, c32, n, NULL, 0);
    const double e = rel_l2(c16, c32, (size_t)m * n);
    CHECK(e > 3e-4 && e < 1e-2, "gemm_bf16 vs fp32: rel err %.3g is not bf16's", e);
    printf("ok   gemm_bf16 vs fp32 product: rel err %.3g (bf16 rounding of both operands)\n", e);
    free(a), free(b), free(c16), free(c32), free(packed);
}

typedef struct {
    int n, h, w, cin, cout, k, stride, pt, pl, pb, pr;
} conv_case;

static void conv_one(bound_check *fast, bound_check *ref, conv_case c, uint64_t seed, int oihw) {
    const conv2d_shape s = {c.cin, c.cout, c.k, c.k, c.stride, c.pt, c.pl, c.pb, c.pr};
    const int oh = conv2d_out_h(&s, c.h), ow = conv2d_out_w(&s, c.w), kk = c.k * c.k * c.cin;
    float *x = kc_random((size_t)c.n * c.h * c.w * c.cin, seed);
    float *w = kc_random((size_t)c.cout * kk, seed + 1), *bias = kc_random((size_t)c.cout, seed + 2);
    float *ohwi = malloc((size_t)c.cout * kk * sizeof *ohwi);
    if (oihw) conv2d_weight_from_oihw(w, c.cout, c.cin, c.k, c.k, ohwi);
    else memcpy(ohwi, w, (size_t)c.cout * kk * sizeof *w);
    const size_t ny = (size_t)c.n * oh * ow * c.cout;
    float *got = malloc(ny * sizeof *got), *want = malloc(ny * sizeof *want);
    uint16_t *packed = aligned_alloc(64, (conv2d_bf16_packed_size(&s) * 2 + 63) / 64 * 64 + 64);
    if (oihw) conv2d_pack_weights_oihw_bf16(&s, w, packed);
    else conv2d_pack_weights_bf16(&s, w, packed);
    conv2d_nhwc_packed_bf16(&s, x, c.n, c.h, c.w, packed, bias, got, NULL);
    conv2d_nhwc_bf16_ref(&s, x, c.n, c.h, c.w, ohwi, bias, want);
    for (int b = 0; b < c.n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < c.cout; o++) {
                    double exact = bias[o], abs_sum = fabs(bias[o]);
                    for (int ky = 0; ky < c.k; ky++)
                        for (int kx = 0; kx < c.k; kx++) {
                            const int iy = oy * c.stride - c.pt + ky, ix = ox * c.stride - c.pl + kx;
                            if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                            for (int i = 0; i < c.cin; i++) {
                                const double t = (double)rb(x[(((long)b * c.h + iy) * c.w + ix) * c.cin + i]) *
                                                 rb(ohwi[(((long)o * c.k + ky) * c.k + kx) * c.cin + i]);
                                exact += t, abs_sum += fabs(t);
                            }
                        }
                    const size_t at = (((size_t)b * oh + oy) * ow + ox) * c.cout + o;
                    bound_one(fast, got[at], exact, abs_sum, kk + 1);
                    bound_one(ref, want[at], exact, abs_sum, kk + 1);
                }
    free(x), free(w), free(bias), free(ohwi), free(got), free(want), free(packed);
}

static void test_conv(void) {
    static const conv_case cases[] = {
        {1, 5, 6, 3, 7, 3, 1, 1, 1, 1, 1},     {2, 9, 7, 13, 33, 3, 2, 0, 0, 1, 1},
        {1, 8, 8, 64, 40, 1, 1, 0, 0, 0, 0},   {1, 6, 11, 37, 65, 3, 1, 1, 1, 1, 1},
        {2, 4, 5, 5, 3, 1, 2, 0, 0, 0, 0},     {1, 12, 10, 29, 31, 3, 1, 0, 2, 1, 0},
        {1, 16, 16, 96, 70, 3, 1, 1, 1, 1, 1},
    };
    bound_check fast = {0, 0}, ref = {0, 0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        conv_one(&fast, &ref, cases[i], 300 + 11 * i, (int)(i & 1));
    CHECK(!fast.bad && !ref.bad, "conv2d bf16: %d fast and %d reference outputs beyond the fp32 "
          "summation bound", fast.bad, ref.bad);
    printf("%s conv2d bf16 (%zu shapes, OIHW and OHWI packing) [%s]: worst error / bound: fast %.3g, "
           "ref %.3g\n", fast.bad || ref.bad ? "FAIL" : "ok  ", sizeof cases / sizeof *cases,
           kern_bf16_active() ? "avx512_bf16" : "emulated", fast.worst, ref.worst);
}

/* Bit-identical with 1, 2 and 3 threads; returns the 1-thread outputs for the kernel comparison. */
static void thread_runs(float **gemm_out, float **conv_out) {
    const int m = 203, n = 333, k = 517;
    float *a = kc_random((size_t)m * k, 21), *b = kc_random((size_t)n * k, 22), *bias = kc_random(n, 23);
    uint16_t *pb = aligned_alloc(64, (gemm_bf16_packed_size(n, k) * 2 + 63) / 64 * 64);
    gemm_bf16_pack_b_nt(n, k, b, k, pb);
    const conv2d_shape s = {37, 70, 3, 3, 1, 1, 1, 1, 1};
    const int cn = 2, ch = 19, cw = 23;
    float *x = kc_random((size_t)cn * ch * cw * s.cin, 24), *w = kc_random((size_t)s.cout * 9 * s.cin, 25);
    uint16_t *pw = aligned_alloc(64, (conv2d_bf16_packed_size(&s) * 2 + 63) / 64 * 64);
    conv2d_pack_weights_oihw_bf16(&s, w, pw);
    const size_t ny = (size_t)cn * ch * cw * s.cout;
    float *c[3], *y[3];
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        c[t] = malloc((size_t)m * n * sizeof *c[t]);
        gemm_bf16_nt_packed(m, n, k, a, k, pb, c[t], n, bias, 0);
        y[t] = malloc(ny * sizeof *y[t]);
        conv2d_nhwc_packed_bf16(&s, x, cn, ch, cw, pw, bias, y[t], NULL);
    }
    omp_set_num_threads(saved);
    int same = 1;
    for (int t = 1; t < 3; t++) {
        same &= !memcmp(c[0], c[t], (size_t)m * n * sizeof *c[0]) && !memcmp(y[0], y[t], ny * sizeof *y[0]);
        free(c[t]), free(y[t]);
    }
    CHECK(same, "bf16 gemm/conv differ between 1, 2 and 3 threads");
    printf("%s gemm_bf16 and conv2d bf16 bit-identical with 1, 2 and 3 threads [%s]\n",
           same ? "ok  " : "FAIL", kern_bf16_active() ? "avx512_bf16" : "emulated");
    *gemm_out = c[0], *conv_out = y[0];
    free(a), free(b), free(bias), free(pb), free(x), free(w), free(pw);
}

/* The layers of a set opened with bf16 packing (weights_policy.precision): bf16 packing instead
 * of fp32, forward calls on the bf16 kernels (same numbers as the references up to the order of
 * fp32 sums), the padding override; a stored BF16 weight packed as bf16 from the mapping, or left
 * stored (fp32 GEMM) when its layer is not packed; a set opened with the default policy at the
 * same time still loads fp32 layers (the precision travels with the set, not the thread). */
static void test_layers(void) {
    char dir[] = "/tmp/sd_test_bf16_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    const int cin = 37, cout = 45, k = 3, n = 2, h = 6, w = 5;
    float *conv_w = kc_random((size_t)cout * cin * k * k, 11), *conv_b = kc_random(cout, 12);
    float *lin_w = kc_random((size_t)cout * cin, 14), *lin_b = kc_random(cout, 15);
    /* lin16: lin's weight stored as BF16; lin16_w holds its widened values */
    uint16_t *lin16 = malloc((size_t)cout * cin * sizeof *lin16);
    float *lin16_w = malloc((size_t)cout * cin * sizeof *lin16_w);
    for (int i = 0; i < cout * cin; i++) {
        lin16[i] = st_f32_to_bf16(lin_w[i]);
        lin16_w[i] = st_bf16_to_f32(lin16[i]);
    }
    st_entry e[] = {
        {"conv.weight", ST_F32, 4, {cout, cin, k, k}, conv_w},
        {"conv.bias", ST_F32, 1, {cout}, conv_b},
        {"lin.weight", ST_F32, 2, {cout, cin}, lin_w},
        {"lin.bias", ST_F32, 1, {cout}, lin_b},
        {"lin16.weight", ST_BF16, 2, {cout, cin}, lin16},
        {"lin16.bias", ST_F32, 1, {cout}, lin_b},
    };
    char path[128];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    CHECK_OK(st_write(path, e, (int)(sizeof e / sizeof *e), NULL, 0));
    const weights_policy bf16 = {.precision = WEIGHTS_PRECISION_BF16};
    sd_weights wts, wbf;
    CHECK_OK(weights_open(&wts, dir, NULL, NULL));
    CHECK_OK(weights_open(&wbf, dir, NULL, &bf16));
    wbf.keep_stored = true; /* lin16 may stay in the mapping */
    float *x = kc_random((size_t)n * h * w * cin, 16);
    const size_t ny = (size_t)n * h * w * cout;
    float *got = malloc(ny * sizeof *got), *want = malloc(ny * sizeof *want);
    float *ohwi = malloc((size_t)cout * cin * k * k * sizeof *ohwi);
    conv2d_weight_from_oihw(conv_w, cout, cin, k, k, ohwi);

    nn_conv2d conv;
    nn_linear lin;
    CHECK_OK(nn_conv2d_load(&conv, &wbf, cin, cout, k, 1, 1, "conv"));
    CHECK_OK(nn_linear_load(&lin, &wbf, cin, cout, true, "lin"));
    CHECK_OK(nn_linear_pack(&lin));
    CHECK(conv.w_bf16 && !conv.w && lin.packed_bf16 && !lin.packed && !lin.w,
          "bf16-packing layers hold bf16 weights only");
    nn_conv2d_forward(&conv, x, n, h, w, got, NULL);
    conv2d_nhwc_bf16_ref(&conv.s, x, n, h, w, ohwi, conv_b, want);
    check_rel("nn_conv2d 3x3 packed as bf16 vs conv2d_nhwc_bf16_ref", got, want, ny, 1e-6);
    conv2d_shape s = conv.s;
    s.pad_t = 0, s.pad_b = 2; /* as the VAE's banded upsampler changes it */
    const size_t ny2 = (size_t)n * conv2d_out_h(&s, h) * w * cout;
    nn_conv2d_forward_shape(&conv, &s, x, n, h, w, got, NULL);
    conv2d_nhwc_bf16_ref(&s, x, n, h, w, ohwi, conv_b, want);
    check_rel("nn_conv2d_forward_shape packed as bf16", got, want, ny2, 1e-6);
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_bf16_nt_ref(n * h * w, cout, cin, x, cin, lin_w, cin, want, cout, lin_b, 0);
    check_rel("nn_linear packed as bf16 vs gemm_bf16_nt_ref", got, want, ny, 1e-6);
    nn_conv2d_free(&conv);
    nn_linear_free(&lin);

    /* A stored BF16 weight: left stored until packed, then widened and packed as bf16. */
    CHECK_OK(nn_linear_load(&lin, &wbf, cin, cout, true, "lin16"));
    CHECK(lin.src.n_parts == 1 && lin.src.type == KERN_BF16 && !lin.w,
          "a BF16 weight stays in the mapping until packed");
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_nt_ref(n * h * w, cout, cin, x, cin, lin16_w, cin, want, cout, lin_b, 0);
    check_rel("unpacked stored BF16 nn_linear runs fp32", got, want, ny, 1e-6);
    CHECK_OK(nn_linear_pack(&lin));
    CHECK(lin.packed_bf16 && !lin.src.n_parts && !lin.w, "stored BF16 weight packed as bf16");
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_bf16_nt_ref(n * h * w, cout, cin, x, cin, lin16_w, cin, want, cout, lin_b, 0);
    check_rel("stored BF16 nn_linear packed as bf16 vs gemm_bf16_nt_ref", got, want, ny, 1e-6);
    nn_linear_free(&lin);

    CHECK_OK(nn_conv2d_load(&conv, &wts, cin, cout, k, 1, 1, "conv"));
    CHECK(conv.w && !conv.w_bf16, "a default-policy set loads fp32 layers beside a bf16 one");
    nn_conv2d_forward(&conv, x, n, h, w, got, NULL);
    conv2d_nhwc_ref(&conv.s, x, n, h, w, ohwi, conv_b, want);
    check_rel("nn_conv2d 3x3 back in fp32", got, want, ny, 1e-5);
    nn_conv2d_free(&conv);

    weights_close(&wts);
    weights_close(&wbf);
    unlink(path);
    rmdir(dir);
    free(conv_w), free(conv_b), free(lin_w), free(lin_b), free(x), free(got), free(want), free(ohwi);
    free(lin16), free(lin16_w);
}

int main(void) {
    test_rounding();
    test_layers();
    const kern_isa best = kern_isa_supported();
    float *g[2] = {NULL, NULL}, *y[2] = {NULL, NULL};
    /* pass 0: the fast kernel where the CPU has it; pass 1: the portable emulation */
    for (int pass = 0; pass < 2; pass++) {
        kern_isa_set(pass ? KERN_ISA_AVX2 : best);
        if (pass == 0 && !kern_bf16_active())
            printf("note: no avx512_bf16 kernel here (%s): both passes emulate\n", kern_bf16_unavailable());
        test_gemm();
        test_is_bf16();
        test_conv();
        thread_runs(&g[pass], &y[pass]);
    }
    kern_isa_set(best);
    /* The emulation takes each pair of products in the order the Intel SDM gives for vdpbf16ps
     * (k+1, then k, each sum rounded to nearest even), so the two agree to the bit. */
    const int m = 203, n = 333;
    const size_t ny = (size_t)2 * 19 * 23 * 70;
    if (kern_bf16_supported()) {
        const int gs = !memcmp(g[0], g[1], (size_t)m * n * sizeof(float));
        const int cs = !memcmp(y[0], y[1], ny * sizeof(float));
        CHECK(gs && cs, "avx512_bf16 vs emulation: gemm %s (rel %.3g), conv %s (rel %.3g)",
              gs ? "same" : "differ", rel_l2(g[0], g[1], (size_t)m * n), cs ? "same" : "differ",
              rel_l2(y[0], y[1], ny));
        if (gs && cs) printf("ok   avx512_bf16 kernels bit-identical with the portable emulation\n");
    }
    for (int i = 0; i < 2; i++) free(g[i]), free(y[i]);
    return test_summary();
}
