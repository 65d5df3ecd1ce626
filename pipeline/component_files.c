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
                                                            "text_encoder_2", "text_encoder_3"};
    if (i == 1 && !model_index_get(&p->mi, "unet") && model_index_get(&p->mi, "transformer"))
        return "transformer";
    return names[i];
}

sd_status pl_component_files_open(sd_pipeline *p) {
    const char *const files[PL_N_COMPONENT_FILES] = {p->load.vae_file, p->load.unet_file,
                                                     p->load.text_encoder_file,
                                                     p->load.text_encoder_2_file,
                                                     p->load.text_encoder_3_file};
    static const char *const options[PL_N_COMPONENT_FILES] = {
        "vae_file (--vae)", "unet_file (--unet, --transformer)",
        "text_encoder_file (--text-encoder)", "text_encoder_2_file (--text-encoder-2)",
        "text_encoder_3_file (--text-encoder-3)"};
    for (int i = 0; i < PL_N_COMPONENT_FILES; i++) {
        if (!files[i]) continue;
        const char *name = component_of(p, i);
        const mi_component *mc = model_index_get(&p->mi, name);
        if (!mc) {
            /* FLUX's T5 is its second encoder; say so rather than only "no text_encoder_3". */
            const mi_component *te2 = model_index_get(&p->mi, "text_encoder_2");
            const bool t5_is_2 = i == 4 && te2 && !strcmp(te2->cls, "T5EncoderModel");
            return sd_set_error(SD_ERR_ARG, "%s %s: the %s pipeline has no %s%s", options[i],
                                files[i], p->mi.class_name, name,
                                t5_is_2 ? " (its T5 is text_encoder_2: pass the file as "
                                          "--text-encoder-2)" : "");
        }
        component_file *c = calloc(1, sizeof *c);
        if (!c) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        const sd_status st = component_file_open(c, files[i], name, mc->cls, options[i]);
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
