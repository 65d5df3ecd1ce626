/* A small cache of prompt encodings on the pipeline, keyed by everything that decides them
 * (family, encoder settings, the texts). Repeated generations with the same prompt (scheduler
 * comparisons, regression suites, batches of seeds) encode it once. */
#ifndef SD_EMBED_CACHE_H
#define SD_EMBED_CACHE_H

#include <stddef.h>

#include "pipeline_internal.h"

/* The cached floats for `key`, exactly `n` of them, or NULL. */
const float *pl_cache_get(sd_pipeline *p, const char *key, size_t n);
/* Stores a copy (the oldest entry goes when full); silently does nothing when out of memory. */
void pl_cache_put(sd_pipeline *p, const char *key, const float *data, size_t n);
void pl_cache_clear(sd_pipeline *p);

#endif
