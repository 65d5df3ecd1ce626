#include "attention.h"

#include <math.h>
#include <stdlib.h>

#include "gemm.h"

enum { Q_BLOCK = 64 };

/* One (batch, head, block of queries): scores for the block against all keys, row softmax, then
 * a product with V. Holds Q_BLOCK x nk scores at most. */
static void attend_block(const attn_shape *s, const float *q, const float *k, const float *v,
                         float *out, int i0, int rows, float *scores) {
    const int nk = s->nk;
    gemm_nt(rows, nk, s->d, q + (long)i0 * s->q_stride, s->q_stride, k, s->k_stride, scores, nk,
            NULL, 0);
    for (int r = 0; r < rows; r++) {
        float *row = scores + (long)r * nk;
        int limit = s->causal ? i0 + r + 1 : nk;
        if (limit > nk) limit = nk;
        float mx = -INFINITY;
        for (int j = 0; j < limit; j++) {
            row[j] *= s->scale;
            if (row[j] > mx) mx = row[j];
        }
        double sum = 0.0;
        for (int j = 0; j < limit; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < limit; j++) row[j] *= inv;
        for (int j = limit; j < nk; j++) row[j] = 0.0f;
    }
    gemm_nn(rows, s->d, nk, scores, nk, v, s->v_stride, out + (long)i0 * s->out_stride,
            s->out_stride, NULL, 0);
}

void attention(const attn_shape *s, const float *q, const float *k, const float *v, float *out,
               sd_arena *scratch) {
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *scores = sd_arena_floats(scratch, (size_t)Q_BLOCK * s->nk);
    for (int b = 0; b < s->batch; b++)
        for (int h = 0; h < s->heads; h++) {
            const float *qb = q + (long)b * s->nq * s->q_stride + h * s->d;
            const float *kb = k + (long)b * s->nk * s->k_stride + h * s->d;
            const float *vb = v + (long)b * s->nk * s->v_stride + h * s->d;
            float *ob = out + (long)b * s->nq * s->out_stride + h * s->d;
            for (int i0 = 0; i0 < s->nq; i0 += Q_BLOCK)
                attend_block(s, qb, kb, vb, ob, i0, s->nq - i0 < Q_BLOCK ? s->nq - i0 : Q_BLOCK,
                             scores);
        }
    sd_arena_release(scratch, mark);
}

void attention_ref(const attn_shape *s, const float *q, const float *k, const float *v, float *out) {
    float *p = malloc((size_t)(s->nk ? s->nk : 1) * sizeof *p);
    if (!p) return;
    for (int b = 0; b < s->batch; b++)
        for (int h = 0; h < s->heads; h++)
            for (int i = 0; i < s->nq; i++) {
                const float *qi = q + ((long)b * s->nq + i) * s->q_stride + h * s->d;
                int limit = s->causal && i + 1 < s->nk ? i + 1 : s->nk;
                float mx = -INFINITY;
                for (int j = 0; j < limit; j++) {
                    const float *kj = k + ((long)b * s->nk + j) * s->k_stride + h * s->d;
                    float dot = 0.0f;
                    for (int t = 0; t < s->d; t++) dot += qi[t] * kj[t];
                    p[j] = dot * s->scale;
                    if (p[j] > mx) mx = p[j];
                }
                double sum = 0.0;
                for (int j = 0; j < limit; j++) sum += p[j] = expf(p[j] - mx);
                float *oi = out + ((long)b * s->nq + i) * s->out_stride + h * s->d;
                for (int t = 0; t < s->d; t++) {
                    double acc = 0.0;
                    for (int j = 0; j < limit; j++)
                        acc += (double)p[j] * v[((long)b * s->nk + j) * s->v_stride + h * s->d + t];
                    oi[t] = (float)(acc / sum);
                }
            }
    free(p);
}
