/* A ring of the newest images; a mutex because every HTTP thread may store or read. */
#include "files.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char id[48];
    uint8_t *data;
    size_t len;
} entry;

struct srv_files {
    pthread_mutex_t lock;
    entry *ring;
    int n, next;
};

srv_files *srv_files_new(int max_files) {
    srv_files *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->n = max_files > 0 ? max_files : 1;
    f->ring = calloc((size_t)f->n, sizeof *f->ring);
    if (!f->ring) return free(f), NULL;
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

void srv_files_free(srv_files *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->ring[i].data);
    free(f->ring);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static bool random_hex(char *out, int bytes) {
    unsigned char b[32];
    FILE *fp = fopen("/dev/urandom", "rb");
    bool ok = fp && fread(b, 1, (size_t)bytes, fp) == (size_t)bytes;
    if (fp) fclose(fp);
    for (int i = 0; ok && i < bytes; i++) sprintf(out + 2 * i, "%02x", b[i]);
    return ok;
}

bool srv_files_put(srv_files *f, const uint8_t *data, size_t len, const char *ext, char *id) {
    char hex[40];
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy || !random_hex(hex, 16)) return free(copy), false;
    memcpy(copy, data, len);
    snprintf(id, 48, "%s.%s", hex, ext);
    pthread_mutex_lock(&f->lock);
    entry *e = &f->ring[f->next];
    free(e->data);
    snprintf(e->id, sizeof e->id, "%s", id);
    e->data = copy, e->len = len;
    f->next = (f->next + 1) % f->n;
    pthread_mutex_unlock(&f->lock);
    return true;
}

bool srv_files_get(srv_files *f, const char *id, uint8_t **data, size_t *len) {
    bool found = false;
    pthread_mutex_lock(&f->lock);
    for (int i = 0; i < f->n && !found; i++) {
        entry *e = &f->ring[i];
        if (!e->data || strcmp(e->id, id)) continue;
        if ((*data = malloc(e->len ? e->len : 1))) {
            memcpy(*data, e->data, e->len);
            *len = e->len;
            found = true;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return found;
}
