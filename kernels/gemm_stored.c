/* GEMM with B kept in its stored dtype (see gemm_nt_stored in gemm.h): the weights are widened
 * (or dequantized, GGUF blocks) to float32 while being packed into the engine's panels, a chunk
 * of k at a time, so neither a float32 copy of the weight nor any allocation exists beyond the
 * engine's packing buffer. */
#include <stdint.h>
#include <string.h>

#include "../core/gguf_quant.h"
#include "../core/safetensors.h"
#include "gemm.h"
#include "gemm_internal.h"

/* k values widened per chunk: 32 rows x 256 floats (32 KB) on the packing thread's stack. A
 * multiple of every block size (32, 256), so a chunk that starts on a block holds whole blocks. */
enum { CHUNK = 256 };

typedef struct {
    const gemm_b_stored *b;
    int n, k;
} stored_src;

/* Row j of the stacked B. */
static const uint8_t *row_of(const gemm_b_stored *b, int j, int k) {
    int i = 0;
    while (i < b->n_parts - 1 && j >= b->rows[i]) j -= b->rows[i++];
    return (const uint8_t *)b->part[i] + (size_t)j * kern_dtype_bytes(b->type, (size_t)k);
}

/* pack_stored for GGUF blocks. The engine's k blocks (p0, kc) depend on k only and need not
 * start on a block of the weight (k = 640 is cut at 213 and 426): each chunk is dequantized
 * from the start of the block holding its first value, in runs that end at a multiple of CHUNK
 * past it, so at most the edge blocks of a k block are dequantized twice. Exact either way: a
 * value does not depend on where its dequantization started. */
static void pack_blocks(const stored_src *s, int j0, int p0, int kc, float *dst) {
    const gemm_b_stored *b = s->b;
    const int cols = s->n - j0 < GEMM_NR ? s->n - j0 : GEMM_NR, qb = kern_dtype_block(b->type);
    float tmp[GEMM_NR * CHUNK] __attribute__((aligned(64)));
    for (int p = p0; p < p0 + kc;) {
        const int start = p - p % qb; /* on a block */
        const int end = p0 + kc < start + CHUNK ? p0 + kc : start + CHUNK;
        const int whole = (end + qb - 1) / qb * qb - start; /* <= CHUNK, and inside the row */
        for (int jj = 0; jj < cols; jj++)
            kern_dequantize(b->type, row_of(b, j0 + jj, s->k) + kern_dtype_bytes(b->type, (size_t)start),
                            tmp + jj * CHUNK, (size_t)whole);
        gemm_pack_nt_panel(tmp, CHUNK, cols, 0, p - start, end - p, dst + (size_t)(p - p0) * GEMM_NR);
        p = end;
    }
}

static void pack_stored(const void *ctx, int j0, int p0, int kc, float *dst) {
    const stored_src *s = ctx;
    const gemm_b_stored *b = s->b;
    const int cols = s->n - j0 < GEMM_NR ? s->n - j0 : GEMM_NR;
    /* Already float32 and aligned (a safetensors mapping need not be): pack straight from it. */
    if (b->type == KERN_F32 && b->n_parts == 1 && ((uintptr_t)b->part[0] & 3) == 0) {
        gemm_pack_nt_panel(b->part[0], s->k, s->n, j0, p0, kc, dst);
        return;
    }
    if (kern_dtype_block(b->type) > 1) {
        pack_blocks(s, j0, p0, kc, dst);
        return;
    }
    const size_t esize = kern_dtype_size(b->type);
    float tmp[GEMM_NR * CHUNK] __attribute__((aligned(64)));
    for (int c0 = 0; c0 < kc; c0 += CHUNK) {
        const int cc = kc - c0 < CHUNK ? kc - c0 : CHUNK;
        for (int jj = 0; jj < cols; jj++)
            kern_to_f32(b->type, row_of(b, j0 + jj, s->k) + (size_t)(p0 + c0) * esize,
                        tmp + jj * CHUNK, (size_t)cc);
        gemm_pack_nt_panel(tmp, CHUNK, cols, 0, 0, cc, dst + (size_t)c0 * GEMM_NR);
    }
}

void gemm_nt_stored(int m, int n, int k, const float *a, int lda, const gemm_b_stored *b, float *c,
                    int ldc, const float *bias, int accumulate) {
    const gemm_rows_src as = {a, lda};
    const stored_src bs = {b, n, k};
    const gemm_problem p = {m, n, k, gemm_load_rows, &as, NULL, pack_stored, &bs, c, ldc, bias, accumulate};
    if (m < GEMM_ITEM_PACK_ROWS) gemm_run_item_packed(&p);
    else gemm_run(&p);
}

static void pack_whole(kern_dtype t, int n, int k, const void *b, int ldb, float *packed) {
    const int panels = (n + GEMM_NR - 1) / GEMM_NR;
    const size_t esize = kern_dtype_size(t);
#pragma omp parallel for schedule(static) if ((long)n * k > (1 << 16))
    for (int q = 0; q < panels; q++) {
        float tmp[GEMM_NR * CHUNK] __attribute__((aligned(64)));
        const int j0 = q * GEMM_NR, cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
        float *dst = packed + (size_t)q * k * GEMM_NR;
        for (int c0 = 0; c0 < k; c0 += CHUNK) {
            const int cc = k - c0 < CHUNK ? k - c0 : CHUNK;
            for (int jj = 0; jj < cols; jj++)
                kern_to_f32(t, (const uint8_t *)b + ((size_t)(j0 + jj) * ldb + c0) * esize,
                            tmp + jj * CHUNK, (size_t)cc);
            gemm_pack_nt_panel(tmp, CHUNK, cols, 0, 0, cc, dst + (size_t)c0 * GEMM_NR);
        }
    }
}

void gemm_pack_b_nt_f16(int n, int k, const void *b, int ldb, float *packed) {
    pack_whole(KERN_F16, n, k, b, ldb, packed);
}

void gemm_pack_b_nt_bf16(int n, int k, const void *b, int ldb, float *packed) {
    pack_whole(KERN_BF16, n, k, b, ldb, packed);
}

void gemm_pack_b_nt_stored_ref(const gemm_b_stored *b, int n, int k, float *packed) {
    const int panels = (n + GEMM_NR - 1) / GEMM_NR, qb = kern_dtype_block(b->type);
    for (int q = 0; q < panels; q++)
        for (int jj = 0; jj < GEMM_NR; jj++) {
            const int j = q * GEMM_NR + jj;
            const uint8_t *src = j < n ? row_of(b, j, k) : NULL;
            float block[256]; /* the largest block, dequantized when p enters it */
            for (int p = 0; p < k; p++) {
                float v = 0.0f;
                uint16_t h;
                if (src) switch (b->type) {
                    case KERN_F32: memcpy(&v, src + 4 * (size_t)p, 4); break;
                    case KERN_F16: memcpy(&h, src + 2 * (size_t)p, 2); v = st_f16_to_f32(h); break;
                    case KERN_BF16: memcpy(&h, src + 2 * (size_t)p, 2); v = st_bf16_to_f32(h); break;
                    default: /* by the definition (core/gguf_quant.c) */
                        if (p % qb == 0)
                            gguf_dequantize(kern_ggml_type(b->type),
                                            src + kern_dtype_bytes(b->type, (size_t)p), block, qb);
                        v = block[p % qb];
                        break;
                    }
                packed[((size_t)q * k + p) * GEMM_NR + jj] = v;
            }
        }
}
