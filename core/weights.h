/* The weights of one pipeline component (unet/, vae/, text_encoder/, ...), as diffusers and
 * transformers save them: a single safetensors file, a sharded set described by
 * `*.safetensors.index.json`, or only an `fp16` variant of either. Tensors are looked up by name
 * across all files of the set; the mapping stays open as long as the set does. */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include "safetensors.h"

typedef struct {
    char *dir;
    int n_files;
    st_file *files;
} sd_weights;

/* Opens the weights in `dir`. `stem` is the file stem the library uses ("diffusion_pytorch_model"
 * for diffusers models, "model" for transformers ones); NULL tries both. Looks for, in order:
 * <stem>.safetensors, <stem>.safetensors.index.json, <stem>.fp16.safetensors,
 * <stem>.fp16.safetensors.index.json. */
sd_status weights_open(sd_weights *w, const char *dir, const char *stem);
void weights_close(sd_weights *w);

/* NULL when absent (no error is recorded: callers decide whether absence is an error). */
const st_tensor *weights_find(const sd_weights *w, const char *name);
/* The file holding `name` (for messages); NULL when absent. */
const char *weights_file_of(const sd_weights *w, const char *name);

/* Finds a float tensor, checks its shape (ndim < 0 skips it) and returns a malloc'd float32 copy.
 * Errors name the tensor and the folder. */
sd_status weights_read_f32(const sd_weights *w, const char *name, int ndim, const int64_t *shape,
                           float **out);

#endif
