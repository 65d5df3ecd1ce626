/* Internals of the AutoencoderKL port, shared by vae.c, vae_blocks.c, vae_decoder.c and
 * vae_encoder.c. Not part of the public API.
 *
 * Memory plan: one image of a batch is processed at a time (every layer of the VAE is per-sample),
 * and its activations live in three buffers of equal capacity carved from the model's arena at the
 * start of a pass. A layer reads the current activation from one buffer and uses the other two for
 * its intermediates, so only live activations exist: at 512x512 with SD's channels that is three
 * buffers of 256 MB (the 256-channel 512x512 upsample output), never one per layer. Short-lived
 * temporaries (conv patches, the attention's fused QKV) are taken above them with arena marks. */
#ifndef SD_VAE_INTERNAL_H
#define SD_VAE_INTERNAL_H

#include "../core/arena.h"
#include "../core/weights.h"
#include "../nn/layers.h"
#include "vae.h"

/* diffusers builds every VAE norm with eps 1e-6 (resnets, mid-block attention, conv_norm_out). */
#define VAE_NORM_EPS 1e-6f

/* ResnetBlock2D without a time embedding: norm1-SiLU-conv1-norm2-SiLU-conv2 plus the input,
 * through a 1x1 conv_shortcut when the channel count changes. output_scale_factor is 1 in every
 * AutoencoderKL, so there is no division. */
typedef struct {
    int cin, cout;
    nn_norm norm1, norm2;  /* [cin], [cout] */
    nn_conv2d conv1, conv2; /* 3x3: cin -> cout, cout -> cout */
    bool has_shortcut;
    nn_conv2d shortcut; /* 1x1 cin -> cout, only when cin != cout */
} vae_resnet;

/* The mid-block Attention: group norm, a single head over all C channels, residual. The three
 * projections are fused into one [3C][C] weight so one product writes Q|K|V rows that the attention
 * kernel reads with a stride of 3C. */
typedef struct {
    int c;
    nn_norm norm;
    float *w_qkv; /* [3c][c]: to_q, to_k, to_v rows */
    float *b_qkv; /* [3c] */
    float *w_out; /* [c][c] to_out.0 */
    float *b_out; /* [c] */
} vae_attention;

/* UNetMidBlock2D as AutoencoderKL uses it: resnet, attention (unless mid_block_add_attention is
 * false), resnet. */
typedef struct {
    vae_resnet res[2];
    bool has_attn;
    vae_attention attn;
} vae_mid_block;

typedef struct {
    int n_res;
    vae_resnet *res;
    bool has_sample;  /* an upsampler (decoder) or downsampler (encoder) follows the resnets */
    nn_conv2d sample; /* 3x3 conv after nearest 2x upsampling, or stride-2 conv padded (0,1,0,1) */
} vae_level;

typedef struct {
    nn_conv2d conv_in; /* latent_channels -> block_out_channels[last] */
    vae_mid_block mid;
    int n_levels;
    vae_level levels[VAE_MAX_BLOCKS]; /* up_blocks in order: widest channels first */
    nn_norm norm_out;                 /* block_out_channels[0] */
    nn_conv2d conv_out;               /* -> out_channels */
} vae_decoder;

typedef struct {
    nn_conv2d conv_in; /* in_channels -> block_out_channels[0] */
    int n_levels;
    vae_level levels[VAE_MAX_BLOCKS]; /* down_blocks */
    vae_mid_block mid;
    nn_norm norm_out;   /* block_out_channels[last] */
    nn_conv2d conv_out; /* -> 2 * latent_channels (mean | logvar) */
} vae_encoder;

struct vae {
    vae_config cfg;
    vae_decoder dec;
    bool has_encoder; /* false when loaded for decoding only */
    vae_encoder enc;
    bool has_quant, has_post_quant;
    nn_conv2d quant_conv;      /* 1x1, 2L -> 2L */
    nn_conv2d post_quant_conv; /* 1x1, L -> L */
    sd_arena arena;
};

/* The three activation buffers of one pass (equal sizes, from vae_*_buffer_floats) and the arena
 * that kernels take their temporaries from. */
typedef struct {
    float *buf[3];
    sd_arena *scratch;
} vae_bufs;

/* Loading (errors name the tensor; the struct is left freeable on failure). */
sd_status vae_resnet_load(vae_resnet *r, const sd_weights *w, int cin, int cout, int groups,
                          const char *prefix);
void vae_resnet_free(vae_resnet *r);
sd_status vae_mid_block_load(vae_mid_block *m, const sd_weights *w, int c, int groups, bool attn,
                             const char *prefix);
void vae_mid_block_free(vae_mid_block *m);
void vae_level_free(vae_level *l);

/* Forward passes over one image of h x w pixels held in b->buf[cur]; each returns the index of the
 * buffer that holds its output (the other two are free again). */
int vae_resnet_forward(const vae_resnet *r, vae_bufs *b, int cur, int h, int w);
int vae_mid_block_forward(const vae_mid_block *m, vae_bufs *b, int cur, int h, int w);
/* Nearest 2x upsampling then the 3x3 conv: output is (2h) x (2w). */
int vae_upsample_forward(const nn_conv2d *conv, vae_bufs *b, int cur, int h, int w);
/* x += y over n floats. */
void vae_add(float *x, const float *y, size_t n);

sd_status vae_decoder_load(vae_decoder *d, const sd_weights *w, const vae_config *cfg);
void vae_decoder_free(vae_decoder *d);
/* Floats per buffer needed to decode an h x w latent. */
size_t vae_decoder_buffer_floats(const vae_config *cfg, int h, int w);
/* One image: z [h][w][latent_channels] (after post_quant_conv; not in b->buf[0]) ->
 * image [8h][8w][out_channels]. */
void vae_decoder_forward(const vae_decoder *d, vae_bufs *b, const float *z, int h, int w,
                         float *image);

sd_status vae_encoder_load(vae_encoder *e, const sd_weights *w, const vae_config *cfg);
void vae_encoder_free(vae_encoder *e);
size_t vae_encoder_buffer_floats(const vae_config *cfg, int h, int w);
/* One image: x [h][w][in_channels] -> the encoder's conv_out moments [h/8][w/8][2L] (before
 * quant_conv), in buffer b->buf[returned index]. */
int vae_encoder_forward(const vae_encoder *e, vae_bufs *b, const float *x, int h, int w);

#endif
