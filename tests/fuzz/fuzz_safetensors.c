/* safetensors header and offsets: st_open on the bytes as a file, then every tensor read as the
 * loaders read it (st_to_f32 over its whole extent), which ASan checks against the mapping. */
#include <stdlib.h>

#include "../../core/safetensors.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("model.safetensors", data, size);
    if (!path) return 0;
    st_file f;
    if (st_open(&f, path) != SD_OK) return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (st_find(&f, t->name) == NULL) abort(); /* every listed name is found */
        if (!st_is_float(t->dtype) || st_numel(t) > (1 << 20)) continue;
        float *out = malloc((size_t)st_numel(t) * sizeof(float) + 1);
        if (!out) abort();
        st_to_f32(t, out);
        free(out);
    }
    st_close(&f);
    return 0;
}
