/* Components' weights from files of their own (sd_load_params.vae_file, unet_file, ...; gen
 * --vae, --unet, ...), over a folder or a single checkpoint: each file is opened and its layout
 * detected once at load (convert/component_file.h); the component's loader then reads it through
 * pl_load_policy's source instead of the folder, with the folder's config. */
#include <stdlib.h>
#include <string.h>

#include "../convert/component_file.h"
#include "pipeline_internal.h"

/* The component a file replaces: unet_file is whichever denoiser the pipeline has. */
static const char *component_of(const sd_pipeline *p, int i) {
    static const char *const names[PL_N_COMPONENT_FILES] = {"vae", "unet", "text_encoder",
                                                            "text_encoder_2"};
    if (i == 1 && !model_index_get(&p->mi, "unet") && model_index_get(&p->mi, "transformer"))
        return "transformer";
    return names[i];
}

sd_status pl_component_files_open(sd_pipeline *p) {
    const char *const files[PL_N_COMPONENT_FILES] = {p->load.vae_file, p->load.unet_file,
                                                     p->load.text_encoder_file,
                                                     p->load.text_encoder_2_file};
    static const char *const options[PL_N_COMPONENT_FILES] = {
        "vae_file (--vae)", "unet_file (--unet, --transformer)",
        "text_encoder_file (--text-encoder)", "text_encoder_2_file (--text-encoder-2)"};
    for (int i = 0; i < PL_N_COMPONENT_FILES; i++) {
        if (!files[i]) continue;
        const char *name = component_of(p, i);
        if (!model_index_get(&p->mi, name))
            return sd_set_error(SD_ERR_ARG, "%s %s: the %s pipeline has no %s", options[i],
                                files[i], p->mi.class_name, name);
        component_file *c = calloc(1, sizeof *c);
        if (!c) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        const sd_status st = component_file_open(c, files[i], name, options[i]);
        if (st != SD_OK) {
            free(c);
            return st;
        }
        p->comp_files[i] = c;
    }
    return SD_OK;
}

const weights_source *pl_component_file_source(const sd_pipeline *p, const char *name) {
    for (int i = 0; i < PL_N_COMPONENT_FILES; i++)
        if (p->comp_files[i] && !strcmp(p->comp_files[i]->part.component, name))
            return &p->comp_files[i]->part.base;
    return NULL;
}

void pl_component_files_free(sd_pipeline *p) {
    for (int i = 0; i < PL_N_COMPONENT_FILES; i++) {
        if (p->comp_files[i]) component_file_close(p->comp_files[i]);
        free(p->comp_files[i]);
        p->comp_files[i] = NULL;
    }
}
