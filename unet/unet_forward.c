/* The UNet forward pass: time embedding, conv_in, the down path (keeping every skip connection),
 * the mid block, the up path (consuming the skips last-in first-out), conv_norm_out + SiLU +
 * conv_out.
 *
 * Memory: every activation lives in the model's arena used as a stack. The skips stay put from
 * the moment they are produced until the up path consumes them; after each up-path step the
 * result is moved down to where the consumed skip began, so the arena never holds more than the
 * live skips, the current activation and one step's temporaries. The arena is reset at the end,
 * so later calls at the same size allocate nothing. */
#include <math.h>
#include <string.h>

#include "../kernels/act.h"
#include "unet_internal.h"

void unet_add(float *x, const float *y, size_t n) {
#pragma omp parallel for schedule(static) if (n >= UNET_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) x[i] = y[i] + x[i];
}

/* Releases everything from `mark` up, and moves the n floats at src (above the mark) to the
 * arena's top: where the released region began. */
static float *compact(sd_arena *a, sd_arena_mark mark, const float *src, size_t n) {
    sd_arena_release(a, mark);
    float *dst = sd_arena_floats(a, n);
    if (!dst || dst == src) return dst;
    if (dst + n > src || n < UNET_PARALLEL_MIN) { /* overlapping: one ordered move */
        memmove(dst, src, n * sizeof *dst);
        return dst;
    }
    enum { PIECE = 1 << 14 };
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += PIECE)
        memcpy(dst + i, src + i, (n - i < PIECE ? n - i : PIECE) * sizeof *dst);
    return dst;
}

/* emb = time_embedding(sinusoid(t)) (+ add_embedding(text_embeds, sinusoid(time_ids)) for SDXL),
 * then SiLU: the only use of emb is each resnet's time_emb_proj(SiLU(emb)). */
static sd_status time_embedding(const unet *m, int batch, float t, const unet_added_cond *added,
                                float *emb, sd_arena *a) {
    const unet_config *c = &m->cfg;
    const int c0 = c->block_out_channels[0], td = c->time_embed_dim;
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *proj = sd_arena_floats(a, (size_t)batch * c0);
    if (!proj) return unet_nomem();
    unet_timestep_embedding(t, c0, c->flip_sin_to_cos, c->freq_shift, proj);
    for (int b = 1; b < batch; b++) memcpy(proj + (size_t)b * c0, proj, (size_t)c0 * sizeof *proj);
    SD_TRY(unet_time_mlp_forward(&m->time_embedding, proj, emb, batch, a));
    if (c->text_time) {
        const int pd = c->projection_class_embeddings_input_dim, ad = c->addition_time_embed_dim;
        const int n_ids = added->n_time_ids ? added->n_time_ids : 6, text_dim = pd - n_ids * ad;
        float *in = sd_arena_floats(a, (size_t)batch * pd);
        float *aug = sd_arena_floats(a, (size_t)batch * td);
        if (!in || !aug) return unet_nomem();
        for (int b = 0; b < batch; b++) {
            float *row = in + (size_t)b * pd;
            memcpy(row, added->text_embeds + (size_t)b * text_dim, (size_t)text_dim * sizeof *row);
            for (int k = 0; k < n_ids; k++)
                unet_timestep_embedding(added->time_ids[(size_t)b * n_ids + k], ad,
                                        c->flip_sin_to_cos, c->freq_shift, row + text_dim + k * ad);
        }
        SD_TRY(unet_time_mlp_forward(&m->add_embedding, in, aug, batch, a));
        for (size_t i = 0; i < (size_t)batch * td; i++) emb[i] = emb[i] + aug[i];
    }
    act_silu(emb, (size_t)batch * td);
    sd_arena_release(a, mark);
    return SD_OK;
}

/* F.interpolate(mode="nearest") to (oh, ow): source index floor(dst * (in / out)) with the scale in
 * float, as torch computes it. For out = 2 * in it is plain pixel doubling; other sizes happen when
 * the latent size is not a multiple of 2^(blocks - 1) and diffusers upsamples to the skip's size. */
static void upsample_nearest(const float *x, int n, int h, int w, int ch, int oh, int ow, float *y) {
    const float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * oh * ow * ch >= UNET_PARALLEL_MIN)
    for (int b = 0; b < n; b++)
        for (int yy = 0; yy < oh; yy++) {
            int iy = (int)floorf((float)yy * sy);
            if (iy > h - 1) iy = h - 1;
            for (int xx = 0; xx < ow; xx++) {
                int ix = (int)floorf((float)xx * sx);
                if (ix > w - 1) ix = w - 1;
                memcpy(y + (((size_t)b * oh + yy) * ow + xx) * ch,
                       x + (((size_t)b * h + iy) * w + ix) * ch, (size_t)ch * sizeof *y);
            }
        }
}

/* torch.cat([hidden, skip], dim=1) in NHWC: per pixel, hidden's channels then the skip's. */
static void concat_channels(const float *x, int cx, const float *s, int cs, size_t pixels,
                            float *y) {
#pragma omp parallel for schedule(static) if (pixels * (cx + cs) >= UNET_PARALLEL_MIN)
    for (size_t p = 0; p < pixels; p++) {
        memcpy(y + p * (cx + cs), x + p * cx, (size_t)cx * sizeof *y);
        memcpy(y + p * (cx + cs) + cx, s + p * cs, (size_t)cs * sizeof *y);
    }
}

typedef struct {
    int batch;
    const float *temb_act;
    const float *context;
    int ctx_len;
} fwd_args;

static sd_status down_path(unet *m, const fwd_args *f, float *cur, int *ch, int *h, int *w,
                           int *n_skips) {
    sd_arena *a = &m->arena;
    const int n = f->batch;
    for (int i = 0; i < m->cfg.n_blocks; i++) {
        const unet_block *b = &m->down[i];
        for (int j = 0; j < b->n_layers; j++) {
            sd_arena_mark mark = sd_arena_get_mark(a);
            float *o = sd_arena_floats(a, (size_t)n * *h * *w * b->cout);
            if (!o) return unet_nomem();
            SD_TRY(unet_resnet_forward(&b->resnets[j], cur, n, *h, *w, f->temb_act, o, a));
            if (b->attns)
                SD_TRY(unet_transformer_forward(&b->attns[j], o, n, *h * *w, f->context, f->ctx_len,
                                                a));
            cur = o;
            *ch = b->cout;
            m->skips[(*n_skips)++] = (unet_skip){cur, *ch, *h, *w, mark};
        }
        if (!b->has_sampler) continue;
        sd_arena_mark mark = sd_arena_get_mark(a);
        int oh = conv2d_out_h(&b->sampler.s, *h), ow = conv2d_out_w(&b->sampler.s, *w);
        float *o = sd_arena_floats(a, (size_t)n * oh * ow * *ch);
        if (!o) return unet_nomem();
        nn_conv2d_forward(&b->sampler, cur, n, *h, *w, o, a);
        cur = o;
        *h = oh, *w = ow;
        m->skips[(*n_skips)++] = (unet_skip){cur, *ch, *h, *w, mark};
    }
    return SD_OK;
}

/* The mid block on the last skip; returns its output (at the arena's top) in *out. */
static sd_status mid_block(unet *m, const fwd_args *f, const float *cur, int ch, int h, int w,
                           float **out) {
    sd_arena *a = &m->arena;
    const int n = f->batch;
    const size_t size = (size_t)n * h * w * ch;
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *o1 = sd_arena_floats(a, size), *o2 = sd_arena_floats(a, size);
    if (!o1 || !o2) return unet_nomem();
    SD_TRY(unet_resnet_forward(&m->mid_resnets[0], cur, n, h, w, f->temb_act, o1, a));
    SD_TRY(unet_transformer_forward(&m->mid_attn, o1, n, h * w, f->context, f->ctx_len, a));
    SD_TRY(unet_resnet_forward(&m->mid_resnets[1], o1, n, h, w, f->temb_act, o2, a));
    if (!(*out = compact(a, mark, o2, size))) return unet_nomem();
    return SD_OK;
}

static sd_status up_path(unet *m, const fwd_args *f, float **curp, int *ch, int *h, int *w,
                         int *n_skips) {
    sd_arena *a = &m->arena;
    const int n = f->batch;
    float *cur = *curp;
    for (int i = 0; i < m->cfg.n_blocks; i++) {
        const unet_block *b = &m->up[i];
        sd_arena_mark cur_mark = {0};
        for (int j = 0; j < b->n_layers; j++) {
            const unet_skip s = m->skips[--(*n_skips)];
            const size_t pixels = (size_t)n * *h * *w;
            float *cat = sd_arena_floats(a, pixels * (*ch + s.ch));
            float *o = sd_arena_floats(a, pixels * b->cout);
            if (!cat || !o) return unet_nomem();
            concat_channels(cur, *ch, s.data, s.ch, pixels, cat);
            SD_TRY(unet_resnet_forward(&b->resnets[j], cat, n, *h, *w, f->temb_act, o, a));
            /* the skip, the previous activation and the concatenation are dead now */
            if (!(cur = compact(a, s.mark, o, pixels * b->cout))) return unet_nomem();
            cur_mark = s.mark;
            *ch = b->cout;
            if (b->attns)
                SD_TRY(unet_transformer_forward(&b->attns[j], cur, n, *h * *w, f->context,
                                                f->ctx_len, a));
        }
        if (!b->has_sampler) continue;
        /* Upsample to the size of the skip the next block concatenates (diffusers'
         * forward_upsample_size): twice the size, or one less after an odd-sized downsample. */
        const int oh = *n_skips ? m->skips[*n_skips - 1].h : 2 * *h;
        const int ow = *n_skips ? m->skips[*n_skips - 1].w : 2 * *w;
        const size_t big = (size_t)n * oh * ow * *ch;
        float *up = sd_arena_floats(a, big), *o = sd_arena_floats(a, big);
        if (!up || !o) return unet_nomem();
        upsample_nearest(cur, n, *h, *w, *ch, oh, ow, up);
        *h = oh, *w = ow;
        nn_conv2d_forward(&b->sampler, up, n, *h, *w, o, a);
        if (!(cur = compact(a, cur_mark, o, big))) return unet_nomem();
    }
    *curp = cur;
    return SD_OK;
}

static sd_status check_args(const unet *m, const float *x, int batch, int h, int w,
                            const float *context, int ctx_len, const unet_added_cond *added,
                            const float *out) {
    const unet_config *c = &m->cfg;
    if (!x || !context || !out)
        return sd_set_error(SD_ERR_ARG, "unet_forward: NULL input, context or output");
    if (batch < 1 || ctx_len < 1)
        return sd_set_error(SD_ERR_ARG,
                            "unet_forward: batch %d and context length %d must be positive", batch,
                            ctx_len);
    if (h < 1 || w < 1)
        return sd_set_error(SD_ERR_ARG, "unet_forward: latent size %dx%d is empty", h, w);
    if (c->text_time) {
        if (!added || !added->text_embeds || !added->time_ids)
            return sd_set_error(SD_ERR_ARG,
                                "unet_forward: this UNet (addition_embed_type 'text_time') needs "
                                "text_embeds and time_ids");
        int n_ids = added->n_time_ids ? added->n_time_ids : 6;
        if (n_ids < 0 ||
            c->projection_class_embeddings_input_dim - n_ids * c->addition_time_embed_dim < 1)
            return sd_set_error(
                SD_ERR_ARG,
                "unet_forward: %d time ids of %d values leave no room for text_embeds in "
                "projection_class_embeddings_input_dim = %d",
                n_ids, c->addition_time_embed_dim, c->projection_class_embeddings_input_dim);
    }
    return SD_OK;
}

static sd_status forward(unet *m, const float *x, int batch, int h, int w, float t,
                         const float *context, int ctx_len, const unet_added_cond *added,
                         float *out) {
    const unet_config *c = &m->cfg;
    sd_arena *a = &m->arena;
    const int c0 = c->block_out_channels[0];
    float *temb = sd_arena_floats(a, (size_t)batch * c->time_embed_dim);
    if (!temb) return unet_nomem();
    SD_TRY(time_embedding(m, batch, t, added, temb, a));
    fwd_args f = {batch, temb, context, ctx_len};

    const size_t in_size = (size_t)batch * h * w * c->in_channels;
    sd_arena_mark mark = sd_arena_get_mark(a);
    if (c->center_input_sample) {
        float *xc = sd_arena_floats(a, in_size);
        if (!xc) return unet_nomem();
        for (size_t i = 0; i < in_size; i++) xc[i] = 2 * x[i] - 1.0f;
        x = xc;
    }
    float *cur = sd_arena_floats(a, (size_t)batch * h * w * c0);
    if (!cur) return unet_nomem();
    nn_conv2d_forward(&m->conv_in, x, batch, h, w, cur, a);
    int n_skips = 0, ch = c0, hh = h, ww = w;
    m->skips[n_skips++] = (unet_skip){cur, c0, h, w, mark};

    SD_TRY(down_path(m, &f, cur, &ch, &hh, &ww, &n_skips));
    SD_TRY(mid_block(m, &f, m->skips[n_skips - 1].data, ch, hh, ww, &cur));
    SD_TRY(up_path(m, &f, &cur, &ch, &hh, &ww, &n_skips));

    nn_group_norm_forward(&m->norm_out, cur, cur, batch, h * w, true);
    nn_conv2d_forward(&m->conv_out, cur, batch, h, w, out, a);
    return SD_OK;
}

sd_status unet_forward(unet *m, const float *x, int batch, int h, int w, float t,
                       const float *context, int ctx_len, const unet_added_cond *added,
                       float *out) {
    if (!m) return sd_set_error(SD_ERR_ARG, "unet_forward: NULL model");
    SD_TRY(check_args(m, x, batch, h, w, context, ctx_len, added, out));
    sd_status st = forward(m, x, batch, h, w, t, context, ctx_len, added, out);
    m->last_spills = m->arena.spill_count;
    sd_arena_reset(&m->arena); /* after a failure too: the next call starts from an empty arena */
    return st;
}

void unet_scratch_stats(const unet *m, size_t *bytes, size_t *grew) {
    if (bytes) *bytes = m->arena.high_water;
    if (grew) *grew = m->last_spills;
}
