/* Kernel micro-benchmark: measures the machine's FP32 FMA peak with a calibration loop of
 * independent FMAs, then GFLOP/s and % of that peak for GEMM, convolution, attention and group
 * norm at Stable Diffusion 1.5 shapes, on one thread and on all threads.
 *
 *   make bench-kernels                      everything
 *   build/bench/kernels gemm conv           only some groups (gemm, blas, conv, attn, norm, act,
 *                                           unet, vae: whole-model estimates; gguf: quantized
 *                                           GGUF weights, bench/gguf.c)
 *   SD_KERNEL_ISA=avx2 build/bench/kernels  a lower instruction set
 *
 * Each figure is the best of several runs (other processes only ever slow a run down). On a busy
 * machine, BENCH_CPUTIME=1 times one-thread runs by the thread's CPU time instead of the wall
 * clock, which leaves out the time the thread spent descheduled. */
#ifndef BENCH_NO_BLAS /* for building on a machine without OpenBLAS headers */
#include <cblas.h>
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/arena.h"
#include "../include/sd.h"
#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/conv2d.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/norm.h"
#include "bench.h"
#include "peak.h"

double bench_peak1, bench_peakn;
int bench_threads;

float *bench_randbuf(size_t n) {
    float *x = aligned_alloc(64, ((n * sizeof *x + 63) / 64) * 64 + 64);
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0);
    }
    return x;
}

static int use_cputime;

static double now(void) {
    if (!use_cputime || omp_get_max_threads() > 1) return omp_get_wtime();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double bench_best_time(void (*fn)(void *), void *ctx, int reps) {
    fn(ctx);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn(ctx);
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* Runs fn on 1 thread and on all threads; prints GFLOP/s and % of the matching peak. */
static void report(const char *name, double flops, void (*fn)(void *), void *ctx, int reps) {
    printf("%-40s", name);
    int counts[2] = {1, bench_threads};
    for (int i = 0; i < (bench_threads > 1 ? 2 : 1); i++) {
        omp_set_num_threads(counts[i]);
#ifndef BENCH_NO_BLAS
        openblas_set_num_threads(counts[i]);
#endif
        double t = bench_best_time(fn, ctx, reps), gf = flops / t * 1e-9;
        printf(" | %dT %7.1f GFLOP/s %5.1f%% %8.2f ms", counts[i], gf,
               100.0 * gf / (i ? bench_peakn : bench_peak1), t * 1e3);
    }
    omp_set_num_threads(bench_threads);
    printf("\n");
    fflush(stdout);
}

/* ---- GEMM ---- */

typedef struct {
    int m, n, k;
    float *a, *b, *c, *bias, *packed;
    int blas;
} gemm_ctx;

static void run_gemm(void *p) {
    gemm_ctx *g = p;
#ifndef BENCH_NO_BLAS
    if (g->blas)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, g->n, g->k, 1.0f, g->a, g->k,
                    g->b, g->k, 0.0f, g->c, g->n);
    else
#endif
    if (g->packed)
        gemm_nt_packed(g->m, g->n, g->k, g->a, g->k, g->packed, g->c, g->n, g->bias, 0);
    else
        gemm_nt(g->m, g->n, g->k, g->a, g->k, g->b, g->k, g->c, g->n, g->bias, 0);
}

static const int gemm_shapes[][3] = {
    {4096, 320, 320},  {4096, 2560, 320}, {4096, 320, 1280}, {1024, 640, 640},
    {1024, 5120, 640}, {256, 1280, 1280}, {256, 1280, 5120}, {4096, 320, 768},
    {77, 768, 768},    {64, 1280, 1280},
};

static void bench_gemm(int blas) {
    for (size_t i = 0; i < sizeof gemm_shapes / sizeof *gemm_shapes; i++) {
        gemm_ctx g = {gemm_shapes[i][0], gemm_shapes[i][1], gemm_shapes[i][2], 0, 0, 0, 0, 0, blas};
        g.a = bench_randbuf((size_t)g.m * g.k), g.b = bench_randbuf((size_t)g.n * g.k);
        g.c = bench_randbuf((size_t)g.m * g.n), g.bias = bench_randbuf(g.n);
        const double flops = 2.0 * g.m * g.n * g.k;
        const int reps = flops > 5e9 ? 3 : flops > 5e8 ? 5 : 20;
        char name[64];
        snprintf(name, sizeof name, "%s %dx%dx%d", blas ? "openblas" : "gemm_nt", g.m, g.n, g.k);
        report(name, flops, run_gemm, &g, reps);
        if (!blas) {
            g.packed = aligned_alloc(64, gemm_packed_size(g.n, g.k) * sizeof(float));
            gemm_pack_b_nt(g.n, g.k, g.b, g.k, g.packed);
            snprintf(name, sizeof name, "gemm_nt_packed %dx%dx%d", g.m, g.n, g.k);
            report(name, flops, run_gemm, &g, reps);
            free(g.packed);
        }
        free(g.a), free(g.b), free(g.c), free(g.bias);
    }
}

/* ---- convolution ---- */

typedef struct {
    conv2d_shape s;
    int n, h, w;
    float *x, *wt, *bias, *y, *packed;
    sd_arena arena;
} conv_ctx;

static void run_conv(void *p) {
    conv_ctx *c = p;
    if (c->packed)
        conv2d_nhwc_packed(&c->s, c->x, c->n, c->h, c->w, c->packed, c->bias, c->y, &c->arena);
    else
        conv2d_nhwc(&c->s, c->x, c->n, c->h, c->w, c->wt, c->bias, c->y, &c->arena);
    sd_arena_reset(&c->arena);
}

static void bench_conv(void) {
    static const struct {
        const char *what;
        int n, h, w, cin, cout, k, stride;
    } shapes[] = {
        {"unet", 2, 64, 64, 320, 320, 3, 1},   {"unet", 2, 32, 32, 640, 640, 3, 1},
        {"unet", 2, 16, 16, 1280, 1280, 3, 1}, {"unet", 2, 8, 8, 1280, 1280, 3, 1},
        {"unet", 2, 64, 64, 320, 320, 3, 2},   {"unet", 2, 64, 64, 4, 320, 3, 1},
        {"vae", 1, 512, 512, 128, 128, 3, 1},  {"vae", 1, 256, 256, 256, 256, 3, 1},
        {"vae", 1, 128, 128, 512, 512, 3, 1},  {"vae", 1, 512, 512, 128, 3, 3, 1},
        {"unet", 2, 64, 64, 640, 320, 1, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        conv_ctx c;
        memset(&c, 0, sizeof c);
        const int k = shapes[i].k, pad = k / 2;
        c.s = (conv2d_shape){shapes[i].cin, shapes[i].cout, k, k, shapes[i].stride, pad, pad, pad, pad};
        c.n = shapes[i].n, c.h = shapes[i].h, c.w = shapes[i].w;
        const int oh = conv2d_out_h(&c.s, c.h), ow = conv2d_out_w(&c.s, c.w);
        c.x = bench_randbuf((size_t)c.n * c.h * c.w * c.s.cin);
        c.wt = bench_randbuf((size_t)c.s.cout * k * k * c.s.cin);
        c.bias = bench_randbuf(c.s.cout);
        c.y = bench_randbuf((size_t)c.n * oh * ow * c.s.cout);
        c.packed = aligned_alloc(64, conv2d_packed_size(&c.s) * sizeof(float));
        conv2d_pack_weights(&c.s, c.wt, c.packed);
        sd_arena_init(&c.arena);
        const double flops = 2.0 * c.n * oh * ow * c.s.cout * (double)k * k * c.s.cin;
        const int reps = flops > 5e10 ? 2 : flops > 5e9 ? 3 : 10;
        char name[96];
        snprintf(name, sizeof name, "conv %s %dx%dx%dx%d->%d k%d s%d", shapes[i].what, c.n, c.h, c.w,
                 c.s.cin, c.s.cout, k, c.s.stride);
        report(name, flops, run_conv, &c, reps);
        sd_arena_free(&c.arena);
        free(c.x), free(c.wt), free(c.bias), free(c.y), free(c.packed);
    }
}

/* ---- attention ---- */

typedef struct {
    attn_shape s;
    float *q, *k, *v, *o;
    sd_arena arena;
} attn_ctx;

static void run_attn(void *p) {
    attn_ctx *a = p;
    attention(&a->s, a->q, a->k, a->v, a->o, &a->arena);
    sd_arena_reset(&a->arena); /* as a model does after each pass */
}

static void bench_attn(void) {
    static const struct {
        int batch, heads, nq, nk, d, causal;
    } shapes[] = {
        {2, 8, 4096, 4096, 40, 0}, {2, 8, 4096, 77, 40, 0}, {2, 8, 1024, 1024, 80, 0},
        {2, 8, 256, 256, 160, 0},  {2, 5, 4096, 4096, 64, 0}, {2, 12, 77, 77, 64, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        attn_ctx a;
        memset(&a, 0, sizeof a);
        const int hd = shapes[i].heads * shapes[i].d;
        a.s = (attn_shape){shapes[i].batch, shapes[i].heads, shapes[i].nq, shapes[i].nk, shapes[i].d,
                           hd, hd, hd, hd, 0.15f, shapes[i].causal};
        a.q = bench_randbuf((size_t)a.s.batch * a.s.nq * hd);
        a.k = bench_randbuf((size_t)a.s.batch * a.s.nk * hd);
        a.v = bench_randbuf((size_t)a.s.batch * a.s.nk * hd);
        a.o = bench_randbuf((size_t)a.s.batch * a.s.nq * hd);
        sd_arena_init(&a.arena);
        /* QK^T and PV: 4 flops per query, key and channel (the exp is not counted). */
        double flops = 4.0 * a.s.batch * a.s.heads * (double)a.s.nq * a.s.nk * a.s.d;
        if (a.s.causal) flops *= 0.5;
        const int reps = flops > 1e10 ? 3 : flops > 1e9 ? 5 : 20;
        char name[96];
        snprintf(name, sizeof name, "attention %dx%dh %dx%d d%d%s", a.s.batch, a.s.heads, a.s.nq,
                 a.s.nk, a.s.d, a.s.causal ? " causal" : "");
        report(name, flops, run_attn, &a, reps);
        sd_arena_free(&a.arena);
        free(a.q), free(a.k), free(a.v), free(a.o);
    }
}

/* ---- group norm (memory bound: reported as GB/s of one read and one write) ---- */

typedef struct {
    int n, hw, c;
    float *x, *y, *gamma, *beta;
} gn_ctx;

static void run_gn(void *p) {
    gn_ctx *g = p;
    group_norm_nhwc(g->x, g->y, g->n, g->hw, g->c, 32, 1e-5f, g->gamma, g->beta, 1);
}

static void bench_norm(void) {
    static const int shapes[][3] = {{2, 4096, 320}, {2, 1024, 640}, {1, 262144, 128}, {2, 256, 1280}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        gn_ctx g = {shapes[i][0], shapes[i][1], shapes[i][2], 0, 0, 0, 0};
        const size_t len = (size_t)g.n * g.hw * g.c;
        g.x = bench_randbuf(len), g.y = bench_randbuf(len), g.gamma = bench_randbuf(g.c), g.beta = bench_randbuf(g.c);
        char name[96];
        snprintf(name, sizeof name, "group_norm+silu %dx%dx%d", g.n, g.hw, g.c);
        printf("%-40s", name);
        int counts[2] = {1, bench_threads};
        for (int t = 0; t < (bench_threads > 1 ? 2 : 1); t++) {
            omp_set_num_threads(counts[t]);
            double s = bench_best_time(run_gn, &g, 10);
            printf(" | %dT %7.2f GB/s %8.2f ms", counts[t], 2.0 * len * 4 / s * 1e-9, s * 1e3);
        }
        omp_set_num_threads(bench_threads);
        printf("\n");
        free(g.x), free(g.y), free(g.gamma), free(g.beta);
    }
}

/* ---- layer norm and activations (memory bound: GB/s of one read and one write) ---- */

typedef struct {
    int which, rows, c;
    float *x, *y, *gamma, *beta;
} elt_ctx;

static void run_elt(void *p) {
    elt_ctx *e = p;
    const size_t n = (size_t)e->rows * e->c;
    switch (e->which) {
    case 0: layer_norm(e->x, e->y, e->rows, e->c, 1e-5f, e->gamma, e->beta); break;
    case 1: memcpy(e->y, e->x, n * sizeof *e->y), act_silu(e->y, n); break;
    case 2: memcpy(e->y, e->x, n * sizeof *e->y), act_gelu(e->y, n); break;
    case 3: act_geglu(e->x, e->y, e->rows, e->c / 2); break;
    }
}

static void bench_elementwise(void) {
    static const struct {
        const char *name;
        int which, rows, c;
    } cases[] = {
        {"layer_norm 8192x320", 0, 8192, 320},     {"layer_norm 512x1280", 0, 512, 1280},
        {"silu (copy+) 8192x1280", 1, 8192, 1280}, {"gelu (copy+) 8192x1280", 2, 8192, 1280},
        {"geglu 8192x2560->1280", 3, 8192, 2560},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        elt_ctx e = {cases[i].which, cases[i].rows, cases[i].c, 0, 0, 0, 0};
        const size_t n = (size_t)e.rows * e.c;
        e.x = bench_randbuf(n), e.y = bench_randbuf(n), e.gamma = bench_randbuf(e.c), e.beta = bench_randbuf(e.c);
        printf("%-40s", cases[i].name);
        int counts[2] = {1, bench_threads};
        for (int t = 0; t < (bench_threads > 1 ? 2 : 1); t++) {
            omp_set_num_threads(counts[t]);
            double sec = bench_best_time(run_elt, &e, 10);
            printf(" | %dT %7.2f GB/s %8.2f ms", counts[t], 2.0 * n * 4 / sec * 1e-9, sec * 1e3);
        }
        omp_set_num_threads(bench_threads);
        printf("\n");
        free(e.x), free(e.y), free(e.gamma), free(e.beta);
    }
}

static int wanted(int argc, char **argv, const char *group) {
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], group)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    bench_threads = omp_get_max_threads();
    use_cputime = getenv("BENCH_CPUTIME") && atoi(getenv("BENCH_CPUTIME"));
    /* The library reads no environment: the benchmark passes SD_KERNEL_ISA on, as the tools do. */
    if (getenv("SD_KERNEL_ISA") && sd_set_kernel_isa(getenv("SD_KERNEL_ISA")) != SD_OK) {
        fprintf(stderr, "SD_KERNEL_ISA: %s\n", sd_last_error());
        return 2;
    }
    const kern_isa isa = kern_isa_active();
    printf("kernels: %s (machine supports %s), %d threads\n", kern_isa_name(isa),
           kern_isa_name(kern_isa_supported()), bench_threads);
    peak_measure(isa, bench_threads, &bench_peak1, &bench_peakn);
    printf("FP32 FMA peak (%s): %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads\n",
           kern_isa_name(isa), bench_peak1, bench_peakn, bench_threads);
    if (wanted(argc, argv, "gemm")) bench_gemm(0);
#ifndef BENCH_NO_BLAS
    if (wanted(argc, argv, "blas")) bench_gemm(1);
#endif
    if (wanted(argc, argv, "conv")) bench_conv();
    if (wanted(argc, argv, "attn")) bench_attn();
    if (wanted(argc, argv, "norm")) bench_norm();
    if (wanted(argc, argv, "act")) bench_elementwise();
    if (wanted(argc, argv, "unet")) bench_model_unet();
    if (wanted(argc, argv, "vae")) bench_model_vae();
    if (wanted(argc, argv, "gguf")) bench_gguf();
    return 0;
}
