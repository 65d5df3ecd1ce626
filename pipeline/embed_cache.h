/* A small cache of prompt encodings on the pipeline, keyed by everything that decides them
 * (family, encoder settings, the texts). Repeated generations with the same prompt (scheduler
 * comparisons, regression suites, batches of seeds) encode it once. */
#ifndef SD_EMBED_CACHE_H
#define SD_EMBED_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "pipeline_internal.h"

/* The cached floats for `key`, exactly `n` of them, or NULL. */
const float *pl_cache_get(sd_pipeline *p, const char *key, size_t n);
/* Copies the cached floats for `key` (exactly `n`) into out and returns true; false when absent
 * or when key is NULL (a failed sd_strfmt: the caller reports it). */
bool pl_cache_copy(sd_pipeline *p, const char *key, float *out, size_t n);
/* Stores a copy (the oldest entry goes when full); silently does nothing when out of memory. */
void pl_cache_put(sd_pipeline *p, const char *key, const float *data, size_t n);
void pl_cache_clear(sd_pipeline *p);

/* _get_t5_prompt_embeds of SD3 and Flux for one text: the T5 encoder's last hidden state
 * [len][d_model], padding tokens included (no attention mask, as in diffusers), cached. */
sd_status pl_encode_t5(sd_pipeline *p, const char *text, int len, float *out);

#endif
