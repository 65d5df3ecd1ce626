/* The tiled engine's layer lists, its plans (where whole-image activations are stored) and what a
 * run costs in multiply-adds and memory (vae_tiled.h says what a plan is for).
 *
 * Costs are counted per latent pixel of a piece and multiplied by the pieces' total area, so the
 * margins that pieces decode twice are in them: cutting the list into segments also narrows each
 * segment's margin to its own layers' reach. The plan is the cheapest chain of cuts whose two
 * stored activations (a segment's input and output live together) fit the budget, found by a
 * shortest path over the cut positions. */
#include <math.h>
#include <string.h>

#include "vae_tiled.h"

static vt_op *add(vt_net *n) {
    assert(n->n_ops < VT_MAX_OPS);
    vt_op *o = &n->ops[n->n_ops++];
    memset(o, 0, sizeof *o);
    return o;
}

void vt_add_resnet(vt_net *n, const vae_resnet *r, int s) {
    vt_op *o = add(n);
    *o =
        (vt_op){.kind = VT_RESNET, .res = r, .cin = r->cin, .cout = r->cout, .s_in = s, .s_out = s};
}

void vt_add_conv(vt_net *n, const nn_conv2d *c, int s_in, int s_out) {
    vt_op *o = add(n);
    *o = (vt_op){.kind = VT_CONV,
                 .conv = c,
                 .cin = c->s.cin,
                 .cout = c->s.cout,
                 .s_in = s_in,
                 .s_out = s_out};
}

void vt_add_upconv(vt_net *n, const nn_conv2d *c, int s_in) {
    vt_op *o = add(n);
    *o = (vt_op){.kind = VT_UPCONV,
                 .conv = c,
                 .cin = c->s.cin,
                 .cout = c->s.cout,
                 .s_in = s_in,
                 .s_out = 2 * s_in};
}

void vt_add_norm_conv(vt_net *n, const nn_norm *g, const nn_conv2d *c, int s) {
    vt_op *o = add(n);
    *o = (vt_op){.kind = VT_NORM_CONV,
                 .norm = g,
                 .conv = c,
                 .cin = c->s.cin,
                 .cout = c->s.cout,
                 .s_in = s,
                 .s_out = s};
}

/* A conv's effect on the pixels a piece's own edges make wrong (its zero padding stands in for
 * the image beyond the piece): *l of them from the piece's top (left) edge, *r from its bottom
 * (right) edge, at the conv's input resolution -> at its output's. Counted on an even length, as
 * every piece is a whole number of latent pixels and so of even length where it is downsampled. */
static void conv_edges(const conv2d_shape *c, int *l, int *r) {
    if (c->stride == 1) {
        *l += c->pad_t, *r += c->pad_b;
        return;
    }
    /* Output y reads input rows 2y - pad_t .. 2y - pad_t + kh - 1: right for y from
     * ceil((l + pad_t) / 2) to floor((N - r - kh + pad_t) / 2). */
    const long N = 1L << 20, n_out = conv2d_out_h(c, (int)N);
    const long first = (*l + c->pad_t + c->stride - 1) / c->stride;
    const long last = (N - *r - c->kh + c->pad_t) / c->stride;
    *l = (int)first, *r = (int)(n_out - 1 - last);
}

int vt_margin(const vt_net *n, int i, int j) {
    int l = 0, r = 0;
    for (int k = i; k < j; k++) {
        const vt_op *o = &n->ops[k];
        switch (o->kind) {
        case VT_RESNET: /* conv1, conv2; the 1x1 shortcut reaches nothing */
            conv_edges(&o->res->conv1.s, &l, &r);
            conv_edges(&o->res->conv2.s, &l, &r);
            break;
        case VT_UPCONV: /* nearest 2x doubles them, then the conv */
            l *= 2, r *= 2;
            conv_edges(&o->conv->s, &l, &r);
            break;
        default:
            conv_edges(&o->conv->s, &l, &r);
            break;
        }
    }
    /* The margin that keeps them out of the tile, in whole latent pixels. */
    const int s = n->ops[j - 1].s_out, px = l > r ? l : r;
    return (px + s - 1) / s + n->margin_delta;
}

/* Multiply-adds per latent pixel of the whole op, and of its part before its norm `q` (0, 1). */
static double op_macs(const vt_op *o) {
    const double s2 = (double)o->s_out * o->s_out, ci = o->cin, co = o->cout;
    switch (o->kind) {
    case VT_RESNET:
        return s2 * (ci * co * 9 + co * co * 9 + (ci != co ? ci * co : 0));
    default:
        return s2 * ci * co * o->conv->s.kh * o->conv->s.kw;
    }
}

static int op_norms(const vt_op *o) {
    return o->kind == VT_RESNET ? 2 : o->kind == VT_NORM_CONV;
}

static double op_macs_before(const vt_op *o, int q) {
    if (o->kind != VT_RESNET) return 0;
    const double s2 = (double)o->s_in * o->s_in, ci = o->cin, co = o->cout;
    const double shortcut = ci != co ? s2 * ci * co : 0; /* taken first (piece_resnet) */
    /* Plus the pass's own gathering, one add per value: it keeps free-standing passes from
     * looking free. */
    return shortcut + (q == 1 ? s2 * ci * co * 9 + s2 * co : s2 * ci);
}

static double pieces_area(int h, int w, int tile, int margin) {
    double sum[2] = {0, 0};
    const int len[2] = {h, w};
    for (int a = 0; a < 2; a++) {
        const int n = (len[a] + tile - 1) / tile;
        for (int k = 0; k < n; k++) {
            const int lo = (int)((long)k * len[a] / n), hi = (int)((long)(k + 1) * len[a] / n);
            sum[a] +=
                (hi + margin < len[a] ? hi + margin : len[a]) - (lo > margin ? lo - margin : 0);
        }
    }
    return sum[0] * sum[1];
}

/* One segment's run: its statistics passes over the pieces with its own margin, then its output
 * pass (the last one's wider by half the blending band). */
static double segment_cost(const vt_net *n, int i, int j, int h, int w, int tile, int band) {
    const int margin = vt_margin(n, i, j),
              out_margin = margin + (j == n->n_ops ? (band + 1) / 2 : 0);
    double stats = 0, prefix = 0;
    for (int k = i; k < j; k++) {
        for (int q = 0; q < op_norms(&n->ops[k]); q++)
            stats += prefix + op_macs_before(&n->ops[k], q);
        prefix += op_macs(&n->ops[k]);
    }
    return stats * pieces_area(h, w, tile, margin) + prefix * pieces_area(h, w, tile, out_margin);
}

/* Bytes of the whole-image activation stored at cut b; the input and the output are the
 * caller's (0). */
static size_t stored(const vt_net *n, int b, int h, int w) {
    if (b == 0 || b == n->n_ops) return 0;
    const vt_op *o = &n->ops[b - 1];
    return (size_t)h * o->s_out * w * o->s_out * o->cout * sizeof(float);
}

void vt_plan_choose(const vt_net *n, int h, int w, int tile, int band, size_t budget, vt_plan *p) {
    const int K = n->n_ops;
    double best[VT_MAX_OPS + 1];
    int from[VT_MAX_OPS + 1];
    best[0] = 0;
    for (int j = 1; j <= K; j++) {
        best[j] = INFINITY;
        from[j] = -1;
        for (int i = 0; i < j; i++) {
            if (best[i] == INFINITY || stored(n, i, h, w) + stored(n, j, h, w) > budget) continue;
            const double c = best[i] + segment_cost(n, i, j, h, w, tile, band);
            if (c < best[j]) best[j] = c, from[j] = i;
        }
    }
    /* The single segment always fits (nothing stored); walk the cheapest chain back. */
    int rev[VT_MAX_OPS + 1], m = 0;
    for (int j = K; j > 0; j = from[j]) rev[m++] = j;
    p->n_seg = m;
    p->cut[0] = 0;
    for (int k = 0; k < m; k++) p->cut[k + 1] = rev[m - 1 - k];
}

double vt_plan_cost(const vt_net *n, const vt_plan *p, int h, int w, int tile, int band) {
    double c = 0;
    for (int k = 0; k < p->n_seg; k++)
        c += segment_cost(n, p->cut[k], p->cut[k + 1], h, w, tile, band);
    return c;
}

double vt_net_cost(const vt_net *n, int h, int w) {
    double c = 0;
    for (int k = 0; k < n->n_ops; k++) c += op_macs(&n->ops[k]);
    return c * h * w;
}

/* Region floats of ops [i, j) on a piece of ph x pw latent pixels (each op's input, output and
 * temporaries, as the untiled pass sizes them). */
static size_t segment_region(const vt_net *n, int i, int j, int ph, int pw) {
    const vt_op *first = &n->ops[i];
    size_t need = vae_round((size_t)ph * first->s_in * pw * first->s_in * first->cin);
    for (int k = i; k < j; k++) {
        const vt_op *o = &n->ops[k];
        const size_t hi = (size_t)ph * o->s_in, wi = (size_t)pw * o->s_in;
        const size_t ho = (size_t)ph * o->s_out, wo = (size_t)pw * o->s_out;
        size_t v;
        switch (o->kind) {
        case VT_RESNET:
            v = vae_resnet_floats(o->cin, o->cout, hi * wi);
            break;
        case VT_UPCONV:
            v = vae_upsample_floats(o->cin, (int)hi, (int)wi);
            break;
        case VT_NORM_CONV:
            v = 2 * vae_round(hi * wi * o->cin);
            break;
        case VT_CONV:
        default:
            v = vae_round(hi * wi * o->cin) + vae_round(ho * wo * o->cout);
            break;
        }
        if (v > need) need = v;
    }
    return need;
}

vt_sizes vt_run_sizes(const vt_net *n, const vt_plan *p, int h, int w, int tile, int band) {
    vt_sizes z = {0, 0, 0};
    const vt_op *last = &n->ops[n->n_ops - 1];
    const size_t so = (size_t)last->s_out;
    size_t piece_px = 0, maxc = 0, smax = 0;
    for (int k = 0; k < n->n_ops; k++) {
        const vt_op *o = &n->ops[k];
        if ((size_t)o->cin > maxc) maxc = (size_t)o->cin;
        if ((size_t)o->cout > maxc) maxc = (size_t)o->cout;
        if ((size_t)o->s_in > smax) smax = (size_t)o->s_in;
    }
    for (int s = 0; s < p->n_seg; s++) {
        const int i = p->cut[s], j = p->cut[s + 1];
        const int margin = vt_margin(n, i, j) + (j == n->n_ops ? (band + 1) / 2 : 0);
        const int ph = vae_tile_max_piece(h, tile, margin),
                  pw = vae_tile_max_piece(w, tile, margin);
        const size_t r = segment_region(n, i, j, ph, pw);
        if (r > z.region_floats) z.region_floats = r;
        if (j == n->n_ops) piece_px = (size_t)ph * pw;
        const size_t st = stored(n, i, h, w) + stored(n, j, h, w);
        if (st > z.stored_bytes) z.stored_bytes = st;
    }
    /* The statistics rows: a tile's rows at the finest resolution, every channel. */
    z.own_bytes = (size_t)h * w * so * so * sizeof(float) /* blend weight sums */
                  + (size_t)vae_tile_max_piece(h, tile, 0) * smax * 2 * maxc * sizeof(double);
    if (last->kind == VT_NORM_CONV) z.own_bytes += piece_px * so * so * last->cout * sizeof(float);
    return z;
}
