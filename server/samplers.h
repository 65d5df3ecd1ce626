/* A1111 sampler and scheduler names mapped to this engine's schedulers (the names gen's
 * --scheduler takes). A1111 spells a sampler by its k-diffusion name ("DPM++ 2M") and, since 1.9,
 * the noise schedule apart ("Karras"); older clients glue them ("DPM++ 2M Karras"). */
#ifndef SRV_SAMPLERS_H
#define SRV_SAMPLERS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;   /* A1111's name, e.g. "DPM++ 2M" */
    const char *alias;  /* this engine's scheduler alias, e.g. "dpm++2m" */
    const char *karras; /* the alias with Karras sigmas, or NULL when the engine has none */
} srv_sampler;

/* The samplers offered (GET /sdapi/v1/samplers): i in [0, srv_sampler_count()). */
int srv_sampler_count(void);
const srv_sampler *srv_sampler_get(int i);

/* The schedule names accepted (GET /sdapi/v1/schedulers): "Automatic" (the sampler's own) and
 * "Karras". */
int srv_schedule_count(void);
const char *srv_schedule_get(int i, const char **label);

/* Maps sampler (NULL or "": the model's own scheduler) and schedule (NULL, "" or "Automatic":
 * the sampler's default) to *alias, a static scheduler name for sd_gen_params.scheduler (NULL:
 * the model's). Also takes this engine's own names (a diffusers class or an alias) for the
 * sampler. An unknown name, or a pair the engine cannot run, is false with a message naming it
 * in err. */
bool srv_sampler_map(const char *sampler, const char *schedule, const char **alias, char *err,
                     size_t err_size);

#endif
