/* Attention against its plain reference: causal and not, nq != nk, key counts below and above
 * any block size, head sizes 8 to 160, heads interleaved in [tokens][heads * d] rows with padded
 * strides and a fused QKV buffer, and bit-identical results whatever the thread count. */
#include <omp.h>

#include "../core/arena.h"
#include "../kernels/attention.h"
#include "../kernels/attention_internal.h"
#include "../kernels/cpu.h"
#include "kernel_check.h"

typedef struct {
    int batch, heads, nq, nk, d, causal, fused;
} attn_case;

static const attn_case cases[] = {
    {1, 1, 1, 1, 8, 0, 0},      {2, 3, 7, 5, 8, 0, 0},       {1, 2, 5, 7, 8, 1, 0},
    {2, 8, 64, 77, 40, 0, 0},   {1, 8, 130, 77, 40, 0, 0},   {1, 5, 77, 77, 64, 1, 1},
    {1, 2, 300, 300, 40, 0, 1}, {2, 2, 129, 129, 80, 1, 1},  {1, 3, 33, 257, 64, 0, 0},
    {1, 1, 257, 33, 80, 0, 0},  {1, 2, 100, 100, 160, 0, 1}, {1, 1, 1, 1000, 40, 0, 0},
    {1, 2, 70, 17, 24, 1, 0},   {1, 1, 17, 70, 24, 1, 0},    {2, 1, 31, 31, 1, 0, 1},
    {1, 4, 200, 513, 40, 0, 0}, {1, 1, 65, 65, 16, 1, 1},    {1, 2, 48, 48, 72, 0, 0},
    {1, 1, 70, 2000, 40, 0, 0}, {1, 1, 300, 250, 40, 1, 0},  {2, 8, 40, 77, 40, 0, 0},
};

/* Buffers for one case: separate Q, K, V with padded strides, or one fused [tokens][3 * hd] QKV
 * buffer (nq == nk). The output rows are padded too, and the padding must stay untouched. */
static void run_case(kc_group *g, const attn_case *c, uint64_t seed, sd_arena *arena) {
    if (c->fused && c->nq != c->nk) { /* one buffer holds q, k and v of the same tokens */
        CHECK(0, "test case: fused needs nq == nk");
        return;
    }
    const int hd = c->heads * c->d;
    attn_shape s = {c->batch, c->heads, c->nq, c->nk, c->d, 0, 0, 0, hd + 3, 1.0f / sqrtf((float)c->d),
                    c->causal};
    float *qkv = NULL, *q, *k, *v;
    if (c->fused) {
        s.q_stride = s.k_stride = s.v_stride = 3 * hd;
        qkv = kc_random((size_t)c->batch * c->nq * 3 * hd, seed);
        q = qkv, k = qkv + hd, v = qkv + 2 * hd;
    } else {
        s.q_stride = hd + 1, s.k_stride = hd + 5, s.v_stride = hd;
        q = kc_random((size_t)c->batch * c->nq * s.q_stride, seed);
        k = kc_random((size_t)c->batch * c->nk * s.k_stride, seed + 1);
        v = kc_random((size_t)c->batch * c->nk * s.v_stride, seed + 2);
    }
    /* Scale the queries up so the softmax is peaked in places (exercises the running maximum). */
    for (long i = 0; i < (long)c->batch * c->nq * s.q_stride; i++) q[i] *= 3.0f;
    const size_t no = (size_t)c->batch * c->nq * s.out_stride;
    float *got = kc_random(no, seed + 3), *want = kc_copy(got, no), *before = kc_copy(got, no);
    attention(&s, q, k, v, got, arena);
    attention_ref(&s, q, k, v, want);
    kc_case(g, got, want, no, "b%d h%d nq%d nk%d d%d%s%s", c->batch, c->heads, c->nq, c->nk, c->d,
            c->causal ? " causal" : "", c->fused ? " fused" : "");
    int pad_ok = 1;
    for (long t = 0; t < (long)c->batch * c->nq; t++)
        for (int j = hd; j < s.out_stride; j++) pad_ok &= got[t * s.out_stride + j] == before[t * s.out_stride + j];
    kc_expect(g, pad_ok, "nq%d nk%d d%d: wrote into the output padding", c->nq, c->nk, c->d);
    kc_expect(g, arena->used_total == 0, "nq%d nk%d d%d: scratch not released", c->nq, c->nk, c->d);
    if (c->fused) {
        free(qkv);
    } else {
        free(q), free(k), free(v);
    }
    free(got), free(want), free(before);
}

static void test_cases(void) {
    kc_group g;
    char name[64];
    snprintf(name, sizeof name, "attention [%s]", kern_isa_name(kern_isa_active()));
    kc_begin(&g, name, 1e-5);
    sd_arena arena;
    sd_arena_init(&arena);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&g, &cases[i], 100 + 7 * i, &arena);
    sd_arena_free(&arena);
    kc_end(&g);
}

/* Large-magnitude scores: a softmax without the running maximum overflows expf. */
static void test_large_scores(void) {
    const int n = 40, d = 16;
    attn_shape s = {1, 1, n, n, d, d, d, d, d, 1.0f, 0};
    float *q = kc_random((size_t)n * d, 1), *k = kc_random((size_t)n * d, 2), *v = kc_random((size_t)n * d, 3);
    for (int i = 0; i < n * d; i++) q[i] *= 60.0f, k[i] *= 60.0f;
    float *got = malloc((size_t)n * d * sizeof *got), *want = malloc((size_t)n * d * sizeof *want);
    sd_arena arena;
    sd_arena_init(&arena);
    attention(&s, q, k, v, got, &arena);
    attention_ref(&s, q, k, v, want);
    char name[96];
    snprintf(name, sizeof name, "attention with scores in the thousands [%s]", kern_isa_name(kern_isa_active()));
    check_rel(name, got, want, (size_t)n * d, 1e-5);
    sd_arena_free(&arena);
    free(q), free(k), free(v), free(got), free(want);
}

static void test_thread_invariance(void) {
    const int nq = 333, nk = 290, heads = 3, d = 40, hd = heads * d;
    attn_shape s = {2, heads, nq, nk, d, hd, hd, hd, hd, 0.158f, 0};
    float *q = kc_random((size_t)2 * nq * hd, 31), *k = kc_random((size_t)2 * nk * hd, 32);
    float *v = kc_random((size_t)2 * nk * hd, 33);
    const size_t no = (size_t)2 * nq * hd;
    float *out[3];
    sd_arena arena;
    sd_arena_init(&arena);
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        out[t] = malloc(no * sizeof *out[t]);
        s.causal = 0;
        attention(&s, q, k, v, out[t], &arena);
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 3; t++)
        CHECK(!memcmp(out[0], out[t], no * sizeof *out[0]), "attention: %d threads differ from 1", t + 1);
    /* Keys and values packed a few heads at a time: the same numbers. */
    const attn_kernel *kern = attn_kernel_active();
    attn_set_pack_limit(3L * (attn_kp_floats(kern, nk, d) + attn_vp_floats(kern, nk, d)));
    attention(&s, q, k, v, out[1], &arena);
    attn_set_pack_limit(ATT_PACK_LIMIT);
    CHECK(!memcmp(out[0], out[1], no * sizeof *out[0]), "attention: packing heads in groups changes the result");
    printf("ok   attention bit-identical with 1, 2 and 3 threads [%s]\n", kern_isa_name(kern_isa_active()));
    for (int t = 0; t < 3; t++) free(out[t]);
    free(q), free(k), free(v);
    sd_arena_free(&arena);
}

int main(void) {
    const kern_isa best = kern_isa_supported();
    for (int isa = best; isa >= KERN_ISA_GENERIC; isa--) {
        kern_isa_set((kern_isa)isa);
        test_cases();
        test_large_scores();
        test_thread_invariance();
    }
    kern_isa_set(best);
    return test_summary();
}
