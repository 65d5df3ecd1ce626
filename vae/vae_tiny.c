/* AutoencoderTiny: diffusers' EncoderTiny / DecoderTiny (models/autoencoders/vae.py) built from
 * AutoencoderTinyBlock (unets/unet_2d_blocks.py), in NHWC on the packed convolution kernels.
 *
 * Both are an nn.Sequential named "encoder.layers" / "decoder.layers", so a tensor's index counts
 * every module, parameterless ones (ReLU, Upsample) included:
 *   encoder: per stage i: a conv (stage 0: in_channels -> C, bias; later: C -> C, stride 2, no
 *            bias), then enc_blocks[i] blocks; last a conv C -> latent_channels (bias).
 *            Input (x + 1) / 2.
 *   decoder: input tanh(z / 3) * 3; conv latent -> C (bias), ReLU; per stage i: dec_blocks[i]
 *            blocks, a nearest 2x Upsample unless last, a conv (C -> C, no bias; the last stage's
 *            C -> out_channels, bias). Output 2x - 1.
 *   block:   relu(conv.4(relu(conv.2(relu(conv.0(x))))) + x), 3x3 convs with bias ("skip" is a
 *            1x1 conv only when in != out channels, which no AutoencoderTiny has: its blocks are
 *            built with in == out).
 * Every stage must have the same channel count C: each stage's conv feeds the next stage's blocks,
 * built for that stage's count, so diffusers' model only runs when they agree (its constructor
 * does not check: the first forward fails). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/config.h"
#include "../core/fileutil.h"
#include "../nn/layers.h"
#include "vae_tiny.h"

typedef struct {
    nn_conv2d conv[3]; /* conv.0, conv.2, conv.4 */
} tiny_block;

typedef struct {
    nn_conv2d conv; /* encoder: the stage's first conv; decoder: its last */
    int n_blocks;
    tiny_block *blocks;
} tiny_stage;

struct vae_tiny {
    vae_tiny_config cfg;
    sd_weights w;
    bool has_encoder;
    tiny_stage enc[VAE_TINY_MAX_STAGES], dec[VAE_TINY_MAX_STAGES];
    nn_conv2d enc_out; /* encoder: C -> latent_channels */
    nn_conv2d dec_in;  /* decoder: latent_channels -> C */
    sd_arena arena;    /* three activation buffers and the kernels' temporaries */
};

/* A channel list and its block counts: same length (as AutoencoderTiny.__init__ checks), every
 * channel count equal (see the top of the file), counts >= 0. */
static sd_status read_stages(sd_cfg *c, const char *ch_key, const char *n_key, const int *def_n,
                             int *ch, int *nb, int *n_stages) {
    int n = cfg_int_list(c, ch_key, ch, VAE_TINY_MAX_STAGES);
    if (n < 0) { /* diffusers' defaults: (64, 64, 64, 64) */
        n = 4;
        for (int i = 0; i < 4; i++) ch[i] = 64;
    }
    int m = cfg_int_list(c, n_key, nb, VAE_TINY_MAX_STAGES);
    if (m < 0) {
        m = 4;
        memcpy(nb, def_n, 4 * sizeof *nb);
    }
    SD_TRY(cfg_status(c));
    if (n < 1 || n > VAE_TINY_MAX_STAGES)
        return sd_set_error(SD_ERR_CONFIG, "%s: '%s' has %d entries (1 to %d supported)", c->path,
                            ch_key, n, VAE_TINY_MAX_STAGES);
    if (m != n)
        return sd_set_error(SD_ERR_CONFIG, "%s: '%s' has %d entries but '%s' has %d", c->path,
                            n_key, m, ch_key, n);
    for (int i = 0; i < n; i++) {
        if (ch[i] < 1 || ch[i] > 65536 || ch[i] != ch[0])
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: '%s' entry %d is %d; every entry must be the "
                                "same positive count (each stage feeds the next unchanged)",
                                c->path, ch_key, i, ch[i]);
        if (nb[i] < 0 || nb[i] > 1024)
            return sd_set_error(SD_ERR_CONFIG, "%s: '%s' entry %d is %d", c->path, n_key, i, nb[i]);
    }
    *n_stages = n;
    return SD_OK;
}

static sd_status read_config(vae_tiny_config *v, const char *path) {
    static const int enc_def[4] = {1, 3, 3, 3}, dec_def[4] = {3, 3, 3, 1};
    sd_cfg c;
    SD_TRY(cfg_open(&c, path));
    memset(v, 0, sizeof *v);
    const char *cls = cfg_str(&c, "_class_name", "AutoencoderTiny");
    v->in_channels = cfg_int(&c, "in_channels", 3);
    v->out_channels = cfg_int(&c, "out_channels", 3);
    v->latent_channels = cfg_int(&c, "latent_channels", 4);
    v->scaling_factor = (float)cfg_num(&c, "scaling_factor", 1.0);
    v->shift_factor = (float)cfg_num(&c, "shift_factor", 0.0);
    const char *act = cfg_str(&c, "act_fn", "relu");
    const char *up = cfg_str(&c, "upsample_fn", "nearest");
    const int up_f = cfg_int(&c, "upsampling_scaling_factor", 2);
    sd_status st = cfg_status(&c);
    if (st == SD_OK && strcmp(cls, "AutoencoderTiny") != 0)
        st = sd_set_error(SD_ERR_CONFIG, "%s: '_class_name' is '%s', not 'AutoencoderTiny'", path,
                          cls);
    if (st == SD_OK)
        st = read_stages(&c, "encoder_block_out_channels", "num_encoder_blocks", enc_def,
                         v->enc_channels, v->enc_blocks, &v->n_enc);
    if (st == SD_OK)
        st = read_stages(&c, "decoder_block_out_channels", "num_decoder_blocks", dec_def,
                         v->dec_channels, v->dec_blocks, &v->n_dec);
    if (st == SD_OK) st = cfg_check_range(path, "in_channels", v->in_channels, 1, 64);
    if (st == SD_OK) st = cfg_check_range(path, "out_channels", v->out_channels, 1, 64);
    if (st == SD_OK) st = cfg_check_range(path, "latent_channels", v->latent_channels, 1, 1024);
    if (st == SD_OK && !(isfinite(v->scaling_factor) && v->scaling_factor != 0.0f))
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'scaling_factor' is %g", path, v->scaling_factor);
    if (st == SD_OK && !isfinite(v->shift_factor))
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'shift_factor' is %g", path, v->shift_factor);
    if (st == SD_OK && strcmp(act, "relu") != 0)
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: 'act_fn' is '%s'; only 'relu' is supported",
                          path, act);
    if (st == SD_OK && strcmp(up, "nearest") != 0)
        st = sd_set_error(SD_ERR_UNSUPPORTED,
                          "%s: 'upsample_fn' is '%s'; only 'nearest' is "
                          "supported",
                          path, up);
    if (st == SD_OK && up_f != 2)
        st = sd_set_error(SD_ERR_UNSUPPORTED,
                          "%s: 'upsampling_scaling_factor' is %d; only 2 is "
                          "supported",
                          path, up_f);
    cfg_close(&c);
    return st;
}

static sd_status load_blocks(tiny_stage *s, const sd_weights *w, int n, int c, const char *part,
                             int *idx) {
    s->blocks = calloc((size_t)n + 1, sizeof *s->blocks);
    if (!s->blocks)
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for %s.layers", w->dir, part);
    for (int b = 0; b < n; b++, (*idx)++) {
        for (int k = 0; k < 3; k++)
            SD_TRY(nn_conv2d_load(&s->blocks[b].conv[k], w, c, c, 3, 1, 1, "%s.layers.%d.conv.%d",
                                  part, *idx, 2 * k));
        s->n_blocks = b + 1;
    }
    return SD_OK;
}

static sd_status load_encoder(vae_tiny *m) {
    const vae_tiny_config *c = &m->cfg;
    const int C = c->enc_channels[0];
    int idx = 0;
    for (int i = 0; i < c->n_enc; i++) {
        if (i == 0)
            SD_TRY(nn_conv2d_load(&m->enc[i].conv, &m->w, c->in_channels, C, 3, 1, 1,
                                  "encoder.layers.%d", idx));
        else
            SD_TRY(nn_conv2d_load_nobias(&m->enc[i].conv, &m->w, C, C, 3, 2, 1, "encoder.layers.%d",
                                         idx));
        idx++;
        SD_TRY(load_blocks(&m->enc[i], &m->w, c->enc_blocks[i], C, "encoder", &idx));
    }
    return nn_conv2d_load(&m->enc_out, &m->w, C, c->latent_channels, 3, 1, 1, "encoder.layers.%d",
                          idx);
}

static sd_status load_decoder(vae_tiny *m) {
    const vae_tiny_config *c = &m->cfg;
    const int C = c->dec_channels[0];
    SD_TRY(nn_conv2d_load(&m->dec_in, &m->w, c->latent_channels, C, 3, 1, 1, "decoder.layers.0"));
    int idx = 2; /* layers.1 is the ReLU */
    for (int i = 0; i < c->n_dec; i++) {
        const bool last = i == c->n_dec - 1;
        SD_TRY(load_blocks(&m->dec[i], &m->w, c->dec_blocks[i], C, "decoder", &idx));
        if (!last) idx++; /* the Upsample */
        if (last)
            SD_TRY(nn_conv2d_load(&m->dec[i].conv, &m->w, C, c->out_channels, 3, 1, 1,
                                  "decoder.layers.%d", idx));
        else
            SD_TRY(nn_conv2d_load_nobias(&m->dec[i].conv, &m->w, C, C, 3, 1, 1, "decoder.layers.%d",
                                         idx));
        idx++;
    }
    return SD_OK;
}

sd_status vae_tiny_load(vae_tiny **out, const char *dir, bool with_encoder,
                        const weights_policy *policy) {
    *out = NULL;
    vae_tiny *m = calloc(1, sizeof *m);
    char *path = sd_path_join(dir, "config.json");
    if (!m || !path) {
        free(m);
        free(path);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
    }
    sd_arena_init(&m->arena);
    sd_status st = read_config(&m->cfg, path);
    free(path);
    if (st == SD_OK) st = weights_open(&m->w, dir, "diffusion_pytorch_model", policy);
    if (st != SD_OK) {
        free(m);
        return st;
    }
    m->w.keep_stored = true;
    m->has_encoder = with_encoder;
    st = load_decoder(m);
    if (st == SD_OK && with_encoder) st = load_encoder(m);
    if (st != SD_OK) {
        vae_tiny_free(m);
        return st;
    }
    *out = m;
    return SD_OK;
}

static void free_stage(tiny_stage *s) {
    for (int b = 0; b < s->n_blocks; b++)
        for (int k = 0; k < 3; k++) nn_conv2d_free(&s->blocks[b].conv[k]);
    free(s->blocks);
    nn_conv2d_free(&s->conv);
}

void vae_tiny_free(vae_tiny *m) {
    if (!m) return;
    for (int i = 0; i < VAE_TINY_MAX_STAGES; i++) {
        free_stage(&m->enc[i]);
        free_stage(&m->dec[i]);
    }
    nn_conv2d_free(&m->enc_out);
    nn_conv2d_free(&m->dec_in);
    weights_close(&m->w);
    sd_arena_free(&m->arena);
    free(m);
}

void vae_tiny_release(vae_tiny *m) {
    if (!m) return;
    sd_arena_free(&m->arena);
    sd_arena_init(&m->arena);
    weights_release(&m->w);
}

const vae_tiny_config *vae_tiny_get_config(const vae_tiny *m) {
    return &m->cfg;
}
bool vae_tiny_has_encoder(const vae_tiny *m) {
    return m->has_encoder;
}
int vae_tiny_scale_factor(const vae_tiny *m) {
    return 1 << (m->cfg.n_dec - 1);
}

void vae_tiny_unscale_latents(const vae_tiny *m, bool add_shift, const float *in, float *out,
                              size_t n) {
    const float sf = m->cfg.scaling_factor, shift = m->cfg.shift_factor;
    if (add_shift)
        for (size_t i = 0; i < n; i++) out[i] = in[i] / sf + shift;
    else
        for (size_t i = 0; i < n; i++) out[i] = in[i] / sf;
}

void vae_tiny_scale_latents(const vae_tiny *m, bool sub_shift, const float *in, float *out,
                            size_t n) {
    const float sf = m->cfg.scaling_factor, shift = m->cfg.shift_factor;
    if (sub_shift)
        for (size_t i = 0; i < n; i++) out[i] = (in[i] - shift) * sf;
    else
        for (size_t i = 0; i < n; i++) out[i] = sf * in[i];
}

/* ---- forward ----------------------------------------------------------------------------------
 */

/* Three activation buffers of `cap` floats each, rotated so that no layer writes over its input:
 * cur holds the activation, t[0] and t[1] are free. */
typedef struct {
    float *cur, *t[2];
    sd_arena *scratch;
} tiny_bufs;

/* Element-wise passes go over up to 64 MB at 512x512: split across the threads like the
 * convolutions (below this many floats a parallel region costs more than it saves). */
enum { PARALLEL_MIN = 1 << 20 };

static void relu(float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void swap_cur(tiny_bufs *b, int k) {
    float *t = b->cur;
    b->cur = b->t[k];
    b->t[k] = t;
}

/* AutoencoderTinyBlock: relu(conv(x) + x), x in b->cur; the result becomes b->cur. torch adds the
 * conv stack's output to the skip's (conv(x) + x), the order kept here. */
static void block_forward(const tiny_block *blk, tiny_bufs *b, int h, int w) {
    const size_t n = (size_t)h * w * blk->conv[0].s.cout;
    nn_conv2d_forward(&blk->conv[0], b->cur, 1, h, w, b->t[0], b->scratch);
    relu(b->t[0], n);
    nn_conv2d_forward(&blk->conv[1], b->t[0], 1, h, w, b->t[1], b->scratch);
    relu(b->t[1], n);
    nn_conv2d_forward(&blk->conv[2], b->t[1], 1, h, w, b->t[0], b->scratch);
    float *y = b->t[0];
    const float *x = b->cur;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        const float v = y[i] + x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
    swap_cur(b, 0);
}

static void stage_blocks(const tiny_stage *s, tiny_bufs *b, int h, int w) {
    for (int i = 0; i < s->n_blocks; i++) block_forward(&s->blocks[i], b, h, w);
}

/* Nearest 2x (nn.Upsample(scale_factor=2, mode="nearest")): each pixel becomes a 2x2 square. */
static void upsample2(const float *x, int h, int w, int c, float *y) {
#pragma omp parallel for schedule(static) if ((size_t)h * w * c >= PARALLEL_MIN / 4)
    for (int i = 0; i < 2 * h; i++)
        for (int j = 0; j < 2 * w; j++)
            memcpy(y + ((size_t)i * 2 * w + j) * c, x + ((size_t)(i / 2) * w + j / 2) * c,
                   (size_t)c * sizeof *y);
}

/* Takes the three buffers and the kernels' room from the arena (kept between calls: previews
 * decode at the same size every few steps). */
static sd_status take_bufs(vae_tiny *m, tiny_bufs *b, size_t cap, const char *what) {
    cap = (cap + 15) & ~(size_t)15;
    b->scratch = &m->arena;
    for (int i = 0; i < 3; i++) {
        float *p = sd_arena_floats(&m->arena, cap);
        if (!p) {
            sd_arena_reset(&m->arena);
            return sd_set_error(SD_ERR_NOMEM,
                                "tiny vae %s: out of memory for %zu MB of activations", what,
                                3 * cap * sizeof(float) >> 20);
        }
        if (i == 0)
            b->cur = p;
        else
            b->t[i - 1] = p;
    }
    return SD_OK;
}

/* Pixel counts must fit the int arithmetic of the kernels (as vae.c's check). */
static sd_status check_size(int n, int h, int w, int f, const char *what) {
    if (n < 1 || h < 1 || w < 1 || (long)h * f * w * f > INT_MAX / 4)
        return sd_set_error(SD_ERR_ARG, "tiny vae %s: impossible size %d x %d x %d", what, n, h, w);
    return SD_OK;
}

sd_status vae_tiny_decode(vae_tiny *m, const float *z, int n, int h, int w, float *image) {
    const vae_tiny_config *c = &m->cfg;
    const int f = vae_tiny_scale_factor(m), C = c->dec_channels[0], L = c->latent_channels;
    SD_TRY(check_size(n, h, w, f, "decode"));
    const size_t full = (size_t)h * f * w * f;
    tiny_bufs b;
    SD_TRY(take_bufs(m, &b, full * (size_t)(C > L ? C : L), "decode"));
    const size_t in_n = (size_t)h * w * L, out_n = full * c->out_channels;
    for (int i = 0; i < n; i++) {
        /* DecoderTiny.forward: tanh(x / 3) * 3, each step rounded to float as torch does; tanh in
         * double rounds to the nearest float whatever libm's last bits. */
        const float *zi = z + i * in_n;
        for (size_t k = 0; k < in_n; k++) {
            const float t = (float)tanh((double)(zi[k] / 3.0f));
            b.t[1][k] = t * 3.0f;
        }
        nn_conv2d_forward(&m->dec_in, b.t[1], 1, h, w, b.cur, b.scratch);
        relu(b.cur, (size_t)h * w * C);
        int hh = h, ww = w;
        for (int s = 0; s < c->n_dec; s++) {
            const tiny_stage *st = &m->dec[s];
            stage_blocks(st, &b, hh, ww);
            if (s < c->n_dec - 1) {
                upsample2(b.cur, hh, ww, C, b.t[0]);
                hh *= 2, ww *= 2;
                nn_conv2d_forward(&st->conv, b.t[0], 1, hh, ww, b.cur, b.scratch);
            } else {
                float *y = image + i * out_n;
                nn_conv2d_forward(&st->conv, b.cur, 1, hh, ww, y, b.scratch);
#pragma omp parallel for schedule(static) if (out_n >= PARALLEL_MIN)
                for (size_t k = 0; k < out_n; k++) y[k] = y[k] * 2.0f - 1.0f; /* x.mul(2).sub(1) */
            }
        }
    }
    sd_arena_reset(&m->arena);
    return SD_OK;
}

sd_status vae_tiny_encode(vae_tiny *m, const float *image, int n, int h, int w, float *latents) {
    if (!m->has_encoder)
        return sd_set_error(SD_ERR_ARG, "tiny vae encode: this vae was loaded without its encoder");
    const vae_tiny_config *c = &m->cfg;
    const int f = 1 << (c->n_enc - 1), C = c->enc_channels[0], L = c->latent_channels;
    if (h < f || w < f || h % f || w % f)
        return sd_set_error(SD_ERR_ARG,
                            "tiny vae encode: image size %d x %d is not a multiple of %d", w, h, f);
    SD_TRY(check_size(n, h / f, w / f, f, "encode"));
    const size_t full = (size_t)h * w;
    tiny_bufs b;
    SD_TRY(take_bufs(m, &b, full * (size_t)(C > c->in_channels ? C : c->in_channels), "encode"));
    const size_t in_n = full * c->in_channels, out_n = full / ((size_t)f * f) * L;
    for (int i = 0; i < n; i++) {
        const float *x = image + i * in_n;
        for (size_t k = 0; k < in_n; k++) b.t[1][k] = (x[k] + 1.0f) / 2.0f; /* x.add(1).div(2) */
        nn_conv2d_forward(&m->enc[0].conv, b.t[1], 1, h, w, b.cur, b.scratch);
        int hh = h, ww = w;
        for (int s = 0; s < c->n_enc; s++) {
            if (s > 0) { /* 3x3 stride 2, padding 1: ceil(h / 2) */
                nn_conv2d_forward(&m->enc[s].conv, b.cur, 1, hh, ww, b.t[0], b.scratch);
                hh = (hh + 1) / 2, ww = (ww + 1) / 2;
                swap_cur(&b, 0);
            }
            stage_blocks(&m->enc[s], &b, hh, ww);
        }
        nn_conv2d_forward(&m->enc_out, b.cur, 1, hh, ww, latents + i * out_n, b.scratch);
    }
    sd_arena_reset(&m->arena);
    return SD_OK;
}
