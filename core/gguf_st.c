/* A GGUF file seen as an st_file (gguf.h's gguf_open_st): the first, simplest way to take GGUF
 * weights everywhere safetensors ones are taken. Every tensor is dequantized to float32 at open,
 * so the loaders, renamings and layouts see an fp32 release of the same weights; keeping the
 * blocks quantized in memory (dequantized inside the GEMM's packing) is the later step.
 *
 * The float32 data lives in one MAP_SHARED | MAP_ANONYMOUS mapping, not malloc: st_close
 * munmaps it like a file mapping, and st_release_pages (low-memory mode) may madvise it with
 * MADV_DONTNEED, which on a shared anonymous mapping drops only the page-table entries: the
 * pages stay in the shared-memory object and read back unchanged (a private anonymous mapping
 * would read back zeros). */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gguf_quant.h"

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

sd_status gguf_open_st(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    gguf_file g;
    SD_TRY(gguf_open(&g, path));
    sd_status st = SD_OK;
    size_t total = 0;
    for (int i = 0; i < g.n_tensors && st == SD_OK; i++) {
        const gguf_tensor *t = &g.tensors[i];
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->ne[d]; /* no overflow: nbytes fit */
        if (n > (SIZE_MAX - total) / sizeof(float))
            st = sd_set_error(SD_ERR_NOMEM, "%s: tensor '%s': too large as float32", path, t->name);
        else
            total += (size_t)n * sizeof(float);
    }
    f->path = strdup(path);
    f->tensors = calloc((size_t)g.n_tensors + 1, sizeof *f->tensors);
    if (st == SD_OK && (!f->path || !f->tensors))
        st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    if (st == SD_OK && total) {
        f->map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            st = sd_set_error(SD_ERR_NOMEM, "%s: %zu bytes for the float32 weights: out of memory",
                              path, total);
        }
        f->map_size = total;
    }
    size_t at = 0;
    for (int i = 0; i < g.n_tensors && st == SD_OK; i++) {
        const gguf_tensor *t = &g.tensors[i];
        st_tensor *s = &f->tensors[i];
        s->name = strdup(t->name);
        if (!s->name) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        f->n_tensors++;
        s->dtype = ST_F32;
        s->ndim = t->ndim;
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            s->shape[d] = t->ne[t->ndim - 1 - d]; /* torch's order: outermost first */
            n *= t->ne[d];
        }
        /* An empty tensor has no bytes in the mapping (which is NULL when every tensor is empty):
         * its data points at a static zero-length stand-in, never NULL + 0. */
        static float empty[1];
        float *out = n ? (float *)((uint8_t *)f->map + at) : empty;
        if (n) gguf_dequantize(t->type, t->data, out, n);
        s->data = out;
        s->nbytes = (size_t)n * sizeof(float);
        at += s->nbytes;
        /* The quantized pages are read once: give them back as the copy grows. */
        st_release_pages(t->data, t->nbytes);
    }
    gguf_close(&g);
    if (st == SD_OK) {
        mprotect(f->map, f->map_size, PROT_READ);
        qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    } else {
        st_close(f);
    }
    return st;
}
