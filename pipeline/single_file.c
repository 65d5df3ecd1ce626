/* Loading a pipeline from one original-layout .safetensors checkpoint (SD 1.x, 2.x, SDXL, SD3; a
 * FLUX.1 transformer file alone goes on to pipeline/transformer_file.c): the file gives the
 * weights (convert/ldm_source.h renames them to diffusers' names for the unchanged loaders), a
 * diffusers folder gives everything else: model_index.json, the component configs,
 * the scheduler config and the tokenizers. That folder is one of the configs bundled with the
 * program (configs/, picked by what was detected; pipeline/configs_dir.c finds it) or the
 * caller's (sd_load_params.config_dir). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../convert/bfl_flux.h"
#include "../convert/component_file.h"
#include "../convert/ldm_source.h"
#include "../core/fileutil.h"
#include "../core/log.h"
#include "pipeline_internal.h"

static const char *bundled_name(const ldm_checkpoint *c, bool v) {
    switch (c->family) {
    case LDM_SD1: return "sd15";
    case LDM_SD2: return v ? "sd21" : "sd21-base"; /* 768 v-prediction vs 512 epsilon */
    case LDM_SDXL: return "sdxl";
    case LDM_SDXL_REFINER: return "sdxl-refiner";
    case LDM_SD3: return "sd3-medium";
    case LDM_SD35_MEDIUM: return "sd35-medium";
    case LDM_SD35_LARGE: return "sd35-large";
    }
    return "?";
}

/* An SD3 file against its folder's transformer config (the tensors decide), and what it holds. */
static sd_status sd3_info(sd_pipeline *p, const char *path, const char *config_dir) {
    const ldm_checkpoint *c = p->ckpt;
    char *json = sd_strfmt("%s/transformer/config.json", config_dir);
    if (!json) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const sd_status st = ldm_checkpoint_check_sd3(c, json);
    free(json);
    SD_TRY(st);
    p->ckpt_info = sd_strfmt("%s, %d joint blocks, %.1fM transformer parameters, %s, configs from "
                             "%s", ldm_family_name(c->family), c->sd3_layers,
                             (double)c->unet_params / 1e6, c->unet_dtype, config_dir);
    if (!p->ckpt_info) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_log(SD_LOG_INFO, "%s: %s", path, p->ckpt_info);
    return SD_OK;
}

sd_status pl_single_configs(const sd_pipeline *p, const char *path, const char *family,
                            const char *bundled, char **config_dir) {
    *config_dir = NULL;
    if (p->load.config_dir) {
        *config_dir = strdup(p->load.config_dir);
        return *config_dir ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    const char *root = sd_configs_dir(); /* sd_set_configs_dir's, installed, built */
    if (!root)
        return sd_set_error(SD_ERR_IO, "%s: %s detected but no bundled configs folder was found "
                            "(sd_set_configs_dir, gen's $SD_CONFIGS_DIR, or "
                            "<prefix>/share/sd/configs): pass --config DIR", path, family);
    *config_dir = sd_path_join(root, bundled);
    if (!*config_dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (sd_dir_exists(*config_dir)) return SD_OK;
    const sd_status st = sd_set_error(SD_ERR_IO, "%s: %s detected but its bundled configs (%s) "
                                      "are missing: pass --config DIR", path, family, *config_dir);
    free(*config_dir);
    *config_dir = NULL;
    return st;
}

sd_status pl_single_open(sd_pipeline *p, const char *path, char **config_dir) {
    *config_dir = NULL;
    if (!path && p->load.transformer_file) {
        /* No model: a FLUX.1 transformer file is one by itself. */
        path = p->load.transformer_file;
        bfl_flux_probe flux;
        bfl_flux_probe_file(path, &flux);
        if (!flux.flux)
            return sd_set_error(SD_ERR_ARG, "%s: no model folder given, and this transformer "
                                "file is not a FLUX.1 transformer in Black Forest Labs' layout "
                                "(no double_blocks.*)", path);
        return pl_flux_file_open(p, path, flux.dev, config_dir);
    }
    if (sd_dir_exists(path) || !sd_file_exists(path)) return SD_OK; /* a folder (or an error later) */
    /* A FLUX.1 transformer in Black Forest Labs' layout is not an LDM checkpoint: its own path. */
    bfl_flux_probe flux;
    bfl_flux_probe_file(path, &flux);
    if (flux.flux) return pl_flux_file_open(p, path, flux.dev, config_dir);
    ldm_checkpoint *c = calloc(1, sizeof *c);
    if (!c) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = ldm_checkpoint_open(c, path);
    if (st != SD_OK) {
        free(c);
        return st;
    }
    p->ckpt = c;
    const sd_prediction asked = p->load.prediction;
    /* SD 2.x files cannot say (diffusers' from_single_file takes the 768 v model for "v2"); its
     * inpainting model (stable-diffusion-2-inpainting) is the 512 epsilon one. */
    const bool inpaint = !ldm_family_is_sd3(c->family) && c->in_channels == 9;
    const bool v = asked == SD_PREDICTION_V ||
                   (asked == SD_PREDICTION_AUTO && (c->v_pred || (c->family == LDM_SD2 && !inpaint)));
    /* An inpainting UNet (9 channels: latents, mask, masked image) takes its family's config
     * with the file's in_channels (pl_unet_load); other widths are unknown. */
    if (!p->load.config_dir && !ldm_family_is_sd3(c->family) && c->in_channels != 4 && !inpaint)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a %d-channel %s UNet; no config for it is "
                            "bundled: pass --config DIR (sd_load_params.config_dir) of its "
                            "diffusers folder", path, c->in_channels, ldm_family_name(c->family));
    SD_TRY(pl_single_configs(p, path, ldm_family_name(c->family), bundled_name(c, v), config_dir));
    if (ldm_family_is_sd3(c->family)) return sd3_info(p, path, *config_dir);
    const char *pred = asked == SD_PREDICTION_AUTO && !c->v_pred && p->load.config_dir
                           ? "prediction as its scheduler config says" : v ? "v-prediction" : "epsilon";
    p->ckpt_info = sd_strfmt("%s%s, %s, %.1fM UNet parameters, %s, configs from %s",
                             ldm_family_name(c->family), inpaint ? " inpainting (9-channel UNet)" : "",
                             pred, (double)c->unet_params / 1e6,
                             c->unet_dtype, *config_dir);
    if (!p->ckpt_info) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_log(SD_LOG_INFO, "%s: %s", path, p->ckpt_info);
    return SD_OK;
}

/* A file without T5 (sd3_medium_incl_clips.safetensors) runs as diffusers' from_single_file with
 * text_encoder_3=None: the T5 part of the prompt embedding is zeros. Only with the bundled
 * configs; a --config folder's own T5 weights are used as for any other missing component. */
static void drop_t5(sd_pipeline *p) {
    for (int i = 0; i < p->mi.n; i++)
        if (!strcmp(p->mi.comps[i].name, "text_encoder_3") || !strcmp(p->mi.comps[i].name, "tokenizer_3"))
            p->mi.comps[i].present = false;
    sd_log(SD_LOG_INFO, "%s: no T5 (text_encoders.t5xxl.*) in the file and no --text-encoder-3: "
           "running without it (its embeddings are zeros)", p->ckpt->path);
}

sd_status pl_single_note_replaced(sd_pipeline *p) {
    for (int i = 0; i < PL_N_COMPONENT_FILES; i++) {
        const struct component_file_ *f = p->comp_files[i];
        if (!f) continue;
        char *info = sd_strfmt("%s; %s from %s", p->ckpt_info, f->part.component, f->path);
        if (!info) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        free(p->ckpt_info);
        p->ckpt_info = info;
    }
    return SD_OK;
}

sd_status pl_single_check(sd_pipeline *p) {
    if (p->flux_file_only) return pl_flux_file_check(p);
    if (!p->ckpt) return SD_OK;
    static const char *const weighted[] = {"unet", "transformer", "vae", "text_encoder",
                                           "text_encoder_2", "text_encoder_3"};
    for (size_t i = 0; i < sizeof weighted / sizeof *weighted; i++) {
        if (!model_index_get(&p->mi, weighted[i]) || pl_single_source(p, weighted[i])) continue;
        if (!p->load.config_dir && !strcmp(weighted[i], "text_encoder_3")) {
            drop_t5(p);
            continue;
        }
        if (!p->load.config_dir)
            return sd_set_error(SD_ERR_FORMAT, "%s: the %s checkpoint has no %s weights; pass "
                                "--config DIR of a diffusers folder that has them", p->ckpt->path,
                                ldm_family_name(p->ckpt->family), weighted[i]);
        sd_log(SD_LOG_INFO, "%s: %s weights from %s", p->ckpt->path, weighted[i], p->mi.dir);
    }
    /* A T5 (in the file or --text-encoder-3) needs no --config: the bundled SD3 folders'
     * tokenizer_3 links to configs/t5-tokenizer. */
    return pl_single_note_replaced(p);
}

const weights_source *pl_single_source(const sd_pipeline *p, const char *name) {
    /* Files of their own first (--vae FILE, ..., FLUX's --transformer FILE), then the checkpoint. */
    const weights_source *file = pl_component_file_source(p, name);
    if (!file) file = pl_transformer_file_source(p, name);
    if (file) return file;
    return p->ckpt ? ldm_checkpoint_source(p->ckpt, name) : NULL;
}

sd_status pl_apply_prediction(sd_pipeline *p) {
    sd_prediction pred = p->load.prediction;
    if (pred == SD_PREDICTION_AUTO && p->ckpt && p->ckpt->v_pred) pred = SD_PREDICTION_V;
    if (pred == SD_PREDICTION_AUTO) return SD_OK;
    if (pred != SD_PREDICTION_EPSILON && pred != SD_PREDICTION_V)
        return sd_set_error(SD_ERR_ARG, "prediction %d is not one of auto, epsilon, v", (int)pred);
    cJSON *s = cJSON_CreateString(pred == SD_PREDICTION_V ? "v_prediction" : "epsilon");
    if (!s) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (cJSON_HasObjectItem(p->scheduler_config, "prediction_type"))
        cJSON_ReplaceItemInObjectCaseSensitive(p->scheduler_config, "prediction_type", s);
    else
        cJSON_AddItemToObject(p->scheduler_config, "prediction_type", s);
    return SD_OK;
}

sd_status pl_unet_load(sd_pipeline *p, const char *dir, const weights_policy *policy) {
    unet_config cfg;
    SD_TRY(unet_config_read(&cfg, dir));
    const ldm_checkpoint *c = p->ckpt;
    if (c && !ldm_family_is_sd3(c->family) && c->in_channels > 0 &&
        c->in_channels != cfg.in_channels && !pl_component_file_source(p, "unet")) {
        sd_log(SD_LOG_INFO, "%s: a %d-channel UNet (input_blocks.0.0.weight); %s/config.json says "
               "in_channels %d: the file's is used", c->path, c->in_channels, dir, cfg.in_channels);
        cfg.in_channels = c->in_channels;
    }
    return unet_load_with_config(&p->unet, &cfg, dir, policy);
}

void pl_single_free(sd_pipeline *p) {
    if (p->ckpt) ldm_checkpoint_close(p->ckpt);
    free(p->ckpt);
    free(p->ckpt_info);
    p->ckpt = NULL;
    p->ckpt_info = NULL;
}

const char *sd_pipeline_checkpoint_info(const sd_pipeline *p) { return p->ckpt_info; }
