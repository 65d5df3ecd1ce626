/* The blocked GEMM engine behind gemm_nt, gemm_nn and the convolutions (not a public header).
 *
 * C[m][n] = A[m][k] * B[k][n] in the BLIS style: B is packed into panels of GEMM_NR columns
 * ([k][GEMM_NR] each, zero beyond n), rows of A are copied GEMM_MR at a time into a small buffer
 * with a fixed row pitch (so the microkernel addresses them with constant offsets), and a
 * microkernel keeps an MR x GEMM_NR tile of C in registers across a block of k.
 *
 * A is read through a loader, so a convolution gathers its patches straight from the NHWC image
 * while copying (no im2col buffer). B comes either pre-packed for the whole k (conv weights,
 * packed once at load) or through a packer called per block.
 *
 * Determinism: every C element is computed by one microkernel call per k block, as one chain of
 * fused multiply-adds in k order, and the k blocks depend on k only; how rows and panels are
 * shared among threads changes which thread computes an element, never how. */
#ifndef SD_GEMM_INTERNAL_H
#define SD_GEMM_INTERNAL_H

#include <stddef.h>

#include "cpu.h"

enum {
    GEMM_NR = 32,                /* panel width (columns of B and C per microkernel call) */
    GEMM_KC = 256,               /* most of k handled per block */
    GEMM_NC = 128,               /* columns per block of B when packed block by block (the
                                  * fallback path; a multiple of GEMM_NR) */
    GEMM_APITCH = GEMM_KC + 16,  /* row pitch of the A buffer; the extra 64 bytes keep rows
                                  * from landing in the same L1 set */
    GEMM_MR_MAX = 14,
};

/* Most floats of B packed whole per product (16 MB); larger B is packed a column range at a
 * time. */
#define GEMM_PACK_LIMIT ((size_t)4 << 20)

/* C[0..mr)[0..nr) = (load_c ? C : 0) + A * B (+ bias[0..nr) when bias is not NULL).
 * a: mr rows, pitch GEMM_APITCH, kc values each; b: kc rows of GEMM_NR floats. */
typedef void (*gemm_ukernel_fn)(int kc, const float *a, const float *b, float *c, long ldc, int mr,
                                int nr, const float *bias, int load_c);

typedef struct {
    int mr; /* rows per microkernel call */
    gemm_ukernel_fn kernel;
    /* A faster gemm_pack_nt_panel, or NULL */
    void (*pack_nt)(const float *b, long ldb, int n, int j0, int p0, int kc, float *dst);
} gemm_kernel;

/* The microkernel for an instruction set level (each lives in its own file). */
const gemm_kernel *gemm_kernel_for(kern_isa isa);
const gemm_kernel *gemm_kernel_generic(void);
const gemm_kernel *gemm_kernel_generic_fma(void);
const gemm_kernel *gemm_kernel_avx2(void);
const gemm_kernel *gemm_kernel_avx512(void);
const gemm_kernel *gemm_kernel_neon(void);

/* Fills buf[r * GEMM_APITCH + q] = A[row0 + r][p0 + q] for r < rows, q < kc. */
typedef void (*gemm_load_a_fn)(const void *ctx, int row0, int rows, int p0, int kc, float *buf);
/* The plain A of gemm_nt and its siblings: rows of a row-major matrix with leading dimension
 * lda (gemm_load_rows's context). */
typedef struct {
    const float *a;
    long lda;
} gemm_rows_src;
void gemm_load_rows(const void *ctx, int row0, int rows, int p0, int kc, float *buf);
/* Packs columns [j0, j0 + GEMM_NR) (zeros past n) of rows [p0, p0 + kc) of B as [kc][GEMM_NR]. */
typedef void (*gemm_pack_b_fn)(const void *ctx, int j0, int p0, int kc, float *dst);

typedef struct {
    int m, n, k;
    gemm_load_a_fn load_a;
    const void *a_ctx;
    /* Either packed: panel j (columns j*GEMM_NR...) at packed + j * k * GEMM_NR, [k][GEMM_NR] */
    const float *packed;
    /* or a packer called per block. */
    gemm_pack_b_fn pack_b;
    const void *b_ctx;
    float *c;
    long ldc;
    const float *bias; /* [n] or NULL */
    int accumulate;    /* add to C instead of overwriting it */
} gemm_problem;

/* How a GEMM's C is cut into work items for `threads` threads (fp32, bf16 and int8 engines):
 * blocks of `per_rg` row tiles (of mr rows) by `per_pg` panels (of nr columns), carried through
 * all of k; rgroups x pgroups items. */
typedef struct {
    int per_rg, per_pg, rgroups, pgroups;
} gemm_split;
gemm_split gemm_split_items(int tiles, int panels, int mr, int nr, int threads);

void gemm_run(const gemm_problem *p);
/* The same product with B packed per work item: each item (a few row tiles x up to four panels)
 * packs its panels' current k block into its thread's block buffer just before using it, so a
 * weight converted per call (gemm_nt_stored, conv2d_nhwc_stored) is written and read back in
 * cache instead of through memory. Needs p->pack_b. For few rows (the packing is repeated once
 * per group of rows); same numbers as gemm_run. */
void gemm_run_item_packed(const gemm_problem *p);
/* Rows below which the stored-dtype products use gemm_run_item_packed. */
enum { GEMM_ITEM_PACK_ROWS = 1024 };

/* For tests: the most floats packed whole (0 forces the block-by-block path). */
void gemm_set_pack_limit(size_t floats);

/* Packed size of a [n][k] weight (PyTorch Linear layout) and the packing itself. */
size_t gemm_packed_floats(int n, int k);
void gemm_pack_nt(int n, int k, const float *b, int ldb, float *packed);
/* One panel of that packing: columns [j0, j0 + GEMM_NR) of rows [p0, p0 + kc), as [kc][GEMM_NR]. */
void gemm_pack_nt_panel(const float *b, long ldb, int n, int j0, int p0, int kc, float *dst);

#endif
