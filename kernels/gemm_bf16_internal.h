/* The bf16 GEMM engine (not a public header): gemm_internal.h's blocking with bf16 operands.
 *
 * B is always pre-packed (weights): panel j holds columns [j * NR, j * NR + NR) as
 * [ceil(k / 2)][NR][2] bf16 (zeros past n and past k), at packed + j * ceil(k / 2) * NR * 2.
 * Rows of A come through the fp32 engine's loaders (gemm_load_a_fn: plain rows, or convolution
 * patches gathered from NHWC) a k block at a time, and are rounded to bf16 into a small tile of
 * kc2 = ceil(kc / 2) pairs per row (a zero pads an odd block). k blocks start at even k, so a
 * block's B rows are a contiguous part of each panel.
 *
 * Determinism as in the fp32 engine: every C element is one microkernel call per k block, in k
 * order, with blocks that depend on k only. */
#ifndef SD_GEMM_BF16_INTERNAL_H
#define SD_GEMM_BF16_INTERNAL_H

#include <stdint.h>

#include "gemm_bf16.h"
#include "gemm_internal.h"

enum {
    BF16_KC = GEMM_KC,            /* k per block (even; the loaders fill at most GEMM_KC) */
    BF16_APITCH = BF16_KC / 2 + 8, /* row pitch of the A tile in pairs (uint32) */
    BF16_MR_MAX = 14,
};

/* C[0..mr)[0..nr) = (load_c ? C : 0) + A * B (+ bias). a: mr rows of kc2 pairs (pitch
 * BF16_APITCH); b: kc2 rows of GEMM_BF16_NR pairs. */
typedef void (*gemm_bf16_ukernel_fn)(int kc2, const uint32_t *a, const uint16_t *b, float *c,
                                     long ldc, int mr, int nr, const float *bias, int load_c);
/* Rounds rows x kc floats (pitch GEMM_APITCH) to bf16 pairs (pitch BF16_APITCH), zero-padding
 * an odd kc. */
typedef void (*gemm_bf16_convert_fn)(const float *src, int rows, int kc, uint32_t *dst);

typedef struct {
    int mr;
    gemm_bf16_ukernel_fn kernel;
    gemm_bf16_convert_fn convert;
} gemm_bf16_kernel;

const gemm_bf16_kernel *gemm_bf16_kernel_generic(void);
const gemm_bf16_kernel *gemm_bf16_kernel_avx512(void); /* needs avx512_bf16 */

typedef struct {
    int m, n, k;
    gemm_load_a_fn load_a;
    const void *a_ctx;
    const uint16_t *packed;
    float *c;
    long ldc;
    const float *bias; /* [n] or NULL */
    int accumulate;
} gemm_bf16_problem;

void gemm_bf16_run(const gemm_bf16_problem *p);

/* Packs columns [j0, j0 + NR) of B into one panel. Row `col` of B starts at b + col * ldb; with
 * taps == 1 it is k contiguous values, with taps > 1 it is a PyTorch conv weight [cin][taps]
 * read in the (tap, cin) order the patch loader gathers (k = taps * cin). */
void gemm_bf16_pack_panel(int n, int k, int j0, const float *b, long ldb, int taps, uint16_t *dst);

#endif
