/* The flash-attention tile (attention_internal.h) on the vec_*.h primitives: included by isa_*.c
 * after a vec header, vec_math.h, a KERN_NAME(name) definition and the tile's shape: ATT_QV
 * vectors of queries per tile and ATT_KG keys per register tile (both sized to the ISA's
 * registers: the scores are an ATT_KG x ATT_QV tile of accumulators). The shape changes which
 * lanes and registers hold a number, never how it is computed. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "attention_internal.h"

#define ATT_QT (ATT_QV * VEC_W)

/* Q^T for queries [i0, i0 + nqt) into qt[d][ATT_QT], zeros in unused lanes. */
VEC_FN void KERN_NAME(att_load_q)(const attn_shape *s, const float *q, int i0, int nqt, float *qt) {
    const int d = s->d;
    for (int h = 0; h < ATT_QV; h++) {
        const int rows = nqt - VEC_W * h < 0 ? 0 : nqt - VEC_W * h < VEC_W ? nqt - VEC_W * h : VEC_W;
        for (int t0 = 0; t0 < d; t0 += VEC_W) {
            const int tn = d - t0 < VEC_W ? d - t0 : VEC_W;
            vf r[VEC_W];
            for (int i = 0; i < VEC_W; i++)
                r[i] = i < rows ? v_load_n(q + (long)(i0 + VEC_W * h + i) * s->q_stride + t0, tn)
                                : v_zero();
            v_transpose(r);
            for (int t = 0; t < tn; t++) v_store(qt + (t0 + t) * ATT_QT + VEC_W * h, r[t]);
        }
    }
}

/* out rows [i0, i0 + nqt) = O^T transposed, each query divided by its softmax sum. */
VEC_FN void KERN_NAME(att_store_out)(const attn_shape *s, float *out, int i0, int nqt,
                                     const float *ot, const vf l[ATT_QV]) {
    const int d = s->d;
    for (int h = 0; h < ATT_QV; h++) {
        const int rows = nqt - VEC_W * h < 0 ? 0 : nqt - VEC_W * h < VEC_W ? nqt - VEC_W * h : VEC_W;
        const vf inv = v_div(v_set1(1.0f), l[h]);
        for (int t0 = 0; t0 < d && rows > 0; t0 += VEC_W) {
            const int tn = d - t0 < VEC_W ? d - t0 : VEC_W;
            vf r[VEC_W];
            for (int t = 0; t < VEC_W; t++)
                r[t] = t < tn ? v_mul(v_load(ot + (t0 + t) * ATT_QT + VEC_W * h), inv) : v_zero();
            v_transpose(r);
            for (int i = 0; i < rows; i++)
                v_store_n(out + (long)(i0 + VEC_W * h + i) * s->out_stride + t0, r[i], tn);
        }
    }
}

/* Scores of keys [jg, jg + ATT_KG) (packed group kg, rows past `rows` unused) against the tile's
 * queries, into sb[ATT_KG][ATT_QT]; -inf past the diagonal when causal; block maxima updated. The
 * scale multiplies the finished dot products, as in the reference. */
VEC_FN void KERN_NAME(att_scores)(int d, const float *kg, const float *qt, float *sb, int rows,
                                  float scale_f, int causal, int jg, int i0, vf bm[ATT_QV]) {
    vf c[ATT_KG][ATT_QV];
KERN_UNROLL
    for (int r = 0; r < ATT_KG; r++)
KERN_UNROLL
        for (int v = 0; v < ATT_QV; v++) c[r][v] = v_zero();
    for (int t = 0; t < d; t++) {
        vf qv[ATT_QV];
KERN_UNROLL
        for (int v = 0; v < ATT_QV; v++) qv[v] = v_load(qt + t * ATT_QT + v * VEC_W);
KERN_UNROLL
        for (int r = 0; r < ATT_KG; r++) {
            const vf kv = v_set1(kg[t * ATT_KG + r]);
KERN_UNROLL
            for (int v = 0; v < ATT_QV; v++) c[r][v] = v_fmadd(kv, qv[v], c[r][v]);
        }
    }
    /* Query i sees key j when j <= i: lanes whose query index is below the key are masked. */
    const int need_mask = causal && jg + rows - 1 > i0;
    const vf ninf = v_set1(-INFINITY), scale = v_set1(scale_f);
KERN_UNROLL
    for (int r = 0; r < ATT_KG; r++) {
        if (r >= rows) break;
KERN_UNROLL
        for (int v = 0; v < ATT_QV; v++) {
            vf x = v_mul(c[r][v], scale);
            if (need_mask) {
                const vf qi = v_add(v_iota(), v_set1((float)(i0 + v * VEC_W)));
                x = v_select(v_lt(qi, v_set1((float)(jg + r))), ninf, x);
            }
            v_store(sb + r * ATT_QT + v * VEC_W, x);
            bm[v] = v_max(bm[v], x);
        }
    }
}

/* ot[rows][ATT_QT] = ot * alpha + sum over the block's nb keys of v[j][r] * p[j], for `rows`
 * channels (a compile-time count) of a packed channel group: v advances ATT_KG floats per key. */
VEC_FN void KERN_NAME(att_update)(const int rows, int nb, const float *v, const float *p, float *ot,
                                  const vf alpha[ATT_QV]) {
    vf c[ATT_KG][ATT_QV];
KERN_UNROLL
    for (int r = 0; r < rows; r++)
KERN_UNROLL
        for (int u = 0; u < ATT_QV; u++) c[r][u] = v_mul(v_load(ot + r * ATT_QT + u * VEC_W), alpha[u]);
    for (int j = 0; j < nb; j++, v += ATT_KG) {
        vf pv[ATT_QV];
KERN_UNROLL
        for (int u = 0; u < ATT_QV; u++) pv[u] = v_load(p + j * ATT_QT + u * VEC_W);
KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            const vf vv = v_set1(v[r]);
KERN_UNROLL
            for (int u = 0; u < ATT_QV; u++) c[r][u] = v_fmadd(vv, pv[u], c[r][u]);
        }
    }
KERN_UNROLL
    for (int r = 0; r < rows; r++)
KERN_UNROLL
        for (int u = 0; u < ATT_QV; u++) v_store(ot + r * ATT_QT + u * VEC_W, c[r][u]);
}

VEC_TARGET static void KERN_NAME(att_update_rows)(int rows, int nb, const float *v, const float *p,
                                                  float *ot, const vf alpha[ATT_QV]) {
    /* Each row count compiled on its own, so the accumulators stay in registers. */
    switch (rows) {
#define CASE(R)                                                                                    \
    case R:                                                                                        \
        if (R <= ATT_KG) KERN_NAME(att_update)(R <= ATT_KG ? R : 1, nb, v, p, ot, alpha);          \
        break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
        CASE(9) CASE(10) CASE(11) CASE(12) CASE(13) CASE(14) CASE(15) CASE(16)
#undef CASE
    default: break;
    }
}

/* One tile's state between key blocks: running maximum and sum per lane. */
typedef struct {
    vf m[ATT_QV], l[ATT_QV];
} KERN_NAME(att_lanes);

/* Scores, online softmax and output update of one tile (queries from i0, transposed in qt) for
 * keys [j0, j0 + nb). */
VEC_TARGET static void KERN_NAME(att_block)(const attn_shape *s, const float *kp, const float *vp,
                                            int i0, int j0, int nb, const float *qt, float *ot,
                                            float *sb, KERN_NAME(att_lanes) *st) {
    const int d = s->d;
    vf bm[ATT_QV], mn[ATT_QV], alpha[ATT_QV], sa[ATT_QV], sb2[ATT_QV];
    for (int v = 0; v < ATT_QV; v++) bm[v] = v_set1(-INFINITY);
    for (int g = 0; g * ATT_KG < nb; g++) {
        const int jg = j0 + g * ATT_KG, rows = nb - g * ATT_KG < ATT_KG ? nb - g * ATT_KG : ATT_KG;
        const long group = (long)(j0 / ATT_BK) * attn_groups_per_block(ATT_KG) + g;
        KERN_NAME(att_scores)(d, kp + group * d * ATT_KG, qt, sb + g * ATT_KG * ATT_QT, rows,
                              s->scale, s->causal, jg, i0, bm);
    }
    /* Online softmax: rescale what came before to the new maximum. */
    for (int v = 0; v < ATT_QV; v++) {
        mn[v] = v_max(st->m[v], bm[v]);
        alpha[v] = v_exp(v_sub(st->m[v], mn[v]));
        sa[v] = sb2[v] = v_zero();
    }
    int j = 0;
    for (; j + 1 < nb; j += 2) /* two partial sums per lane keep the adds independent */
        for (int v = 0; v < ATT_QV; v++) {
            float *pa = sb + j * ATT_QT + v * VEC_W, *pb = pa + ATT_QT;
            const vf a = v_exp(v_sub(v_load(pa), mn[v])), b = v_exp(v_sub(v_load(pb), mn[v]));
            v_store(pa, a), v_store(pb, b);
            sa[v] = v_add(sa[v], a), sb2[v] = v_add(sb2[v], b);
        }
    if (j < nb)
        for (int v = 0; v < ATT_QV; v++) {
            float *pa = sb + j * ATT_QT + v * VEC_W;
            const vf a = v_exp(v_sub(v_load(pa), mn[v]));
            v_store(pa, a);
            sa[v] = v_add(sa[v], a);
        }
    for (int v = 0; v < ATT_QV; v++) {
        st->l[v] = v_fmadd(st->l[v], alpha[v], v_add(sa[v], sb2[v]));
        st->m[v] = mn[v];
    }
    for (int t0 = 0; t0 < d; t0 += ATT_KG)
        KERN_NAME(att_update_rows)(d - t0 < ATT_KG ? d - t0 : ATT_KG, nb,
                                   vp + ((long)(t0 / ATT_KG) * s->nk + j0) * ATT_KG, sb,
                                   ot + t0 * ATT_QT, alpha);
}

VEC_TARGET static void KERN_NAME(att_item)(const attn_shape *s, const float *q, const float *kp,
                                           const float *vp, float *out, int i0, float *work) {
    const int d = s->d;
    const int nq_item = s->nq - i0 < ATT_TILES * ATT_QT ? s->nq - i0 : ATT_TILES * ATT_QT;
    const int tiles = (nq_item + ATT_QT - 1) / ATT_QT;
    float *qt[ATT_TILES], *ot[ATT_TILES], *sb = work;
    KERN_NAME(att_lanes) st[ATT_TILES];
    int nqt[ATT_TILES] = {0};
    for (int u = 0; u < tiles; u++) {
        const int iu = i0 + u * ATT_QT;
        nqt[u] = s->nq - iu < ATT_QT ? s->nq - iu : ATT_QT;
        qt[u] = sb + ATT_BK * ATT_QT + u * 2L * d * ATT_QT;
        ot[u] = qt[u] + d * ATT_QT;
        KERN_NAME(att_load_q)(s, q, iu, nqt[u], qt[u]);
        memset(ot[u], 0, (size_t)d * ATT_QT * sizeof *ot[u]);
        /* A finite start, so the first rescale is exp(-huge) = 0 rather than exp(-inf + inf). */
        for (int v = 0; v < ATT_QV; v++) st[u].m[v] = v_set1(-FLT_MAX), st[u].l[v] = v_zero();
    }
    /* Every query goes through every key, masked ones (causal) included as exact zeros: skipping
     * the blocks past a tile's last query would make what a query meets depend on how queries are
     * grouped into tiles (a masked block still turns a -0 sum into +0). Causal attention here is
     * CLIP's, 77 keys: one block, nothing to skip anyway. */
    for (int j0 = 0; j0 < s->nk; j0 += ATT_BK)
        for (int u = 0; u < tiles; u++) {
            const int nb = s->nk - j0 < ATT_BK ? s->nk - j0 : ATT_BK;
            KERN_NAME(att_block)(s, kp, vp, i0 + u * ATT_QT, j0, nb, qt[u], ot[u], sb, &st[u]);
        }
    for (int u = 0; u < tiles; u++) KERN_NAME(att_store_out)(s, out, i0 + u * ATT_QT, nqt[u], ot[u], st[u].l);
}

const attn_kernel *KERN_NAME(attn_kernel)(void) {
    static const attn_kernel k = {ATT_QT, ATT_KG, KERN_NAME(att_item)};
    return &k;
}

#undef ATT_QT
