/* model_index.json: which pipeline class a diffusers folder holds and which component class sits
 * in each sub-folder. Components whose entry is [null, null] (a release without a safety checker,
 * SD3 without T5) are recorded as absent, not as errors. */
#ifndef SD_MODEL_INDEX_H
#define SD_MODEL_INDEX_H

#include <stdbool.h>

#include "../core/error.h"
#include "../include/sd.h"

#define MI_MAX_COMPONENTS 24

typedef struct {
    char name[48];    /* folder name: "unet", "text_encoder_2", ... */
    char library[32]; /* "diffusers", "transformers" */
    char cls[64];     /* "UNet2DConditionModel", ... */
    bool present;
} mi_component;

typedef struct {
    char *dir;
    char class_name[64];
    sd_family family; /* set by the pipeline once it knows the class */
    int n;
    mi_component comps[MI_MAX_COMPONENTS];
} model_index;

/* Reads <dir>/model_index.json: the pipeline class and every component entry. */
sd_status model_index_load(model_index *mi, const char *dir);
void model_index_free(model_index *mi);

/* The component named `name`, or NULL when it is not listed or listed as [null, null]. */
const mi_component *model_index_get(const model_index *mi, const char *name);

/* Path of a component's folder (malloc'd). */
char *model_index_path(const model_index *mi, const char *name);

#endif
