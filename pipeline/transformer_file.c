/* sd_load_params.transformer_file: a FLUX.1 folder whose transformer weights come from one file
 * instead (convert/bfl_flux.h: Black Forest Labs' flux1-dev.safetensors as released, or a
 * diffusers-layout file), as diffusers' FluxTransformer2DModel.from_single_file with the
 * folder's config. Everything else (config, text encoders, VAE, scheduler) is the folder's. */
#include <stdlib.h>
#include <string.h>

#include "../convert/bfl_flux.h"
#include "../core/fileutil.h"
#include "../core/log.h"
#include "pipeline_internal.h"

sd_status pl_transformer_file_open(sd_pipeline *p) {
    const char *path = p->load.transformer_file;
    if (!path) return SD_OK;
    if (p->mi.family != SD_FAMILY_FLUX || !model_index_get(&p->mi, "transformer"))
        return sd_set_error(SD_ERR_ARG, "%s: a transformer file is for FLUX.1 folders; %s is a "
                            "%s (another denoiser's file: --unet FILE, sd_load_params.unet_file)",
                            path, p->mi.dir, p->mi.class_name);
    if (!sd_file_exists(path)) return sd_set_error(SD_ERR_IO, "%s: no such file", path);
    char *dir = pl_component_dir(p, "transformer");
    char *config = dir ? sd_path_join(dir, "config.json") : NULL;
    free(dir);
    if (!config) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    bfl_flux_file *f = calloc(1, sizeof *f);
    sd_status st = f ? bfl_flux_open(f, path, config) : sd_set_error(SD_ERR_NOMEM, "out of memory");
    free(config);
    if (st != SD_OK) {
        free(f);
        return st;
    }
    p->transformer_file = f;
    sd_log(SD_LOG_INFO, "%s: FLUX.1 transformer in %s layout%s, %.1fM parameters, %s", path,
           f->bfl ? "Black Forest Labs'" : "diffusers'",
           f->prefix[0] ? " (under model.diffusion_model.)" : "", (double)f->params / 1e6,
           f->dtype);
    return SD_OK;
}

const struct weights_source *pl_transformer_file_source(const sd_pipeline *p, const char *name) {
    return p->transformer_file && !strcmp(name, "transformer")
               ? bfl_flux_source(p->transformer_file) : NULL;
}

void pl_transformer_file_free(sd_pipeline *p) {
    if (p->transformer_file) bfl_flux_close(p->transformer_file);
    free(p->transformer_file);
    p->transformer_file = NULL;
}
