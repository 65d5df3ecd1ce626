#include "embed_cache.h"

#include <stdlib.h>
#include <string.h>

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
