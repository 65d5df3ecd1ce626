/* The pieces of a generation every family shares, which the skeleton (pipeline/generate.c)
 * strings together: parameter checks, the scheduler built from the model's config, the
 * torch-compatible noise, the denoising loop with classifier-free guidance, the VAE decode into
 * 8-bit images, and the events that tests and progress bars watch (and that can cancel a run).
 *
 * A family (SD, SDXL, SD3, Flux) hands the loop a denoiser: a function that runs its model on a
 * batch of latents at one timestep. Latents are NHWC [batch][h][w][c] throughout; with CFG the
 * model batch is [uncond x B; cond x B], as torch.cat([neg, pos]). */
#ifndef SD_DENOISE_H
#define SD_DENOISE_H

#include <stdbool.h>

#include "../core/rng.h"
#include "../schedulers/scheduler.h"
#include "pipeline_internal.h"

typedef struct {
    void *ctx;
    /* out[mb][h][w][c] = model(x[mb][h][w][c], timestep t) */
    sd_status (*predict)(void *ctx, const float *x, int mb, int h, int w, double t, float *out);
} pl_denoiser;

/* Noise drawn as diffusers draws it: one torch.randn of the latents' NCHW shape from the
 * pipeline's generator, laid out NHWC. Also the scheduler's noise callback (ctx = pl_noise). */
typedef struct {
    sd_rng rng;
    int batch, c, h, w;
    float *nchw;
} pl_noise;

sd_status pl_noise_init(pl_noise *ns, uint64_t seed, int batch, int c, int h, int w);
void pl_noise_free(pl_noise *ns);
void pl_noise_draw(void *ns, float *out, size_t n);

double pl_now(void);
/* Sends an event to g->on_event (if any). A non-zero return from the callback cancels the run:
 * SD_ERR_CANCELLED, with a message saying where; every caller stops on it. */
sd_status pl_emit(const sd_gen_params *g, sd_event_kind kind, int index, int total, double t,
                  const float *data, int batch, int h, int w, int c);

/* Checks what every family checks (size multiple of `multiple`, steps, batch, guidance...). */
sd_status pl_check_params(const sd_gen_params *g, int width, int height, int multiple);

/* The scheduler before set_timesteps: g->scheduler (or the model's class) from the model's
 * scheduler config, with g->scheduler_overrides and g->eta. */
sd_status pl_create_scheduler(const sd_pipeline *p, const sd_gen_params *g, sd_scheduler **out);

/* calculate_shift's mu for dynamic shifting (SD3, Flux): from the image's token count and the
 * scheduler's resolved config (base_image_seq_len, max_image_seq_len, base_shift, max_shift), with
 * the pipelines' fallbacks 256, 4096, 0.5 and max_shift (SD3 1.16, Flux 1.15) for absent keys. */
double pl_flow_mu(const sd_scheduler *s, int image_seq_len, double max_shift);

/* Initial latents: g->latents (NCHW) if given, else drawn from the noise source; times the
 * scheduler's init_noise_sigma when s is given (NULL: as drawn, as Flux's prepare_latents). */
void pl_initial_latents(const sd_gen_params *g, pl_noise *ns, const sd_scheduler *s, float *latents);

typedef struct {
    const sd_gen_params *g;
    sd_scheduler *sched;
    pl_noise *noise;
    int batch, h, w, c; /* latents */
    bool cfg;           /* model batch holds [uncond; cond] */
    int first;          /* first model call (img2img starts later) */
    /* Optional, after each scheduler step i (inpainting puts the known region back). */
    void (*after_step)(void *ctx, int i, float *latents);
    void *after_ctx;
    /* Optional, before model call i (A1111's prompt editing changes the conditioning). */
    void (*before_call)(void *ctx, int i);
    void *before_ctx;
} pl_loop;

/* Runs calls [first, sched_len) on `latents` (in place), counting model calls in out. Stops with
 * SD_ERR_CANCELLED as soon as the event callback asks (pl_emit). */
sd_status pl_denoise(const pl_loop *L, const pl_denoiser *d, float *latents, sd_result *out);

/* Final latents -> out->latents (NCHW copy) and 8-bit images through the VAE. `latents` is
 * overwritten (unscaled in place). SD_ERR_CANCELLED, before any work, when the callback cancels
 * on the DECODE event. */
sd_status pl_decode(sd_pipeline *p, const sd_gen_params *g, float *latents, int batch, int h,
                    int w, int c, sd_result *out);

#endif
