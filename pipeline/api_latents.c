/* Latents files: one NCHW float tensor in a safetensors file, as `gen --save-latents` writes and
 * `vae-check --latents` reads them (and diffusers' safetensors.torch.save_file / load_file). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/safetensors.h"

/* Sanity limits for a file's shape: a batch and sides no pipeline produces are a wrong tensor. */
enum { MAX_BATCH = 64, MAX_SIDE = 8192, MAX_CHANNELS = 1024 };

static sd_status check_tensor(const char *path, const char *name, const st_tensor *t) {
    if (!st_is_float(t->dtype))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' is %s, not a float tensor", path, name,
                            st_dtype_name(t->dtype));
    if (t->ndim != 4 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1 || t->shape[3] < 1 ||
        t->shape[0] > MAX_BATCH || t->shape[1] > MAX_CHANNELS || t->shape[2] > MAX_SIDE ||
        t->shape[3] > MAX_SIDE)
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' should be NCHW latents "
                            "[batch][channels][h][w] (batch up to %d, sides up to %d), not of %d "
                            "dimensions", path, name, MAX_BATCH, MAX_SIDE, t->ndim);
    return SD_OK;
}

static sd_status no_such_tensor(const st_file *f, const char *path, const char *name) {
    char list[512] = "";
    for (int i = 0; i < f->n_tensors && strlen(list) < 400; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", i ? ", " : "",
                 f->tensors[i].name);
    return sd_set_error(SD_ERR_TENSOR, "%s: no tensor '%s' (it has %s)", path, name,
                        f->n_tensors ? list : "none");
}

sd_status sd_latents_read(const char *path, const char *tensor, sd_latents *out) {
    memset(out, 0, sizeof *out);
    const char *name = tensor ? tensor : "latents";
    st_file f;
    SD_TRY(st_open(&f, path));
    const st_tensor *t = st_find(&f, name);
    sd_status st = t ? check_tensor(path, name, t) : no_such_tensor(&f, path, name);
    if (st == SD_OK) {
        out->data = malloc((size_t)st_numel(t) * sizeof *out->data);
        if (!out->data) {
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory for tensor '%s'", path, name);
        } else {
            st_to_f32(t, out->data);
            out->n = (int)t->shape[0], out->c = (int)t->shape[1];
            out->h = (int)t->shape[2], out->w = (int)t->shape[3];
        }
    }
    st_close(&f);
    return st;
}

sd_status sd_latents_write(const char *path, const sd_latents *l) {
    if (!l->data || l->n < 1 || l->c < 1 || l->h < 1 || l->w < 1)
        return sd_set_error(SD_ERR_ARG, "%s: latents of shape [%d][%d][%d][%d] (empty)", path, l->n,
                            l->c, l->h, l->w);
    const st_entry e = {"latents", ST_F32, 4, {l->n, l->c, l->h, l->w}, l->data};
    /* "format": "pt" is what safetensors.torch writes; readers that check it accept the file. */
    const char *const meta[2] = {"format", "pt"};
    return st_write(path, &e, 1, meta, 1);
}

void sd_latents_free(sd_latents *l) {
    free(l->data);
    memset(l, 0, sizeof *l);
}
