/* GEMM and convolution kernels against their plain references, on awkward shapes (sizes that are
 * not multiples of any tile, padded rows, odd channel counts, stride 2, asymmetric padding), plus
 * the layers that wrap them (nn_linear, nn_conv2d loaded from a safetensors file), and the
 * promise that results do not depend on the number of threads. */
#include <omp.h>
#include <unistd.h>

#include "../core/arena.h"
#include "../core/safetensors.h"
#include "../kernels/conv2d.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_internal.h"
#include "../nn/layers.h"
#include "kernel_check.h"

/* ---- GEMM ---- */

typedef struct {
    int m, n, k, pad, bias, accumulate;
} gemm_case;

/* Runs one product with the fast kernel and the reference on identical inputs and records the
 * error; also checks that the padding of C (columns n..ldc) is left alone. */
static void gemm_one(kc_group *g, int nn, gemm_case c, uint64_t seed) {
    const int lda = c.k + c.pad, ldb = (nn ? c.n : c.k) + c.pad, ldc = c.n + c.pad;
    const size_t brows = nn ? (size_t)c.k : (size_t)c.n;
    float *a = kc_random((size_t)c.m * lda, seed), *b = kc_random(brows * ldb, seed + 1);
    float *bias = c.bias ? kc_random((size_t)c.n, seed + 2) : NULL;
    float *got = kc_random((size_t)c.m * ldc, seed + 3), *want = kc_copy(got, (size_t)c.m * ldc);
    float *before = kc_copy(got, (size_t)c.m * ldc);
    if (nn) {
        gemm_nn(c.m, c.n, c.k, a, lda, b, ldb, got, ldc, bias, c.accumulate);
        gemm_nn_ref(c.m, c.n, c.k, a, lda, b, ldb, want, ldc, bias, c.accumulate);
    } else {
        gemm_nt(c.m, c.n, c.k, a, lda, b, ldb, got, ldc, bias, c.accumulate);
        gemm_nt_ref(c.m, c.n, c.k, a, lda, b, ldb, want, ldc, bias, c.accumulate);
    }
    kc_case(g, got, want, (size_t)c.m * ldc, "m=%d n=%d k=%d pad=%d bias=%d acc=%d", c.m, c.n, c.k,
            c.pad, c.bias, c.accumulate);
    { /* B packed block by block (the path taken when B cannot be packed whole): same numbers */
        float *again = kc_copy(before, (size_t)c.m * ldc);
        gemm_set_pack_limit(0);
        if (nn) gemm_nn(c.m, c.n, c.k, a, lda, b, ldb, again, ldc, bias, c.accumulate);
        else gemm_nt(c.m, c.n, c.k, a, lda, b, ldb, again, ldc, bias, c.accumulate);
        gemm_set_pack_limit(GEMM_PACK_LIMIT);
        kc_expect(g, !memcmp(got, again, (size_t)c.m * ldc * sizeof *got),
                  "m=%d n=%d k=%d: block-by-block packing gives other numbers", c.m, c.n, c.k);
        free(again);
    }
    if (!nn) { /* B packed once: the very same numbers */
        float *packed = malloc((gemm_packed_size(c.n, c.k) + 1) * sizeof *packed);
        gemm_pack_b_nt(c.n, c.k, b, ldb, packed);
        float *again = kc_copy(before, (size_t)c.m * ldc);
        gemm_nt_packed(c.m, c.n, c.k, a, lda, packed, again, ldc, bias, c.accumulate);
        kc_expect(g, !memcmp(got, again, (size_t)c.m * ldc * sizeof *got),
                  "m=%d n=%d k=%d: gemm_nt_packed differs from gemm_nt", c.m, c.n, c.k);
        free(packed), free(again);
    }
    int pad_ok = 1;
    for (int i = 0; i < c.m; i++)
        for (int j = c.n; j < ldc; j++) pad_ok &= got[(long)i * ldc + j] == before[(long)i * ldc + j];
    kc_expect(g, pad_ok, "m=%d n=%d k=%d: wrote into the row padding of C", c.m, c.n, c.k);
    free(a), free(b), free(bias), free(got), free(want), free(before);
}

static char group_name[64];

/* "what [isa]": every group runs once per instruction set level the machine has. */
static const char *gname(const char *what) {
    snprintf(group_name, sizeof group_name, "%s [%s]", what, kern_isa_name(kern_isa_active()));
    return group_name;
}

static void test_gemm(int nn) {
    static const int sizes[] = {1, 2, 7, 16, 17, 31, 32, 33, 63, 65, 129};
    static const int ks[] = {1, 7, 17, 64, 65, 300};
    const int ns = (int)(sizeof sizes / sizeof *sizes), nk = (int)(sizeof ks / sizeof *ks);
    kc_group g;
    kc_begin(&g, gname(nn ? "gemm_nn" : "gemm_nt"), 1e-5);
    int idx = 0;
    for (int i = 0; i < ns; i++)
        for (int j = 0; j < ns; j++)
            for (int p = 0; p < nk; p++, idx++) {
                /* Flags and padding vary with the case index so every combination appears. */
                gemm_case c = {sizes[i], sizes[j], ks[p], (idx % 3) * 5, idx % 2, (idx / 2) % 2};
                gemm_one(&g, nn, c, 1000 + idx);
            }
    /* Shapes of real layers (scaled down in m), a long k, and an empty k (C = bias [+ C]). */
    const gemm_case big[] = {
        {300, 320, 320, 0, 1, 0}, {77, 768, 768, 0, 1, 1},  {130, 1280, 160, 3, 0, 0},
        {40, 96, 2880, 0, 1, 0},  {5, 4, 1, 0, 1, 1},       {9, 33, 0, 0, 1, 0},
        {9, 33, 0, 2, 1, 1},      {200, 40, 77, 1, 0, 0},   {64, 77, 40, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) gemm_one(&g, nn, big[i], 5000 + i);
    kc_end(&g);
}

/* ---- convolution ---- */

typedef struct {
    int n, h, w, cin, cout, kh, kw, stride, pad_t, pad_l, pad_b, pad_r, bias;
} conv_case;

static const conv_case conv_cases[] = {
    {1, 1, 1, 3, 5, 3, 3, 1, 1, 1, 1, 1, 1},       /* 1x1 image under a 3x3 kernel */
    {2, 5, 7, 37, 19, 3, 3, 1, 1, 1, 1, 1, 1},     /* odd channels, non-square, batch 2 */
    {1, 8, 6, 4, 33, 3, 3, 2, 0, 0, 1, 1, 1},      /* VAE encoder downsampler: pad right/bottom */
    {2, 9, 9, 16, 32, 3, 3, 2, 1, 1, 1, 1, 0},     /* UNet downsampler, no bias */
    {1, 6, 10, 37, 3, 1, 1, 1, 0, 0, 0, 0, 1},     /* 1x1 conv, 3 outputs (VAE conv_out width) */
    {2, 4, 4, 64, 64, 1, 1, 1, 0, 0, 0, 0, 1},     /* 1x1 conv = plain GEMM */
    {1, 7, 5, 8, 7, 1, 1, 2, 0, 0, 0, 0, 1},       /* 1x1 stride 2 */
    {1, 12, 12, 3, 17, 3, 3, 1, 1, 1, 1, 1, 1},    /* 3 input channels (image) */
    {1, 10, 10, 40, 70, 3, 3, 1, 0, 0, 0, 0, 1},   /* no padding */
    {1, 9, 9, 5, 6, 5, 5, 1, 2, 2, 2, 2, 1},       /* 5x5 */
    {1, 7, 9, 6, 9, 1, 3, 1, 0, 1, 0, 1, 1},       /* 1x3, horizontal padding only */
    {1, 3, 3, 4, 4, 3, 3, 1, 2, 0, 0, 2, 1},       /* padding larger on one side */
    {2, 8, 8, 320, 320, 3, 3, 1, 1, 1, 1, 1, 1},   /* a UNet layer at a small size */
    {1, 13, 17, 129, 65, 3, 3, 1, 1, 1, 1, 1, 1},  /* sizes past tile multiples */
    {1, 2, 70, 4, 320, 3, 3, 1, 1, 1, 1, 1, 1},    /* conv_in: 4 latent channels, wide image */
};

static void conv_inputs(const conv_case *c, float **x, float **w, float **b, uint64_t seed) {
    const conv2d_shape s = {c->cin, c->cout, c->kh, c->kw, c->stride, c->pad_t, c->pad_l, c->pad_b, c->pad_r};
    (void)s;
    *x = kc_random((size_t)c->n * c->h * c->w * c->cin, seed);
    *w = kc_random((size_t)c->cout * c->kh * c->kw * c->cin, seed + 1);
    *b = c->bias ? kc_random((size_t)c->cout, seed + 2) : NULL;
}

static conv2d_shape conv_shape(const conv_case *c) {
    return (conv2d_shape){c->cin, c->cout, c->kh, c->kw, c->stride, c->pad_t, c->pad_l, c->pad_b, c->pad_r};
}

static void test_conv(void) {
    kc_group g;
    kc_begin(&g, gname("conv2d_nhwc"), 1e-5);
    sd_arena arena;
    sd_arena_init(&arena);
    for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++) {
        const conv_case *c = &conv_cases[i];
        const conv2d_shape s = conv_shape(c);
        const int oh = conv2d_out_h(&s, c->h), ow = conv2d_out_w(&s, c->w);
        const size_t ny = (size_t)c->n * oh * ow * c->cout;
        float *x, *w, *b;
        conv_inputs(c, &x, &w, &b, 7000 + 10 * i);
        float *got = kc_random(ny, 1), *want = malloc(ny * sizeof *want);
        conv2d_nhwc(&s, x, c->n, c->h, c->w, w, b, got, &arena);
        conv2d_nhwc_ref(&s, x, c->n, c->h, c->w, w, b, want);
        kc_case(&g, got, want, ny, "#%zu %dx%dx%dx%d -> %d k%dx%d s%d pad %d,%d,%d,%d", i, c->n,
                c->h, c->w, c->cin, c->cout, c->kh, c->kw, c->stride, c->pad_t, c->pad_l, c->pad_b,
                c->pad_r);
        kc_expect(&g, arena.used_total == 0, "#%zu: scratch not released", i);
        /* Weights packed once: the very same numbers. */
        float *packed = malloc(conv2d_packed_size(&s) * sizeof *packed), *again = malloc(ny * sizeof *again);
        conv2d_pack_weights(&s, w, packed);
        /* Packed straight from PyTorch's [cout][cin][kh][kw]: the very same buffer. */
        const size_t nw = (size_t)c->cout * c->cin * c->kh * c->kw, np = conv2d_packed_size(&s);
        float *oihw = malloc(nw * sizeof *oihw), *packed2 = malloc(np * sizeof *packed2);
        for (int o = 0; o < c->cout; o++)
            for (int ci = 0; ci < c->cin; ci++)
                for (int y = 0; y < c->kh; y++)
                    for (int xx = 0; xx < c->kw; xx++)
                        oihw[(((size_t)o * c->cin + ci) * c->kh + y) * c->kw + xx] =
                            w[(((size_t)o * c->kh + y) * c->kw + xx) * c->cin + ci];
        conv2d_pack_weights_oihw(&s, oihw, packed2);
        kc_expect(&g, !memcmp(packed, packed2, np * sizeof *packed), "#%zu: packing from OIHW differs", i);
        free(oihw), free(packed2);
        conv2d_nhwc_packed(&s, x, c->n, c->h, c->w, packed, b, again, &arena);
        kc_expect(&g, !memcmp(got, again, ny * sizeof *got), "#%zu: packed weights give other numbers", i);
        conv2d_nhwc(&s, x, c->n, c->h, c->w, w, b, again, NULL); /* no scratch: packed per block */
        kc_expect(&g, !memcmp(got, again, ny * sizeof *got), "#%zu: without scratch, other numbers", i);
        free(packed), free(again);
        free(x), free(w), free(b), free(got), free(want);
    }
    sd_arena_free(&arena);
    kc_end(&g);
}

/* ---- layers: weights through a safetensors file, PyTorch layouts ---- */

static char tmpdir[64];

static void test_layers(void) {
    const int cin = 37, cout = 45, k = 3, n = 2, h = 6, w = 5;
    float *conv_w = kc_random((size_t)cout * cin * k * k, 11), *conv_b = kc_random(cout, 12);
    float *pw_w = kc_random((size_t)cout * cin, 13); /* a 1x1 conv stored as a Linear weight */
    float *lin_w = kc_random((size_t)cout * cin, 14), *lin_b = kc_random(cout, 15);
    st_entry e[] = {
        {"conv.weight", ST_F32, 4, {cout, cin, k, k}, conv_w},
        {"conv.bias", ST_F32, 1, {cout}, conv_b},
        {"pw.weight", ST_F32, 2, {cout, cin}, pw_w},
        {"pw.bias", ST_F32, 1, {cout}, conv_b},
        {"lin.weight", ST_F32, 2, {cout, cin}, lin_w},
        {"lin.bias", ST_F32, 1, {cout}, lin_b},
    };
    char path[128];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", tmpdir);
    CHECK_OK(st_write(path, e, (int)(sizeof e / sizeof *e), NULL, 0));
    sd_weights wts;
    CHECK_OK(weights_open(&wts, tmpdir, NULL, NULL));

    sd_arena arena;
    sd_arena_init(&arena);
    float *x = kc_random((size_t)n * h * w * cin, 16);
    const size_t ny = (size_t)n * h * w * cout;
    float *got = malloc(ny * sizeof *got), *want = malloc(ny * sizeof *want);

    /* 3x3 conv: the reference gets the weights reordered here by index arithmetic. */
    nn_conv2d conv;
    CHECK_OK(nn_conv2d_load(&conv, &wts, cin, cout, k, 1, 1, "conv"));
    float *ohwi = malloc((size_t)cout * cin * k * k * sizeof *ohwi);
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < cin; i++)
            for (int y = 0; y < k; y++)
                for (int xx = 0; xx < k; xx++)
                    ohwi[((o * k + y) * k + xx) * cin + i] = conv_w[((o * cin + i) * k + y) * k + xx];
    nn_conv2d_forward(&conv, x, n, h, w, got, &arena);
    conv2d_nhwc_ref(&conv.s, x, n, h, w, ohwi, conv_b, want);
    check_rel("nn_conv2d 3x3 (OIHW weights from a file)", got, want, ny, 1e-5);
    nn_conv2d_free(&conv);

    /* 1x1 conv loaded from a [cout][cin] Linear weight; padding changed after loading. */
    nn_conv2d pw;
    CHECK_OK(nn_conv2d_load(&pw, &wts, cin, cout, 1, 1, 0, "pw"));
    nn_conv2d_forward(&pw, x, n, h, w, got, &arena);
    conv2d_nhwc_ref(&pw.s, x, n, h, w, pw_w, conv_b, want);
    check_rel("nn_conv2d 1x1 (Linear-shaped weight)", got, want, ny, 1e-5);
    nn_conv2d_free(&pw);

    nn_linear lin;
    CHECK_OK(nn_linear_load(&lin, &wts, cin, cout, true, "lin"));
    nn_linear_forward(&lin, x, got, n * h * w);
    gemm_nt_ref(n * h * w, cout, cin, x, cin, lin_w, cin, want, cout, lin_b, 0);
    check_rel("nn_linear", got, want, ny, 1e-5);
    nn_linear_free(&lin);

    /* A wrong shape is refused with the tensor's name. */
    nn_conv2d bad;
    CHECK(nn_conv2d_load(&bad, &wts, cin + 1, cout, k, 1, 1, "conv") != SD_OK, "wrong cin accepted");
    CHECK(strstr(sd_last_error(), "conv.weight") != NULL, "error lacks the name: %s", sd_last_error());
    nn_conv2d_free(&bad);

    /* Channels that do not split into the groups: the loader refuses (the kernel assumes valid
     * input), naming the layer. */
    nn_norm gn;
    CHECK(nn_group_norm_load(&gn, &wts, 37, 32, 1e-5f, "norm1") != SD_OK, "37 channels in 32 groups accepted");
    CHECK(strstr(sd_last_error(), "norm1") != NULL, "error lacks the name: %s", sd_last_error());
    nn_norm_free(&gn);

    weights_close(&wts);
    sd_arena_free(&arena);
    free(conv_w), free(conv_b), free(pw_w), free(lin_w), free(lin_b), free(x), free(got), free(want);
    free(ohwi);
    unlink(path);
}

/* ---- thread-count independence ---- */

/* Bit-identical results with 1, 2 and 3 threads (3 on a 2-core machine splits work unevenly). */
static void test_thread_invariance(void) {
    const int m = 203, n = 333, k = 517;
    /* B packed a few panels at a time (several column ranges) */
    gemm_set_pack_limit((size_t)k * GEMM_NR * 3);
    float *a = kc_random((size_t)m * k, 21), *b = kc_random((size_t)n * k, 22), *bias = kc_random(n, 23);
    float *c[3];
    const conv_case cc = {2, 19, 23, 37, 70, 3, 3, 1, 1, 1, 1, 1, 1};
    const conv2d_shape s = conv_shape(&cc);
    float *x, *w, *cb;
    conv_inputs(&cc, &x, &w, &cb, 24);
    const size_t ny = (size_t)cc.n * cc.h * cc.w * cc.cout;
    float *y[3];
    sd_arena arena;
    sd_arena_init(&arena);
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        c[t] = malloc((size_t)m * n * sizeof *c[t]);
        gemm_nt(m, n, k, a, k, b, k, c[t], n, bias, 0);
        y[t] = malloc(ny * sizeof *y[t]);
        conv2d_nhwc(&s, x, cc.n, cc.h, cc.w, w, cb, y[t], &arena);
    }
    omp_set_num_threads(saved);
    gemm_set_pack_limit(GEMM_PACK_LIMIT);
    for (int t = 1; t < 3; t++) {
        CHECK(!memcmp(c[0], c[t], (size_t)m * n * sizeof *c[0]), "gemm_nt: %d threads differ from 1",
              t + 1);
        CHECK(!memcmp(y[0], y[t], ny * sizeof *y[0]), "conv2d_nhwc: %d threads differ from 1", t + 1);
    }
    printf("ok   gemm_nt and conv2d_nhwc bit-identical with 1, 2 and 3 threads [%s]\n",
           kern_isa_name(kern_isa_active()));
    for (int t = 0; t < 3; t++) free(c[t]), free(y[t]);
    free(a), free(b), free(bias), free(x), free(w), free(cb);
    sd_arena_free(&arena);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd_test_kernels_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    const kern_isa best = kern_isa_supported();
    for (int isa = best; isa >= KERN_ISA_GENERIC; isa--) {
        kern_isa_set((kern_isa)isa);
        test_gemm(0);
        test_gemm(1);
        test_conv();
        test_thread_invariance();
    }
    kern_isa_set(best);
    test_layers();
    rmdir(tmpdir);
    return test_summary();
}
