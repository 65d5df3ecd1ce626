/* UNet2DConditionModel: building the blocks from the config and the checkpoint, and freeing them.
 * The forward pass is in unet_forward.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_internal.h"

static void block_free(unet_block *b) {
    for (int i = 0; i < b->n_layers; i++) {
        if (b->resnets) unet_resnet_free(&b->resnets[i]);
        if (b->attns) unet_transformer_free(&b->attns[i]);
    }
    free(b->resnets);
    free(b->attns);
    nn_conv2d_free(&b->sampler);
    memset(b, 0, sizeof *b);
}

static sd_status block_alloc(unet_block *b, int n_layers, bool attn) {
    b->resnets = calloc((size_t)n_layers, sizeof *b->resnets);
    b->attns = attn ? calloc((size_t)n_layers, sizeof *b->attns) : NULL;
    if (!b->resnets || (attn && !b->attns))
        return sd_set_error(SD_ERR_NOMEM, "unet: out of memory");
    b->n_layers = n_layers;
    return SD_OK;
}

/* CrossAttnDownBlock2D / DownBlock2D of level i. */
static sd_status load_down(unet *m, const sd_weights *w, int i) {
    const unet_config *c = &m->cfg;
    unet_block *b = &m->down[i];
    const int cout = c->block_out_channels[i];
    const int cin = i == 0 ? c->block_out_channels[0] : c->block_out_channels[i - 1];
    b->cout = cout;
    SD_TRY(block_alloc(b, c->layers_per_block[i], c->down_has_attn[i]));
    char name[128];
    for (int j = 0; j < b->n_layers; j++) {
        snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
        SD_TRY(unet_resnet_load(&b->resnets[j], w, c, j == 0 ? cin : cout, cout, 1.0f, name));
        if (!b->attns) continue;
        snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
        SD_TRY(unet_transformer_load(&b->attns[j], w, c, cout, c->heads[i],
                                     c->transformer_layers[i], name));
    }
    if (i == c->n_blocks - 1) return SD_OK;
    /* Downsample2D: 3x3 stride 2; padding 0 means one row/column of zeros on the bottom/right. */
    b->has_sampler = true;
    int pad = c->downsample_padding;
    SD_TRY(nn_conv2d_load(&b->sampler, w, cout, cout, 3, 2, pad,
                          "down_blocks.%d.downsamplers.0.conv", i));
    if (pad == 0) b->sampler.s.pad_b = b->sampler.s.pad_r = 1;
    return SD_OK;
}

/* CrossAttnUpBlock2D / UpBlock2D number i, working at level k = n - 1 - i. Resnet j reads the
 * previous output concatenated with a skip; diffusers sizes them as below, which always matches
 * the skips the down path leaves: level k pushed layers_per_block[k] outputs of its own width, and
 * below them lies level k-1's downsampler output (or conv_in's) of width `in`. */
static sd_status load_up(unet *m, const sd_weights *w, int i) {
    const unet_config *c = &m->cfg;
    const int n = c->n_blocks, k = n - 1 - i;
    unet_block *b = &m->up[i];
    const int cout = c->block_out_channels[k];
    const int prev = c->block_out_channels[i == 0 ? n - 1 : n - i];
    const int in = c->block_out_channels[k > 0 ? k - 1 : 0];
    b->cout = cout;
    SD_TRY(block_alloc(b, c->layers_per_block[k] + 1, c->up_has_attn[i]));
    char name[128];
    for (int j = 0; j < b->n_layers; j++) {
        int skip = j == b->n_layers - 1 ? in : cout;
        int rin = j == 0 ? prev : cout;
        snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
        SD_TRY(unet_resnet_load(&b->resnets[j], w, c, rin + skip, cout, 1.0f, name));
        if (!b->attns) continue;
        snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
        SD_TRY(unet_transformer_load(&b->attns[j], w, c, cout, c->heads[k],
                                     c->transformer_layers[k], name));
    }
    if (i == n - 1) return SD_OK;
    b->has_sampler = true; /* Upsample2D: nearest 2x, then a 3x3 conv */
    return nn_conv2d_load(&b->sampler, w, cout, cout, 3, 1, 1, "up_blocks.%d.upsamplers.0.conv", i);
}

static sd_status load_all(unet *m, const sd_weights *w) {
    const unet_config *c = &m->cfg;
    const int n = c->n_blocks, c0 = c->block_out_channels[0], clast = c->block_out_channels[n - 1];
    SD_TRY(nn_conv2d_load(&m->conv_in, w, c->in_channels, c0, c->conv_in_kernel, 1,
                          (c->conv_in_kernel - 1) / 2, "conv_in"));
    SD_TRY(unet_time_mlp_load(&m->time_embedding, w, c0, c->time_embed_dim, "time_embedding"));
    if (c->text_time)
        SD_TRY(unet_time_mlp_load(&m->add_embedding, w, c->projection_class_embeddings_input_dim,
                                  c->time_embed_dim, "add_embedding"));

    /* The skips the down path leaves: conv_in's output, every resnet(+attention) output, every
     * downsampler output. */
    m->max_skips = 1;
    for (int i = 0; i < n; i++) m->max_skips += c->layers_per_block[i] + (i < n - 1);
    if (!(m->skips = calloc((size_t)m->max_skips, sizeof *m->skips)))
        return sd_set_error(SD_ERR_NOMEM, "unet: out of memory");
    for (int i = 0; i < n; i++) SD_TRY(load_down(m, w, i));
    SD_TRY(unet_resnet_load(&m->mid_resnets[0], w, c, clast, clast, c->mid_block_scale_factor,
                            "mid_block.resnets.0"));
    SD_TRY(unet_transformer_load(&m->mid_attn, w, c, clast, c->heads[n - 1],
                                 c->transformer_layers[n - 1], "mid_block.attentions.0"));
    SD_TRY(unet_resnet_load(&m->mid_resnets[1], w, c, clast, clast, c->mid_block_scale_factor,
                            "mid_block.resnets.1"));
    for (int i = 0; i < n; i++) SD_TRY(load_up(m, w, i));
    SD_TRY(
        nn_group_norm_load(&m->norm_out, w, c0, c->norm_num_groups, c->norm_eps, "conv_norm_out"));
    return nn_conv2d_load(&m->conv_out, w, c0, c->out_channels, c->conv_out_kernel, 1,
                          (c->conv_out_kernel - 1) / 2, "conv_out");
}

sd_status unet_load(unet **out, const char *dir, const weights_policy *policy) {
    *out = NULL;
    unet_config cfg;
    SD_TRY(unet_config_read(&cfg, dir));
    return unet_load_with_config(out, &cfg, dir, policy);
}

sd_status unet_load_with_config(unet **out, const unet_config *cfg, const char *dir,
                                const weights_policy *policy) {
    *out = NULL;
    unet *m = calloc(1, sizeof *m);
    if (!m) return sd_set_error(SD_ERR_NOMEM, "unet: out of memory");
    sd_arena_init(&m->arena);
    m->cfg = *cfg;
    sd_status st = weights_open(&m->w, dir, "diffusion_pytorch_model", policy);
    if (st == SD_OK) {
        m->w.keep_stored = true;
        st = load_all(m, &m->w);
    }
    if (st != SD_OK) {
        unet_free(m);
        return st;
    }
    *out = m;
    return SD_OK;
}

void unet_free(unet *m) {
    if (!m) return;
    nn_conv2d_free(&m->conv_in);
    nn_conv2d_free(&m->conv_out);
    nn_norm_free(&m->norm_out);
    unet_time_mlp_free(&m->time_embedding);
    unet_time_mlp_free(&m->add_embedding);
    for (int i = 0; i < UNET_MAX_BLOCKS; i++) {
        block_free(&m->down[i]);
        block_free(&m->up[i]);
    }
    unet_resnet_free(&m->mid_resnets[0]);
    unet_resnet_free(&m->mid_resnets[1]);
    unet_transformer_free(&m->mid_attn);
    free(m->skips);
    weights_close(&m->w);
    sd_arena_free(&m->arena);
    free(m);
}

void unet_release(unet *m) {
    if (!m) return;
    sd_arena_free(&m->arena);
    sd_arena_init(&m->arena);
    weights_release(&m->w);
}

const unet_config *unet_get_config(const unet *m) {
    return &m->cfg;
}
