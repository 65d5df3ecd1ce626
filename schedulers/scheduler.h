/* Noise schedulers, as diffusers defines them (class names, config keys, defaults and math).
 *
 * A scheduler is built from a scheduler config (the model's scheduler_config.json) the way
 * diffusers' `CLASS.from_config(config, **overrides)` builds it: keys the class knows carry over,
 * the rest take the class's defaults. Then set_timesteps, and for each model call i in
 * [0, sched_len): scale_model_input, the model, step. Steps are addressed by index i (diffusers
 * tracks the same index internally as step_index; img2img starts at a later index).
 *
 * Latents are passed as flat arrays of n floats in the engine's layout (NHWC); every scheduler
 * operation is element-wise, except noise, which comes from a callback that the pipeline fills
 * from the seeded torch-compatible generator (drawn in NCHW order, as diffusers draws it). */
#ifndef SD_SCHEDULER_H
#define SD_SCHEDULER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "../core/error.h"

typedef struct sd_scheduler sd_scheduler;

/* Fills out[0..n) with standard normal noise in the latents' layout. */
typedef void (*sched_noise_fn)(void *ctx, float *out, size_t n);

/* Optional arguments of set_timesteps (diffusers passes them as keyword arguments). */
typedef struct {
    bool has_mu;          /* dynamic shifting (FlowMatch with use_dynamic_shifting) */
    double mu;
    const double *sigmas; /* custom sigmas (Flux passes linspace(1, 1/n, n)); NULL if none */
    int n_sigmas;         /* FlowMatch: n (the final 0 is appended); Euler: n + 1 (all of them) */
    double strength;      /* LCM img2img: schedule over the first strength * original steps;
                             0 (a zeroed struct) means 1 */
} sched_timestep_opts;

/* Builds `class_name` (a diffusers class name or an alias; NULL: the config's _class_name) from
 * `config` (the scheduler_config.json object; not kept) and `overrides` (an object of keys that
 * replace or add to the config, e.g. {"use_karras_sigmas": true}; may be NULL). Unknown class or
 * option value: SD_ERR_ARG / SD_ERR_CONFIG naming it. */
sd_status sched_create(sd_scheduler **out, const char *class_name, const cJSON *config,
                       const cJSON *overrides);
void sched_free(sd_scheduler *s);

sd_status sched_set_timesteps(sd_scheduler *s, int num_inference_steps,
                              const sched_timestep_opts *opts);

const char *sched_class_name(const sd_scheduler *s);
/* The resolved config, as diffusers' `scheduler.config` holds it: every parameter of the class
 * (with `_use_default_values` listing those that took the class default), plus the keys of the
 * source config that the class does not know. Owned by the scheduler. */
const cJSON *sched_config(const sd_scheduler *s);
int sched_order(const sd_scheduler *s);        /* diffusers' `order` (2 for Heun) */
int sched_len(const sd_scheduler *s);          /* model calls = len(timesteps) */
double sched_timestep(const sd_scheduler *s, int i); /* the value the model is called with */
int sched_num_sigmas(const sd_scheduler *s);   /* len(sigmas), 0 for schedulers without sigmas */
double sched_sigma(const sd_scheduler *s, int i);
double sched_init_noise_sigma(const sd_scheduler *s);
const char *sched_prediction_type(const sd_scheduler *s); /* "epsilon", "v_prediction", ... */

/* DDIM / DDPM eta (the pipeline's `eta` argument); ignored by schedulers without one. */
void sched_set_eta(sd_scheduler *s, double eta);

/* out = scale_model_input(x, timestep i); out may equal x. */
void sched_scale_model_input(sd_scheduler *s, int i, const float *x, float *out, size_t n);

/* One step: sample (in place) becomes prev_sample given the model output at call i. Stochastic
 * schedulers call noise(noise_ctx, buf, n) exactly when and as often as diffusers draws. */
sd_status sched_step(sd_scheduler *s, int i, const float *model_output, float *sample, size_t n,
                     sched_noise_fn noise, void *noise_ctx);

/* img2img / inpainting: out = add_noise(x0, noise, timestep of call i) (or scale_noise for flow
 * matching). out may equal x0. */
void sched_add_noise(const sd_scheduler *s, int i, const float *x0, const float *noise, float *out,
                     size_t n);

/* mu for dynamic shifting as diffusers' Flux pipeline computes it (calculate_shift) from the image
 * sequence length and the scheduler config's base/max_image_seq_len and base/max_shift. */
double sched_flux_mu(int image_seq_len, int base_seq, int max_seq, double base_shift,
                     double max_shift);

/* Every supported class: name, aliases (comma-separated) and a one-line description, for
 * `gen --scheduler help`. Returns the count; entries are static. */
typedef sd_scheduler_info sched_info; /* class_name, aliases, description (sd.h) */
int sched_list(const sched_info **out);

#endif
