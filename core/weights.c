#include "weights.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fileutil.h"

static sd_status add_file(sd_weights *w, const char *path) {
    st_file *grown = realloc(w->files, (size_t)(w->n_files + 1) * sizeof *grown);
    if (!grown) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    w->files = grown;
    SD_TRY(st_open(&w->files[w->n_files], path));
    w->n_files++;
    return SD_OK;
}

/* A sharded checkpoint: {"weight_map": {"tensor": "shard file", ...}}; opens each shard once. */
static sd_status open_index(sd_weights *w, const char *index_path) {
    sd_cfg c;
    SD_TRY(cfg_open(&c, index_path));
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(c.root, "weight_map");
    sd_status st = SD_OK;
    if (!cJSON_IsObject(map))
        st = sd_set_error(SD_ERR_FORMAT, "%s: missing object 'weight_map'", index_path);
    for (const cJSON *it = map ? map->child : NULL; it && st == SD_OK; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
            st = sd_set_error(SD_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name",
                              index_path, it->string);
            break;
        }
        int seen = 0;
        for (const cJSON *prev = map->child; prev != it && !seen; prev = prev->next)
            seen = !strcmp(prev->valuestring, it->valuestring);
        if (seen) continue;
        char *path = sd_path_join(w->dir, it->valuestring);
        st = path ? add_file(w, path) : sd_set_error(SD_ERR_NOMEM, "out of memory");
        free(path);
    }
    /* Every tensor the index names must be in the shard it names: a mismatch means a broken set. */
    for (const cJSON *it = map ? map->child : NULL; it && st == SD_OK; it = it->next) {
        const char *file = weights_file_of(w, it->string);
        if (!file)
            st = sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' is listed but absent from %s",
                              index_path, it->string, it->valuestring);
    }
    cfg_close(&c);
    return st;
}

sd_status weights_convert_16(const st_tensor *t, st_dtype to, const char *name, uint16_t **out) {
    *out = NULL;
    const size_t n = (size_t)st_numel(t);
    if ((to != ST_F16 && to != ST_BF16) || !st_is_float(t->dtype))
        return sd_set_error(SD_ERR_TENSOR, "tensor '%s': cannot convert %s to %s", name,
                            st_dtype_name(t->dtype), st_dtype_name(to));
    uint16_t *dst = malloc(n ? n * sizeof *dst : 1);
    if (!dst) return sd_set_error(SD_ERR_NOMEM, "out of memory converting tensor '%s'", name);
    /* Through float32 a row at a time: widening is exact, so the only rounding is the final one. */
    enum { ROW = 4096 };
    float buf[ROW];
    for (size_t i = 0; i < n; i += ROW) {
        const size_t len = n - i < ROW ? n - i : ROW;
        st_tensor part = *t;
        part.ndim = 1;
        part.shape[0] = (int64_t)len;
        part.nbytes = st_dtype_bytes(t->dtype, (int64_t)len); /* ROW: whole GGUF blocks */
        part.data = (const uint8_t *)t->data + st_dtype_bytes(t->dtype, (int64_t)i);
        st_to_f32(&part, buf);
        for (size_t j = 0; j < len; j++)
            dst[i + j] = to == ST_F16 ? st_f32_to_f16(buf[j]) : st_f32_to_bf16(buf[j]);
    }
    *out = dst;
    return SD_OK;
}

void weights_release(const sd_weights *w) {
    /* The whole mapping is the set's own, so its partial last page goes too (st_release_pages
     * keeps the partial pages at a range's ends, which a tensor may share with its neighbours). */
    const long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < w->n_files; i++) {
        const size_t n = w->files[i].map_size;
        st_release_pages(w->files[i].map, page > 0 ? (n + (size_t)page - 1) / page * page : n);
    }
}

void weights_round_f32(const sd_weights *w, st_dtype stored, float *x, size_t n) {
    if (!w->keep_stored) return; /* a model outside the scheme keeps its numbers */
    if (w->policy.dtype == WEIGHTS_TO_F16 ||
        (weights_dtype_quantizes(w->policy.dtype) && (stored == ST_F32 || stored == ST_F64)))
        for (size_t i = 0; i < n; i++) x[i] = st_f16_to_f32(st_f32_to_f16(x[i]));
    else if (w->policy.dtype == WEIGHTS_TO_BF16)
        for (size_t i = 0; i < n; i++) x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i]));
}

sd_status weights_open(sd_weights *w, const char *dir, const char *stem,
                       const weights_policy *policy) {
    if (policy && policy->source) return policy->source->open(w, policy->source, policy);
    memset(w, 0, sizeof *w);
    if (policy) w->policy = *policy;
    if (!sd_dir_exists(dir)) return sd_set_error(SD_ERR_IO, "%s: no such folder", dir);
    w->dir = strdup(dir);
    if (!w->dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const char *stems[2] = {stem ? stem : "diffusion_pytorch_model", stem ? NULL : "model"};
    static const char *const suffixes[] = {".safetensors", ".safetensors.index.json",
                                           ".fp16.safetensors", ".fp16.safetensors.index.json"};
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 2 && stems[k]; k++) {
            char *name = sd_strfmt("%s%s", stems[k], suffixes[s]);
            char *path = name ? sd_path_join(dir, name) : NULL;
            free(name);
            if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
            sd_status st = SD_ERR_IO;
            int found = sd_file_exists(path);
            if (found) st = (s & 1) ? open_index(w, path) : add_file(w, path);
            free(path);
            if (!found) continue;
            if (st != SD_OK) weights_close(w);
            return st;
        }
    char *bin = sd_path_join(dir, stems[0]);
    char *bin_path = bin ? sd_strfmt("%s.bin", bin) : NULL;
    int has_bin = bin_path && sd_file_exists(bin_path);
    free(bin);
    free(bin_path);
    sd_status st = sd_set_error(has_bin ? SD_ERR_UNSUPPORTED : SD_ERR_IO,
                                "%s: no %s%s.safetensors (or its .index.json / fp16 variant)%s", dir,
                                stems[0], stems[1] ? " or model" : "",
                                has_bin ? "; pickled .bin weights are not supported, convert them "
                                          "to safetensors" : "");
    weights_close(w);
    return st;
}

void weights_close(sd_weights *w) {
    for (int i = 0; i < w->n_files; i++) st_close(&w->files[i]);
    free(w->files);
    free(w->dir);
    for (int i = 0; i < w->n_owned; i++) free(w->owned[i]);
    free(w->owned);
    memset(w, 0, sizeof *w);
}

bool weights_releasable(const sd_weights *w, const st_tensor *t) {
    const uint8_t *d = t->data;
    for (int i = 0; i < w->n_owned; i++)
        if (d == w->owned[i]) return false; /* owned copies start their buffer */
    return true;
}

void weights_release_tensor(const sd_weights *w, const st_tensor *t) {
    if (weights_releasable(w, t)) st_release_pages(t->data, t->nbytes);
}

const st_tensor *weights_find(const sd_weights *w, const char *name) {
    for (int i = 0; i < w->n_files; i++) {
        const st_tensor *t = st_find(&w->files[i], name);
        if (t) return t;
    }
    return NULL;
}

const char *weights_file_of(const sd_weights *w, const char *name) {
    for (int i = 0; i < w->n_files; i++)
        if (st_find(&w->files[i], name)) return w->files[i].path;
    return NULL;
}

sd_status weights_read_f32(const sd_weights *w, const char *name, int ndim, const int64_t *shape,
                           float **out) {
    *out = NULL;
    for (int i = 0; i < w->n_files; i++) {
        const st_tensor *t = st_find(&w->files[i], name);
        if (!t) continue;
        sd_status st = st_read_f32(&w->files[i], name, ndim, shape, out);
        if (st == SD_OK && w->policy.lora)
            st = lora_set_apply(w->policy.lora, w->policy.lora_component, name, t,
                                w->files[i].path, *out);
        if (st != SD_OK) {
            free(*out);
            *out = NULL;
        }
        if (st == SD_OK) weights_round_f32(w, t->dtype, *out, (size_t)st_numel(t));
        /* The copy is what the model uses: keep one copy resident, not two. */
        weights_release_tensor(w, t);
        return st;
    }
    return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' not found", w->dir, name);
}
