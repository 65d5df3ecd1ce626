#include "attention.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention_internal.h"
#include "cpu.h"
#include "target.h"

const attn_kernel *attn_kernel_active(void) {
    switch (kern_isa_active()) {
#if KERN_X86
    case KERN_ISA_AVX512: return attn_kernel_avx512();
    case KERN_ISA_AVX2: return attn_kernel_avx2();
    default: return kern_fma_supported() ? attn_kernel_generic_fma() : attn_kernel_generic();
#elif KERN_ARM64
    case KERN_ISA_NEON: return attn_kernel_neon();
    default: return attn_kernel_generic();
#else
    default: return attn_kernel_generic();
#endif
    }
}

/* K of one (batch, head) as [group][d][kg], block by block (a full block fills
 * attn_groups_per_block(kg) groups), zeros past each block's last key. */
static void pack_keys(const attn_shape *s, int kg, const float *k, float *kp) {
    const int d = s->d;
    float *dst = kp;
    for (int j0 = 0; j0 < s->nk; j0 += ATT_BK) {
        const int nb = s->nk - j0 < ATT_BK ? s->nk - j0 : ATT_BK, groups = (nb + kg - 1) / kg;
        for (int g = 0; g < groups; g++, dst += (long)d * kg)
            for (int r = 0; r < kg; r++) {
                const int at = g * kg + r;
                if (at < nb) {
                    const float *src = k + (long)(j0 + at) * s->k_stride;
                    for (int t = 0; t < d; t++) dst[t * kg + r] = src[t];
                } else {
                    for (int t = 0; t < d; t++) dst[t * kg + r] = 0.0f;
                }
            }
    }
}

/* V of one (batch, head) as [channel group][key][kg], zeros past d. */
static void pack_values(const attn_shape *s, int kg, const float *v, float *vp) {
    const int groups = (s->d + kg - 1) / kg;
    for (int g = 0; g < groups; g++)
        for (int key = 0; key < s->nk; key++) {
            const float *src = v + (long)key * s->v_stride + g * kg;
            float *dst = vp + ((long)g * s->nk + key) * kg;
            const int n = s->d - g * kg < kg ? s->d - g * kg : kg;
            for (int r = 0; r < n; r++) dst[r] = src[r];
            for (int r = n; r < kg; r++) dst[r] = 0.0f;
        }
}

static long pack_limit = ATT_PACK_LIMIT;

void attn_set_pack_limit(long floats) { pack_limit = floats; }

void attention(const attn_shape *s, const float *q, const float *k, const float *v, float *out,
               sd_arena *scratch) {
    if (s->batch <= 0 || s->heads <= 0 || s->nq <= 0 || s->d <= 0) return;
    if (s->nk <= 0) { /* nothing to attend to: the empty sum */
        for (long i = 0; i < (long)s->batch * s->nq; i++)
            for (int h = 0; h < s->heads; h++) memset(out + i * s->out_stride + h * s->d, 0, (size_t)s->d * sizeof *out);
        return;
    }
    if (!scratch) { /* no scratch to work in: the plain version still gives the answer */
        attention_ref(s, q, k, v, out);
        return;
    }
    const attn_kernel *kern = attn_kernel_active();
    const int heads = s->heads, d = s->d, pairs = s->batch * heads;
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    const long kp_floats = attn_kp_floats(kern, s->nk, d) + attn_vp_floats(kern, s->nk, d);
    const long work_floats = attn_work_floats(kern, d);
    /* When one batch's keys and values are small (cross-attention on 77 tokens), an item takes
     * its queries through every head: it then reads and writes whole rows of q and out, which
     * streams far better than one head's slice of each row. Otherwise an item stays in one head
     * so that head's keys and values stay in cache. */
    const int heads_inner = kp_floats * heads * (long)sizeof(float) <= (256L << 10);
    const int per_item = heads_inner ? heads : 1;
    /* (batch, head) pairs are packed and processed a group at a time, so the packed keys and
     * values take at most ATT_PACK_LIMIT floats of scratch however many heads and tokens. */
    int per_group = (int)(pack_limit / kp_floats) / per_item * per_item;
    if (per_group < per_item) per_group = per_item;
    if (per_group > pairs) per_group = pairs;
    sd_arena_mark mark = sd_arena_get_mark(scratch);
    float *kp = sd_arena_floats(scratch, (size_t)(per_group * kp_floats));
    float *work = sd_arena_floats(scratch, (size_t)(threads * work_floats));
    if (!kp || !work) { /* out of memory for scratch: the plain version still works */
        sd_arena_release(scratch, mark);
        attention_ref(s, q, k, v, out);
        return;
    }
    const int per_tile = ATT_TILES * kern->qt, tiles = (s->nq + per_tile - 1) / per_tile;
    for (int first = 0; first < pairs; first += per_group) {
        const int count = pairs - first < per_group ? pairs - first : per_group;
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
#pragma omp for schedule(static)
            for (int i = 0; i < count; i++) {
                const int b = (first + i) / heads, h = (first + i) % heads;
                float *kvp = kp + i * kp_floats;
                pack_keys(s, kern->kg, k + (long)b * s->nk * s->k_stride + h * d, kvp);
                pack_values(s, kern->kg, v + (long)b * s->nk * s->v_stride + h * d,
                            kvp + attn_kp_floats(kern, s->nk, d));
            }
            /* Every tile is computed whole by one thread: the thread count changes nothing. */
#pragma omp for schedule(dynamic, 1)
            for (long item = 0; item < (long)count / per_item * tiles; item++) {
                const int unit = (int)(item / tiles), i0 = (int)(item % tiles) * per_tile;
                float *w = work + omp_get_thread_num() * work_floats;
                for (int i = unit * per_item; i < (unit + 1) * per_item; i++) {
                    const int b = (first + i) / heads, h = (first + i) % heads;
                    const float *kvp = kp + i * kp_floats;
                    kern->item(s, q + (long)b * s->nq * s->q_stride + h * d, kvp,
                               kvp + attn_kp_floats(kern, s->nk, d),
                               out + (long)b * s->nq * s->out_stride + h * d, i0, w);
                }
            }
        }
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
