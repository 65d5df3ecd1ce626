/* AutoencoderTiny (diffusers; madebyollin's TAESD: taesd, taesdxl, taesd3, taef1): a distilled
 * VAE of plain 3x3 convolutions and ReLUs, about 1/18 of AutoencoderKL's decode FLOPs (141 GFLOP
 * at 512x512 for taesd's 64 channels), for fast decodes and step previews. Loaded from a diffusers
 * folder (config.json with _class_name "AutoencoderTiny" + diffusion_pytorch_model.safetensors).
 * Activations in NHWC.
 *
 * The tiny VAE decodes the same latents as the big one (it was distilled from it): pipelines
 * scale them with the TINY config's scaling_factor and shift_factor (vae_tiny_unscale_latents). */
#ifndef SD_VAE_TINY_H
#define SD_VAE_TINY_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/error.h"
#include "../core/weights.h"

#define VAE_TINY_MAX_STAGES 8

typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_enc, n_dec; /* stages: len(encoder/decoder_block_out_channels) */
    int enc_channels[VAE_TINY_MAX_STAGES], enc_blocks[VAE_TINY_MAX_STAGES];
    int dec_channels[VAE_TINY_MAX_STAGES], dec_blocks[VAE_TINY_MAX_STAGES];
    float scaling_factor; /* 1.0 for taesd / taesdxl; the big VAE's for taesd3 / taef1 */
    float shift_factor;   /* 0 unless set (taesd3, taef1) */
} vae_tiny_config;

typedef struct vae_tiny vae_tiny;

/* Loads config.json and the weights (the encoder's only when with_encoder), held as `policy`
 * says (NULL: the default). Config errors name the file and key, weight errors the tensor. A
 * vae_tiny keeps its scratch between calls: calls on one must not run concurrently. */
sd_status vae_tiny_load(vae_tiny **out, const char *dir, bool with_encoder,
                        const weights_policy *policy);
void vae_tiny_free(vae_tiny *m);
/* Frees the scratch kept for the next call (three activations of 64 channels x the image's pixels
 * in floats: 200 MB at 512x512) and gives back mapped weight pages. */
void vae_tiny_release(vae_tiny *m);
const vae_tiny_config *vae_tiny_get_config(const vae_tiny *m);
bool vae_tiny_has_encoder(const vae_tiny *m);
/* Image pixels per latent pixel along each side: 2^(n_dec - 1), 8 for the releases (what
 * diffusers' pipelines take from the registered block_out_channels). */
int vae_tiny_scale_factor(const vae_tiny *m);

/* Pipeline latents -> the decoder's input: z / scaling_factor, plus shift_factor when
 * `add_shift` (the SD3 and Flux pipelines add it, the SD / SDXL ones do not). out may equal in. */
void vae_tiny_unscale_latents(const vae_tiny *m, bool add_shift, const float *in, float *out,
                              size_t n);
/* The reverse, as the img2img pipelines scale an encode: (z - shift_factor) * scaling_factor
 * (shift only when `sub_shift`). */
void vae_tiny_scale_latents(const vae_tiny *m, bool sub_shift, const float *in, float *out,
                            size_t n);

/* z [n][h][w][latent_channels] (unscaled) -> image [n][f*h][f*w][out_channels] in about [-1, 1]
 * (not clamped), f = vae_tiny_scale_factor: DecoderTiny.forward. */
sd_status vae_tiny_decode(vae_tiny *m, const float *z, int n, int h, int w, float *image);
/* image [n][h][w][in_channels] in [-1, 1] -> latents [n][h/f][w/f][latent_channels] (unscaled;
 * AutoencoderTiny.encode(...).latents, deterministic: no posterior to sample), h and w multiples
 * of f = 2^(n_enc - 1). */
sd_status vae_tiny_encode(vae_tiny *m, const float *image, int n, int h, int w, float *latents);

#endif
