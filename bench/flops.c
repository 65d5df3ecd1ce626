/* FLOP counts from the configs, walking the same structure the loaders build (unet/unet.c,
 * vae/vae_decoder.c, text_encoder/clip_text.c). */
#include "flops.h"

/* 2 x multiply-adds of a k x k convolution producing n * oh * ow pixels of cout channels. */
static void conv(bench_flops *f, double pixels, int cin, int cout, int k) {
    f->conv += 2.0 * pixels * cout * (double)k * k * cin;
}

static void linear(bench_flops *f, double rows, int in, int out) {
    f->linear += 2.0 * rows * in * out;
}

/* Q K^T and P V over `dim` channels (all heads together). */
static void attention(bench_flops *f, int batch, double nq, double nk, int dim) {
    f->attention += 2.0 * 2.0 * batch * nq * nk * dim;
}

/* ---- UNet2DConditionModel ---- */

static void unet_resnet(bench_flops *f, const unet_config *c, int n, int hw, int cin, int cout) {
    conv(f, (double)n * hw, cin, cout, 3);
    linear(f, n, c->time_embed_dim, cout); /* time_emb_proj */
    conv(f, (double)n * hw, cout, cout, 3);
    if (cin != cout) conv(f, (double)n * hw, cin, cout, 1);
}

static void unet_transformer(bench_flops *f, const unet_config *c, int n, int hw, int dim,
                             int layers, int ctx_len) {
    const double t = (double)n * hw;
    linear(f, t, dim, dim); /* proj_in */
    for (int l = 0; l < layers; l++) {
        linear(f, t, dim, 3 * dim); /* self-attention Q, K, V */
        attention(f, n, hw, hw, dim);
        linear(f, t, dim, dim); /* to_out */
        linear(f, t, dim, dim); /* cross-attention Q */
        linear(f, (double)n * ctx_len, c->cross_attention_dim, 2 * dim); /* K, V of the text */
        attention(f, n, hw, ctx_len, dim);
        linear(f, t, dim, dim);         /* to_out */
        linear(f, t, dim, 8 * dim);     /* GEGLU projection: value and gate of 4 dim */
        linear(f, t, 4 * dim, dim);     /* ff.net.2 */
    }
    linear(f, t, dim, dim); /* proj_out */
}

bench_flops bench_flops_unet(const unet_config *c, int batch, int h, int w, int ctx_len) {
    bench_flops f = {0, 0, 0};
    const int n = c->n_blocks, c0 = c->block_out_channels[0];
    linear(&f, batch, c0, c->time_embed_dim);
    linear(&f, batch, c->time_embed_dim, c->time_embed_dim);
    if (c->text_time) {
        linear(&f, batch, c->projection_class_embeddings_input_dim, c->time_embed_dim);
        linear(&f, batch, c->time_embed_dim, c->time_embed_dim);
    }
    conv(&f, (double)batch * h * w, c->in_channels, c0, c->conv_in_kernel);
    int hs[UNET_MAX_BLOCKS], ws[UNET_MAX_BLOCKS];
    int ch = c0;
    for (int i = 0; i < n; i++) {
        const int cout = c->block_out_channels[i];
        hs[i] = h, ws[i] = w;
        for (int j = 0; j < c->layers_per_block[i]; j++) {
            unet_resnet(&f, c, batch, h * w, j ? cout : ch, cout);
            if (c->down_has_attn[i])
                unet_transformer(&f, c, batch, h * w, cout, c->transformer_layers[i], ctx_len);
        }
        ch = cout;
        if (i == n - 1) break;
        /* Downsample2D: 3x3 stride 2, padding 1 or (diffusers' padding 0) one row/column after */
        const int pad = c->downsample_padding, pad_end = pad ? pad : 1;
        h = (h + pad + pad_end - 3) / 2 + 1;
        w = (w + pad + pad_end - 3) / 2 + 1;
        conv(&f, (double)batch * h * w, cout, cout, 3);
    }
    const int clast = c->block_out_channels[n - 1];
    unet_resnet(&f, c, batch, h * w, clast, clast);
    unet_transformer(&f, c, batch, h * w, clast, c->transformer_layers[n - 1], ctx_len);
    unet_resnet(&f, c, batch, h * w, clast, clast);
    for (int i = 0; i < n; i++) {
        const int k = n - 1 - i, cout = c->block_out_channels[k];
        const int prev = c->block_out_channels[i == 0 ? n - 1 : n - i];
        const int in = c->block_out_channels[k > 0 ? k - 1 : 0];
        const int layers = c->layers_per_block[k] + 1;
        h = hs[k], w = ws[k]; /* the upsampler before this block restored the skip's size */
        for (int j = 0; j < layers; j++) {
            const int skip = j == layers - 1 ? in : cout, rin = j == 0 ? prev : cout;
            unet_resnet(&f, c, batch, h * w, rin + skip, cout);
            if (c->up_has_attn[i])
                unet_transformer(&f, c, batch, h * w, cout, c->transformer_layers[k], ctx_len);
        }
        if (i < n - 1) conv(&f, (double)batch * hs[k - 1] * ws[k - 1], cout, cout, 3);
    }
    conv(&f, (double)batch * hs[0] * ws[0], c0, c->out_channels, c->conv_out_kernel);
    return f;
}

/* ---- AutoencoderKL decoder ---- */

static void vae_resnet(bench_flops *f, double hw, int cin, int cout) {
    conv(f, hw, cin, cout, 3);
    conv(f, hw, cout, cout, 3);
    if (cin != cout) conv(f, hw, cin, cout, 1);
}

bench_flops bench_flops_vae_decode(const vae_config *c, int h, int w) {
    bench_flops f = {0, 0, 0};
    const int n = c->n_blocks, top = c->block_out_channels[n - 1];
    double hw = (double)h * w;
    if (c->use_post_quant_conv) conv(&f, hw, c->latent_channels, c->latent_channels, 1);
    conv(&f, hw, c->latent_channels, top, 3);
    vae_resnet(&f, hw, top, top);
    if (c->mid_block_add_attention) { /* one head over all channels */
        linear(&f, hw, top, 3 * top);
        attention(&f, 1, hw, hw, top);
        linear(&f, hw, top, top);
    }
    vae_resnet(&f, hw, top, top);
    int prev = top;
    for (int i = 0; i < n; i++) {
        const int ch = c->block_out_channels[n - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) vae_resnet(&f, hw, j ? ch : prev, ch);
        if (i < n - 1) {
            hw *= 4;
            conv(&f, hw, ch, ch, 3);
        }
        prev = ch;
    }
    conv(&f, hw, c->block_out_channels[0], c->out_channels, 3);
    return f;
}

/* ---- CLIP text model ---- */

bench_flops bench_flops_clip(const clip_text_config *c, int batch, int len) {
    bench_flops f = {0, 0, 0};
    const double rows = (double)batch * len;
    const int d = c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        linear(&f, rows, d, 3 * d);
        attention(&f, batch, len, len, d);
        linear(&f, rows, d, d);
        linear(&f, rows, d, c->intermediate_size);
        linear(&f, rows, c->intermediate_size, d);
    }
    if (c->with_projection) linear(&f, batch, d, c->projection_dim);
    return f;
}
