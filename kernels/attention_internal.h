/* The flash-attention engine behind attention() (not a public header).
 *
 * Work is split into tiles of qt queries of one (batch, head). A tile keeps the queries in vector
 * lanes (Q transposed, [d][qt]) so the softmax of each query is element-wise across lanes:
 * S^T = K Q^T for a block of keys, a running maximum and sum per lane (online softmax), then
 * O^T += V^T P^T. Scores for one block of ATT_BK keys are all that is ever held.
 *
 * One arithmetic on every instruction set: each query's result is the same sequence of rounded
 * operations whatever the vector width, tile size or key grouping (attention_body.h, compiled once
 * per instruction set by isa_*.c). Per query, for each block of ATT_BK keys from key 0 to the last
 * (causally masked keys included, as exact zeros):
 *   s_j   = (fma chain over the head's channels in order of q_t k_jt) * scale, -inf if masked
 *   m'    = max(m, max_j s_j); alpha = exp(m - m')     (m starts at -FLT_MAX, l and o at 0)
 *   p_j   = exp(s_j - m'); l = fma(l, alpha, a + b), where a sums the block's p_j at even
 *           positions and b those at odd positions, each in key order
 *   o_t   = o_t * alpha, then one fma per key in key order: o_t = fma(v_jt, p_j, o_t)
 * and at the end out_t = o_t * (1 / l), with exp from vec_math.h.
 *
 * K is packed once per (batch, head) in groups of kg keys, [group][d][kg] (zeros past nk, groups
 * starting afresh at each softmax block), so the score kernel broadcasts keys from consecutive
 * floats; V in groups of kg channels,
 * [channel group][key][kg] (zeros past d), so the output update streams it. A work item runs
 * ATT_TILES tiles against each block of keys while the block is in cache. */
#ifndef SD_ATTENTION_INTERNAL_H
#define SD_ATTENTION_INTERNAL_H

#include "attention.h"

enum {
    ATT_BK = 112,  /* keys per softmax block: part of the arithmetic, the same on every ISA */
    ATT_TILES = 2, /* tiles per work item */
};

/* Most floats of packed keys and values held at once (32 MB); tests lower it to exercise the
 * grouping. */
#define ATT_PACK_LIMIT (8L << 20)
void attn_set_pack_limit(long floats);

/* Queries [i0, i0 + ATT_TILES * qt) (fewer at the end) of one (batch, head). q and out point at
 * that batch's first token and head's first channel; kp and vp at the (batch, head)'s packed keys
 * and values. */
typedef void (*attn_item_fn)(const attn_shape *s, const float *q, const float *kp, const float *vp,
                             float *out, int i0, float *work);

typedef struct {
    int qt; /* queries per tile (vector lanes) */
    int kg; /* keys per packed key group, channels per packed value group */
    attn_item_fn item;
} attn_kernel;

const attn_kernel *attn_kernel_generic(void);
const attn_kernel *attn_kernel_generic_fma(void);
const attn_kernel *attn_kernel_avx2(void);
const attn_kernel *attn_kernel_avx512(void);
const attn_kernel *attn_kernel_neon(void);
/* The one for the active instruction set level. */
const attn_kernel *attn_kernel_active(void);

/* Keys are packed per softmax block: the keys of block b (from b * ATT_BK) fill groups
 * b * attn_groups_per_block(kg) onwards, the last group of a block padded with zero keys, so a
 * block starts on a group whatever kg is. */
static inline int attn_groups_per_block(int kg) { return (ATT_BK + kg - 1) / kg; }

/* Packed K and V of one (batch, head), in floats. */
static inline long attn_kp_floats(const attn_kernel *k, int nk, int d) {
    const long groups = (long)(nk / ATT_BK) * attn_groups_per_block(k->kg) +
                        (nk % ATT_BK + k->kg - 1) / k->kg;
    return groups * k->kg * d;
}
static inline long attn_vp_floats(const attn_kernel *k, int nk, int d) {
    return (long)(d + k->kg - 1) / k->kg * k->kg * nk;
}

/* Per-thread work floats for head size d: per tile Q^T and O^T; one block of scores. */
static inline long attn_work_floats(const attn_kernel *k, int d) {
    return ATT_TILES * 2L * d * k->qt + (long)ATT_BK * k->qt;
}

#endif
