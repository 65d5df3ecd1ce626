/* Model folder listing, name resolution and the LRU of resident pipelines. */
#include "models.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    char *name;
    char *lora_key; /* the merged LoRAs as "path*scale;..." ("" for none) */
    sd_pipeline *p;
    unsigned long last_used;
} resident;

struct srv_models {
    const srv_config *cfg;
    char *dir;    /* real path of --models, or NULL */
    char *single; /* --model PATH when there is no --models */
    pthread_mutex_t lock;
    char *current; /* default model name */
    resident *res;
    int n_res;
    unsigned long clock;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

bool srv_model_name_ok(const char *name) {
    return name && *name && name[0] != '.' && !strchr(name, '/') && !strchr(name, '\\') &&
           strlen(name) < 256;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* A usable entry of the folder: a diffusers folder or a .safetensors file, inside dir for real. */
static char *entry_path(const srv_models *m, const char *name) {
    char *path;
    if (asprintf(&path, "%s/%s", m->dir, name) < 0) return NULL;
    char *real = realpath(path, NULL);
    size_t n = strlen(m->dir);
    bool ok = real && !strncmp(real, m->dir, n) && real[n] == '/';
    struct stat st;
    if (ok && stat(real, &st) == 0 && S_ISDIR(st.st_mode)) {
        char *index = NULL;
        ok = asprintf(&index, "%s/model_index.json", real) >= 0 && stat(index, &st) == 0 &&
             S_ISREG(st.st_mode);
        free(index);
    } else {
        ok = ok && stat(real, &st) == 0 && S_ISREG(st.st_mode) && has_suffix(name, ".safetensors");
    }
    free(real);
    if (!ok) free(path), path = NULL;
    return path;
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/') s--;
    return s;
}

bool srv_models_open(srv_models **out, const srv_config *cfg, char *err, size_t err_size) {
    srv_models *m = calloc(1, sizeof *m);
    if (!m) return snprintf(err, err_size, "out of memory"), false;
    m->cfg = cfg;
    pthread_mutex_init(&m->lock, NULL);
    m->res = calloc((size_t)cfg->max_models, sizeof *m->res);
    if (cfg->models_dir) {
        m->dir = realpath(cfg->models_dir, NULL);
        if (!m->dir) {
            snprintf(err, err_size, "--models %s: no such folder", cfg->models_dir);
            srv_models_close(m);
            return false;
        }
    } else if (cfg->model) {
        m->single = strdup(cfg->model);
    }
    const char *cur = NULL;
    char **names = NULL;
    int n = srv_models_list(m, &names);
    if (cfg->model)
        cur = m->dir ? cfg->model : base_name(cfg->model);
    else if (n > 0)
        cur = names[0];
    srv_error e;
    char *path = NULL;
    if (!cur || !srv_models_resolve(m, cur, &path, &e)) {
        if (!cur)
            snprintf(err, err_size, "no model: pass --model PATH, or --models DIR holding one");
        else
            snprintf(err, err_size, "--model %s: %s", cur, e.message);
        srv_models_list_free(names, n);
        srv_models_close(m);
        return false;
    }
    free(path);
    m->current = strdup(cur);
    srv_models_list_free(names, n);
    *out = m;
    return true;
}

void srv_models_close(srv_models *m) {
    if (!m) return;
    for (int i = 0; i < m->n_res; i++) {
        sd_pipeline_free(m->res[i].p);
        free(m->res[i].name), free(m->res[i].lora_key);
    }
    free(m->res), free(m->dir), free(m->single), free(m->current);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int srv_models_list(srv_models *m, char ***names) {
    *names = NULL;
    if (!m->dir) {
        if (!m->single || !(*names = malloc(sizeof **names))) return 0;
        (*names)[0] = strdup(base_name(m->single));
        return 1;
    }
    DIR *d = opendir(m->dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (!srv_model_name_ok(de->d_name)) continue;
        char *path = entry_path(m, de->d_name);
        if (!path) continue;
        free(path);
        if (n == cap) {
            char **grown = realloc(*names, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *grown);
            if (!grown) break;
            *names = grown;
        }
        (*names)[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n) qsort(*names, (size_t)n, sizeof **names, by_name);
    return n;
}

void srv_models_list_free(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

bool srv_models_resolve(srv_models *m, const char *name, char **path, srv_error *e) {
    *path = NULL;
    if (!srv_model_name_ok(name))
        return srv_fail(e, 400, "model",
                        "model name '%.80s' is not a plain name inside the models folder", name);
    if (!m->dir) {
        if (strcmp(name, base_name(m->single)))
            return srv_fail(e, 404, "model",
                            "no model '%.80s' (GET /sdapi/v1/sd-models lists them)", name);
        *path = strdup(m->single);
        return true;
    }
    *path = entry_path(m, name);
    if (!*path && !has_suffix(name, ".safetensors")) { /* "v1-5" for "v1-5.safetensors" */
        char with_ext[300];
        snprintf(with_ext, sizeof with_ext, "%s.safetensors", name);
        *path = entry_path(m, with_ext);
    }
    if (!*path) {
        e->code = "model_not_found";
        srv_fail(e, 404, "model",
                 "no model '%.80s' in the models folder (GET /sdapi/v1/sd-models lists them)",
                 name);
        e->code = "model_not_found";
        return false;
    }
    return true;
}

char *srv_models_current(srv_models *m) {
    pthread_mutex_lock(&m->lock);
    char *s = strdup(m->current);
    pthread_mutex_unlock(&m->lock);
    return s;
}

bool srv_models_set_current(srv_models *m, const char *name, srv_error *e) {
    char *path, *copy;
    if (!srv_models_resolve(m, name, &path, e)) return false;
    free(path);
    if (!(copy = strdup(name))) return srv_fail(e, 500, "", "out of memory");
    pthread_mutex_lock(&m->lock);
    free(m->current);
    m->current = copy;
    pthread_mutex_unlock(&m->lock);
    return true;
}

static char *lora_key(const sd_lora *loras, int n) {
    size_t size = 1;
    for (int i = 0; i < n; i++) size += strlen(loras[i].path) + 32;
    char *s = malloc(size), *o = s;
    if (!s) return NULL;
    *o = 0;
    for (int i = 0; i < n; i++) o += sprintf(o, "%s*%.9g;", loras[i].path, (double)loras[i].scale);
    return s;
}

/* (Re)loads slot r with this LoRA set. The one place LoRAs change: once the library can swap
 * LoRAs on a loaded pipeline (sd_pipeline_set_loras), this becomes that call. */
static bool load_into(srv_models *m, resident *r, const char *path, const sd_lora *loras, int n,
                      char *key, srv_error *e) {
    if (r->p) {
        /* The model is resident with other LoRAs: re-merge only what the old or new set adapts,
         * from the files already mapped (sd_pipeline_set_loras). On error the pipeline keeps its
         * previous set, and so does the key that names it. */
        if (sd_pipeline_set_loras(r->p, loras, n) != SD_OK) {
            free(key);
            return srv_fail(e, 400, "prompt", "LoRAs for model '%s': %s", r->name, sd_last_error());
        }
        free(r->lora_key);
        r->lora_key = key;
        return true;
    }
    free(r->lora_key);
    r->lora_key = key;
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.threads = m->cfg->threads;
    /* Resident unless --low-memory: unlike gen, a server generates image after image, and
     * paging would re-read every layer and re-fault scratch per request (README, "Memory"). */
    lp.low_memory = m->cfg->low_memory;
    lp.keep_resident = !m->cfg->low_memory;
    lp.vae_tiny_dir = m->cfg->vae_tiny; /* previews only: images stay the model VAE's */
    lp.vae_tiny_previews_only = true;
    lp.loras = loras, lp.n_loras = n;
    if (sd_pipeline_load(&r->p, path, &lp) != SD_OK) {
        r->p = NULL;
        return srv_fail(e, 500, "model", "loading model '%s': %s", r->name, sd_last_error());
    }
    if (m->cfg->embeddings_dir && sd_pipeline_add_embeddings_dir(r->p, m->cfg->embeddings_dir) != SD_OK) {
        srv_fail(e, 500, "model", "embeddings for model '%s': %s", r->name, sd_last_error());
        sd_pipeline_free(r->p), r->p = NULL;
        return false;
    }
    return true;
}

sd_pipeline *srv_models_acquire(srv_models *m, const char *name, const sd_lora *loras, int n_loras,
                                double *loaded_s, srv_error *e) {
    *loaded_s = 0;
    char *key = lora_key(loras, n_loras);
    if (!key) return srv_fail(e, 500, "", "out of memory"), NULL;
    resident *r = NULL;
    for (int i = 0; i < m->n_res; i++)
        if (!strcmp(m->res[i].name, name)) r = &m->res[i];
    if (r && r->p && !strcmp(r->lora_key, key)) {
        free(key);
        r->last_used = ++m->clock;
        return r->p;
    }
    char *path;
    if (!srv_models_resolve(m, name, &path, e)) return free(key), NULL;
    if (!r) {
        if (m->n_res == m->cfg->max_models) { /* evict the least recently used */
            int lru = 0;
            for (int i = 1; i < m->n_res; i++)
                if (m->res[i].last_used < m->res[lru].last_used) lru = i;
            sd_pipeline_free(m->res[lru].p);
            free(m->res[lru].name), free(m->res[lru].lora_key);
            m->res[lru] = m->res[--m->n_res];
        }
        r = &m->res[m->n_res++];
        memset(r, 0, sizeof *r);
        r->name = strdup(name);
    }
    double t0 = now_s();
    bool ok = load_into(m, r, path, loras, n_loras, key, e);
    free(path);
    *loaded_s = now_s() - t0;
    r->last_used = ++m->clock;
    if (!ok && !r->p) { /* drop the empty slot */
        free(r->name), free(r->lora_key);
        *r = m->res[--m->n_res];
    }
    if (!ok) return NULL; /* a refused LoRA switch keeps the model resident with its old set */
    return r->p;
}
