/* Test-only: a reduced-precision mode's tolerance contract run over the recorded fixtures
 * (tests/test_pipeline_bf16.c, test_pipeline_int8.c): each run generated in fp32 and in the mode,
 * the mode's final latents and pixels measured against diffusers' references, printed, and
 * asserted within the contract (sd15-tiny's chaotic ddim run is only reported). */
#ifndef SD_TEST_PRECISION_RUNS_H
#define SD_TEST_PRECISION_RUNS_H

#include "../include/sd.h"

typedef struct {
    const char *name;   /* "bf16", "int8": for the messages */
    double latents;     /* final latents vs diffusers: relative L2 error below this */
    double mean_levels; /* pixels vs diffusers: mean absolute difference below this */
    int max_levels;     /* and no value further off than this */
} precision_contract;

typedef struct {
    const char *model, *dir;
    const char *runs[12];
} precision_family;

/* sd15-tiny, sd2v-tiny, sdxl-tiny (the UNet families), then sd3-tiny and flux-tiny. */
enum { PRECISION_N_FAMILIES = 5, PRECISION_N_UNET_FAMILIES = 3 };
extern const precision_family precision_families[PRECISION_N_FAMILIES];

/* Run `run` of family `f` on the fp32 pipeline p32 and the mode's pipeline pq; CHECKs the
 * contract `c`. */
void precision_run_one(const precision_contract *c, sd_pipeline *p32, sd_pipeline *pq,
                       const precision_family *f, const char *run);

#endif
