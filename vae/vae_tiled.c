/* Tiled decoding: the image is produced tile by tile, so the large activations held at once are
 * those of one tile whatever the image size, and tiles are blended linearly across their overlap.
 *
 * diffusers' AutoencoderKL.tiled_decode decodes each tile on its own and cross-fades the overlaps.
 * That changes the picture, not only at seams: each tile's group norms take their statistics
 * from that tile alone and its mid-block attention sees only that tile. On the tiny test VAE the
 * difference from the untiled decode reaches 255 levels (diffusers' pipelines accept it for huge
 * images). This decode keeps the untiled result instead, and is measured against it (tests: within
 * one level), not against diffusers' tiled one:
 *
 *  - everything at the latent's own resolution (conv_in, the mid block with its attention, the
 *    first up block's resnets) runs once on the whole latent: it holds 1/64 of the pixels;
 *  - the rest (upsamplers and the larger blocks, where the memory goes) runs per tile, on a
 *    "piece": the tile plus a margin of context as wide as the convolutions reach (7 latent pixels
 *    for SD's decoder) plus half the blending band, so the tile's pixels and the band around it
 *    come out as in the untiled decode;
 *  - its group norms use the statistics of the whole image. Norm k's statistics need the whole
 *    image's activations before norm k, so they are gathered in a pass of their own: every piece
 *    runs up to norm k (normalising the earlier norms with the statistics already gathered) and
 *    adds the sums over the tile it owns. The last pass produces the pixels.
 *
 * The price is time: the statistics passes run prefixes of the tiled part once per group norm
 * (19 in the tiny VAE, 25 in SD's): by a count of multiply-adds about ten times the work of one
 * decode for SD's layer widths, plus the margins; measured on the tiny VAE (512x384 image, one
 * thread), 7 times the untiled decode with tiles of 32 latent pixels, 20 times with 16. Tiled
 * decoding is for images whose untiled decode does not fit in memory. Memory: the latent-
 * resolution activations of the whole image (the mid block's, about 5 x h x w x 512 floats for
 * SD) plus one piece's decode. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/act.h"
#include "vae_internal.h"

/* Below this many values a parallel region costs more than the loop it splits. */
enum { PARALLEL_MIN = 1 << 20 };

/* One axis of the tiling: n tiles of nearly equal size partition it; piece k (what is decoded)
 * is tile k widened by the margin on each side, within the image. */
typedef struct {
    int n, max_piece;
    int *lo, *hi;   /* tile k: [lo, hi) latent pixels */
    int *plo, *phi; /* piece k */
} axis;

static sd_status axis_plan(axis *a, int len, int tile, int margin) {
    a->n = (len + tile - 1) / tile;
    a->lo = malloc((size_t)4 * a->n * sizeof *a->lo);
    if (!a->lo) return sd_set_error(SD_ERR_NOMEM, "vae tiled decode: out of memory");
    a->hi = a->lo + a->n, a->plo = a->hi + a->n, a->phi = a->plo + a->n;
    for (int k = 0; k < a->n; k++) {
        a->lo[k] = (int)((long)k * len / a->n), a->hi[k] = (int)((long)(k + 1) * len / a->n);
        a->plo[k] = a->lo[k] > margin ? a->lo[k] - margin : 0;
        a->phi[k] = a->hi[k] + margin < len ? a->hi[k] + margin : len;
    }
    a->max_piece = vae_tile_max_piece(len, tile, margin); /* what vae_decode_scratch_bytes counts */
    return SD_OK;
}

/* Blend weights of piece k's pixels along its axis: 1 over its tile, ramping down to 0 across a
 * band of `band` latent pixels centred on each boundary with a neighbour, 0 beyond. The ramps of
 * two neighbours add up to 1 (samples at pixel centres). */
static void axis_weights(const axis *a, int k, int band, int f, float *wt) {
    const int len = (a->phi[k] - a->plo[k]) * f, half = band * f / 2;
    for (int p = 0; p < len; p++) {
        const float x = (float)(a->plo[k] * f + p) + 0.5f; /* the image pixel's centre */
        float v = 1.0f;
        if (k > 0) {
            const float edge = (float)(a->lo[k] * f);
            const float r = half > 0 ? (x - edge + half) / (2.0f * half) : (x >= edge ? 1.0f : 0.0f);
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

/* Group norm statistics of the whole image. Slot k is the k-th group norm of the tiled part, in
 * call order (the same in every piece). */
typedef struct {
    int n_slots, groups;
    int slot; /* the next norm of the current piece */
    int stop; /* the slot this pass gathers; the piece stops there. -1: none (the pixel pass) */
    float *mean, *rstd;  /* [n_slots][groups], gathered for slots before `stop` */
    double *sum, *sumsq; /* [groups], the slot being gathered */
    double count;        /* values per group gathered */
    double *rows;        /* per-row partial sums [rows][2 * channels] */
    float *scale, *shift; /* [channels] of the norm being applied */
    size_t rows_cap;
    int piece_h;                        /* the current piece's latent rows */
    int own_y0, own_y1, own_x0, own_x1; /* its tile, piece-local latent pixels */
} gn_stats;

/* Adds the sums over the current piece's tile (x is the piece's h x w activation). Rows are
 * summed in parallel, then in a fixed order, so that no result depends on the thread count. */
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
            for (int ch = 0; ch < c; ch++) acc[ch] += px[ch], acc[c + ch] += (double)px[ch] * px[ch];
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

/* The tiled part of the decoder on one piece (h x w latent pixels, its first-part activation
 * current in a) -> image [8h][8w][out_channels]. True: stopped at the slot being gathered. */
static bool piece_forward(const vae_decoder *d, vae_act *a, gn_stats *s, int h, int w,
                          float *image) {
    for (int i = 0; i < d->n_levels; i++) {
        const vae_level *l = &d->levels[i];
        for (int j = 0; i > 0 && j < l->n_res; j++)
            if (piece_resnet(&l->res[j], a, s, h, w)) return true;
        if (l->has_sample) {
            vae_upsample_forward(&l->sample, a, h, w);
            h *= 2;
            w *= 2;
        }
    }
    float *t = vae_act_gap(a, 0, 0, (size_t)h * w * d->norm_out.c);
    if (piece_norm(s, &d->norm_out, a->x, t, h, w, true)) return true;
    nn_conv2d_forward(&d->conv_out, t, 1, h, w, image, a->scratch);
    return false;
}

typedef struct {
    axis y, x;   /* the pieces of the pixel pass: margins for the convolutions and the blending */
    axis sy, sx; /* those of the statistics passes: the tile's own pixels only, no blending band */
    int band, top, f, oc;
    const float *low; /* the first part's output for the whole image [h][w][top] */
    int w;            /* its width */
    float *wy, *wx, *piece_out;
} tiling;

/* Runs every piece once: up to the slot being gathered, or (stop -1) to the pixels, blended into
 * img with the weights summed in wsum. */
static void run_pieces(const vae_decoder *d, const vae_act *region, gn_stats *s, const tiling *t,
                       float *img, float *wsum) {
    const int f = t->f, oc = t->oc, W = t->w * f;
    const axis *ay = s->stop < 0 ? &t->y : &t->sy, *ax = s->stop < 0 ? &t->x : &t->sx;
    for (int ty = 0; ty < ay->n; ty++) {
        const int y0 = ay->plo[ty], ph = ay->phi[ty] - y0;
        if (s->stop < 0) axis_weights(ay, ty, t->band, f, t->wy);
        for (int tx = 0; tx < ax->n; tx++) {
            const int x0 = ax->plo[tx], pw = ax->phi[tx] - x0;
            s->slot = 0;
            s->piece_h = ph;
            s->own_y0 = ay->lo[ty] - y0, s->own_y1 = ay->hi[ty] - y0;
            s->own_x0 = ax->lo[tx] - x0, s->own_x1 = ax->hi[tx] - x0;
            vae_act a;
            vae_act_init(&a, region->base, region->cap, region->scratch);
            for (int y = 0; y < ph; y++)
                memcpy(a.base + (size_t)y * pw * t->top, t->low + ((size_t)(y0 + y) * t->w + x0) * t->top,
                       (size_t)pw * t->top * sizeof *t->low);
            vae_act_set(&a, a.base, (size_t)ph * pw * t->top);
            if (piece_forward(d, &a, s, ph, pw, t->piece_out)) continue;
            axis_weights(ax, tx, t->band, f, t->wx);
            for (int y = 0; y < ph * f; y++) {
                if (t->wy[y] == 0.0f) continue;
                const size_t row = (size_t)(y0 * f + y) * W + (size_t)x0 * f;
                for (int x = 0; x < pw * f; x++) {
                    const float wt = t->wy[y] * t->wx[x];
                    const float *src = t->piece_out + ((size_t)y * pw * f + x) * oc;
                    float *dst = img + (row + x) * oc;
                    for (int c = 0; c < oc; c++) dst[c] += wt * src[c];
                    wsum[row + x] += wt;
                }
            }
        }
    }
}

/* The first part, whole: z [h][w][L] -> low [h][w][top]. */
static sd_status decode_low(vae *m, const float *z, int h, int w, float *low) {
    const vae_config *c = &m->cfg;
    const size_t in_floats = (size_t)h * w * c->latent_channels;
    vae_act a;
    SD_TRY(vae_take_region(m, &a, vae_decoder_low_region_floats(&m->dec, c, h, w), "tiled decode"));
    if (m->has_post_quant) {
        float *pq = vae_act_far(&a, in_floats);
        nn_conv2d_forward(&m->post_quant_conv, z, 1, h, w, pq, a.scratch);
        vae_act_set(&a, pq, in_floats);
        z = pq;
    }
    vae_decoder_forward_low(&m->dec, &a, z, h, w);
    memcpy(low, a.x, (size_t)h * w * c->block_out_channels[c->n_blocks - 1] * sizeof *low);
    sd_arena_reset(&m->arena);
    return SD_OK;
}

/* One image: the statistics passes, then the pixels. */
static sd_status decode_one(vae *m, gn_stats *s, tiling *t, float *img, float *wsum, size_t pixels) {
    const vae_config *cfg = &m->cfg;
    vae_act region;
    SD_TRY(vae_take_region(m, &region,
                           vae_decoder_region_floats(&m->dec, cfg, t->y.max_piece, t->x.max_piece),
                           "tiled decode"));
    for (s->stop = 0; s->stop < s->n_slots; s->stop++) {
        memset(s->sum, 0, (size_t)s->groups * sizeof *s->sum);
        memset(s->sumsq, 0, (size_t)s->groups * sizeof *s->sumsq);
        s->count = 0;
        run_pieces(&m->dec, &region, s, t, NULL, NULL);
        for (int gi = 0; gi < s->groups; gi++) {
            const double mean = s->sum[gi] / s->count, var = s->sumsq[gi] / s->count - mean * mean;
            s->mean[(size_t)s->stop * s->groups + gi] = (float)mean;
            s->rstd[(size_t)s->stop * s->groups + gi] =
                (float)(1.0 / sqrt((var > 0 ? var : 0) + VAE_NORM_EPS));
        }
    }
    s->stop = -1;
    memset(img, 0, pixels * t->oc * sizeof *img);
    memset(wsum, 0, pixels * sizeof *wsum);
    run_pieces(&m->dec, &region, s, t, img, wsum);
    sd_arena_reset(&m->arena);
    for (size_t p = 0; p < pixels; p++)
        for (int c = 0; c < t->oc; c++) img[p * t->oc + c] /= wsum[p];
    return SD_OK;
}

sd_status vae_decode_tiled(vae *m, const float *z, int n, int h, int w, int tile, int overlap,
                           float *image) {
    if (tile < 1 || overlap < 0 || overlap >= tile)
        return sd_set_error(SD_ERR_ARG, "vae tiled decode: tile %d with overlap %d (need tile >= 1 "
                            "and 0 <= overlap < tile)", tile, overlap);
    const long f = vae_scale_factor(m);
    if (n < 1 || h < 1 || w < 1 || (long)h * f * w * f > INT_MAX / 4)
        return sd_set_error(SD_ERR_ARG, "vae tiled decode: impossible size %d x %d x %d", n, h, w);
    if (tile >= h && tile >= w) return vae_decode(m, z, n, h, w, image);
    const vae_config *cfg = &m->cfg;
    const vae_decoder *d = &m->dec;
    const int margin = vae_decoder_context_pixels(d) + (overlap + 1) / 2;
    tiling t = {.band = overlap, .top = cfg->block_out_channels[cfg->n_blocks - 1], .f = (int)f,
                .oc = cfg->out_channels, .w = w};
    gn_stats s = {.groups = cfg->norm_num_groups, .n_slots = 1 /* conv_norm_out */};
    for (int i = 1; i < d->n_levels; i++) s.n_slots += 2 * d->levels[i].n_res;
    int maxc = 0;
    for (int i = 0; i < cfg->n_blocks; i++)
        if (cfg->block_out_channels[i] > maxc) maxc = cfg->block_out_channels[i];
    const size_t pixels = (size_t)h * w * f * f;
    float *low = NULL, *wsum = NULL;
    sd_status st = axis_plan(&t.y, h, tile, margin);
    if (st == SD_OK) st = axis_plan(&t.x, w, tile, margin);
    /* A statistics pass needs exact values over the tile alone: the convolutions' reach is the
     * margin it takes, half the blending band less per side than the pixel pass (a 2048x2048 SD
     * decode in 3 x 3 tiles of 86, overlap 21: 391 s instead of 506 s on 16 cores). Its pieces
     * are never larger than the pixel pass's. */
    if (st == SD_OK) st = axis_plan(&t.sy, h, tile, vae_decoder_context_pixels(d));
    if (st == SD_OK) st = axis_plan(&t.sx, w, tile, vae_decoder_context_pixels(d));
    if (st == SD_OK) {
        const int mph = t.y.max_piece, mpw = t.x.max_piece;
        t.wy = malloc((size_t)mph * f * sizeof *t.wy);
        t.wx = malloc((size_t)mpw * f * sizeof *t.wx);
        t.piece_out = malloc((size_t)mph * f * mpw * f * t.oc * sizeof *t.piece_out);
        low = malloc((size_t)h * w * t.top * sizeof *low);
        wsum = malloc(pixels * sizeof *wsum);
        s.mean = malloc((size_t)s.n_slots * s.groups * sizeof *s.mean);
        s.rstd = malloc((size_t)s.n_slots * s.groups * sizeof *s.rstd);
        s.sum = malloc((size_t)s.groups * sizeof *s.sum);
        s.sumsq = malloc((size_t)s.groups * sizeof *s.sumsq);
        s.rows_cap = (size_t)mph * f * 2 * maxc;
        s.rows = malloc(s.rows_cap * sizeof *s.rows);
        s.scale = malloc((size_t)maxc * sizeof *s.scale);
        s.shift = malloc((size_t)maxc * sizeof *s.shift);
        if (!s.scale || !s.shift || !t.wy || !t.wx || !t.piece_out || !low || !wsum || !s.mean || !s.rstd || !s.sum ||
            !s.sumsq || !s.rows)
            st = sd_set_error(SD_ERR_NOMEM, "vae tiled decode: out of memory");
    }
    t.low = low;
    if (st == SD_OK) {
        /* The whole-latent part and the pieces take the arena in turn: size it once for the larger
         * (reset replaces the blocks by one before either touches its pages), so the peak is one
         * region, not a first block kept while a larger second one is added. */
        vae_act probe;
        const size_t lo = vae_decoder_low_region_floats(d, cfg, h, w);
        const size_t pc = vae_decoder_region_floats(d, cfg, t.y.max_piece, t.x.max_piece);
        st = vae_take_region(m, &probe, lo > pc ? lo : pc, "tiled decode");
        sd_arena_reset(&m->arena);
    }
    for (int b = 0; b < n && st == SD_OK; b++) {
        st = decode_low(m, z + (size_t)b * h * w * cfg->latent_channels, h, w, low);
        if (st == SD_OK) st = decode_one(m, &s, &t, image + (size_t)b * pixels * t.oc, wsum, pixels);
    }
    free(t.y.lo), free(t.x.lo), free(t.sy.lo), free(t.sx.lo), free(t.wy), free(t.wx), free(t.piece_out), free(low), free(wsum);
    free(s.mean), free(s.rstd), free(s.sum), free(s.sumsq), free(s.rows), free(s.scale), free(s.shift);
    return st;
}
