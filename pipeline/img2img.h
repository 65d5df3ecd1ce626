/* Image-to-image and inpainting, the parts every latent-diffusion family shares, step for step as
 * diffusers' StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline do them:
 *
 * - the size: img2img takes the image's, rounded down to the VAE scale factor
 *   (VaeImageProcessor.get_default_height_width) unless width/height are given; inpainting takes
 *   the model's default (unet sample_size * scale factor) unless given. The image (and mask) are
 *   then resized to it with Pillow's LANCZOS (stretched, not cropped, as resize_mode "default").
 * - the schedule: get_timesteps runs the last min(int(steps * strength), steps) steps, starting at
 *   call (steps - that) * scheduler order (set_begin_index).
 * - the start latents: the image in [-1, 1] through the VAE encoder, a posterior SAMPLE
 *   (mean + std * randn from the pipeline's generator, drawn before the noise), times
 *   scaling_factor (minus shift_factor first, where a VAE has one); then noise from the same
 *   generator and scheduler.add_noise at the first run timestep. Inpainting at strength 1 starts
 *   from pure noise * init_noise_sigma instead.
 * - inpainting: the mask goes to grey (Pillow's convert("L")), [0, 1], binarised at 0.5 (1 =
 *   repaint), and to the latent grid by torch's nearest interpolation; the masked image is
 *   image * (mask < 0.5), whose latents diffusers always encodes (with a generator draw) even
 *   where the model ignores them. A 4-channel UNet gets the known region put back after every step
 *   (the init latents noised to the next timestep; un-noised after the last); a 9-channel
 *   inpainting UNet gets [latents, mask, masked-image latents] on its channels instead.
 *
 * Generator order, which decides every number: img2img: image sample, noise. Inpainting: image
 * sample (4-channel UNets, or strength < 1), noise (unless latents are given), masked-image
 * sample. Then any noise the scheduler draws while stepping.
 *
 * sd_gen_params.latents (NCHW noise): inpainting takes it as diffusers' `latents=` (the start is
 * latents * init_noise_sigma, and the blend noise is the same tensor); diffusers' img2img has no
 * such argument, so here it simply replaces the noise drawn for add_noise. MODEL_INPUT events show
 * the latents part of a 9-channel model's input (what scale_model_input returned). */
#ifndef SD_IMG2IMG_H
#define SD_IMG2IMG_H

#include <stdbool.h>

#include "denoise.h"

typedef struct {
    int batch, h, w, c;   /* the latents */
    int model_channels;   /* the denoiser's input channels: c, or 2c + 1 for inpainting models */
    int first;            /* first model call of the schedule */
    bool inpaint;         /* a mask was given */
    double strength;      /* g->strength */
    const sd_scheduler *sched;
    float *image_latents; /* [h][w][c] scaled init latents of the one image (4-channel inpaint) */
    float *noise;         /* [batch][h][w][c] the noise of the start latents (inpaint blend) */
    float *mask;          /* [h][w] latent-grid mask, 1 = repaint */
    float *masked;        /* [h][w][c] scaled latents of the masked image (9-channel inpaint) */
    float *scratch;       /* [batch][h][w][c] for the blend */
} pl_i2i;

/* Checks the image-related settings (strength range, mask size, what the model's input channels
 * need) and resolves the size: width/height as given, else as described above. model_channels:
 * the denoiser's input channels; latent_c: the VAE's latent channels. g->strength is the resolved
 * one (the family's default filled in: pipeline/generate.c); a mask or a strength without an init
 * image is refused before (pipeline/gen_options.c). */
sd_status pl_i2i_check(const sd_pipeline *p, const sd_gen_params *g, int model_channels,
                       int latent_c, int *width, int *height);

/* get_timesteps: the first model call for `strength` (steps = num_inference_steps). An error when
 * no step would run. */
sd_status pl_i2i_first_call(const sd_scheduler *s, int steps, double strength, int *first);

/* Everything before the loop: the image (and mask) preprocessed and encoded, generator draws in
 * diffusers' order from ns, and the start latents [batch][h][w][c] written to `latents`. The
 * scheduler must have its timesteps; g->strength is resolved. Free with pl_i2i_free (also after a
 * failure). */
sd_status pl_i2i_prepare(pl_i2i *st, sd_pipeline *p, const sd_gen_params *g, sd_scheduler *sched,
                         pl_noise *ns, int width, int height, int model_channels, float *latents);
void pl_i2i_free(pl_i2i *st);

/* pl_loop.after_step for 4-channel inpainting (ctx = the pl_i2i): the unmasked region back from
 * the init latents, noised to the timestep of call i + 1 (not noised after the last call). */
void pl_i2i_after_step(void *ctx, int i, float *latents);

/* The 9-channel model input: x [mb][h][w][c] (scaled latents) -> out [mb][h][w][2c + 1] holding,
 * per pixel, x, the mask, the masked-image latents (torch.cat on channels; the same mask and
 * masked latents for every batch item and both CFG halves). */
void pl_i2i_model_input(const pl_i2i *st, const float *x, int mb, float *out);

/* Preprocessing pieces (exposed for tests): the image resized to width x height (when it differs)
 * and mapped to [-1, 1] [h][w][3]; the mask resized the same way, to grey, binarised to {0, 1}
 * [h][w]. */
sd_status pl_i2i_image_pixels(const sd_image *img, int width, int height, float *out);
sd_status pl_i2i_mask_pixels(const sd_image *mask, int width, int height, float *out);

/* The VAE's latents for an image [h][w][3] in [-1, 1]: mean + exp(0.5 * logvar) * randn (drawn
 * from rng in NCHW order, as torch draws it), scaled for the denoiser. out [h/f][w/f][c]. Tiled
 * as g's vae_tile and vae_tile_limit_mb say (as the decode). With a tiny VAE in place of the
 * model's (p->tiny_decodes): its deterministic latents, scaled; nothing is drawn. */
sd_status pl_i2i_encode(sd_pipeline *p, const sd_gen_params *g, const float *image, int width,
                        int height, sd_rng *rng, float *out);

#endif
