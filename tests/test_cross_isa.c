/* Same pixels on every CPU (issue #14): every kernel, and whole pipelines, must give the same bytes
 * under every instruction-set level this CPU runs (kern_isa_set, from kern_isa_supported() down to
 * generic) and with 1 and 2 threads. The reference is the best level with one thread; every other
 * configuration is compared with it by memcmp, so a result that is merely close (a different
 * summation order, a fused multiply-add where the reference rounds twice, another exp) fails.
 *
 * Kernels run on random inputs in shapes that reach their edges: sizes that are not multiples of
 * the vector width or of any tile, k spanning several GEMM k blocks, key counts that end inside a
 * block, activations at the saturation points of exp and at +-0 and tiny values; the int8 GEMM
 * and convolution (--precision int8) too, with an extra configuration on CPUs with a VNNI form
 * that runs the AVX2 vpmaddwd kernel instead. Then sd15-tiny (text to image with CFG, in fp32
 * and in int8), sd3-tiny and flux-tiny through the public API: final latents and the
 * image's bytes, and where they differ the first stage that did (text encoders, denoiser call,
 * scheduler step, VAE).
 *
 * Each configuration loads its own pipeline: the pipeline caches prompt encodings, so a second
 * generation on one pipeline would not run the text encoders again under the new level, and the
 * weights are packed at load as a process running under that level would pack them. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/safetensors.h"
#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/conv2d.h"
#include "../kernels/convert.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_int8.h"
#include "../kernels/norm.h"
#include "test.h"

/* ---- configurations: every level this CPU runs, 1 and 2 threads ---- */

typedef struct {
    kern_isa isa;
    int threads;
    int no_fma; /* generic level: its baseline copy, fmaf through libm (as without FMA hardware) */
    int no_vnni; /* int8 kernels as on a CPU without AVX-VNNI / AVX512-VNNI */
} config;

static config configs[2 * (KERN_ISA_AVX512 + 1) + 2];
static int n_configs;

static void set_config(const config *c) {
    kern_isa_set(c->isa);
    kern_fma_set_allowed(!c->no_fma);
    kern_int8_vnni_set_allowed(!c->no_vnni);
    omp_set_num_threads(c->threads);
}

static const char *config_name(const config *c) {
    static char buf[4][32];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s%s%s/%dt", kern_isa_name(c->isa), c->no_fma ? "-nofma" : "",
             c->no_vnni ? "-novnni" : "", c->threads);
    return buf[k];
}

/* Appends to a fixed buffer, truncating. */
static void append(char *buf, size_t len, const char *text) {
    const size_t used = strlen(buf);
    if (used + 1 < len) snprintf(buf + used, len - used, "%s", text);
}

/* The configurations other than the reference, as "avx512/2t, avx2/1t, ..." */
static void others_text(const bool *differs, bool want, char *buf, size_t len) {
    buf[0] = '\0';
    for (int i = 1; i < n_configs; i++) {
        if (differs[i] != want) continue;
        if (buf[0]) append(buf, len, ", ");
        append(buf, len, config_name(&configs[i]));
    }
    if (!buf[0]) snprintf(buf, len, "none");
}

/* ---- kernels ---- */

/* Distance in units in the last place between two floats (their bit patterns in one order). */
static int64_t ulp_distance(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    const int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia,
                  ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return oa > ob ? oa - ob : ob - oa;
}

/* Writes every one of its n output floats from the inputs in ctx. */
typedef void (*kernel_fn)(const void *ctx, float *out);

/* The same bytes, or both NaN: IEEE 754 leaves which NaN an operation returns (payload, sign)
 * open, x86 returns an operand's and compilers may commute operands, and GCC folds x / 1 to x
 * without quieting a signalling NaN. NaNs never arise from finite inputs here (they would be a
 * bug however they are spelled); every other value must match bit for bit. */
static bool same_value(float a, float b) { return !memcmp(&a, &b, sizeof a) || (isnan(a) && isnan(b)); }

/* Runs `run` under every configuration and requires the bytes of the reference's output (any
 * NaN for a NaN, same_value). */
static void compare_kernel(const char *name, kernel_fn run, const void *ctx, size_t n) {
    float *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
    bool differs[sizeof configs / sizeof *configs] = {false};
    int n_differ = 0;
    for (int i = 0; i < n_configs; i++) {
        float *dst = i ? out : ref;
        memset(dst, 0xA5, n * sizeof *dst); /* the same starting bytes for every run */
        set_config(&configs[i]);
        run(ctx, dst);
        if (i == 0) continue;
        bool same = true;
        for (size_t j = 0; j < n && same; j++) same = same_value(ref[j], out[j]);
        size_t count = 0, worst_at = 0;
        int64_t worst = -1;
        for (size_t j = 0; !same && j < n; j++) {
            if (same_value(ref[j], out[j])) continue;
            count++;
            const int64_t d = ulp_distance(ref[j], out[j]);
            if (d > worst) worst = d, worst_at = j;
        }
        differs[i] = !same;
        n_differ += !same;
        CHECK(same,
              "%s: %s differs from %s on %zu of %zu values (worst %lld ulp at [%zu]: %.9g, %.9g)",
              name, config_name(&configs[i]), config_name(&configs[0]), count, n, (long long)worst,
              worst_at, out[worst_at], ref[worst_at]);
    }
    char same[256], diff[256];
    others_text(differs, false, same, sizeof same);
    others_text(differs, true, diff, sizeof diff);
    if (n_differ)
        printf("FAIL %s: differs from %s under %s; identical under %s\n", name,
               config_name(&configs[0]), diff, same);
    else
        printf("ok   %s: identical bytes under %s (reference), %s\n", name,
               config_name(&configs[0]), same);
    free(ref), free(out);
}

static float *random_floats(size_t n, uint64_t seed, float scale, float offset) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    fill_random(x, n, seed);
    for (size_t i = 0; i < n; i++) x[i] = x[i] * scale + offset;
    return x;
}

/* 16-bit copies of x starting one element into the buffer, so the source is not aligned (as a
 * tensor inside a safetensors mapping need not be); free the returned pointer minus one. */
static uint16_t *to_16bit(const float *x, size_t n, kern_dtype t) {
    uint16_t *buf = malloc((n + 1) * sizeof *buf);
    for (size_t i = 0; i < n; i++)
        buf[i + 1] = t == KERN_F16 ? st_f32_to_f16(x[i]) : st_f32_to_bf16(x[i]);
    return buf + 1;
}

/* -- GEMM -- */

typedef enum { G_NT, G_NN, G_NT_PACKED, G_NT_STORED, G_NT_INT8 } gemm_kind;

typedef struct {
    gemm_kind kind;
    int m, n, k, lda, ldb, ldc, accumulate;
    const float *a, *b, *bias, *c0; /* c0: C before an accumulating product */
    gemm_b_stored stored;
} gemm_case;

static void run_gemm(const void *ctx, float *out) {
    const gemm_case *g = ctx;
    if (g->accumulate) memcpy(out, g->c0, (size_t)g->m * g->ldc * sizeof *out);
    switch (g->kind) {
    case G_NT:
        gemm_nt(g->m, g->n, g->k, g->a, g->lda, g->b, g->ldb, out, g->ldc, g->bias, g->accumulate);
        break;
    case G_NN:
        gemm_nn(g->m, g->n, g->k, g->a, g->lda, g->b, g->ldb, out, g->ldc, g->bias, g->accumulate);
        break;
    case G_NT_PACKED: { /* packed under the level being tested, like a model loaded there */
        const size_t bytes = (gemm_packed_size(g->n, g->k) * sizeof(float) + 63) & ~(size_t)63;
        float *packed = aligned_alloc(64, bytes);
        gemm_pack_b_nt(g->n, g->k, g->b, g->ldb, packed);
        gemm_nt_packed(g->m, g->n, g->k, g->a, g->lda, packed, out, g->ldc, g->bias, g->accumulate);
        free(packed);
        break;
    }
    case G_NT_STORED:
        gemm_nt_stored(g->m, g->n, g->k, g->a, g->lda, &g->stored, out, g->ldc, g->bias,
                       g->accumulate);
        break;
    case G_NT_INT8: {
        void *packed = aligned_alloc(64, (gemm_int8_packed_size(g->n, g->k) + 63) & ~(size_t)63);
        gemm_int8_pack_b_nt(g->n, g->k, g->b, g->ldb, packed);
        gemm_int8_nt_packed(g->m, g->n, g->k, g->a, g->lda, packed, out, g->ldc, g->bias, g->accumulate);
        free(packed);
        break;
    }
    }
}

static void test_gemm(void) {
    static const char *const kind_name[] = {"gemm_nt", "gemm_nn", "gemm_nt_packed",
                                            "gemm_nt_stored", "gemm_int8_nt_packed"};
    /* m, n, k: rows that fill no tile evenly, k over two GEMM k blocks plus a remainder, and a
     * product large enough to be shared among threads */
    static const struct {
        gemm_kind kind;
        int m, n, k, pad, accumulate, bias;
        kern_dtype t;
    } cases[] = {
        {G_NT, 203, 333, 517, 0, 0, 1, KERN_F32},
        {G_NT, 77, 320, 40, 5, 1, 0, KERN_F32},
        {G_NT, 1, 70, 1000, 0, 0, 1, KERN_F32},
        {G_NN, 300, 40, 300, 0, 0, 0, KERN_F32},
        {G_NN, 203, 333, 517, 3, 1, 1, KERN_F32},
        {G_NT_PACKED, 203, 333, 517, 0, 0, 1, KERN_F32},
        {G_NT_PACKED, 77, 96, 768, 0, 1, 1, KERN_F32},
        {G_NT_STORED, 203, 333, 517, 0, 0, 1, KERN_F16},
        {G_NT_STORED, 203, 333, 517, 0, 1, 1, KERN_BF16},
        {G_NT_STORED, 1100, 96, 300, 0, 0, 1, KERN_F16},
        {G_NT_STORED, 1100, 96, 300, 0, 0, 0, KERN_BF16},
        {G_NT_INT8, 203, 333, 517, 0, 0, 1, KERN_F32},
        {G_NT_INT8, 77, 96, 771, 3, 1, 1, KERN_F32},
        {G_NT_INT8, 1, 70, 1000, 0, 0, 0, KERN_F32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gemm_case g = {.kind = cases[i].kind,
                       .m = cases[i].m,
                       .n = cases[i].n,
                       .k = cases[i].k,
                       .accumulate = cases[i].accumulate};
        const int pad = cases[i].pad;
        g.lda = g.k + pad;
        g.ldb = g.kind == G_NN ? g.n + pad : g.k + pad; /* B is [k][n] for gemm_nn */
        g.ldc = g.n + pad;
        const size_t nb = g.kind == G_NN ? (size_t)g.k * g.ldb : (size_t)g.n * g.ldb;
        float *a = random_floats((size_t)g.m * g.lda, 10 + i, 1, 0);
        float *b = random_floats(nb, 20 + i, 1, 0);
        float *bias = cases[i].bias ? random_floats(g.n, 30 + i, 1, 0) : NULL;
        float *c0 = random_floats((size_t)g.m * g.ldc, 40 + i, 1, 0);
        g.a = a, g.b = b, g.bias = bias, g.c0 = c0;
        uint16_t *w16[2] = {NULL, NULL};
        /* Stored B in two parts, like a fused projection kept as the file has it (the stored
         * cases have no padding: a part is rows of k contiguous values). */
        if (g.kind == G_NT_STORED) {
            const int rows0 = g.n / 3;
            g.stored.type = cases[i].t;
            g.stored.n_parts = 2;
            g.stored.rows[0] = rows0, g.stored.rows[1] = g.n - rows0;
            w16[0] = to_16bit(b, (size_t)rows0 * g.k, cases[i].t);
            w16[1] = to_16bit(b + (size_t)rows0 * g.k, (size_t)(g.n - rows0) * g.k, cases[i].t);
            g.stored.part[0] = w16[0], g.stored.part[1] = w16[1];
        }
        char name[160];
        snprintf(name, sizeof name, "%s%s m%d n%d k%d%s%s%s", kind_name[g.kind],
                 g.kind == G_NT_STORED ? (cases[i].t == KERN_F16 ? " f16" : " bf16") : "", g.m, g.n,
                 g.k, pad ? " padded" : "", g.accumulate ? " accumulate" : "", bias ? " bias" : "");
        compare_kernel(name, run_gemm, &g, (size_t)g.m * g.ldc);
        for (int p = 0; p < 2; p++)
            if (w16[p]) free(w16[p] - 1);
        free(a), free(b), free(bias), free(c0);
    }
}

/* -- convolution -- */

typedef enum { C_ARENA, C_NO_SCRATCH, C_PACKED, C_STORED, C_INT8 } conv_kind;

typedef struct {
    conv_kind kind;
    conv2d_shape s;
    int n, h, w;
    const float *x, *ohwi, *oihw, *bias;
    const uint16_t *w16; /* oihw as f16/bf16 (unaligned) for C_STORED */
    kern_dtype t;
} conv_case;

static void run_conv(const void *ctx, float *out) {
    const conv_case *c = ctx;
    sd_arena arena;
    sd_arena_init(&arena);
    switch (c->kind) {
    case C_ARENA:
        conv2d_nhwc(&c->s, c->x, c->n, c->h, c->w, c->ohwi, c->bias, out, &arena);
        break;
    case C_NO_SCRATCH:
        conv2d_nhwc(&c->s, c->x, c->n, c->h, c->w, c->ohwi, c->bias, out, NULL);
        break;
    case C_PACKED: {
        const size_t bytes = (conv2d_packed_size(&c->s) * sizeof(float) + 63) & ~(size_t)63;
        float *packed = aligned_alloc(64, bytes);
        conv2d_pack_weights_oihw(&c->s, c->oihw, packed);
        conv2d_nhwc_packed(&c->s, c->x, c->n, c->h, c->w, packed, c->bias, out, &arena);
        free(packed);
        break;
    }
    case C_STORED:
        conv2d_nhwc_stored(&c->s, c->x, c->n, c->h, c->w, c->w16, c->t, c->bias, out);
        break;
    case C_INT8: {
        void *packed = aligned_alloc(64, (conv2d_int8_packed_size(&c->s) + 63) & ~(size_t)63);
        conv2d_pack_weights_oihw_int8(&c->s, c->oihw, packed);
        conv2d_nhwc_packed_int8(&c->s, c->x, c->n, c->h, c->w, packed, c->bias, out);
        free(packed);
        break;
    }
    }
    sd_arena_free(&arena);
}

static void test_conv(void) {
    static const char *const kind_name[] = {"conv2d_nhwc", "conv2d_nhwc (no scratch)",
                                            "conv2d_nhwc_packed", "conv2d_nhwc_stored",
                                            "conv2d_nhwc_packed_int8"};
    static const struct {
        conv_kind kind;
        int n, h, w, cin, cout, kh, stride, pad_t, pad_l, pad_b, pad_r;
        kern_dtype t;
    } cases[] = {
        /* 3x3 pad 1 (ResNet blocks): k = 9 * 40 spans two GEMM k blocks */
        {C_ARENA, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_F32},
        {C_NO_SCRATCH, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_F32},
        {C_PACKED, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_F32},
        /* stride 2: the UNet's downsampler (pad 1) and the VAE encoder's (right and bottom only) */
        {C_ARENA, 1, 33, 30, 32, 48, 3, 2, 1, 1, 1, 1, KERN_F32},
        {C_ARENA, 1, 32, 30, 24, 24, 3, 2, 0, 0, 1, 1, KERN_F32},
        /* 1x1 (shortcuts, proj_in/out) */
        {C_ARENA, 1, 24, 20, 120, 90, 1, 1, 0, 0, 0, 0, KERN_F32},
        {C_PACKED, 1, 24, 20, 120, 90, 1, 1, 0, 0, 0, 0, KERN_F32},
        /* weights kept as stored */
        {C_STORED, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_F16},
        {C_STORED, 1, 24, 20, 120, 90, 1, 1, 0, 0, 0, 0, KERN_F16},
        {C_STORED, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_BF16},
        /* int8 (--precision int8) */
        {C_INT8, 2, 19, 23, 40, 70, 3, 1, 1, 1, 1, 1, KERN_F32},
        {C_INT8, 1, 32, 30, 24, 24, 3, 2, 0, 0, 1, 1, KERN_F32},
        {C_INT8, 1, 24, 20, 120, 90, 1, 1, 0, 0, 0, 0, KERN_F32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        conv_case c = {.kind = cases[i].kind,
                       .n = cases[i].n,
                       .h = cases[i].h,
                       .w = cases[i].w,
                       .t = cases[i].t};
        c.s = (conv2d_shape){.cin = cases[i].cin, .cout = cases[i].cout, .kh = cases[i].kh,
                             .kw = cases[i].kh, .stride = cases[i].stride, .pad_t = cases[i].pad_t,
                             .pad_l = cases[i].pad_l, .pad_b = cases[i].pad_b,
                             .pad_r = cases[i].pad_r};
        const size_t nw = (size_t)c.s.cout * c.s.kh * c.s.kw * c.s.cin;
        float *x = random_floats((size_t)c.n * c.h * c.w * c.s.cin, 50 + i, 1, 0);
        float *oihw = random_floats(nw, 60 + i, 0.2f, 0), *ohwi = malloc(nw * sizeof *ohwi);
        float *bias = random_floats(c.s.cout, 70 + i, 1, 0);
        conv2d_weight_from_oihw(oihw, c.s.cout, c.s.cin, c.s.kh, c.s.kw, ohwi);
        uint16_t *w16 = c.kind == C_STORED ? to_16bit(oihw, nw, c.t) : NULL;
        c.x = x, c.oihw = oihw, c.ohwi = ohwi, c.bias = bias, c.w16 = w16;
        const int oh = conv2d_out_h(&c.s, c.h), ow = conv2d_out_w(&c.s, c.w);
        char name[160];
        snprintf(name, sizeof name, "%s%s %dx%d stride %d pad %d,%d,%d,%d, %dx%dx%d -> %d",
                 kind_name[c.kind], c.kind == C_STORED ? (c.t == KERN_F16 ? " f16" : " bf16") : "",
                 c.s.kh, c.s.kw, c.s.stride, c.s.pad_t, c.s.pad_l, c.s.pad_b, c.s.pad_r, c.h, c.w,
                 c.s.cin, c.s.cout);
        compare_kernel(name, run_conv, &c, (size_t)c.n * oh * ow * c.s.cout);
        if (w16) free(w16 - 1);
        free(x), free(oihw), free(ohwi), free(bias);
    }
}

/* -- attention -- */

typedef struct {
    attn_shape s;
    const float *q, *k, *v;
} attn_case;

static void run_attention(const void *ctx, float *out) {
    const attn_case *a = ctx;
    sd_arena arena;
    sd_arena_init(&arena);
    attention(&a->s, a->q, a->k, a->v, out, &arena);
    sd_arena_free(&arena);
}

static void test_attention(void) {
    static const struct {
        const char *what;
        int batch, heads, nq, nk, d, causal;
    } cases[] = {
        /* self-attention over 300 tokens: no multiple of 16, 14 or 112 */
        {"self", 1, 2, 300, 300, 40, 0},        {"self", 1, 2, 300, 300, 64, 0},
        {"self", 1, 2, 300, 300, 72, 0},        {"self", 2, 3, 300, 300, 8, 0},
        {"causal (CLIP)", 1, 4, 77, 77, 64, 1}, {"causal (CLIP)", 2, 2, 77, 77, 40, 1},
        {"cross", 2, 2, 300, 77, 40, 0},        {"cross", 1, 2, 1000, 77, 64, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int hd = cases[i].heads * cases[i].d;
        attn_case a;
        a.s = (attn_shape){.batch = cases[i].batch, .heads = cases[i].heads, .nq = cases[i].nq,
                           .nk = cases[i].nk, .d = cases[i].d, .q_stride = hd, .k_stride = hd,
                           .v_stride = hd, .out_stride = hd,
                           .scale = 1.0f / sqrtf((float)cases[i].d), .causal = cases[i].causal};
        /* queries scaled up: a softmax peaked in places exercises the running maximum */
        float *q = random_floats((size_t)a.s.batch * a.s.nq * hd, 80 + i, 3, 0);
        float *k = random_floats((size_t)a.s.batch * a.s.nk * hd, 90 + i, 1, 0);
        float *v = random_floats((size_t)a.s.batch * a.s.nk * hd, 100 + i, 1, 0);
        a.q = q, a.k = k, a.v = v;
        char name[160];
        snprintf(name, sizeof name, "attention %s batch %d heads %d nq %d nk %d d %d",
                 cases[i].what, a.s.batch, a.s.heads, a.s.nq, a.s.nk, a.s.d);
        compare_kernel(name, run_attention, &a, (size_t)a.s.batch * a.s.nq * hd);
        free(q), free(k), free(v);
    }
}

/* -- normalisations -- */

typedef enum { N_GROUP, N_LAYER, N_RMS } norm_kind;

typedef struct {
    norm_kind kind;
    int n, rows, c, groups, silu; /* group norm: n images of `rows` pixels */
    const float *x, *gamma, *beta;
} norm_case;

static void run_norm(const void *ctx, float *out) {
    const norm_case *c = ctx;
    switch (c->kind) {
    case N_GROUP:
        group_norm_nhwc(c->x, out, c->n, c->rows, c->c, c->groups, 1e-5f, c->gamma, c->beta,
                        c->silu);
        break;
    case N_LAYER:
        layer_norm(c->x, out, c->rows, c->c, 1e-5f, c->gamma, c->beta);
        break;
    case N_RMS:
        rms_norm(c->x, out, c->rows, c->c, 1e-6f, c->gamma);
        break;
    }
}

static void test_norms(void) {
    static const struct {
        norm_kind kind;
        int n, rows, c, groups, silu, affine;
    } cases[] = {
        {N_GROUP, 2, 300, 40, 8, 0, 1},   {N_GROUP, 2, 300, 40, 8, 1, 1},
        {N_GROUP, 1, 4096, 200, 8, 1, 1}, {N_GROUP, 1, 77, 72, 24, 0, 1},
        {N_LAYER, 1, 77, 40, 0, 0, 1},    {N_LAYER, 1, 300, 1000, 0, 0, 1},
        {N_LAYER, 1, 77, 40, 0, 0, 0},    {N_LAYER, 1, 300, 1000, 0, 0, 0},
        {N_RMS, 1, 77, 72, 0, 0, 1},      {N_RMS, 1, 300, 1000, 0, 0, 1},
        {N_RMS, 1, 77, 40, 0, 0, 0},
    };
    static const char *const kind_name[] = {"group_norm_nhwc", "layer_norm", "rms_norm"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        norm_case c = {.kind = cases[i].kind,
                       .n = cases[i].n,
                       .rows = cases[i].rows,
                       .c = cases[i].c,
                       .groups = cases[i].groups,
                       .silu = cases[i].silu};
        const size_t nx = (size_t)c.n * c.rows * c.c;
        /* an offset mean, so the variance is a small difference of large sums */
        float *x = random_floats(nx, 110 + i, 2, 3);
        float *gamma = cases[i].affine ? random_floats(c.c, 120 + i, 0.5f, 1) : NULL;
        float *beta =
            cases[i].affine && c.kind != N_RMS ? random_floats(c.c, 130 + i, 0.5f, 0) : NULL;
        c.x = x, c.gamma = gamma, c.beta = beta;
        char name[160];
        if (c.kind == N_GROUP)
            snprintf(name, sizeof name, "%s%s n %d hw %d c %d groups %d", kind_name[c.kind],
                     c.silu ? " + silu" : "", c.n, c.rows, c.c, c.groups);
        else
            snprintf(name, sizeof name, "%s rows %d c %d%s", kind_name[c.kind], c.rows, c.c,
                     cases[i].affine ? (c.kind == N_RMS ? " gamma" : " gamma beta") : " plain");
        compare_kernel(name, run_norm, &c, nx);
        free(x), free(gamma), free(beta);
    }
}

/* -- activations -- */

typedef struct {
    void (*fn)(float *, size_t);
    const float *x;
    size_t n;
} act_case;

static void run_act(const void *ctx, float *out) {
    const act_case *a = ctx;
    memcpy(out, a->x, a->n * sizeof *out);
    a->fn(out, a->n);
}

typedef struct {
    const float *in;
    int rows, d;
} geglu_case;

static void run_geglu(const void *ctx, float *out) {
    const geglu_case *g = ctx;
    act_geglu(g->in, out, g->rows, g->d);
}

static void test_activations(void) {
    /* Where exp saturates or underflows (about +-88), signed zeros, tiny and subnormal values,
     * then random values over the range that matters; lengths that leave a remainder after any
     * vector, and one long enough to be shared among threads. */
    static const float special[] = {-100.0f, -88.72f, -88.0f, -87.5f, -20.0f, -10.0f, -5.5f, -1.0f,
                                    -1e-30f, -1e-40f, -0.0f,  0.0f,   1e-40f, 1e-30f, 1.0f,  5.5f,
                                    10.0f,   20.0f,   87.5f,  88.0f,  88.5f,  88.73f, 100.0f};
    const size_t ns = sizeof special / sizeof *special;
    static const struct {
        const char *name;
        void (*fn)(float *, size_t);
    } fns[] = {{"act_silu", act_silu},
               {"act_gelu", act_gelu},
               {"act_gelu_tanh", act_gelu_tanh},
               {"act_quick_gelu", act_quick_gelu}};
    static const size_t lengths[] = {1013, 100003};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
        const size_t n = lengths[li];
        float *x = random_floats(n, 140 + li, 12, 0);
        memcpy(x, special, ns * sizeof *x);
        for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
            act_case a = {fns[f].fn, x, n};
            char name[96];
            snprintf(name, sizeof name, "%s n %zu (with -100..100, +-0, 1e-30, subnormals)",
                     fns[f].name, n);
            compare_kernel(name, run_act, &a, n);
        }
        free(x);
    }
    /* Bit patterns spread over all 2^32 (every sign, exponent, NaN and infinity, a stride that
     * walks through the mantissas): the polynomials, clamps and selects must agree everywhere. A
     * NaN result's payload is part of the bytes compared. */
    const size_t nsweep = ((size_t)1 << 32) / 4093 + 1;
    float *sweep = malloc(nsweep * sizeof *sweep);
    for (size_t i = 0; i < nsweep; i++) {
        const uint32_t bits = (uint32_t)(i * 4093u);
        memcpy(&sweep[i], &bits, sizeof bits);
    }
    for (size_t f = 0; f < sizeof fns / sizeof *fns; f++) {
        act_case a = {fns[f].fn, sweep, nsweep};
        char name[96];
        snprintf(name, sizeof name, "%s over %zu bit patterns", fns[f].name, nsweep);
        compare_kernel(name, run_act, &a, nsweep);
    }
    free(sweep);
    const int rows = 50, d = 333;
    float *in = random_floats((size_t)rows * 2 * d, 150, 4, 0);
    memcpy(in + d, special, ns * sizeof *in); /* gates at the edges too */
    geglu_case g = {in, rows, d};
    compare_kernel("act_geglu rows 50 d 333", run_geglu, &g, (size_t)rows * d);
    free(in);
}

/* -- 16-bit widening -- */

typedef struct {
    void (*fn)(const void *, float *, size_t);
    const uint16_t *src;
    size_t n;
} convert_case;

static void run_convert(const void *ctx, float *out) {
    const convert_case *c = ctx;
    c->fn(c->src, out, c->n);
}

static void test_convert(void) {
    /* Every bit pattern, numbers and infinities apart from the NaNs (whose payloads a conversion
     * may quiet), from an odd address and in an odd count. */
    uint16_t *buf = malloc((65536 + 1) * sizeof *buf), *nan_buf = malloc((65536 + 1) * sizeof *buf);
    size_t n = 0, n_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const int f16_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (f16_nan)
            nan_buf[1 + n_nan++] = (uint16_t)h;
        else
            buf[1 + n++] = (uint16_t)h;
    }
    convert_case c = {kern_f16_to_f32, buf + 1, n};
    compare_kernel("kern_f16_to_f32, every non-NaN half", run_convert, &c, c.n);
    c = (convert_case){kern_f16_to_f32, nan_buf + 1, n_nan};
    compare_kernel("kern_f16_to_f32, every NaN half", run_convert, &c, c.n);
    n = n_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const int bf16_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (bf16_nan)
            nan_buf[1 + n_nan++] = (uint16_t)h;
        else
            buf[1 + n++] = (uint16_t)h;
    }
    c = (convert_case){kern_bf16_to_f32, buf + 1, n};
    compare_kernel("kern_bf16_to_f32, every non-NaN bf16", run_convert, &c, c.n);
    c = (convert_case){kern_bf16_to_f32, nan_buf + 1, n_nan};
    compare_kernel("kern_bf16_to_f32, every NaN bf16", run_convert, &c, c.n);
    free(buf), free(nan_buf);
}

/* ---- whole pipelines ---- */

/* What one generation produced: a hash of every tensor it reported, in order, to tell which
 * stage first differs; the final latents (the last step's tensor) and the image, whole. */
enum { MAX_EVENTS = 256 };
typedef struct {
    int n_events;
    sd_event_kind kind[MAX_EVENTS];
    int index[MAX_EVENTS];
    uint64_t hash[MAX_EVENTS];
    float *latents;
    size_t n_latents;
    sd_image image;
} run_record;

static uint64_t fnv1a(const void *data, size_t bytes) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int on_event(void *user, const sd_event *ev) {
    run_record *r = user;
    const size_t n = (size_t)ev->tensor.batch * ev->tensor.h * ev->tensor.w * ev->tensor.c;
    if (!ev->tensor.data || r->n_events == MAX_EVENTS) return 0;
    r->kind[r->n_events] = ev->kind;
    r->index[r->n_events] = ev->index;
    r->hash[r->n_events++] = fnv1a(ev->tensor.data, n * sizeof(float));
    if (ev->kind == SD_EVENT_STEP) { /* keep the last */
        free(r->latents);
        r->latents = malloc(n * sizeof(float));
        memcpy(r->latents, ev->tensor.data, n * sizeof(float));
        r->n_latents = n;
    }
    return 0;
}

static void run_record_free(run_record *r) {
    free(r->latents);
    image_free(&r->image);
    memset(r, 0, sizeof *r);
}

static const char *stage_name(sd_event_kind k) {
    switch (k) {
    case SD_EVENT_PROMPT_EMBEDS:
        return "prompt embeddings";
    case SD_EVENT_NEGATIVE_EMBEDS:
        return "negative prompt embeddings";
    case SD_EVENT_POOLED_EMBEDS:
        return "pooled embedding";
    case SD_EVENT_MODEL_INPUT:
        return "denoiser input";
    case SD_EVENT_MODEL_OUTPUT:
        return "denoiser output";
    case SD_EVENT_STEP:
        return "latents after step";
    case SD_EVENT_DECODE:
        return "latents before the VAE";
    }
    return "?";
}

typedef struct {
    const char *name, *model, *prompt, *negative, *scheduler;
    int size, steps;
    double guidance;
    sd_precision precision;
} pipeline_case;

static bool generate(const pipeline_case *pc, int threads, run_record *out) {
    memset(out, 0, sizeof *out);
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.threads = threads;
    lp.precision = pc->precision;
    sd_pipeline *p = NULL;
    sd_status st = sd_pipeline_load(&p, fixture(pc->model), &lp);
    CHECK(st == SD_OK, "%s: load: %s", pc->model, sd_last_error());
    if (st != SD_OK) return false;
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = pc->prompt;
    g.negative_prompt = pc->negative;
    g.scheduler = pc->scheduler;
    g.width = g.height = pc->size;
    g.steps = pc->steps;
    g.guidance = pc->guidance;
    g.seed = 42;
    g.on_event = on_event;
    g.user = out;
    sd_result r;
    st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "%s: generate: %s", pc->name, sd_last_error());
    if (st == SD_OK) {
        CHECK(r.n_images == 1 && out->latents, "%s: %d images", pc->name, r.n_images);
        if (r.n_images == 1) {
            out->image = r.images[0]; /* handed over */
            r.images[0] = (sd_image){0};
        }
        sd_result_free(&r);
    }
    sd_pipeline_free(p);
    return st == SD_OK && out->image.rgb && out->latents;
}

/* Where two runs part: the first reported tensor that differs, or the decode (same latents,
 * different pixels). */
static void first_difference(const run_record *a, const run_record *b, char *buf, size_t len) {
    const int n = a->n_events < b->n_events ? a->n_events : b->n_events;
    for (int i = 0; i < n; i++)
        if (a->kind[i] != b->kind[i] || a->index[i] != b->index[i] || a->hash[i] != b->hash[i]) {
            snprintf(buf, len, "first at the %s %d", stage_name(a->kind[i]), a->index[i]);
            return;
        }
    snprintf(buf, len,
             a->n_events != b->n_events ? "different event counts" : "only in the VAE decode");
}

static void test_pipeline(const pipeline_case *pc) {
    run_record ref, run;
    bool differs[sizeof configs / sizeof *configs] = {false};
    int n_differ = 0;
    for (int i = 0; i < n_configs; i++) {
        set_config(&configs[i]);
        run_record *r = i ? &run : &ref;
        if (!generate(pc, configs[i].threads, r)) {
            run_record_free(r);
            if (i == 0) return; /* nothing to compare with (the failure is recorded) */
            differs[i] = true, n_differ++;
            continue;
        }
        if (i == 0) continue;
        const bool same_latents = run.n_latents == ref.n_latents &&
                                  !memcmp(run.latents, ref.latents, ref.n_latents * sizeof(float));
        const size_t npx = (size_t)ref.image.width * ref.image.height * 3;
        const bool same_size =
            run.image.width == ref.image.width && run.image.height == ref.image.height;
        const bool same_image = same_size && !memcmp(run.image.rgb, ref.image.rgb, npx);
        char where[96] = "";
        double lat_err = 0;
        int maxd = 0;
        size_t differ = 0;
        if (!same_latents || !same_image) { /* how far, and from which stage on */
            first_difference(&ref, &run, where, sizeof where);
            lat_err = run.n_latents == ref.n_latents
                          ? rel_l2(run.latents, ref.latents, ref.n_latents)
                          : INFINITY;
            for (size_t j = 0; same_size && j < npx; j++) {
                const int d = abs((int)run.image.rgb[j] - (int)ref.image.rgb[j]);
                differ += d > 0;
                if (d > maxd) maxd = d;
            }
            differs[i] = true, n_differ++;
        }
        CHECK(same_latents, "%s: %s final latents differ from %s (rel err %.3g; %s)", pc->name,
              config_name(&configs[i]), config_name(&configs[0]), lat_err, where);
        CHECK(same_image, "%s: %s image differs from %s on %zu of %zu values (max %d levels)",
              pc->name, config_name(&configs[i]), config_name(&configs[0]), differ, npx, maxd);
        run_record_free(&run);
    }
    char same[256], diff[256];
    others_text(differs, false, same, sizeof same);
    others_text(differs, true, diff, sizeof diff);
    if (n_differ)
        printf("FAIL %s: final latents or image differ from %s under %s; identical under %s\n",
               pc->name, config_name(&configs[0]), diff, same);
    else
        printf("ok   %s: final latents and image identical under %s (reference), %s\n", pc->name,
               config_name(&configs[0]), same);
    run_record_free(&ref);
}

int main(void) {
    const kern_isa best = kern_isa_supported();
    const int saved_threads = omp_get_max_threads();
    /* Two threads only where OpenMP may start them: under OMP_THREAD_LIMIT=1 (make test-aarch64,
     * since qemu-user cannot create threads here) a 2-thread run would repeat the 1-thread one. */
    const int max_t = omp_get_thread_limit() > 1 ? 2 : 1;
    for (int isa = best; isa >= KERN_ISA_GENERIC; isa--)
        for (int t = 1; t <= max_t; t++) configs[n_configs++] = (config){(kern_isa)isa, t, 0, 0};
    /* On a CPU with FMA the portable level runs a copy compiled with it; the baseline copy, what a
     * CPU without FMA runs, must give the same bytes (fmaf is exact either way). */
    if (kern_fma_supported()) configs[n_configs++] = (config){KERN_ISA_GENERIC, 1, 1, 0};
    /* On a CPU with AVX-VNNI the AVX2 level's vpmaddwd int8 kernel would otherwise not run. */
    if (kern_int8_avxvnni_supported())
        configs[n_configs++] = (config){KERN_ISA_AVX2, 2, 0, 1};
    printf("comparing %d configurations against %s\n", n_configs, config_name(&configs[0]));

    test_gemm();
    test_conv();
    test_attention();
    test_norms();
    test_activations();
    test_convert();

    static const pipeline_case pipelines[] = {
        {"sd15-tiny txt2img, CFG 7.5, Euler, 4 steps, 128x128", "sd15-tiny/pipeline",
         "a photo of an astronaut riding a horse on mars", "blurry", "EulerDiscreteScheduler", 128,
         4, 7.5, SD_PRECISION_FP32},
        {"sd15-tiny txt2img in int8, CFG 7.5, Euler, 4 steps, 128x128", "sd15-tiny/pipeline",
         "a photo of an astronaut riding a horse on mars", "blurry", "EulerDiscreteScheduler", 128,
         4, 7.5, SD_PRECISION_INT8},
        {"sd3-tiny, CFG 5, flow matching, 4 steps, 128x128", "sd3-tiny/pipeline",
         "a photo of an astronaut riding a horse on mars", "", NULL, 128, 4, 5.0, SD_PRECISION_FP32},
        {"flux-tiny, guidance 3.5, 4 steps, 128x128", "flux-tiny/pipeline",
         "a photo of an astronaut riding a horse on mars", NULL, NULL, 128, 4, 3.5, SD_PRECISION_FP32},
    };
    for (size_t i = 0; i < sizeof pipelines / sizeof *pipelines; i++) test_pipeline(&pipelines[i]);

    kern_isa_set(best);
    kern_fma_set_allowed(1);
    kern_int8_vnni_set_allowed(1);
    omp_set_num_threads(saved_threads);
    return test_summary();
}
