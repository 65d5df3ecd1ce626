/* Internals of the AutoencoderKL port, shared by vae.c, vae_blocks.c, vae_decoder.c and
 * vae_encoder.c. Not part of the public API.
 *
 * Memory plan: one image of a batch is processed at a time (every layer of the VAE is per-sample),
 * inside one region carved from the model's arena. The current activation sits at one end of the
 * region; a layer writes its output at the other end (or in place) and puts its temporaries in
 * the gap between, so the region only ever holds live data and nothing is copied between layers.
 * Its size is the largest (input + output + temporaries) of any layer, computed up front: for SD's
 * decoder at 512x512 that is the 256 -> 128 channel resnet at full resolution, 512 MB. Kernel
 * temporaries (conv patches, attention scores) come from the arena above the region. */
#ifndef SD_VAE_INTERNAL_H
#define SD_VAE_INTERNAL_H

#include <assert.h>

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
    sd_weights w; /* kept open: layers may hold their weights in the mapping (nn/layers.h) */
    vae_decoder dec;
    bool has_encoder; /* false when loaded for decoding only */
    vae_encoder enc;
    bool has_quant, has_post_quant;
    nn_conv2d quant_conv;      /* 1x1, 2L -> 2L */
    nn_conv2d post_quant_conv; /* 1x1, L -> L */
    sd_arena arena;
};

/* The region of one pass and where the current activation lies in it. Sizes are kept rounded to
 * 16 floats so that every placement stays 64-byte aligned. */
typedef struct {
    float *base;
    size_t cap;   /* floats */
    float *x;     /* the current activation: at base (x_low) or ending at base + cap */
    size_t x_n;   /* its rounded size; 0 before the first layer */
    bool x_low;
    sd_arena *scratch;
} vae_act;

static inline size_t vae_round(size_t n) { return (n + 15) & ~(size_t)15; }

static inline void vae_act_init(vae_act *a, float *base, size_t cap, sd_arena *scratch) {
    *a = (vae_act){.base = base, .cap = cap, .scratch = scratch};
}

/* Where an output of n floats goes: the end of the region away from the current activation. */
static inline float *vae_act_far(const vae_act *a, size_t n) {
    n = vae_round(n);
    assert(a->x_n + n <= a->cap);
    return a->x_low ? a->base + a->cap - n : a->base;
}

/* n floats of the gap between the current activation and an output of out_n floats at the far
 * end (0 for a layer working in place), starting `offset` (rounded) floats into the gap. */
static inline float *vae_act_gap(const vae_act *a, size_t out_n, size_t offset, size_t n) {
    out_n = vae_round(out_n);
    assert(a->x_n + out_n + offset + vae_round(n) <= a->cap);
    return a->base + (a->x_low ? a->x_n : out_n) + offset;
}

/* The layer's output (at an end of the region) becomes the current activation. */
static inline void vae_act_set(vae_act *a, float *p, size_t n) {
    a->x = p;
    a->x_n = vae_round(n);
    a->x_low = p == a->base;
}

/* Carves a pass's region of `floats` from the model's arena (plus room for kernel temporaries);
 * the caller resets the arena when the pass is done. */
sd_status vae_take_region(vae *m, vae_act *a, size_t floats, const char *what);

/* Bytes a region of `floats` takes from the arena with vae_take_region (its kernel slack
 * included). */
size_t vae_region_bytes(size_t floats);

/* Loading (errors name the tensor; the struct is left freeable on failure). */
sd_status vae_resnet_load(vae_resnet *r, const sd_weights *w, int cin, int cout, int groups,
                          const char *prefix);
void vae_resnet_free(vae_resnet *r);
sd_status vae_mid_block_load(vae_mid_block *m, const sd_weights *w, int c, int groups, bool attn,
                             const char *prefix);
void vae_mid_block_free(vae_mid_block *m);
void vae_level_free(vae_level *l);

/* Forward passes over one image of h x w pixels, from and to the current activation of `a`. */
void vae_resnet_forward(const vae_resnet *r, vae_act *a, int h, int w);
void vae_mid_block_forward(const vae_mid_block *m, vae_act *a, int h, int w);
/* Nearest 2x upsampling then the 3x3 conv (output (2h) x (2w)), done in bands of rows so the
 * upsampled copy never exists whole. */
void vae_upsample_forward(const nn_conv2d *conv, vae_act *a, int h, int w);
/* The same with bands of `rows` output rows (the gap must hold rows + 2 upsampled rows). */
void vae_upsample_bands(const nn_conv2d *conv, vae_act *a, int h, int w, int rows);
/* A 1x1 or plain conv from the current activation to the far end. */
void vae_conv_forward(const nn_conv2d *conv, vae_act *a, int h, int w);
/* Region floats each of them needs (input, output and temporaries together). */
size_t vae_resnet_floats(int cin, int cout, size_t hw);
size_t vae_mid_block_floats(const vae_mid_block *m, int c, size_t hw);
size_t vae_upsample_floats(int c, int h, int w);
/* x += y over n floats. */
void vae_add(float *x, const float *y, size_t n);

sd_status vae_decoder_load(vae_decoder *d, const sd_weights *w, const vae_config *cfg);
void vae_decoder_free(vae_decoder *d);
/* Region floats needed to decode an h x w latent. */
size_t vae_decoder_region_floats(const vae_decoder *d, const vae_config *cfg, int h, int w);
/* One image: z [h][w][latent_channels] (after post_quant_conv; outside the region or its current
 * activation) -> image [8h][8w][out_channels], outside the region. */
void vae_decoder_forward(const vae_decoder *d, vae_act *a, const float *z, int h, int w,
                         float *image);
/* The first part of it alone: everything at the latent's resolution (conv_in, the mid block, the
 * first up block's resnets), leaving [h][w][block_out_channels[last]] as the current activation.
 * It holds the decoder's only global operation besides group norm (the mid-block attention); the
 * tiled decode (vae_tiled.c) runs it whole and tiles the rest. */
void vae_decoder_forward_low(const vae_decoder *d, vae_act *a, const float *z, int h, int w);
/* Region floats of that first part. */
size_t vae_decoder_low_region_floats(const vae_decoder *d, const vae_config *cfg, int h, int w);

/* The largest piece (tile plus margin each side, within the image) when a side of len latent
 * pixels is cut into equal tiles of at most `tile`. */
int vae_tile_max_piece(int len, int tile, int margin);

sd_status vae_encoder_load(vae_encoder *e, const sd_weights *w, const vae_config *cfg);
void vae_encoder_free(vae_encoder *e);
size_t vae_encoder_region_floats(const vae_encoder *e, const vae_config *cfg, int h, int w);
/* One image: x [h][w][in_channels] (outside the region) -> the conv_out moments
 * [h/8][w/8][2L] (before quant_conv) as the current activation of `a`. */
void vae_encoder_forward(const vae_encoder *e, vae_act *a, const float *x, int h, int w);
/* Its last part alone: everything at the latent's resolution (the last down block's resnets, the
 * mid block, conv_norm_out, conv_out), from the current activation [h][w][block_out_channels[last]]
 * (latent pixels). The tiled encode (vae_encoder_tiled.c) runs it whole and tiles the rest. */
void vae_encoder_forward_low(const vae_encoder *e, vae_act *a, int h, int w);
size_t vae_encoder_low_region_floats(const vae_encoder *e, const vae_config *cfg, int h, int w);
/* DiagonalGaussianDistribution: moments [hw][2l] -> the mean (first l channels) and the log
 * variance (next l), clamped to [-30, 20]. */
void vae_moments_split(const float *mom, size_t hw, int l, float *mean, float *logvar);

#endif
