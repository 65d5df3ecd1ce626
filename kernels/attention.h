/* Scaled dot-product attention over row-major token matrices.
 *
 * For batch b, head h and query i: out = softmax_j(scale * q_i . k_j) v_j, where q_i is the d
 * floats at q + (b * nq + i) * q_stride + h * d (likewise k, v, out with their own strides), so
 * heads stay interleaved in [tokens][heads * d] rows exactly as the projections write them, and a
 * fused QKV buffer can be passed with three offsets. With `causal`, query i sees keys j <= i.
 * The fast version streams keys in blocks (online softmax) and never holds an nq x nk matrix; its
 * arithmetic is fixed per query (attention_internal.h), so every instruction set and thread count
 * gives the same bits. */
#ifndef SD_ATTENTION_H
#define SD_ATTENTION_H

#include "../core/arena.h"

typedef struct {
    int batch, heads, nq, nk, d;
    int q_stride, k_stride, v_stride, out_stride; /* floats between consecutive tokens */
    float scale;
    int causal;
} attn_shape;

/* `scratch` holds packed keys and values (at most 32 MB) and per-thread tiles for the call,
 * released before returning. Results do not depend on the number of threads. */
void attention(const attn_shape *s, const float *q, const float *k, const float *v, float *out,
               sd_arena *scratch);
void attention_ref(const attn_shape *s, const float *q, const float *k, const float *v, float *out);

#endif
