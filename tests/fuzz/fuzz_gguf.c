/* GGUF files: gguf_open on the bytes as a file (header, metadata of every value type, tensor
 * infos, alignment, offsets, overlaps, duplicates), every metadata entry found by its key and
 * read as an integer and a string, every tensor dequantized (gguf_dequantize over its whole
 * extent, which ASan checks against the mapping); then the same file as an st_file (gguf_open_st,
 * what st_open hands a GGUF to) with every tensor read through st_to_f32. */
#include <stdlib.h>

#include "../../core/gguf.h"
#include "../../core/gguf_quant.h"
#include "fuzz.h"

#define MAX_VALUES (1 << 20) /* larger tensors are valid but slow to dequantize in a fuzzer */

static void read_all(const gguf_file *g) {
    for (int i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        if (gguf_find_kv(g, kv->key) != kv) abort(); /* keys are unique: each finds itself */
        int64_t v;
        char s[64];
        (void)gguf_kv_int(kv, &v);
        (void)gguf_kv_string(kv, s, sizeof s);
    }
    for (int i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        int64_t n = 1; /* a 0 dimension first: the others' product may not fit (accepted files) */
        for (int d = 0; d < t->ndim; d++) n = t->ne[d] == 0 ? 0 : n;
        for (int d = 0; n && d < t->ndim; d++) n *= t->ne[d];
        if (n > MAX_VALUES) continue;
        float *out = malloc((size_t)n * sizeof(float) + 1);
        if (!out) abort();
        gguf_dequantize(t->type, t->data, out, n);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("model.gguf", data, size);
    if (!path) return 0;
    gguf_file g;
    if (gguf_open(&g, path) != SD_OK) return 0;
    read_all(&g);
    gguf_close(&g);
    st_file f;
    if (gguf_open_st(&f, path) != SD_OK) abort(); /* gguf_open accepted it */
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (st_find(&f, t->name) != t) abort(); /* every listed name is found */
        if (st_numel(t) > MAX_VALUES) continue;
        float *out = malloc((size_t)st_numel(t) * sizeof(float) + 1);
        if (!out) abort();
        st_to_f32(t, out);
        free(out);
    }
    st_close(&f);
    return 0;
}
