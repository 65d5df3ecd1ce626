/* Weights kept in their stored dtype (f16, bf16, or float32 packed per call): the widening
 * conversions against their plain definitions on every 16-bit pattern, and the stored-dtype
 * GEMM / convolution packers and products against the float32 ones run on the same weights
 * widened beforehand. Widening is exact, so every comparison is for identical bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/safetensors.h"
#include "../kernels/conv2d.h"
#include "../kernels/convert.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_internal.h"
#include "test.h"

static int same_bits(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof *a)) return 0;
    }
    return 1;
}

/* Every 16-bit pattern, from an odd address (mapped tensors need not be aligned), with a length
 * that leaves a tail for the scalar loop. */
static void test_convert(kern_isa isa) {
    const size_t n = 65536 - 3;
    uint8_t *raw = malloc(2 * 65536 + 1);
    float *got = malloc(65536 * sizeof *got), *want = malloc(65536 * sizeof *want);
    for (size_t i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)i;
        memcpy(raw + 1 + 2 * i, &h, 2);
    }
    kern_f16_to_f32(raw + 1, got, n);
    kern_f16_to_f32_ref(raw + 1, want, n);
    CHECK(same_bits(got, want, n), "[%s] f16 -> f32 differs from the reference", kern_isa_name(isa));
    kern_bf16_to_f32(raw + 1, got, n);
    kern_bf16_to_f32_ref(raw + 1, want, n);
    CHECK(same_bits(got, want, n), "[%s] bf16 -> f32 differs from the reference", kern_isa_name(isa));
    free(raw);
    free(got);
    free(want);
}

/* Random weights rounded to the dtype: the 16-bit array (at an odd offset inside `raw`) and the
 * same values widened to float32. */
typedef struct {
    uint8_t *raw;
    void *data;
    float *wide;
} stored;

static stored make_stored(kern_dtype t, size_t n, uint64_t seed) {
    stored s = {malloc(4 * n + 1), NULL, malloc(n * sizeof(float) + 4)};
    s.data = s.raw + 1;
    fill_random(s.wide, n, seed);
    for (size_t i = 0; i < n; i++) {
        if (t == KERN_F32) {
            memcpy((uint8_t *)s.data + 4 * i, &s.wide[i], 4);
            continue;
        }
        const uint16_t h = t == KERN_F16 ? st_f32_to_f16(s.wide[i]) : st_f32_to_bf16(s.wide[i]);
        memcpy((uint8_t *)s.data + 2 * i, &h, 2);
        s.wide[i] = t == KERN_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
    return s;
}

static void free_stored(stored *s) {
    free(s->raw);
    free(s->wide);
}

static const char *dtype_name(kern_dtype t) {
    return t == KERN_F16 ? "f16" : t == KERN_BF16 ? "bf16" : "f32";
}

static void test_gemm(kern_isa isa, kern_dtype t) {
    /* (m, n, k): edges of the 32-column panels, k past the 256-value conversion chunk and past a
     * k block, a few rows (text encoder) and many (UNet). */
    /* Below GEMM_ITEM_PACK_ROWS rows B is packed per work item, above it whole: both. */
    static const int shapes[][3] = {{1, 1, 1},       {5, 33, 7},     {77, 96, 300},
                                    {64, 320, 320},   {130, 70, 1030}, {2, 1280, 768},
                                    {1100, 100, 600}};
    int bad_pack = 0, bad_gemm = 0, bad_parts = 0, cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        stored w = make_stored(t, (size_t)n * k, 100 + si);
        float *a = malloc((size_t)m * k * sizeof *a), *bias = malloc((size_t)n * sizeof *bias);
        float *want = malloc((size_t)m * n * sizeof *want), *got = malloc((size_t)m * n * sizeof *got);
        fill_random(a, (size_t)m * k, 7 + si);
        fill_random(bias, (size_t)n, 9 + si);
        const size_t psize = gemm_packed_size(n, k);
        float *pw = malloc(psize * sizeof *pw), *pg = malloc(psize * sizeof *pg);
        gemm_pack_b_nt(n, k, w.wide, k, pw);
        if (t != KERN_F32) {
            (t == KERN_F16 ? gemm_pack_b_nt_f16 : gemm_pack_b_nt_bf16)(n, k, w.data, k, pg);
            bad_pack += !same_bits(pg, pw, psize);
        }
        const gemm_b_stored one = {t, 1, {w.data}, {n}};
        gemm_pack_b_nt_stored_ref(&one, n, k, pg);
        bad_pack += !same_bits(pg, pw, psize);
        /* Both the whole-B packing and the block-by-block fallback of the engine. */
        for (int limit = 0; limit < 2; limit++) {
            gemm_set_pack_limit(limit ? GEMM_PACK_LIMIT : 0);
            for (int acc = 0; acc < 2; acc++) {
                fill_random(want, (size_t)m * n, 11);
                memcpy(got, want, (size_t)m * n * sizeof *got);
                gemm_nt(m, n, k, a, k, w.wide, k, want, n, acc ? NULL : bias, acc);
                gemm_nt_stored(m, n, k, a, k, &one, got, n, acc ? NULL : bias, acc);
                bad_gemm += !same_bits(got, want, (size_t)m * n);
                /* The same B as three stacked parts (a fused projection). */
                if (n >= 3) {
                    const size_t es = kern_dtype_size(t);
                    const int r0 = n / 3, r1 = n / 2 - n / 3 + 1, r2 = n - r0 - r1;
                    const gemm_b_stored parts = {
                        t, 3,
                        {w.data, (uint8_t *)w.data + (size_t)r0 * k * es,
                         (uint8_t *)w.data + (size_t)(r0 + r1) * k * es},
                        {r0, r1, r2}};
                    gemm_nt_stored(m, n, k, a, k, &parts, got, n, acc ? NULL : bias, 0);
                    gemm_nt(m, n, k, a, k, w.wide, k, want, n, acc ? NULL : bias, 0);
                    bad_parts += !same_bits(got, want, (size_t)m * n);
                }
                cases++;
            }
        }
        gemm_set_pack_limit(GEMM_PACK_LIMIT);
        free_stored(&w);
        free(a);
        free(bias);
        free(want);
        free(got);
        free(pw);
        free(pg);
    }
    CHECK(!bad_pack, "[%s] %s: %d packings differ from gemm_pack_b_nt", kern_isa_name(isa), dtype_name(t), bad_pack);
    CHECK(!bad_gemm, "[%s] %s: %d of %d gemm_nt_stored products differ from gemm_nt", kern_isa_name(isa), dtype_name(t), bad_gemm, cases);
    CHECK(!bad_parts, "[%s] %s: %d stacked-part products differ", kern_isa_name(isa), dtype_name(t), bad_parts);
    printf("ok gemm_nt_stored [%s] %s: %d cases bit-identical to gemm_nt\n", kern_isa_name(isa), dtype_name(t), cases);
}

static void test_conv(kern_isa isa, kern_dtype t) {
    /* cin, cout, k, stride, pad, h, w */
    static const int shapes[][7] = {{4, 32, 3, 1, 1, 8, 8},  {3, 5, 3, 2, 1, 9, 7},
                                    {40, 33, 1, 1, 0, 6, 5}, {300, 64, 3, 1, 1, 4, 4},
                                    {8, 16, 7, 1, 3, 10, 10}, {2400, 8, 1, 1, 0, 3, 3},
                                    {24, 40, 3, 1, 1, 24, 24}};
    int bad_pack = 0, bad_conv = 0, cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int *sh = shapes[si];
        const conv2d_shape s = {sh[0], sh[1], sh[2], sh[2], sh[3], sh[4], sh[4], sh[4], sh[4]};
        const int h = sh[5], wd = sh[6], oh = conv2d_out_h(&s, h), ow = conv2d_out_w(&s, wd);
        const size_t wn = (size_t)s.cout * s.cin * s.kh * s.kw, xn = (size_t)2 * h * wd * s.cin;
        const size_t yn = (size_t)2 * oh * ow * s.cout;
        stored w = make_stored(t, wn, 300 + si);
        float *x = malloc(xn * sizeof *x), *bias = malloc((size_t)s.cout * sizeof *bias);
        float *want = malloc(yn * sizeof *want), *got = malloc(yn * sizeof *got);
        fill_random(x, xn, 5 + si);
        fill_random(bias, (size_t)s.cout, 6 + si);
        const size_t psize = conv2d_packed_size(&s);
        float *pw = malloc(psize * sizeof *pw), *pg = malloc(psize * sizeof *pg);
        conv2d_pack_weights_oihw(&s, w.wide, pw);
        if (t != KERN_F32) {
            (t == KERN_F16 ? conv2d_pack_weights_oihw_widen_f16 : conv2d_pack_weights_oihw_widen_bf16)(&s, w.data, pg);
            bad_pack += !same_bits(pg, pw, psize);
        }
        for (int limit = 0; limit < 2; limit++) {
            gemm_set_pack_limit(limit ? GEMM_PACK_LIMIT : 0);
            conv2d_nhwc_packed(&s, x, 2, h, wd, pw, bias, want, NULL);
            conv2d_nhwc_stored(&s, x, 2, h, wd, w.data, t, bias, got);
            bad_conv += !same_bits(got, want, yn);
            cases++;
        }
        gemm_set_pack_limit(GEMM_PACK_LIMIT);
        free_stored(&w);
        free(x);
        free(bias);
        free(want);
        free(got);
        free(pw);
        free(pg);
    }
    CHECK(!bad_pack, "[%s] %s: %d conv packings differ from conv2d_pack_weights_oihw", kern_isa_name(isa), dtype_name(t), bad_pack);
    CHECK(!bad_conv, "[%s] %s: %d of %d conv2d_nhwc_stored results differ", kern_isa_name(isa), dtype_name(t), bad_conv, cases);
    printf("ok conv2d_nhwc_stored [%s] %s: %d cases bit-identical to conv2d_nhwc_packed\n", kern_isa_name(isa), dtype_name(t), cases);
}

int main(void) {
    const kern_isa best = kern_isa_supported();
    for (int isa = KERN_ISA_GENERIC; isa <= (int)best; isa++) {
        kern_isa_set((kern_isa)isa);
        test_convert((kern_isa)isa);
        for (int t = KERN_F32; t <= KERN_BF16; t++) {
            test_gemm((kern_isa)isa, (kern_dtype)t);
            test_conv((kern_isa)isa, (kern_dtype)t);
        }
    }
    kern_isa_set(best);
    return test_summary();
}
