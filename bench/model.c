/* Whole-model estimates: every distinct layer of one SD 1.5 UNet step (CFG batch 2, 512x512) or
 * one VAE decode, timed at its real shape with the library's kernels, times how often it occurs.
 * Copies, concatenations and upsampling are left out; they are memory moves, a few percent.
 * BENCH_VERBOSE=1 lists every layer. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../kernels/act.h"
#include "../kernels/attention.h"
#include "../kernels/conv2d.h"
#include "../kernels/gemm.h"
#include "../kernels/norm.h"
#include "../kernels/cpu.h"
#include "bench.h"
#include "peak.h"

typedef enum { OP_CONV, OP_LINEAR, OP_ATTN, OP_GN, OP_LN, OP_GEGLU, OP_KINDS } op_kind;

static const char *const kind_name[OP_KINDS] = {"conv", "linear", "attention", "group norm",
                                                "layer norm", "geglu"};

/* CONV: n h w cin cout k stride; LINEAR: m out in bias; ATTN: batch heads nq nk d;
 * GN: n hw c silu; LN: rows c; GEGLU: rows d. */
typedef struct {
    op_kind kind;
    int p[7];
    int count;
} op;

enum { MAX_OPS = 128 };
static op ops[MAX_OPS];
static int n_ops;

static void add(op_kind kind, int count, int a, int b, int c, int d, int e, int f, int g) {
    const op o = {kind, {a, b, c, d, e, f, g}, count};
    for (int i = 0; i < n_ops; i++)
        if (ops[i].kind == kind && !memcmp(ops[i].p, o.p, sizeof o.p)) {
            ops[i].count += count;
            return;
        }
    if (n_ops < MAX_OPS) ops[n_ops++] = o;
}

static double op_flops(const op *o) {
    const int *p = o->p;
    switch (o->kind) {
    case OP_CONV: {
        const double oh = (p[1] + 2 * (p[5] / 2) - p[5]) / p[6] + 1, ow = (p[2] + 2 * (p[5] / 2) - p[5]) / p[6] + 1;
        return 2.0 * p[0] * oh * ow * p[4] * p[5] * p[5] * p[3];
    }
    case OP_LINEAR: return 2.0 * p[0] * p[1] * p[2];
    case OP_ATTN: return 4.0 * p[0] * p[1] * (double)p[2] * p[3] * p[4];
    default: return 0.0;
    }
}

typedef struct {
    const op *o;
    float *x, *y, *w, *bias, *packed, *q, *k, *v;
    sd_arena arena;
} op_ctx;

static void run_op(void *ctx) {
    op_ctx *c = ctx;
    const int *p = c->o->p;
    switch (c->o->kind) {
    case OP_CONV: {
        const conv2d_shape s = {p[3], p[4], p[5], p[5], p[6], p[5] / 2, p[5] / 2, p[5] / 2, p[5] / 2};
        conv2d_nhwc_packed(&s, c->x, p[0], p[1], p[2], c->packed, c->bias, c->y, &c->arena);
        break;
    }
    case OP_LINEAR: gemm_nt(p[0], p[1], p[2], c->x, p[2], c->w, p[2], c->y, p[1], p[3] ? c->bias : NULL, 0); break;
    case OP_ATTN: {
        const int hd = p[1] * p[4];
        const attn_shape s = {p[0], p[1], p[2], p[3], p[4], hd, hd, hd, hd, 0.125f, 0};
        attention(&s, c->q, c->k, c->v, c->y, &c->arena);
        break;
    }
    case OP_GN: group_norm_nhwc(c->x, c->y, p[0], p[1], p[2], 32, 1e-5f, c->w, c->bias, p[3]); break;
    case OP_LN: layer_norm(c->x, c->y, p[0], p[1], 1e-5f, c->w, c->bias); break;
    case OP_GEGLU: act_geglu(c->x, c->y, p[0], p[1]); break;
    default: break;
    }
    sd_arena_reset(&c->arena);
}

/* Times every op on 1 thread and on all; prints per-kind totals and the whole. */
static void run_all(const char *model, double quoted_tflop) {
    double total_flops = 0.0, t_kind[2][OP_KINDS] = {{0}}, f_kind[OP_KINDS] = {0};
    const int counts[2] = {1, bench_threads}, passes = bench_threads > 1 ? 2 : 1;
    for (int i = 0; i < n_ops; i++) {
        const op *o = &ops[i];
        const int *p = o->p;
        op_ctx c;
        memset(&c, 0, sizeof c);
        c.o = o;
        sd_arena_init(&c.arena);
        size_t nx = 0, ny = 0, nw = 0, nb = 0;
        switch (o->kind) {
        case OP_CONV: {
            const int oh = (p[1] + 2 * (p[5] / 2) - p[5]) / p[6] + 1, ow = (p[2] + 2 * (p[5] / 2) - p[5]) / p[6] + 1;
            nx = (size_t)p[0] * p[1] * p[2] * p[3], ny = (size_t)p[0] * oh * ow * p[4];
            nw = (size_t)p[4] * p[5] * p[5] * p[3], nb = p[4];
            break;
        }
        case OP_LINEAR: nx = (size_t)p[0] * p[2], ny = (size_t)p[0] * p[1], nw = (size_t)p[1] * p[2], nb = p[1]; break;
        case OP_ATTN: ny = (size_t)p[0] * p[2] * p[1] * p[4]; break;
        case OP_GN: nx = ny = (size_t)p[0] * p[1] * p[2], nw = nb = p[2]; break;
        case OP_LN: nx = ny = (size_t)p[0] * p[1], nw = nb = p[1]; break;
        case OP_GEGLU: nx = (size_t)p[0] * 2 * p[1], ny = (size_t)p[0] * p[1]; break;
        default: break;
        }
        if (nx) c.x = bench_randbuf(nx);
        c.y = bench_randbuf(ny);
        if (nw) c.w = bench_randbuf(nw);
        if (nb) c.bias = bench_randbuf(nb);
        if (o->kind == OP_CONV) {
            const conv2d_shape s = {p[3], p[4], p[5], p[5], p[6], p[5] / 2, p[5] / 2, p[5] / 2, p[5] / 2};
            c.packed = aligned_alloc(64, (conv2d_packed_size(&s) * sizeof(float) + 63) / 64 * 64);
            conv2d_pack_weights(&s, c.w, c.packed);
        }
        if (o->kind == OP_ATTN) {
            const size_t hd = (size_t)p[1] * p[4];
            c.q = bench_randbuf(p[0] * p[2] * hd);
            c.k = bench_randbuf(p[0] * p[3] * hd);
            c.v = bench_randbuf(p[0] * p[3] * hd);
        }
        const double flops = op_flops(o);
        /* at least 2: the first timed run after a warm-up may touch fresh scratch pages */
        const int reps = flops > 2e10 ? 2 : flops > 1e9 ? 3 : 8;
        double secs[2] = {0, 0};
        for (int t = 0; t < passes; t++) {
            omp_set_num_threads(counts[t]);
            secs[t] = bench_best_time(run_op, &c, reps);
            t_kind[t][o->kind] += o->count * secs[t];
        }
        if (getenv("BENCH_VERBOSE")) {
            printf("    %-10s x%-2d %5d %5d %5d %5d %5d %5d %5d", kind_name[o->kind], o->count, p[0], p[1],
                   p[2], p[3], p[4], p[5], p[6]);
            for (int t = 0; t < passes; t++)
                printf(" | %8.3f ms %6.1f GFLOP/s", secs[t] * 1e3, flops / secs[t] * 1e-9);
            printf("\n");
        }
        omp_set_num_threads(bench_threads);
        total_flops += o->count * flops;
        f_kind[o->kind] += o->count * flops;
        sd_arena_free(&c.arena);
        free(c.x), free(c.y), free(c.w), free(c.bias), free(c.packed), free(c.q), free(c.k), free(c.v);
    }
    printf("%s: %d distinct layers, %.3f TFLOP counted (convolutions, linear layers, attention; "
           "quoted %.3f)\n", model, n_ops, total_flops * 1e-12, quoted_tflop);
    for (int k = 0; k < OP_KINDS; k++) {
        printf("  %-12s %6.3f TFLOP", kind_name[k], f_kind[k] * 1e-12);
        for (int t = 0; t < passes; t++) {
            printf(" | %dT %8.1f ms", counts[t], t_kind[t][k] * 1e3);
            if (f_kind[k] > 0) printf(" %6.1f GFLOP/s", f_kind[k] / t_kind[t][k] * 1e-9);
        }
        printf("\n");
    }
    /* The peak again: a busy moment at start-up would otherwise inflate every percentage. */
    peak_measure(kern_isa_active(), bench_threads, &bench_peak1, &bench_peakn);
    printf("  FP32 FMA peak (best measured): %.1f GFLOP/s on 1 thread, %.1f on %d\n", bench_peak1,
           bench_peakn, bench_threads);
    for (int t = 0; t < passes; t++) {
        double sum = 0.0;
        for (int k = 0; k < OP_KINDS; k++) sum += t_kind[t][k];
        const double gf = total_flops / sum * 1e-9;
        printf("  %s total, %d thread%s: %.2f s, %.1f GFLOP/s = %.1f%% of the measured peak\n", model,
               counts[t], counts[t] > 1 ? "s" : "", sum, gf, 100.0 * gf / (t ? bench_peakn : bench_peak1));
    }
    fflush(stdout);
    n_ops = 0;
}

/* ---- SD 1.5 UNet, batch 2 (CFG), 64x64 latents ---- */

static void resnet(int n, int h, int cin, int cout) {
    add(OP_GN, 1, n, h * h, cin, 1, 0, 0, 0);
    add(OP_CONV, 1, n, h, h, cin, cout, 3, 1);
    add(OP_LINEAR, 1, n, cout, 1280, 1, 0, 0, 0); /* time embedding projection */
    add(OP_GN, 1, n, h * h, cout, 1, 0, 0, 0);
    add(OP_CONV, 1, n, h, h, cout, cout, 3, 1);
    if (cin != cout) add(OP_CONV, 1, n, h, h, cin, cout, 1, 1);
}

static void transformer(int n, int h, int c) {
    const int t = n * h * h, heads = 8, ctx = 77;
    add(OP_GN, 1, n, h * h, c, 0, 0, 0, 0);
    add(OP_LINEAR, 1, t, c, c, 1, 0, 0, 0); /* proj_in (1x1 conv) */
    add(OP_LN, 3, t, c, 0, 0, 0, 0, 0);
    add(OP_LINEAR, 4, t, c, c, 0, 0, 0, 0); /* self-attention q, k, v, and cross-attention q */
    add(OP_ATTN, 1, n, heads, h * h, h * h, c / heads, 0, 0);
    add(OP_LINEAR, 2, t, c, c, 1, 0, 0, 0); /* both attention outputs */
    add(OP_LINEAR, 2, n * ctx, c, 768, 0, 0, 0, 0); /* cross-attention k, v */
    add(OP_ATTN, 1, n, heads, h * h, ctx, c / heads, 0, 0);
    add(OP_LINEAR, 1, t, 8 * c, c, 1, 0, 0, 0); /* GEGLU projection */
    add(OP_GEGLU, 1, t, 4 * c, 0, 0, 0, 0, 0);
    add(OP_LINEAR, 1, t, c, 4 * c, 1, 0, 0, 0);
    add(OP_LINEAR, 1, t, c, c, 1, 0, 0, 0); /* proj_out */
}

void bench_model_unet(void) {
    const int n = 2;
    add(OP_CONV, 1, n, 64, 64, 4, 320, 3, 1);
    /* down: (320, 64) (640, 32) (1280, 16) with attention, (1280, 8) without */
    const int ch[4] = {320, 640, 1280, 1280}, hs[4] = {64, 32, 16, 8};
    int cin = 320;
    for (int b = 0; b < 4; b++) {
        for (int l = 0; l < 2; l++) {
            resnet(n, hs[b], cin, ch[b]);
            cin = ch[b];
            if (b < 3) transformer(n, hs[b], ch[b]);
        }
        if (b < 3) add(OP_CONV, 1, n, hs[b], hs[b], ch[b], ch[b], 3, 2);
    }
    resnet(n, 8, 1280, 1280);
    transformer(n, 8, 1280);
    resnet(n, 8, 1280, 1280);
    /* up: the skip connections, in the order the down path produced them, come back reversed */
    const int skips[12] = {320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280};
    int skip = 11, prev = 1280;
    for (int b = 3; b >= 0; b--) {
        for (int l = 0; l < 3; l++) {
            resnet(n, hs[b], prev + skips[skip--], ch[b]);
            prev = ch[b];
            if (b < 3) transformer(n, hs[b], ch[b]);
        }
        if (b > 0) add(OP_CONV, 1, n, 2 * hs[b], 2 * hs[b], ch[b], ch[b], 3, 1);
    }
    add(OP_GN, 1, n, 64 * 64, 320, 1, 0, 0, 0);
    add(OP_CONV, 1, n, 64, 64, 320, 4, 3, 1);
    run_all("SD 1.5 UNet step (batch 2)", 1.607);
}

/* ---- SD 1.5 VAE decoder, one 64x64 latent to 512x512 ---- */

static void vae_resnet(int h, int cin, int cout) {
    add(OP_GN, 1, 1, h * h, cin, 1, 0, 0, 0);
    add(OP_CONV, 1, 1, h, h, cin, cout, 3, 1);
    add(OP_GN, 1, 1, h * h, cout, 1, 0, 0, 0);
    add(OP_CONV, 1, 1, h, h, cout, cout, 3, 1);
    if (cin != cout) add(OP_CONV, 1, 1, h, h, cin, cout, 1, 1);
}

void bench_model_vae(void) {
    add(OP_CONV, 1, 1, 64, 64, 4, 512, 3, 1);
    vae_resnet(64, 512, 512);
    add(OP_GN, 1, 1, 64 * 64, 512, 0, 0, 0, 0); /* mid-block attention: one head of 512 */
    add(OP_LINEAR, 4, 4096, 512, 512, 1, 0, 0, 0);
    add(OP_ATTN, 1, 1, 1, 4096, 4096, 512, 0, 0);
    vae_resnet(64, 512, 512);
    const int ch[4] = {512, 512, 256, 128}, hs[4] = {64, 128, 256, 512};
    int cin = 512;
    for (int b = 0; b < 4; b++) {
        for (int l = 0; l < 3; l++) {
            vae_resnet(hs[b], cin, ch[b]);
            cin = ch[b];
        }
        if (b < 3) add(OP_CONV, 1, 1, 2 * hs[b], 2 * hs[b], ch[b], ch[b], 3, 1);
    }
    add(OP_GN, 1, 1, 512 * 512, 128, 1, 0, 0, 0);
    add(OP_CONV, 1, 1, 512, 512, 128, 3, 3, 1);
    run_all("SD 1.5 VAE decode (512x512)", 2.51);
}
