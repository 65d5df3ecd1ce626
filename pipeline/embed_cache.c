#include "embed_cache.h"

#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/log.h"

const float *pl_cache_get(sd_pipeline *p, const char *key, size_t n) {
    for (int i = 0; i < PL_CACHE_SLOTS; i++) {
        pl_cache_entry *e = &p->cache[i];
        if (e->key && e->n == n && !strcmp(e->key, key)) {
            e->stamp = ++p->cache_clock;
            return e->data;
        }
    }
    return NULL;
}

bool pl_cache_copy(sd_pipeline *p, const char *key, float *out, size_t n) {
    const float *hit = key ? pl_cache_get(p, key, n) : NULL;
    if (hit) memcpy(out, hit, n * sizeof *out);
    return hit != NULL;
}

void pl_cache_put(sd_pipeline *p, const char *key, const float *data, size_t n) {
    pl_cache_entry *slot = &p->cache[0];
    for (int i = 1; i < PL_CACHE_SLOTS; i++) /* an empty slot, else the least recently used */
        if (!slot->key) break;
        else if (!p->cache[i].key || p->cache[i].stamp < slot->stamp) slot = &p->cache[i];
    char *k = strdup(key);
    float *d = malloc(n * sizeof *d);
    if (!k || !d) {
        free(k), free(d);
        return;
    }
    free(slot->key), free(slot->data);
    memcpy(d, data, n * sizeof *d);
    *slot = (pl_cache_entry){k, d, n, ++p->cache_clock};
}

void pl_cache_clear(sd_pipeline *p) {
    for (int i = 0; i < PL_CACHE_SLOTS; i++) {
        free(p->cache[i].key), free(p->cache[i].data);
        memset(&p->cache[i], 0, sizeof p->cache[i]);
    }
}

/* diffusers warns when max_sequence_length cuts a prompt; so does this (once per encoding: a cached
 * prompt is not tokenized again). Only called when the padded ids are full, so most prompts cost
 * no second tokenization. */
static void warn_if_truncated(const sd_pipeline *p, const char *text, int len) {
    int32_t *all = NULL;
    int n = 0;
    if (t5_tokenize(p->t5_tokenizer, text, &all, &n) == SD_OK && n > len)
        sd_log(SD_LOG_WARN, "T5 prompt truncated to %d tokens of its %d (max_sequence_length)", len,
               n);
    free(all);
}

sd_status pl_encode_t5(sd_pipeline *p, const char *text, int len, float *out) {
    const size_t n = (size_t)len * t5_encoder_get_config(p->t5)->d_model;
    char *key = sd_strfmt("t5|len=%d|%s", len, text);
    if (pl_cache_copy(p, key, out, n)) {
        free(key);
        return SD_OK;
    }
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    sd_status st = ids && key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    int n_real = 0;
    if (st == SD_OK) st = t5_tokenize_padded(p->t5_tokenizer, text, ids, len, &n_real);
    if (st == SD_OK && n_real == len) warn_if_truncated(p, text, len);
    if (st == SD_OK) st = t5_encoder_encode(p->t5, ids, 1, len, out);
    if (st == SD_OK) pl_cache_put(p, key, out, n);
    free(ids), free(key);
    return st;
}
