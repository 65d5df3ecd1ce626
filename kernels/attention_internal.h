/* The flash-attention engine behind attention() (not a public header).
 *
 * Work is split into tiles of ATT_QT queries of one (batch, head). A tile keeps the queries in
 * vector lanes (Q transposed, [d][ATT_QT]) so the softmax of each query is element-wise across
 * registers: S^T = K Q^T for a block of keys, a running maximum and sum per lane (online softmax),
 * then O^T += V^T P^T. Scores for one block of ATT_BK keys are all that is ever held.
 *
 * K is packed once per (batch, head) in groups of ATT_KG keys, [group][d][ATT_KG] (zeros past nk),
 * so the score kernel broadcasts keys from consecutive floats; V in groups of ATT_KG channels,
 * [channel group][key][ATT_KG] (zeros past d), so the output update streams it. A work item
 * runs ATT_TILES tiles against each block of keys while the block is in cache. */
#ifndef SD_ATTENTION_INTERNAL_H
#define SD_ATTENTION_INTERNAL_H

#include "attention.h"

enum {
    ATT_QT = 32,  /* queries per tile (two 16-lane vectors) */
    ATT_KG = 14,  /* keys per packed group (one register tile of scores) */
    ATT_BK = 112, /* keys per softmax block: a multiple of ATT_KG */
    ATT_TILES = 2, /* tiles per work item */
};

/* Most floats of packed keys and values held at once (32 MB); tests lower it to exercise the
 * grouping. */
#define ATT_PACK_LIMIT (8L << 20)
void attn_set_pack_limit(long floats);

/* Packed K and V of one (batch, head), in floats. */
static inline long attn_kp_floats(int nk, int d) { return (long)(nk + ATT_KG - 1) / ATT_KG * ATT_KG * d; }
static inline long attn_vp_floats(int nk, int d) { return (long)(d + ATT_KG - 1) / ATT_KG * ATT_KG * nk; }

/* Per-thread work floats for head size d: per tile Q^T, O^T and the lane state; one block of
 * scores. */
static inline long attn_work_floats(int d) {
    return ATT_TILES * (2L * d * ATT_QT + 4 * ATT_QT) + ATT_BK * ATT_QT;
}

/* Queries [i0, i0 + ATT_TILES * ATT_QT) (fewer at the end) of one (batch, head). q and out point
 * at that batch's first token and head's first channel; kp and vp at the (batch, head)'s packed
 * keys and values. */
typedef void (*attn_tile_fn)(const attn_shape *s, const float *q, const float *kp, const float *vp,
                             float *out, int i0, float *work);

attn_tile_fn attn_tile_avx512(void);

/* The path for CPUs without AVX-512: blocks of ATT_GQ queries x ATT_GK keys through the GEMM
 * engine (q, v, out offset to the (batch, head) as above; kp: the head's keys packed by
 * gemm_pack_b_nt(nk, d, ...)). */
enum { ATT_GQ = 64, ATT_GK = 256 };
static inline long attn_generic_work_floats(int d) { return (long)ATT_GQ * (ATT_GK + d + 2); }
void attn_generic_block(const attn_shape *s, const float *q, const float *kp, const float *v,
                        float *out, int i0, float *work);
/* The same compiled for AVX2 + FMA (attention_generic_avx2.c). */
void attn_generic_block_avx2(const attn_shape *s, const float *q, const float *kp, const float *v,
                             float *out, int i0, float *work);

#endif
