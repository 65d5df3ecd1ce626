/* Flash-attention tile for AVX-512 (see attention_internal.h): 32 queries in two vectors of
 * lanes. Scores come from a 14-key x 32-query register tile (28 zmm accumulators, like the GEMM
 * microkernel); the output update is a 14-channel x 32-query register tile over the block's keys,
 * with V broadcast from its packed channel groups. */
#include <float.h>
#include <math.h>
#include <string.h>
#include "attention_internal.h"

/* x86 only; elsewhere the stub below keeps the link whole (never called: cpu.c reports no
 * AVX there). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
#include "simd_avx512.h"

/* Q^T for queries [i0, i0 + nqt) into qt[d][32], zeros in unused lanes. */
static void load_q(const attn_shape *s, const float *q, int i0, int nqt, float *qt) {
    const int d = s->d;
    for (int h = 0; h < 2; h++) {
        const int rows = nqt - 16 * h < 0 ? 0 : nqt - 16 * h < 16 ? nqt - 16 * h : 16;
        for (int t0 = 0; t0 < d; t0 += 16) {
            const int tn = d - t0 < 16 ? d - t0 : 16;
            const __mmask16 m = (__mmask16)((1u << tn) - 1);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(m, q + (long)(i0 + 16 * h + i) * s->q_stride + t0)
                                : _mm512_setzero_ps();
            simd_transpose16(r);
            for (int t = 0; t < tn; t++)
                _mm512_store_ps(qt + (t0 + t) * ATT_QT + 16 * h, r[t]);
        }
    }
}

/* out rows [i0, i0 + nqt) = O^T transposed, each query divided by its softmax sum. */
static void store_out(const attn_shape *s, float *out, int i0, int nqt, const float *ot, __m512 l0,
                      __m512 l1) {
    const int d = s->d;
    const __m512 inv[2] = {_mm512_div_ps(_mm512_set1_ps(1.0f), l0),
                           _mm512_div_ps(_mm512_set1_ps(1.0f), l1)};
    for (int h = 0; h < 2; h++) {
        const int rows = nqt - 16 * h < 0 ? 0 : nqt - 16 * h < 16 ? nqt - 16 * h : 16;
        for (int t0 = 0; t0 < d && rows > 0; t0 += 16) {
            const int tn = d - t0 < 16 ? d - t0 : 16;
            const __mmask16 m = (__mmask16)((1u << tn) - 1);
            __m512 r[16];
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++)
                r[t] = t < tn ? _mm512_mul_ps(_mm512_load_ps(ot + (t0 + t) * ATT_QT + 16 * h), inv[h])
                              : _mm512_setzero_ps();
            simd_transpose16(r);
            for (int i = 0; i < rows; i++)
                _mm512_mask_storeu_ps(out + (long)(i0 + 16 * h + i) * s->out_stride + t0, m, r[i]);
        }
    }
}

/* Scores of keys [jg, jg + 14) (packed group kg, rows past `rows` unused) against the tile's
 * queries, into sb[14][32]; masked to -inf past the diagonal when causal; block max updated.
 * The scale multiplies the finished dot products, as in the reference. */
static inline __attribute__((always_inline)) void scores(int d, const float *kg, const float *qt,
                                                         float *sb, int rows, float scale_f,
                                                         int causal, int jg, int i0, __m512 *bm0,
                                                         __m512 *bm1) {
    __m512 c0[ATT_KG], c1[ATT_KG];
#pragma GCC unroll 14
    for (int r = 0; r < ATT_KG; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int t = 0; t < d; t++) {
        const __m512 q0 = _mm512_load_ps(qt + t * ATT_QT), q1 = _mm512_load_ps(qt + t * ATT_QT + 16);
#pragma GCC unroll 14
        for (int r = 0; r < ATT_KG; r++) {
            const __m512 kv = _mm512_set1_ps(kg[t * ATT_KG + r]);
            c0[r] = _mm512_fmadd_ps(kv, q0, c0[r]);
            c1[r] = _mm512_fmadd_ps(kv, q1, c1[r]);
        }
    }
    /* Query i sees key j when j <= i: lanes whose query index is below the key are masked. */
    const int need_mask = causal && jg + rows - 1 > i0;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i qi0 = _mm512_add_epi32(lane, _mm512_set1_epi32(i0));
    const __m512i qi1 = _mm512_add_epi32(qi0, _mm512_set1_epi32(16));
    const __m512 ninf = _mm512_set1_ps(-INFINITY), scale = _mm512_set1_ps(scale_f);
#pragma GCC unroll 14
    for (int r = 0; r < ATT_KG; r++) {
        if (r >= rows) break;
        __m512 v0 = _mm512_mul_ps(c0[r], scale), v1 = _mm512_mul_ps(c1[r], scale);
        if (need_mask) {
            const __m512i j = _mm512_set1_epi32(jg + r);
            v0 = _mm512_mask_mov_ps(v0, _mm512_cmplt_epi32_mask(qi0, j), ninf);
            v1 = _mm512_mask_mov_ps(v1, _mm512_cmplt_epi32_mask(qi1, j), ninf);
        }
        _mm512_store_ps(sb + r * ATT_QT, v0);
        _mm512_store_ps(sb + r * ATT_QT + 16, v1);
        *bm0 = _mm512_max_ps(*bm0, v0);
        *bm1 = _mm512_max_ps(*bm1, v1);
    }
}

/* ot[rows][32] = ot * alpha + sum over the block's nb keys of v[j][r] * p[j], for `rows` channels
 * (a compile-time count) of a packed channel group: v advances ATT_KG floats per key. */
static inline __attribute__((always_inline)) void update_out(const int rows, int nb, const float *v,
                                                             const float *p, float *ot,
                                                             __m512 alpha0, __m512 alpha1) {
    __m512 c0[ATT_KG], c1[ATT_KG];
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) {
        c0[r] = _mm512_mul_ps(_mm512_load_ps(ot + r * ATT_QT), alpha0);
        c1[r] = _mm512_mul_ps(_mm512_load_ps(ot + r * ATT_QT + 16), alpha1);
    }
    for (int j = 0; j < nb; j++, v += ATT_KG) {
        const __m512 p0 = _mm512_load_ps(p + j * ATT_QT), p1 = _mm512_load_ps(p + j * ATT_QT + 16);
#pragma GCC unroll 14
        for (int r = 0; r < rows; r++) {
            const __m512 vv = _mm512_set1_ps(v[r]);
            c0[r] = _mm512_fmadd_ps(vv, p0, c0[r]);
            c1[r] = _mm512_fmadd_ps(vv, p1, c1[r]);
        }
    }
#pragma GCC unroll 14
    for (int r = 0; r < rows; r++) {
        _mm512_store_ps(ot + r * ATT_QT, c0[r]);
        _mm512_store_ps(ot + r * ATT_QT + 16, c1[r]);
    }
}

static void update_out_rows(int rows, int nb, const float *v, const float *p, float *ot,
                            __m512 alpha0, __m512 alpha1) {
    switch (rows) {
#define CASE(R)                                                                                    \
    case R: update_out(R, nb, v, p, ot, alpha0, alpha1); break;
        CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8)
        CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) CASE(1)
#undef CASE
    default: break;
    }
}

/* One tile's state between key blocks: running maximum and sum per lane. */
typedef struct {
    __m512 m0, m1, l0, l1;
} lane_state;

/* Scores, online softmax and output update of one tile (queries from i0, transposed in qt) for
 * keys [j0, j0 + nb). */
static void tile_block(const attn_shape *s, const float *kp, const float *vp, int i0, int j0,
                       int nb, const float *qt, float *ot, float *sb, lane_state *st) {
    const int d = s->d;
    __m512 bm0 = _mm512_set1_ps(-INFINITY), bm1 = bm0;
    for (int g = 0; g * ATT_KG < nb; g++) {
        const int jg = j0 + g * ATT_KG, rows = nb - g * ATT_KG < ATT_KG ? nb - g * ATT_KG : ATT_KG;
        scores(d, kp + (long)(jg / ATT_KG) * d * ATT_KG, qt, sb + g * ATT_KG * ATT_QT, rows,
               s->scale, s->causal, jg, i0, &bm0, &bm1);
    }
    /* Online softmax: rescale what came before to the new maximum. */
    const __m512 mn0 = _mm512_max_ps(st->m0, bm0), mn1 = _mm512_max_ps(st->m1, bm1);
    const __m512 alpha0 = simd_exp(_mm512_sub_ps(st->m0, mn0));
    const __m512 alpha1 = simd_exp(_mm512_sub_ps(st->m1, mn1));
    __m512 s0a = _mm512_setzero_ps(), s1a = s0a, s0b = s0a, s1b = s0a;
    int j = 0;
    for (; j + 1 < nb; j += 2) { /* two partial sums per vector keep the adds independent */
        float *pa = sb + j * ATT_QT, *pb = pa + ATT_QT;
        const __m512 a0 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pa), mn0));
        const __m512 a1 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pa + 16), mn1));
        const __m512 b0 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pb), mn0));
        const __m512 b1 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pb + 16), mn1));
        _mm512_store_ps(pa, a0), _mm512_store_ps(pa + 16, a1);
        _mm512_store_ps(pb, b0), _mm512_store_ps(pb + 16, b1);
        s0a = _mm512_add_ps(s0a, a0), s1a = _mm512_add_ps(s1a, a1);
        s0b = _mm512_add_ps(s0b, b0), s1b = _mm512_add_ps(s1b, b1);
    }
    if (j < nb) {
        float *pa = sb + j * ATT_QT;
        const __m512 a0 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pa), mn0));
        const __m512 a1 = simd_exp(_mm512_sub_ps(_mm512_load_ps(pa + 16), mn1));
        _mm512_store_ps(pa, a0), _mm512_store_ps(pa + 16, a1);
        s0a = _mm512_add_ps(s0a, a0), s1a = _mm512_add_ps(s1a, a1);
    }
    st->l0 = _mm512_fmadd_ps(st->l0, alpha0, _mm512_add_ps(s0a, s0b));
    st->l1 = _mm512_fmadd_ps(st->l1, alpha1, _mm512_add_ps(s1a, s1b));
    st->m0 = mn0, st->m1 = mn1;
    for (int t0 = 0; t0 < d; t0 += ATT_KG)
        update_out_rows(d - t0 < ATT_KG ? d - t0 : ATT_KG, nb,
                        vp + ((long)(t0 / ATT_KG) * s->nk + j0) * ATT_KG, sb, ot + t0 * ATT_QT,
                        alpha0, alpha1);
}

static void item(const attn_shape *s, const float *q, const float *kp, const float *vp, float *out,
                 int i0, float *work) {
    const int d = s->d;
    const int nq_item = s->nq - i0 < ATT_TILES * ATT_QT ? s->nq - i0 : ATT_TILES * ATT_QT;
    const int tiles = (nq_item + ATT_QT - 1) / ATT_QT;
    float *qt[ATT_TILES], *ot[ATT_TILES], *sb = work;
    lane_state st[ATT_TILES];
    int kend[ATT_TILES] = {0}, nqt[ATT_TILES] = {0};
    for (int u = 0; u < tiles; u++) {
        const int iu = i0 + u * ATT_QT;
        nqt[u] = s->nq - iu < ATT_QT ? s->nq - iu : ATT_QT;
        qt[u] = sb + ATT_BK * ATT_QT + u * 2L * d * ATT_QT;
        ot[u] = qt[u] + d * ATT_QT;
        load_q(s, q, iu, nqt[u], qt[u]);
        memset(ot[u], 0, (size_t)d * ATT_QT * sizeof *ot[u]);
        /* A finite start, so the first rescale is exp(-huge) = 0 rather than exp(-inf + inf). */
        st[u].m0 = st[u].m1 = _mm512_set1_ps(-FLT_MAX);
        st[u].l0 = st[u].l1 = _mm512_setzero_ps();
        /* With a causal mask no query of the tile sees keys past its last query. */
        kend[u] = s->causal && iu + nqt[u] < s->nk ? iu + nqt[u] : s->nk;
    }
    const int kmax = kend[tiles - 1];
    for (int j0 = 0; j0 < kmax; j0 += ATT_BK)
        for (int u = 0; u < tiles; u++) {
            if (j0 >= kend[u]) continue;
            const int nb = kend[u] - j0 < ATT_BK ? kend[u] - j0 : ATT_BK;
            tile_block(s, kp, vp, i0 + u * ATT_QT, j0, nb, qt[u], ot[u], sb, &st[u]);
        }
    for (int u = 0; u < tiles; u++) store_out(s, out, i0 + u * ATT_QT, nqt[u], ot[u], st[u].l0, st[u].l1);
}

#pragma GCC pop_options

attn_tile_fn attn_tile_avx512(void) { return item; }

#else

attn_tile_fn attn_tile_avx512(void) { return NULL; }

#endif
