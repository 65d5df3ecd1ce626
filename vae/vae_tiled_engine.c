/* The tiled engine's run (vae_tiled.h): segment after segment, the statistics passes over the
 * pieces, then the pass that stores the segment's output (the last one blends it into the
 * caller's).
 *
 * A piece is a tile plus a margin of context as wide as its segment's layers reach (plus half the
 * blending band in the last segment), so the pixels of its tile (and of the band around it) come
 * out as in the untiled pass; only those are kept. Group norms use the whole image's statistics:
 * the statistics pass for norm k runs every piece up to norm k (normalising the earlier norms with
 * the statistics already gathered) and adds the sums over the tile it owns. Sums are in double,
 * row by row in parallel, then in a fixed order: no result depends on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/act.h"
#include "vae_tiled.h"

/* Below this many values a parallel region costs more than the loop it splits. */
enum { PARALLEL_MIN = 1 << 20 };

/* One axis of the tiling: n tiles of nearly equal size partition it; piece k (what is run) is
 * tile k widened by the margin on each side, within the image. */
typedef struct {
    int n;
    int *lo, *hi;   /* tile k: [lo, hi) latent pixels */
    int *plo, *phi; /* piece k */
} axis;

static sd_status axis_plan(axis *a, int len, int tile, int margin) {
    a->n = (len + tile - 1) / tile;
    a->lo = malloc((size_t)4 * a->n * sizeof *a->lo);
    if (!a->lo) return sd_set_error(SD_ERR_NOMEM, "vae tiles: out of memory");
    a->hi = a->lo + a->n, a->plo = a->hi + a->n, a->phi = a->plo + a->n;
    for (int k = 0; k < a->n; k++) {
        a->lo[k] = (int)((long)k * len / a->n), a->hi[k] = (int)((long)(k + 1) * len / a->n);
        a->plo[k] = a->lo[k] > margin ? a->lo[k] - margin : 0;
        a->phi[k] = a->hi[k] + margin < len ? a->hi[k] + margin : len;
    }
    return SD_OK;
}

/* Blend weights of piece k's pixels along its axis (f pixels per latent pixel): 1 over its tile,
 * ramping down to 0 across a band of `band` latent pixels centred on each boundary with a
 * neighbour, 0 beyond. The ramps of two neighbours add up to 1 (samples at pixel centres). */
static void axis_weights(const axis *a, int k, int band, int f, float *wt) {
    const int len = (a->phi[k] - a->plo[k]) * f;
    const float half = (float)band * (float)f / 2.0f;
    for (int p = 0; p < len; p++) {
        const float x = (float)(a->plo[k] * f + p) + 0.5f; /* the pixel's centre */
        float v = 1.0f;
        if (k > 0) {
            const float edge = (float)(a->lo[k] * f);
            const float r =
                half > 0 ? (x - edge + half) / (2.0f * half) : (x >= edge ? 1.0f : 0.0f);
            if (r < v) v = r;
        }
        if (k + 1 < a->n) {
            const float edge = (float)(a->hi[k] * f);
            const float r = half > 0 ? (edge + half - x) / (2.0f * half) : (x < edge ? 1.0f : 0.0f);
            if (r < v) v = r;
        }
        wt[p] = v > 0.0f ? v : 0.0f;
    }
}

/* Group norm statistics of the whole image. Slot k is the k-th group norm of the layer list, in
 * call order (the same in every piece). */
typedef struct {
    int groups;
    int slot; /* the next norm of the current piece */
    int stop; /* the slot this pass gathers; the piece stops there. -1: none (an output pass) */
    float *mean, *rstd;   /* [slots][groups], gathered for slots before `stop` */
    double *sum, *sumsq;  /* [groups], the slot being gathered */
    double count;         /* values per group gathered */
    double *rows;         /* per-row partial sums [rows][2 * channels] */
    float *scale, *shift; /* [channels] of the norm being applied */
    size_t rows_cap;
    int piece_h;                        /* the current piece's latent rows */
    int own_y0, own_y1, own_x0, own_x1; /* its tile, piece-local latent pixels */
} gn_stats;

/* Adds the sums over the current piece's tile (x is the piece's h x w activation). */
static void gather(gn_stats *s, const nn_norm *g, const float *x, int h, int w) {
    const int c = g->c, cg = c / g->groups, scale = h / s->piece_h;
    const int y0 = s->own_y0 * scale, y1 = s->own_y1 * scale;
    const int x0 = s->own_x0 * scale, x1 = s->own_x1 * scale;
    assert((size_t)(y1 - y0) * 2 * c <= s->rows_cap && g->groups == s->groups);
#pragma omp parallel for schedule(static) if ((size_t)(y1 - y0) * (x1 - x0) * c >= PARALLEL_MIN)
    for (int r = y0; r < y1; r++) {
        double *acc = s->rows + (size_t)(r - y0) * 2 * c;
        memset(acc, 0, (size_t)2 * c * sizeof *acc);
        for (int q = x0; q < x1; q++) {
            const float *px = x + ((size_t)r * w + q) * c;
            for (int ch = 0; ch < c; ch++)
                acc[ch] += px[ch], acc[c + ch] += (double)px[ch] * px[ch];
        }
    }
    for (int r = y0; r < y1; r++) {
        const double *acc = s->rows + (size_t)(r - y0) * 2 * c;
        for (int ch = 0; ch < c; ch++) s->sum[ch / cg] += acc[ch], s->sumsq[ch / cg] += acc[c + ch];
    }
    s->count += (double)(y1 - y0) * (x1 - x0) * cg;
}

/* The group norm (+ SiLU) of a piece: with the whole image's statistics, or, at the slot being
 * gathered, only the gathering; returns true there (the piece stops). */
static bool piece_norm(gn_stats *s, const nn_norm *g, const float *x, float *y, int h, int w,
                       bool silu) {
    const int k = s->slot++, c = g->c, cg = c / g->groups;
    if (k == s->stop) {
        gather(s, g, x, h, w);
        return true;
    }
    /* Folded into one multiply-add per value: y = x * scale + shift. */
    const float *mean = s->mean + (size_t)k * s->groups, *rstd = s->rstd + (size_t)k * s->groups;
    for (int ch = 0; ch < c; ch++) {
        s->scale[ch] = rstd[ch / cg] * g->gamma[ch];
        s->shift[ch] = g->beta[ch] - mean[ch / cg] * s->scale[ch];
    }
    const float *scale = s->scale, *shift = s->shift;
#pragma omp parallel for schedule(static) if ((size_t)h * w * c >= PARALLEL_MIN)
    for (int r = 0; r < h; r++) {
        const size_t at = (size_t)r * w * c;
        for (size_t i = 0; i < (size_t)w * c; i += (size_t)c)
            for (int ch = 0; ch < c; ch++) y[at + i + ch] = x[at + i + ch] * scale[ch] + shift[ch];
        if (silu) act_silu(y + at, (size_t)w * c);
    }
    return false;
}

/* vae_resnet_forward with the image's statistics (the same memory plan). True: stopped. */
static bool piece_resnet(const vae_resnet *r, vae_act *a, gn_stats *s, int h, int w) {
    const size_t hw = (size_t)h * w, in_n = vae_round(hw * r->cin), out_n = vae_round(hw * r->cout);
    float *x = a->x;
    if (!r->has_shortcut) {
        float *t1 = vae_act_gap(a, 0, 0, out_n), *t2 = vae_act_gap(a, 0, out_n, out_n);
        if (piece_norm(s, &r->norm1, x, t1, h, w, true)) return true;
        nn_conv2d_forward(&r->conv1, t1, 1, h, w, t2, a->scratch);
        if (piece_norm(s, &r->norm2, t2, t2, h, w, true)) return true;
        nn_conv2d_forward(&r->conv2, t2, 1, h, w, t1, a->scratch);
        vae_add(x, t1, hw * r->cout);
        return false;
    }
    float *out = vae_act_far(a, out_n), *t = vae_act_gap(a, out_n, 0, out_n);
    nn_conv2d_forward(&r->shortcut, x, 1, h, w, out, a->scratch);
    if (piece_norm(s, &r->norm1, x, x, h, w, true)) return true;
    nn_conv2d_forward(&r->conv1, x, 1, h, w, t, a->scratch);
    if (piece_norm(s, &r->norm2, t, t, h, w, true)) return true;
    float *y = out_n <= in_n ? x : vae_act_gap(a, out_n, out_n, out_n);
    nn_conv2d_forward(&r->conv2, t, 1, h, w, y, a->scratch);
    vae_add(out, y, hw * r->cout);
    vae_act_set(a, out, hw * r->cout);
    return false;
}

/* Ops [i, j) on one piece (h x w pixels at the first op's resolution, current in a); a last
 * VT_NORM_CONV writes `outside`, any other leaves its output current. True: stopped at the slot
 * being gathered. */
static bool piece_ops(const vt_net *n, int i, int j, vae_act *a, gn_stats *s, int h, int w,
                      float *outside) {
    for (int k = i; k < j; k++) {
        const vt_op *o = &n->ops[k];
        switch (o->kind) {
        case VT_RESNET:
            if (piece_resnet(o->res, a, s, h, w)) return true;
            break;
        case VT_UPCONV:
            vae_upsample_forward(o->conv, a, h, w);
            h *= 2, w *= 2;
            break;
        case VT_NORM_CONV: {
            float *t = vae_act_gap(a, 0, 0, (size_t)h * w * o->cin);
            if (piece_norm(s, o->norm, a->x, t, h, w, true)) return true;
            nn_conv2d_forward(o->conv, t, 1, h, w, outside, a->scratch);
            break;
        }
        case VT_CONV:
            vae_conv_forward(o->conv, a, h, w);
            h = conv2d_out_h(&o->conv->s, h), w = conv2d_out_w(&o->conv->s, w);
            break;
        }
    }
    return false;
}

typedef struct {
    const vt_net *n;
    vae_act region;
    gn_stats s;
    int h, w, band;
    float *wy, *wx, *piece_out, *wsum;
} engine;

/* Runs every piece of ops [i, j) once (pieces from ay x ax): up to the slot being gathered, or
 * (stop -1) to the output, stored (the tile's own pixels) or, with `blend`, blended into out with
 * the weights summed in wsum. */
static void run_pieces(engine *e, int i, int j, int slot0, const axis *ay, const axis *ax,
                       const float *in, float *out, bool blend) {
    const vt_op *first = &e->n->ops[i], *last = &e->n->ops[j - 1];
    const int si = first->s_in, ci = first->cin, so = last->s_out, co = last->cout;
    const size_t win = (size_t)e->w * si, wout = (size_t)e->w * so;
    gn_stats *s = &e->s;
    for (int ty = 0; ty < ay->n; ty++) {
        const int y0 = ay->plo[ty], ph = ay->phi[ty] - y0;
        if (blend && s->stop < 0) axis_weights(ay, ty, e->band, so, e->wy);
        for (int tx = 0; tx < ax->n; tx++) {
            const int x0 = ax->plo[tx], pw = ax->phi[tx] - x0;
            s->slot = slot0;
            s->piece_h = ph;
            s->own_y0 = ay->lo[ty] - y0, s->own_y1 = ay->hi[ty] - y0;
            s->own_x0 = ax->lo[tx] - x0, s->own_x1 = ax->hi[tx] - x0;
            vae_act a;
            vae_act_init(&a, e->region.base, e->region.cap, e->region.scratch);
            const size_t row = (size_t)pw * si * ci;
            for (size_t y = 0; y < (size_t)ph * si; y++)
                memcpy(a.base + y * row, in + ((y0 * si + y) * win + (size_t)x0 * si) * ci,
                       row * sizeof *in);
            vae_act_set(&a, a.base, (size_t)ph * si * row);
            if (piece_ops(e->n, i, j, &a, s, ph * si, pw * si, e->piece_out)) continue;
            const float *src = last->kind == VT_NORM_CONV ? e->piece_out : a.x;
            const size_t pwo = (size_t)pw * so;
            if (!blend) { /* the tile's own pixels */
                for (size_t y = (size_t)s->own_y0 * so; y < (size_t)s->own_y1 * so; y++)
                    memcpy(out + ((y0 * so + y) * wout + (size_t)(x0 + s->own_x0) * so) * co,
                           src + (y * pwo + (size_t)s->own_x0 * so) * co,
                           (size_t)(s->own_x1 - s->own_x0) * so * co * sizeof *out);
                continue;
            }
            axis_weights(ax, tx, e->band, so, e->wx);
            for (size_t y = 0; y < (size_t)ph * so; y++) {
                if (e->wy[y] == 0.0f) continue;
                const size_t at = (y0 * so + y) * wout + (size_t)x0 * so;
                for (size_t x = 0; x < pwo; x++) {
                    const float wt = e->wy[y] * e->wx[x];
                    const float *px = src + (y * pwo + x) * co;
                    float *dst = out + (at + x) * co;
                    for (int c = 0; c < co; c++) dst[c] += wt * px[c];
                    e->wsum[at + x] += wt;
                }
            }
        }
    }
}

static int slots_before(const vt_net *n, int k) {
    int slots = 0;
    for (int i = 0; i < k; i++)
        slots += n->ops[i].kind == VT_RESNET ? 2 : n->ops[i].kind == VT_NORM_CONV;
    return slots;
}

/* One segment: its statistics passes, then its output pass. */
static sd_status run_segment(engine *e, int i, int j, int tile, const float *in, float *out) {
    const bool last = j == e->n->n_ops;
    const int margin = vt_margin(e->n, i, j), slot0 = slots_before(e->n, i);
    const int slot1 = slots_before(e->n, j);
    gn_stats *s = &e->s;
    axis sy = {0}, sx = {0}, py = {0}, px = {0};
    sd_status st = axis_plan(&sy, e->h, tile, margin);
    if (st == SD_OK) st = axis_plan(&sx, e->w, tile, margin);
    /* The last pass also produces the blending band around each tile: half of it more margin. */
    if (st == SD_OK) st = axis_plan(&py, e->h, tile, margin + (last ? (e->band + 1) / 2 : 0));
    if (st == SD_OK) st = axis_plan(&px, e->w, tile, margin + (last ? (e->band + 1) / 2 : 0));
    for (s->stop = slot0; st == SD_OK && s->stop < slot1; s->stop++) {
        memset(s->sum, 0, (size_t)s->groups * sizeof *s->sum);
        memset(s->sumsq, 0, (size_t)s->groups * sizeof *s->sumsq);
        s->count = 0;
        run_pieces(e, i, j, slot0, &sy, &sx, in, NULL, false);
        for (int gi = 0; gi < s->groups; gi++) {
            const double mean = s->sum[gi] / s->count, var = s->sumsq[gi] / s->count - mean * mean;
            s->mean[(size_t)s->stop * s->groups + gi] = (float)mean;
            s->rstd[(size_t)s->stop * s->groups + gi] =
                (float)(1.0 / sqrt((var > 0 ? var : 0) + VAE_NORM_EPS));
        }
    }
    s->stop = -1;
    if (st == SD_OK) run_pieces(e, i, j, slot0, &py, &px, in, out, last);
    free(sy.lo), free(sx.lo), free(py.lo), free(px.lo);
    return st;
}

sd_status vt_run(vae *m, const vt_net *n, const vt_plan *p, int h, int w, int tile, int band,
                 const float *in, float *out, const char *what) {
    const vt_sizes z = vt_run_sizes(n, p, h, w, tile, band);
    const vt_op *last = &n->ops[n->n_ops - 1];
    const int so = last->s_out, co = last->cout;
    int maxc = 0, slots = slots_before(n, n->n_ops), piece = 0;
    for (int k = 0; k < n->n_ops; k++) {
        if (n->ops[k].cin > maxc) maxc = n->ops[k].cin;
        if (n->ops[k].cout > maxc) maxc = n->ops[k].cout;
    }
    const int fm = vt_margin(n, p->cut[p->n_seg - 1], n->n_ops) + (band + 1) / 2;
    const int ph = vae_tile_max_piece(h, tile, fm), pw = vae_tile_max_piece(w, tile, fm);
    piece = ph > pw ? ph : pw;
    engine e = {.n = n, .h = h, .w = w, .band = band};
    gn_stats *s = &e.s;
    s->groups = n->groups;
    const size_t pixels = (size_t)h * so * w * so;
    e.wsum = malloc(pixels * sizeof *e.wsum);
    e.wy = malloc((size_t)piece * so * sizeof *e.wy);
    e.wx = malloc((size_t)piece * so * sizeof *e.wx);
    if (last->kind == VT_NORM_CONV)
        e.piece_out = malloc((size_t)ph * so * pw * so * co * sizeof *e.piece_out);
    s->mean = malloc(((size_t)slots * s->groups + 1) * sizeof *s->mean);
    s->rstd = malloc(((size_t)slots * s->groups + 1) * sizeof *s->rstd);
    s->sum = malloc((size_t)s->groups * sizeof *s->sum);
    s->sumsq = malloc((size_t)s->groups * sizeof *s->sumsq);
    s->scale = malloc((size_t)maxc * sizeof *s->scale);
    s->shift = malloc((size_t)maxc * sizeof *s->shift);
    /* Rows of the largest tile at the finest resolution, every channel. */
    int smax = 0;
    for (int k = 0; k < n->n_ops; k++) smax = n->ops[k].s_in > smax ? n->ops[k].s_in : smax;
    s->rows_cap = (size_t)vae_tile_max_piece(h, tile, 0) * smax * 2 * maxc;
    s->rows = malloc(s->rows_cap * sizeof *s->rows);
    sd_status st = SD_OK;
    if (!e.wsum || !e.wy || !e.wx || (last->kind == VT_NORM_CONV && !e.piece_out) || !s->mean ||
        !s->rstd || !s->sum || !s->sumsq || !s->scale || !s->shift || !s->rows)
        st = sd_set_error(SD_ERR_NOMEM, "vae %s: out of memory for the tiles", what);
    if (st == SD_OK) st = vae_take_region(m, &e.region, z.region_floats, what);
    if (st == SD_OK) {
        memset(out, 0, pixels * co * sizeof *out);
        memset(e.wsum, 0, pixels * sizeof *e.wsum);
        const float *cur = in;
        float *held = NULL; /* the stored input of the current segment */
        for (int k = 0; k < p->n_seg && st == SD_OK; k++) {
            const int i = p->cut[k], j = p->cut[k + 1];
            float *dst = out;
            if (j < n->n_ops) {
                const vt_op *o = &n->ops[j - 1];
                dst = malloc((size_t)h * o->s_out * w * o->s_out * o->cout * sizeof *dst);
                if (!dst) {
                    st = sd_set_error(
                        SD_ERR_NOMEM,
                        "vae %s: out of memory for %zu MB of stored "
                        "activations (a lower tile limit stores fewer)",
                        what, (size_t)h * o->s_out * w * o->s_out * o->cout * sizeof *dst >> 20);
                    break;
                }
            }
            st = run_segment(&e, i, j, tile, cur, dst);
            free(held);
            held = dst == out ? NULL : dst;
            cur = dst;
        }
        free(held);
        sd_arena_reset(&m->arena);
    }
    if (st == SD_OK)
        for (size_t q = 0; q < pixels; q++)
            for (int c = 0; c < co; c++) out[q * co + c] /= e.wsum[q];
    free(e.wsum), free(e.wy), free(e.wx), free(e.piece_out);
    free(s->mean), free(s->rstd), free(s->sum), free(s->sumsq), free(s->scale), free(s->shift),
        free(s->rows);
    return st;
}
