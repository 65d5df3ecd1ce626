/* A GGUF file seen as an st_file (gguf.h's gguf_open_st), so that GGUF weights are taken
 * everywhere safetensors ones are. Every tensor stays where the file has it, in the file's
 * mapping, as its own dtype: F32, F16, BF16, or one of ggml's block types (ST_Q8_0, ST_Q4_K,
 * ...). The Linear layers multiply by the blocks directly (dequantized per panel while the GEMM
 * packs them, nn/layers.h); everything read through st_to_f32 (norms, biases, convolutions,
 * embeddings, LoRA targets, --weights-dtype conversions) is dequantized there, tensor by tensor,
 * with the same arithmetic. A file mapping, so --low-memory gives its pages back and later reads
 * fault them in again from the page cache, as for a safetensors file. */
#include "gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_quant.h"

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* city96's reshaped tensors: `comfy.gguf.orig_shape.<name>` gives <name> its shape back (1 to
 * ST_MAX_DIMS positive integers whose product is the stored tensor's element count). A key
 * naming no tensor is ignored, as ComfyUI-GGUF's loader ignores it. */
static sd_status apply_orig_shape(st_file *f, const char *path, const gguf_kv *kv) {
    static const char prefix[] = "comfy.gguf.orig_shape.";
    if (strncmp(kv->key, prefix, sizeof prefix - 1)) return SD_OK;
    const char *name = kv->key + sizeof prefix - 1;
    st_tensor *t = (st_tensor *)st_find(f, name);
    if (!t) return SD_OK;
    int64_t shape[ST_MAX_DIMS], n = 1;
    bool ok = kv->type == GGUF_VAL_ARRAY && kv->n >= 1 && kv->n <= ST_MAX_DIMS;
    for (uint64_t d = 0; ok && d < kv->n; d++) {
        ok = gguf_kv_int_at(kv, d, &shape[d]) && shape[d] > 0 && shape[d] <= INT64_MAX / n;
        if (ok) n *= shape[d];
    }
    if (!ok)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': metadata '%s' is not an array of 1 "
                            "to %d positive integers", path, name, kv->key, ST_MAX_DIMS);
    if (n != st_numel(t))
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': metadata '%s' gives %lld values, "
                            "the tensor holds %lld", path, name, kv->key, (long long)n,
                            (long long)st_numel(t));
    t->ndim = (int)kv->n;
    memcpy(t->shape, shape, sizeof shape[0] * kv->n);
    return SD_OK;
}

sd_status gguf_open_st(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    gguf_file g;
    SD_TRY(gguf_open(&g, path));
    sd_status st = SD_OK;
    f->path = strdup(path);
    f->tensors = calloc((size_t)g.n_tensors + 1, sizeof *f->tensors);
    if (!f->path || !f->tensors) st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < g.n_tensors && st == SD_OK; i++) {
        const gguf_tensor *t = &g.tensors[i];
        st_tensor *s = &f->tensors[i];
        s->name = strdup(t->name);
        if (!s->name) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        f->n_tensors++;
        if (!gguf_st_dtype(t->type, &s->dtype)) /* gguf_open refuses what it cannot read */
            st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: tensor '%s': type %u not read", path,
                              t->name, (unsigned)t->type);
        s->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            s->shape[d] = t->ne[t->ndim - 1 - d]; /* torch's order: outermost first */
        s->data = t->data;
        s->nbytes = t->nbytes;
    }
    if (st == SD_OK) qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    for (int i = 0; i < g.n_kv && st == SD_OK; i++)
        st = apply_orig_shape(f, path, &g.kv[i]);
    if (st == SD_OK) {
        /* The st_file owns the mapping from here on. */
        f->map = g.map;
        f->map_size = g.map_size;
        g.map = NULL;
    }
    gguf_close(&g);
    if (st != SD_OK) st_close(f);
    return st;
}
