/* The int8 kernels (--precision int8): quantization against hand-computed values, the GEMM and the
 * convolution bit-identical to their plain references (gemm_int8_nt_ref, conv2d_nhwc_int8_ref) on
 * every kernel (portable C, AVX2's vpmaddwd, AVX-VNNI, AVX512-VNNI: those this CPU has) and at
 * 1 and 2 threads, and through the layers (nn_linear, nn_conv2d) under an int8 policy, on
 * awkward shapes (k off every group of 4 and every block, sizes off every
 * tile, padded rows, stride 2, asymmetric padding, 1x1) and awkward rows (zeros, tiny values,
 * outliers, infinities, NaNs).
 *
 * The reference is checked independently against the exact (double) product: quantizing a value
 * moves it by at most half a step (sa / 2, sw / 2), so each term a * b is off by at most
 * |a| sw / 2 + |b| sa / 2 + sa sw / 4, plus fp32 rounding of the few block sums; a wrong scale,
 * rounding or missing term fails that bound. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/safetensors.h"
#include "../nn/layers.h"
#include "../kernels/conv2d.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm_int8.h"
#include "kernel_check.h"

static int same_bits(const float *x, const float *y, size_t n, size_t *where) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&x[i], &y[i], sizeof *x) && !(isnan(x[i]) && isnan(y[i]))) {
            *where = i;
            return 0;
        }
    return 1;
}

static void test_quantize(void) {
    const float x[5] = {1.0f, -0.5f, 0.25f, 0.0f, -1.0f};
    int8_t q[5];
    const float s = gemm_int8_quantize(x, 5, 1, q);
    CHECK(s == 1.0f / 127.0f, "scale of a row with max 1: %g", s);
    /* 127 * -0.5 = -63.5 rounds to even (-64); 31.75 to 32 */
    CHECK(q[0] == 127 && q[1] == -64 && q[2] == 32 && q[3] == 0 && q[4] == -127,
          "q = %d %d %d %d %d", q[0], q[1], q[2], q[3], q[4]);
    const float y[3] = {0.0f, 1e-35f, -1e-33f};
    CHECK(gemm_int8_quantize(y, 3, 1, q) == 0.0f && !q[0] && !q[1] && !q[2], "tiny row is zeros");
    const float z[3] = {1.0f, INFINITY, 2.0f};
    CHECK(isnan(gemm_int8_quantize(z, 3, 1, q)) && !q[0] && !q[2], "infinite row: NaN scale");
    const float w2[4] = {6.0f, 0.0f, 3.0f, 0.0f}; /* a strided read: 6 and 3 */
    CHECK(gemm_int8_quantize(w2, 2, 2, q) == 6.0f / 127.0f && q[0] == 127 && q[1] == 64,
          "strided row: q = %d %d", q[0], q[1]);
}

typedef struct {
    int m, n, k, pad, bias, accumulate;
} gemm_case;

/* The kernels: (level, VNNI allowed) pairs, the ones this CPU runs. */
typedef struct {
    kern_isa isa;
    int vnni;
} level;
static const level levels[] = {{KERN_ISA_AVX512, 1}, {KERN_ISA_AVX2, 1}, {KERN_ISA_AVX2, 0},
                               {KERN_ISA_GENERIC, 0}};
enum { NLEVELS = sizeof levels / sizeof levels[0] };

static const char *use_level(level l) {
    kern_int8_vnni_set_allowed(l.vnni);
    kern_isa_set(l.isa);
    return kern_int8_kernel_name();
}

static void restore_level(void) {
    kern_int8_vnni_set_allowed(1);
    kern_isa_set(KERN_ISA_AVX512);
}

/* Rows with a character: outliers, zeros, tiny, infinite and NaN values. */
static void awkward_rows(float *a, int m, int lda, int k) {
    for (int i = 0; i < m; i++) {
        float *r = a + (long)i * lda;
        switch (i % 9) {
        case 1: r[k / 2] *= 1000.0f; break;
        case 3: memset(r, 0, (size_t)k * sizeof *r); break;
        case 5: for (int j = 0; j < k; j++) r[j] *= 1e-36f; break;
        case 7: if (i == 7) r[k - 1] = i % 2 ? INFINITY : NAN; break;
        case 8: if (i == 17) r[0] = NAN; break;
        default: break;
        }
    }
}

/* Reference vs the exact product, for rows with finite values. */
static int within_quant_bound(const gemm_case *c, const float *a, int lda, const float *b, int ldb,
                              const float *before, const float *bias, const float *got, int ldc) {
    const int nkb = gemm_int8_blocks(c->k);
    int8_t *q = malloc((size_t)c->k + 1);
    int ok = 1;
    for (int i = 0; i < c->m && ok; i++) {
        int finite = 1;
        for (int t = 0; t < c->k; t++) finite &= isfinite(a[(long)i * lda + t]);
        if (!finite) continue;
        for (int j = 0; j < c->n && ok; j++) {
            const float *br = b + (long)j * ldb;
            const double sw = gemm_int8_quantize(br, c->k, 1, q);
            double exact = (c->accumulate ? before[(long)i * ldc + j] : 0.0) + (bias ? bias[j] : 0.0);
            double bound = 1e-6 * fabs(exact), mag = fabs(exact);
            for (int kb = 0; kb < nkb; kb++) {
                int p0, kc;
                gemm_int8_block(c->k, nkb, kb, &p0, &kc);
                const double sa = gemm_int8_quantize(a + (long)i * lda + p0, kc, 1, q);
                for (int t = p0; t < p0 + kc; t++) {
                    const double av = a[(long)i * lda + t], bv = br[t];
                    exact += av * bv;
                    mag += fabs(av * bv);
                    bound += fabs(av) * sw * 0.5 + fabs(bv) * sa * 0.5 + sa * sw * 0.25;
                }
            }
            bound = bound * 1.0001 + 1e-6 * mag + 1e-30;
            if (!(fabs(got[(long)i * ldc + j] - exact) <= bound)) {
                printf("  [%d][%d] = %.9g, exact %.9g, bound %.3g\n", i, j, got[(long)i * ldc + j],
                       exact, bound);
                ok = 0;
            }
        }
    }
    free(q);
    return ok;
}

static void gemm_one(gemm_case c, uint64_t seed) {
    const int lda = c.k + c.pad, ldb = c.k + c.pad, ldc = c.n + c.pad;
    float *a = kc_random((size_t)c.m * lda, seed), *b = kc_random((size_t)c.n * ldb, seed + 1);
    awkward_rows(a, c.m, lda, c.k);
    if (c.n > 2) memset(b + ldb, 0, (size_t)c.k * sizeof *b); /* an all-zero channel */
    float *bias = c.bias ? kc_random((size_t)c.n, seed + 2) : NULL;
    float *before = kc_random((size_t)c.m * ldc, seed + 3), *want = kc_copy(before, (size_t)c.m * ldc);
    gemm_int8_nt_ref(c.m, c.n, c.k, a, lda, b, ldb, want, ldc, bias, c.accumulate);
    CHECK(within_quant_bound(&c, a, lda, b, ldb, before, bias, want, ldc),
          "reference %dx%dx%d within the quantization bound of the exact product", c.m, c.n, c.k);
    void *packed = aligned_alloc(64, (gemm_int8_packed_size(c.n, c.k) + 63) / 64 * 64 + 64);
    gemm_int8_pack_b_nt(c.n, c.k, b, ldb, packed);
    for (int l = 0; l < NLEVELS; l++) {
        const char *name = use_level(levels[l]);
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            float *got = kc_copy(before, (size_t)c.m * ldc);
            gemm_int8_nt_packed(c.m, c.n, c.k, a, lda, packed, got, ldc, bias, c.accumulate);
            size_t at = 0;
            CHECK(same_bits(got, want, (size_t)c.m * ldc, &at),
                  "gemm %dx%dx%d (pad %d bias %d acc %d) %s, %d threads: [%zu] %.9g != %.9g", c.m,
                  c.n, c.k, c.pad, c.bias, c.accumulate, name, threads, at, got[at], want[at]);
            free(got);
        }
    }
    restore_level();
    free(packed);
    free(a);
    free(b);
    free(bias);
    free(before);
    free(want);
}

static void test_gemm(void) {
    static const gemm_case cases[] = {
        {1, 1, 1, 0, 0, 0},     {5, 7, 3, 1, 1, 0},      {17, 33, 257, 3, 1, 1},
        {29, 70, 515, 0, 0, 1}, {3, 100, 1029, 2, 1, 0}, {15, 64, 256, 0, 1, 0},
        {200, 96, 300, 0, 1, 0}, {43, 65, 768, 5, 0, 0}, {14, 32, 4, 0, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) gemm_one(cases[i], 100 + 10 * i);
    for (int l = 0; l < NLEVELS; l++) printf("int8 kernel tested: %s\n", use_level(levels[l]));
    restore_level();
}

typedef struct {
    int n, h, w;
    conv2d_shape s;
} conv_case;

static void conv_one(conv_case c, uint64_t seed) {
    const conv2d_shape *s = &c.s;
    const int k = s->kh * s->kw * s->cin, oh = conv2d_out_h(s, c.h), ow = conv2d_out_w(s, c.w);
    const size_t xn = (size_t)c.n * c.h * c.w * s->cin, yn = (size_t)c.n * oh * ow * s->cout;
    float *x = kc_random(xn, seed), *oihw = kc_random((size_t)s->cout * k, seed + 1);
    float *bias = kc_random((size_t)s->cout, seed + 2);
    float *ohwi = malloc((size_t)s->cout * k * sizeof *ohwi);
    conv2d_weight_from_oihw(oihw, s->cout, s->cin, s->kh, s->kw, ohwi);
    float *want = malloc(yn * sizeof *want), *got = malloc(yn * sizeof *got);
    conv2d_nhwc_int8_ref(s, x, c.n, c.h, c.w, ohwi, bias, want);
    void *packed = aligned_alloc(64, (conv2d_int8_packed_size(s) + 63) / 64 * 64 + 64);
    conv2d_pack_weights_oihw_int8(s, oihw, packed);
    /* The reference against the fp32 convolution: int8 is within a few percent of it. */
    float *fp = malloc(yn * sizeof *fp);
    conv2d_nhwc_ref(s, x, c.n, c.h, c.w, ohwi, bias, fp);
    double num = 0, den = 0;
    for (size_t i = 0; i < yn; i++) num += (want[i] - fp[i]) * (double)(want[i] - fp[i]), den += (double)fp[i] * fp[i];
    CHECK(sqrt(num / den) < 2e-2, "conv %dx%d cin %d: int8 vs fp32 rel %.3g", s->kh, s->kw, s->cin,
          sqrt(num / den));
    for (int l = 0; l < NLEVELS; l++) {
        const char *name = use_level(levels[l]);
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            memset(got, 0xff, yn * sizeof *got);
            conv2d_nhwc_packed_int8(s, x, c.n, c.h, c.w, packed, bias, got);
            size_t at = 0;
            CHECK(same_bits(got, want, yn, &at), "conv %dx%d/%d cin %d cout %d %s, %d threads: [%zu]",
                  s->kh, s->kw, s->stride, s->cin, s->cout, name, threads, at);
        }
    }
    restore_level();
    free(x), free(oihw), free(bias), free(ohwi), free(want), free(got), free(fp), free(packed);
}

static void test_conv(void) {
    static const conv_case cases[] = {
        {1, 7, 6, {3, 5, 3, 3, 1, 1, 1, 1, 1}},
        {2, 9, 9, {70, 40, 3, 3, 2, 0, 1, 1, 0}},
        {2, 5, 4, {300, 33, 1, 1, 1, 0, 0, 0, 0}},
        {1, 12, 10, {32, 64, 3, 3, 1, 1, 1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_one(cases[i], 500 + 10 * i);
}

/* The layers under an int8 policy: a convolution and a Linear layer (fp32 and a stored BF16
 * weight, widened before quantizing) hold int8 weights only and give the reference's bits. */
static void test_layers(void) {
    char dir[] = "/tmp/sd_test_int8_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    const int cin = 37, cout = 45, k = 3, n = 2, h = 6, w = 5;
    float *conv_w = kc_random((size_t)cout * cin * k * k, 11), *conv_b = kc_random(cout, 12);
    float *lin_w = kc_random((size_t)cout * cin, 14), *lin_b = kc_random(cout, 15);
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
    const weights_policy int8 = {.precision = WEIGHTS_PRECISION_INT8};
    sd_weights wq;
    CHECK_OK(weights_open(&wq, dir, NULL, &int8));
    wq.keep_stored = true; /* lin16 may stay in the mapping until packed */
    float *x = kc_random((size_t)n * h * w * cin, 16);
    const size_t ny = (size_t)n * h * w * cout;
    float *got = malloc(ny * sizeof *got), *want = malloc(ny * sizeof *want);
    float *ohwi = malloc((size_t)cout * cin * k * k * sizeof *ohwi);
    conv2d_weight_from_oihw(conv_w, cout, cin, k, k, ohwi);
    size_t at = 0;

    nn_conv2d conv;
    nn_linear lin;
    CHECK_OK(nn_conv2d_load(&conv, &wq, cin, cout, k, 1, 1, "conv"));
    CHECK_OK(nn_linear_load(&lin, &wq, cin, cout, true, "lin"));
    CHECK_OK(nn_linear_pack(&lin));
    CHECK(conv.w_int8 && !conv.w && !conv.w_bf16 && lin.packed_int8 && !lin.packed && !lin.w,
          "int8-packing layers hold int8 weights only");
    nn_conv2d_forward(&conv, x, n, h, w, got, NULL);
    conv2d_nhwc_int8_ref(&conv.s, x, n, h, w, ohwi, conv_b, want);
    CHECK(same_bits(got, want, ny, &at), "nn_conv2d packed as int8 vs conv2d_nhwc_int8_ref [%zu]", at);
    conv2d_shape s = conv.s;
    s.pad_t = 0, s.pad_b = 2; /* as the VAE's banded upsampler changes it */
    const size_t ny2 = (size_t)n * conv2d_out_h(&s, h) * w * cout;
    nn_conv2d_forward_shape(&conv, &s, x, n, h, w, got, NULL);
    conv2d_nhwc_int8_ref(&s, x, n, h, w, ohwi, conv_b, want);
    CHECK(same_bits(got, want, ny2, &at), "nn_conv2d_forward_shape packed as int8 [%zu]", at);
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_int8_nt_ref(n * h * w, cout, cin, x, cin, lin_w, cin, want, cout, lin_b, 0);
    CHECK(same_bits(got, want, ny, &at), "nn_linear packed as int8 vs gemm_int8_nt_ref [%zu]", at);
    nn_conv2d_free(&conv);
    nn_linear_free(&lin);

    CHECK_OK(nn_linear_load(&lin, &wq, cin, cout, true, "lin16"));
    CHECK(lin.src.n_parts == 1 && !lin.w, "a BF16 weight stays in the mapping until packed");
    CHECK_OK(nn_linear_pack(&lin));
    CHECK(lin.packed_int8 && !lin.src.n_parts && !lin.w, "stored BF16 weight packed as int8");
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_int8_nt_ref(n * h * w, cout, cin, x, cin, lin16_w, cin, want, cout, lin_b, 0);
    CHECK(same_bits(got, want, ny, &at), "stored BF16 nn_linear packed as int8 [%zu]", at);
    nn_linear_free(&lin);

    weights_close(&wq);
    unlink(path);
    rmdir(dir);
    free(conv_w), free(conv_b), free(lin_w), free(lin_b), free(x), free(got), free(want), free(ohwi);
    free(lin16), free(lin16_w);
}

int main(void) {
    test_quantize();
    test_layers();
    test_gemm();
    test_conv();
    return test_summary();
}
