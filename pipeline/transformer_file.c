/* sd_load_params.transformer_file: a FLUX.1 folder whose transformer weights come from one file
 * instead (convert/bfl_flux.h: Black Forest Labs' flux1-dev.safetensors as released, or a
 * diffusers-layout file), as diffusers' FluxTransformer2DModel.from_single_file with the
 * folder's config. Everything else (config, text encoders, VAE, scheduler) is the folder's.
 * Or the BFL file is the model itself (gen -m flux1-dev.safetensors, as stable-diffusion.cpp and
 * ComfyUI run it): the folder is then the bundled configs/flux1-dev or flux1-schnell and the
 * weights the file lacks come from --vae / --text-encoder / --text-encoder-2 files (ae,
 * clip_l, t5xxl) or --config's folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../convert/bfl_flux.h"
#include "../core/fileutil.h"
#include "../core/log.h"
#include "pipeline_internal.h"

sd_status pl_transformer_file_route(sd_pipeline *p) {
    const char *path = p->load.transformer_file;
    if (!path || p->mi.family == SD_FAMILY_FLUX) return SD_OK;
    /* SD3's denoiser is a transformer too: its file (diffusers names or Stability's MMDiT
     * layout) is read as any other component file, through unet_file's path. */
    if (!model_index_get(&p->mi, "transformer"))
        return sd_set_error(SD_ERR_ARG, "%s: transformer_file (--transformer): %s is a %s, whose "
                            "denoiser is a UNet (its file: --unet FILE, sd_load_params.unet_file)",
                            path, p->mi.dir, p->mi.class_name);
    if (p->load.unet_file && strcmp(p->load.unet_file, path))
        return sd_set_error(SD_ERR_ARG, "transformer_file (--transformer) %s and unet_file (--unet) "
                            "%s both name the denoiser of %s: pass one of them", path,
                            p->load.unet_file, p->mi.dir);
    p->load.unet_file = path;
    p->load.transformer_file = NULL;
    return SD_OK;
}

sd_status pl_transformer_file_open(sd_pipeline *p) {
    const char *path = p->load.transformer_file;
    if (!path) return SD_OK;
    if (p->mi.family != SD_FAMILY_FLUX || !model_index_get(&p->mi, "transformer"))
        return sd_set_error(SD_ERR_ARG, "%s: a FLUX.1 transformer file, but %s is a %s", path,
                            p->mi.dir, p->mi.class_name);
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
    if (!p->flux_file_only) return SD_OK;
    /* What gen prints for a single file (sd_pipeline_checkpoint_info). */
    p->ckpt_info = sd_strfmt("FLUX.1 [%s] (%s), %d double and %d single blocks, %.1fM "
                             "transformer parameters, %s, configs from %s",
                             f->has_guidance ? "dev" : "schnell",
                             f->has_guidance ? "guidance_in.* present" : "no guidance_in.*",
                             f->n_double, f->n_single, (double)f->params / 1e6, f->dtype,
                             p->mi.dir);
    if (!p->ckpt_info) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    SD_TRY(pl_single_note_replaced(p));
    sd_log(SD_LOG_INFO, "%s: %s", path, p->ckpt_info);
    return SD_OK;
}

sd_status pl_flux_file_open(sd_pipeline *p, const char *path, bool dev, char **config_dir) {
    *config_dir = NULL;
    if (p->load.transformer_file && strcmp(p->load.transformer_file, path))
        return sd_set_error(SD_ERR_ARG, "%s is a FLUX.1 transformer file, and transformer_file "
                            "(--transformer) names another, %s: pass one of them",
                            path, p->load.transformer_file);
    p->load.transformer_file = path;
    p->flux_file_only = true;
    return pl_single_configs(p, path, dev ? "FLUX.1 [dev]" : "FLUX.1 [schnell]",
                             dev ? "flux1-dev" : "flux1-schnell", config_dir);
}

sd_status pl_flux_file_check(sd_pipeline *p) {
    static const struct {
        const char *component, *option;
    } parts[] = {
        {"vae", "--vae FILE (vae_file; e.g. ae.safetensors)"},
        {"text_encoder", "--text-encoder FILE (text_encoder_file; e.g. clip_l.safetensors)"},
        {"text_encoder_2", "--text-encoder-2 FILE (text_encoder_2_file; e.g. "
                           "t5xxl_fp16.safetensors)"},
    };
    char missing[512] = "";
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        if (!model_index_get(&p->mi, parts[i].component) ||
            pl_component_file_source(p, parts[i].component))
            continue;
        if (p->load.config_dir) {
            sd_log(SD_LOG_INFO, "%s: %s weights from %s", p->load.transformer_file,
                   parts[i].component, p->mi.dir);
            continue;
        }
        const size_t n = strlen(missing);
        snprintf(missing + n, sizeof missing - n, "%s%s", n ? ", " : "", parts[i].option);
    }
    if (!*missing) return SD_OK;
    return sd_set_error(SD_ERR_ARG, "%s: a FLUX.1 transformer alone; the VAE and text encoders "
                        "must come from files of their own: pass %s (or --config DIR, "
                        "config_dir, of a FLUX.1 diffusers folder that has them)",
                        p->load.transformer_file, missing);
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
