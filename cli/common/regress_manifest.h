/* The sd-regress manifest: a JSON file listing generation cases and the golden image of each.
 *
 *   {"tolerance": {"max_abs": 0},
 *    "defaults": {"model": "models/sd15", "steps": 8},
 *    "cases": [{"name": "fox", "prompt": "a fox", "seed": 3, "golden": "golden/fox.png", ...}]}
 *
 * Paths (model, golden, init_image, mask_image) are relative to the manifest's folder. A case key
 * absent from the case is taken from "defaults"; a case's "tolerance" replaces the manifest's
 * whole. Every error names the manifest file and the key (and case) at fault. */
#ifndef SD_CLI_REGRESS_MANIFEST_H
#define SD_CLI_REGRESS_MANIFEST_H

#include <cjson/cJSON.h>

#include "../../include/sd.h"

/* A case passes when every limit given holds. */
typedef struct {
    int max_abs;     /* largest |render - golden| allowed per 8-bit value; -1: no limit */
    double max_mean; /* largest mean |render - golden|; NAN: no limit */
    double min_psnr; /* smallest PSNR in dB; NAN: no limit */
} regress_tolerance;

typedef struct {
    const char *name;
    char *model;                    /* resolved against the manifest's folder */
    char *golden;                   /* resolved; ends in .png (batches: golden-0.png ...) */
    char *init_image, *mask_image;  /* resolved, or NULL */
    char *scheduler_overrides;      /* the "scheduler_opts" object as JSON text, or NULL */
    char *json;                     /* the case as written, with defaults merged (for the PNG) */
    regress_tolerance tol;
    sd_gen_params g;                /* strings point into the manifest */
} regress_case;

typedef struct {
    char *path, *dir;
    cJSON *root;
    int n_cases;
    regress_case *cases;
} regress_manifest;

sd_status regress_manifest_load(regress_manifest *m, const char *path);
void regress_manifest_free(regress_manifest *m);

#endif
