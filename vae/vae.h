/* AutoencoderKL (diffusers): decoder and encoder, activations in NHWC. Loaded from a vae folder:
 * config.json + diffusion_pytorch_model.safetensors. */
#ifndef SD_VAE_H
#define SD_VAE_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/error.h"
#include "../core/weights.h"

#define VAE_MAX_BLOCKS 8

typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_blocks;
    int block_out_channels[VAE_MAX_BLOCKS];
    int layers_per_block;
    int norm_num_groups;
    float scaling_factor;
    bool has_shift_factor;
    float shift_factor;
    bool use_quant_conv, use_post_quant_conv, mid_block_add_attention, force_upcast;
} vae_config;

typedef struct vae vae;

/* Loads config.json and the weights (both encoder and decoder), held as `policy` says (NULL: the
 * default; core/weights.h). A vae holds its scratch arena: calls on one vae must not run
 * concurrently. */
sd_status vae_load(vae **out, const char *dir, const weights_policy *policy);
/* The same, skipping the encoder's weights (and quant_conv) when with_encoder is false: text-to-
 * image only decodes, and the encoder is about 40% of the weights. vae_encode then fails with
 * SD_ERR_ARG. */
sd_status vae_load_opt(vae **out, const char *dir, bool with_encoder,
                       const weights_policy *policy);
void vae_free(vae *m);
/* Between uses (an img2img encode before denoising; low-memory mode): frees the scratch arena the
 * last call kept for the next one at that size (a 1024x1024 decode keeps about 2 GB) and gives
 * back the mapped weight pages. The next call allocates and faults them in again. */
void vae_release(vae *m);
const vae_config *vae_get_config(const vae *m);
/* Image pixels per latent pixel along each side: 2^(len(block_out_channels) - 1), 8 for SD. */
int vae_scale_factor(const vae *m);

/* Pipeline latents -> what the decoder takes: z / scaling_factor (+ shift_factor when set), as
 * diffusers' pipelines do before vae.decode. out may equal in. */
void vae_unscale_latents(const vae *m, const float *in, float *out, size_t n);
/* The reverse (after encoding): (z - shift_factor) * scaling_factor. */
void vae_scale_latents(const vae *m, const float *in, float *out, size_t n);

/* z [n][h][w][latent_channels] (already unscaled) -> image [n][8h][8w][out_channels] in about
 * [-1, 1] (not clamped), through post_quant_conv when the model has one. */
sd_status vae_decode(vae *m, const float *z, int n, int h, int w, float *image);

/* The same decode produced tile by tile, for images whose untiled decode does not fit in memory:
 * the latent is cut into square tiles of at most `tile` latent pixels (8 * tile image pixels for
 * SD), each decoded with a margin of context, and neighbours are blended linearly across a band
 * of `overlap` latent pixels centred on their boundary. The result stays within one 8-bit level
 * of vae_decode's (not diffusers' tiled_decode, which changes the image: vae_tiled.c says why).
 * Its time depends on limit_bytes: the whole-image activations it may store between layers, as
 * long as its scratch stays within that limit, spare it reruns of the layers (vae_tiled.h); 0
 * stores none (the least memory, about ten times an untiled decode for SD). tile >= both sides
 * decodes untiled. Needs tile >= 1 and 0 <= overlap < tile. */
sd_status vae_decode_tiled(vae *m, const float *z, int n, int h, int w, int tile, int overlap,
                           size_t limit_bytes, float *image);

/* Bytes of scratch a decode of one h x w latent touches beyond the weights, the latents and the
 * output image (a batch reuses it image after image): untiled for tile <= 0 (or a tile covering
 * the latent), else vae_decode_tiled's with that tile and overlap storing nothing (the least it
 * can take: under a limit L it takes at most the larger of this and L). Computed from the sizes
 * the decode itself allocates. */
size_t vae_decode_scratch_bytes(const vae *m, int h, int w, int tile, int overlap);

/* The same for an encode of one h x w image (image pixels; tile and overlap in latent pixels, as
 * vae_encode_tiled takes them): untiled (tile <= 0) 1.6 GB at 1024x1024, 3.5 GB at 1536x1536,
 * 6.2 GB at 2048x2048 for SD's encoder. 0 for a model loaded without its encoder. */
size_t vae_encode_scratch_bytes(const vae *m, int h, int w, int tile, int overlap);

/* The smallest tile the automatic choice goes down to, in latent pixels. */
#define VAE_MIN_AUTO_TILE 16
/* The default limit of the automatic choice. An SD/SDXL decode's untiled scratch is 0.55 GB at
 * 512x512, 2.1 GB at 1024x1024 (and SDXL's other one-megapixel sizes), 8.2 GB at 2048x2048: 2.5 GB
 * keeps every one-megapixel image on the fast untiled path and tiles a 2048x2048 one in 3 x 3
 * tiles within 2 GB of scratch, so its decode peaks near 2.3 GB with the decoder's weights, under
 * the 4 GB. Tiles of the whole-latent part alone (the mid block's attention) set a floor:
 * about 0.8 GB at 2048x2048. */
#define VAE_AUTO_TILE_LIMIT_MB 2560
/* The decode --vae-tile auto makes: 0 (untiled) when the untiled decode's scratch fits within
 * limit_bytes, else, among the tiles (latent pixels; overlap tile / 4) whose scratch fits, the
 * one whose run under that limit counts the fewest multiply-adds (smaller tiles leave room for
 * stored activations, larger ones decode fewer margins), going down to VAE_MIN_AUTO_TILE when
 * none fits. The choice is logged (SD_LOG_INFO). */
int vae_auto_tile(const vae *m, int h, int w, size_t limit_bytes);
/* The limit in bytes for a limit of limit_mb MB (sd_gen_params.vae_tile_limit_mb): 0 is
 * VAE_AUTO_TILE_LIMIT_MB; a negative one is an error. */
sd_status vae_auto_tile_limit(int limit_mb, size_t *bytes);

/* image [n][h][w][in_channels] in [-1, 1] (h, w multiples of 8) -> posterior mean and logvar
 * [n][h/8][w/8][latent_channels] (logvar clamped to [-30, 20] as DiagonalGaussianDistribution
 * does), through quant_conv when the model has one. */
sd_status vae_encode(vae *m, const float *image, int n, int h, int w, float *mean, float *logvar);

/* The same encode produced tile by tile (the mirror of vae_decode_tiled, same arguments; tile and
 * overlap in latent pixels): the layers above the latent's resolution run per tile with a margin
 * and the whole image's group-norm statistics, the rest on the whole latent. The result equals
 * vae_encode's up to the order of float sums (vae_encoder_tiled.c). A tile covering the latent
 * encodes untiled. */
sd_status vae_encode_tiled(vae *m, const float *image, int n, int h, int w, int tile, int overlap,
                           size_t limit_bytes, float *mean, float *logvar);
/* The tile vae_auto_tile picks, for an encode of an h x w image (image pixels): 0 (untiled) when
 * the untiled encode's scratch fits within limit_bytes. Logged as the decode's. */
int vae_auto_tile_encode(const vae *m, int h, int w, size_t limit_bytes);

#endif
