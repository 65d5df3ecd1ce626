/* Kernel benchmark rows for GGUF weights kept quantized (build/bench/kernels gguf): the
 * stored-weight GEMM (gemm_nt_stored) with Q8_0 and Q4_K blocks, dequantized while packing,
 * against the float32 GEMM on the same shape, weights packed once (gemm_nt_packed, what a float32
 * Linear layer runs) and per call (gemm_nt), and fp16 weights as the stored path's own baseline.
 * Issue 20's goal: the quantized products at >= 90% of the float32 ones' speed. Shapes: SD 1.5's
 * UNet at 512x512 (batch 2: 8192 rows at 64x64, 512 at 16x16, 128 at 8x8) and FLUX's
 * transformer at 512x512 (1024 image + 512 text tokens, width 3072, MLP 12288). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/safetensors.h"
#include "../kernels/gemm.h"
#include "bench.h"

typedef struct {
    int m, n, k;
    const float *a, *b;
    float *c, *packed;
    gemm_b_stored stored;
} run_ctx;

static void run_packed(void *p) {
    run_ctx *r = p;
    gemm_nt_packed(r->m, r->n, r->k, r->a, r->k, r->packed, r->c, r->n, NULL, 0);
}

static void run_plain(void *p) {
    run_ctx *r = p;
    gemm_nt(r->m, r->n, r->k, r->a, r->k, r->b, r->k, r->c, r->n, NULL, 0);
}

static void run_stored(void *p) {
    run_ctx *r = p;
    gemm_nt_stored(r->m, r->n, r->k, r->a, r->k, &r->stored, r->c, r->n, NULL, 0);
}

/* Random blocks with small fp16 scales (speed does not depend on the values). `scales`: byte
 * offsets of the block's fp16 fields. */
static uint8_t *random_blocks(kern_dtype t, size_t n, const int scales[2]) {
    const int qb = kern_dtype_block(t);
    const size_t bytes = kern_dtype_bytes(t, (size_t)qb), nb = n / (size_t)qb;
    uint8_t *b = malloc(nb * bytes);
    uint32_t s = 99;
    for (size_t i = 0; i < nb * bytes; i++) b[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    const uint16_t h = st_f32_to_f16(0.01f);
    for (size_t i = 0; i < nb; i++)
        for (int j = 0; j < 2; j++)
            if (scales[j] >= 0) memcpy(b + i * bytes + scales[j], &h, 2);
    return b;
}

/* Best seconds on `threads` threads. */
static double timed(void (*fn)(void *), run_ctx *r, int threads, int reps) {
    omp_set_num_threads(threads);
    const double t = bench_best_time(fn, r, reps);
    omp_set_num_threads(bench_threads);
    return t;
}

void bench_gguf(void) {
    static const int shapes[][3] = {
        {8192, 320, 1280}, {512, 1280, 5120}, {128, 1280, 1280}, {8192, 320, 768},
        {1536, 3072, 3072}, {1536, 12288, 3072}, {1536, 3072, 12288},
    };
    static const struct {
        const char *name;
        kern_dtype t;
        int scales[2];
    } kinds[] = {{"Q8_0", KERN_Q8_0, {0, -1}}, {"Q4_K", KERN_Q4_K, {0, 2}}};
    printf("GGUF weights kept quantized: gemm_nt_stored vs float32 (%% = its speed over "
           "gemm_nt_packed's, the float32 Linear layers' product)\n");
    const int counts[2] = {1, bench_threads};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        run_ctx r = {shapes[si][0], shapes[si][1], shapes[si][2], NULL, NULL, NULL, NULL, {0}};
        const size_t nk = (size_t)r.n * r.k;
        float *a = bench_randbuf((size_t)r.m * r.k), *b = bench_randbuf(nk);
        r.a = a, r.b = b;
        r.c = bench_randbuf((size_t)r.m * r.n);
        r.packed = aligned_alloc(64, (gemm_packed_size(r.n, r.k) * sizeof(float) + 63) / 64 * 64);
        gemm_pack_b_nt(r.n, r.k, b, r.k, r.packed);
        uint16_t *h = malloc(nk * sizeof *h);
        for (size_t i = 0; i < nk; i++) h[i] = st_f32_to_f16(b[i]);
        uint8_t *q[2];
        for (int i = 0; i < 2; i++) q[i] = random_blocks(kinds[i].t, nk, kinds[i].scales);
        const double flops = 2.0 * r.m * r.n * r.k;
        const int reps = flops > 5e10 ? 2 : flops > 5e9 ? 3 : 10;
        for (int ti = 0; ti < (bench_threads > 1 ? 2 : 1); ti++) {
            const int threads = counts[ti];
            const int rp = threads == 1 && flops > 5e10 ? 1 : reps;
            const double t_packed = timed(run_packed, &r, threads, rp);
            const double t_plain = timed(run_plain, &r, threads, rp);
            r.stored = (gemm_b_stored){KERN_F16, 1, {h}, {r.n}};
            const double t_f16 = timed(run_stored, &r, threads, rp);
            double t_q[2];
            for (int i = 0; i < 2; i++) {
                r.stored = (gemm_b_stored){kinds[i].t, 1, {q[i]}, {r.n}};
                t_q[i] = timed(run_stored, &r, threads, rp);
            }
            printf("gguf %5dx%5dx%5d %2dT | f32 packed %6.1f GF/s | f32 %6.1f GF/s %3.0f%% | "
                   "f16 %6.1f GF/s %3.0f%% | Q8_0 %6.1f GF/s %3.0f%% | Q4_K %6.1f GF/s %3.0f%%\n",
                   r.m, r.n, r.k, threads, flops / t_packed * 1e-9, flops / t_plain * 1e-9,
                   100 * t_packed / t_plain, flops / t_f16 * 1e-9, 100 * t_packed / t_f16,
                   flops / t_q[0] * 1e-9, 100 * t_packed / t_q[0], flops / t_q[1] * 1e-9,
                   100 * t_packed / t_q[1]);
            fflush(stdout);
        }
        free(a), free(b), free(r.c), free(r.packed), free(h), free(q[0]), free(q[1]);
    }
}
