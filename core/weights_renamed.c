/* A weights set over one safetensors file whose tensors are renamed at open (weights.h,
 * weights_open_renamed): the file's own tensor table is replaced by one under the new names, so
 * every lookup (weights_find, weights_read_f32, the layers' loads) works unchanged. */
#include <stdlib.h>
#include <string.h>

#include "weights.h"

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static sd_status keep_owned(sd_weights *w, void *buf) {
    void **grown = realloc(w->owned, (size_t)(w->n_owned + 1) * sizeof *grown);
    if (!grown) {
        free(buf);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    w->owned = grown;
    w->owned[w->n_owned++] = buf;
    return SD_OK;
}

/* The tensor `r` asks for, cut from `t`: a row slice is a view (rows are contiguous); a
 * transpose is an owned copy element by element in the stored dtype. */
static sd_status cut(sd_weights *w, const char *path, const st_tensor *t, const weights_rename *r,
                     st_tensor *out) {
    *out = *t;
    out->name = NULL;
    /* GGUF blocks run along the last dimension: rows of a matrix are whole blocks and cut as
     * bytes, but a transpose, or a cut of a vector or of rows that are not whole blocks (a
     * reshaped GGUF tensor), would split them: such a tensor is
     * dequantized into a float32 copy (exact) and cut as one. */
    const bool cuts = r->transpose || r->n_parts > 1 || r->rows > 0 || r->swap_halves;
    st_tensor widened;
    if (st_is_quantized(t->dtype) && cuts &&
        (r->transpose || t->ndim < 2 || !st_rows_whole_blocks(t))) {
        float *copy = malloc(st_numel(t) ? (size_t)st_numel(t) * sizeof *copy : 1);
        if (!copy) return sd_set_error(SD_ERR_NOMEM, "out of memory dequantizing '%s'", t->name);
        st_to_f32(t, copy);
        SD_TRY(keep_owned(w, copy));
        out->dtype = ST_F32;
        out->data = copy;
        out->nbytes = (size_t)st_numel(t) * sizeof *copy;
        widened = *out;
        widened.name = t->name;
        t = &widened;
    }
    if (r->identity) {
        const int64_t d = t->ndim ? t->shape[0] : 0;
        float *eye = calloc(d > 0 ? (size_t)(d * d) : 1, sizeof *eye);
        if (!eye) return sd_set_error(SD_ERR_NOMEM, "out of memory building '%s'", r->name);
        for (int64_t i = 0; i < d; i++) eye[i * d + i] = 1.0f;
        SD_TRY(keep_owned(w, eye));
        out->dtype = ST_F32;
        out->ndim = 2;
        out->shape[0] = out->shape[1] = d;
        out->nbytes = (size_t)(d * d) * sizeof *eye;
        out->data = eye;
        return SD_OK;
    }
    if (r->n_parts > 1) {
        if (t->ndim < 1 || t->shape[0] % r->n_parts)
            return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' (%lld rows) cannot be split in %d",
                                path, t->name, t->ndim ? (long long)t->shape[0] : 0LL, r->n_parts);
        out->shape[0] = t->shape[0] / r->n_parts;
        out->nbytes = t->nbytes / (size_t)r->n_parts;
        out->data = (const uint8_t *)t->data + out->nbytes * (size_t)r->part;
    }
    if (r->rows > 0) {
        const int64_t rows = t->ndim ? t->shape[0] : 0;
        if (r->row0 < 0 || r->row0 + r->rows > rows)
            return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has %lld rows, not the %lld its "
                                "split needs", path, t->name, (long long)rows,
                                (long long)(r->row0 + r->rows));
        const size_t row_bytes = t->nbytes / (size_t)rows;
        out->shape[0] = r->rows;
        out->nbytes = row_bytes * (size_t)r->rows;
        out->data = (const uint8_t *)t->data + row_bytes * (size_t)r->row0;
    }
    if (r->swap_halves) {
        if (out->ndim < 1 || out->shape[0] % 2)
            return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' (%lld rows) has no two halves",
                                path, t->name, out->ndim ? (long long)out->shape[0] : 0LL);
        const size_t half = out->nbytes / 2;
        uint8_t *buf = malloc(out->nbytes ? out->nbytes : 1);
        if (!buf) return sd_set_error(SD_ERR_NOMEM, "out of memory reordering '%s'", t->name);
        memcpy(buf, (const uint8_t *)out->data + half, half);
        memcpy(buf + half, out->data, half);
        SD_TRY(keep_owned(w, buf));
        out->data = buf;
    }
    if (r->transpose) {
        if (out->ndim != 2)
            return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has %d dimensions, expected 2",
                                path, t->name, out->ndim);
        const size_t es = st_dtype_size(t->dtype), rows = (size_t)out->shape[0],
                     cols = (size_t)out->shape[1];
        uint8_t *buf = malloc(out->nbytes ? out->nbytes : 1);
        if (!buf) return sd_set_error(SD_ERR_NOMEM, "out of memory transposing '%s'", t->name);
        const uint8_t *src = out->data;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) memcpy(buf + (j * rows + i) * es, src + (i * cols + j) * es, es);
        SD_TRY(keep_owned(w, buf));
        out->data = buf;
        out->shape[0] = (int64_t)cols;
        out->shape[1] = (int64_t)rows;
    }
    return SD_OK;
}

static sd_status build(sd_weights *w, st_file *f, weights_rename_fn fn, void *ctx) {
    int n = 0, cap = f->n_tensors + 8;
    st_tensor *next = calloc((size_t)cap, sizeof *next);
    if (!next) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = SD_OK;
    for (int i = 0; i < f->n_tensors && st == SD_OK; i++) {
        weights_rename r[WEIGHTS_RENAME_MAX];
        memset(r, 0, sizeof r);
        const int k = fn(ctx, f->tensors[i].name, r);
        if (k < 0) st = SD_ERR_FORMAT; /* fn recorded the message */
        for (int j = 0; j < k && st == SD_OK; j++) {
            if (n == cap) {
                st_tensor *grown = realloc(next, (size_t)(cap *= 2) * sizeof *grown);
                if (!grown) { st = sd_set_error(SD_ERR_NOMEM, "out of memory"); break; }
                next = grown;
            }
            st = cut(w, f->path, &f->tensors[i], &r[j], &next[n]);
            if (st == SD_OK && !(next[n].name = strdup(r[j].name)))
                st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            if (st == SD_OK) n++;
        }
    }
    if (st == SD_OK) qsort(next, (size_t)n, sizeof *next, cmp_name);
    for (int i = 1; i < n && st == SD_OK; i++)
        if (!strcmp(next[i].name, next[i - 1].name))
            st = sd_set_error(SD_ERR_FORMAT, "%s: two tensors map to '%s'", f->path, next[i].name);
    if (st != SD_OK) {
        for (int i = 0; i < n; i++) free(next[i].name);
        free(next);
        return st;
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    f->tensors = next;
    f->n_tensors = n;
    return SD_OK;
}

sd_status weights_open_renamed(sd_weights *w, const char *path, const char *label,
                               weights_rename_fn fn, void *ctx, const weights_policy *policy) {
    memset(w, 0, sizeof *w);
    if (policy) w->policy = *policy;
    w->policy.source = NULL; /* the set is open: nothing further to redirect */
    w->dir = strdup(label ? label : path);
    w->files = calloc(1, sizeof *w->files);
    if (!w->dir || !w->files) {
        weights_close(w);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    sd_status st = st_open(&w->files[0], path);
    if (st == SD_OK) {
        w->n_files = 1;
        st = build(w, &w->files[0], fn, ctx);
    }
    if (st == SD_OK && label) { /* messages name the file through its st_file path */
        char *named = strdup(label);
        if (!named) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        else free(w->files[0].path), w->files[0].path = named;
    }
    if (st != SD_OK) weights_close(w);
    return st;
}
