/* Loading a pipeline from a diffusers folder, and the small public entry points. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "pipeline_internal.h"

void sd_load_params_init(sd_load_params *p) { memset(p, 0, sizeof *p); }

void sd_set_threads(int threads) {
    if (threads <= 0) threads = omp_get_num_procs();
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

/* The component must be listed with the class we implement; the error says what was found. */
static sd_status expect_component(const model_index *mi, const char *name, const char *const *classes) {
    const mi_component *c = model_index_get(mi, name);
    if (!c)
        return sd_set_error(SD_ERR_CONFIG, "%s/model_index.json: component '%s' is missing", mi->dir,
                            name);
    for (int i = 0; classes[i]; i++)
        if (!strcmp(c->cls, classes[i])) return SD_OK;
    return sd_set_error(SD_ERR_UNSUPPORTED, "%s/model_index.json: component '%s' is a %s, which is "
                        "not supported (expected %s)", mi->dir, name, c->cls, classes[0]);
}

static sd_status load_scheduler_config(sd_pipeline *p) {
    char *dir = model_index_path(&p->mi, "scheduler");
    char *path = dir ? sd_path_join(dir, "scheduler_config.json") : NULL;
    free(dir);
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    free(path);
    if (st != SD_OK) return st;
    p->scheduler_config = c.root; /* keep the parsed object, drop the reader */
    c.root = NULL;
    cfg_close(&c);
    return SD_OK;
}

static sd_status load_sd(sd_pipeline *p) {
    static const char *const tok[] = {"CLIPTokenizer", "CLIPTokenizerFast", NULL};
    static const char *const te[] = {"CLIPTextModel", NULL};
    static const char *const un[] = {"UNet2DConditionModel", NULL};
    static const char *const va[] = {"AutoencoderKL", NULL};
    SD_TRY(expect_component(&p->mi, "tokenizer", tok));
    SD_TRY(expect_component(&p->mi, "text_encoder", te));
    SD_TRY(expect_component(&p->mi, "unet", un));
    SD_TRY(expect_component(&p->mi, "vae", va));
    if (!model_index_get(&p->mi, "scheduler"))
        return sd_set_error(SD_ERR_CONFIG, "%s/model_index.json: component 'scheduler' is missing",
                            p->mi.dir);
    char *dir;
    sd_status st = SD_OK;
#define LOAD(name, call)                                                                           \
    do {                                                                                           \
        dir = model_index_path(&p->mi, name);                                                      \
        if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");                             \
        st = call;                                                                                 \
        free(dir);                                                                                 \
        if (st != SD_OK) return st;                                                                \
    } while (0)
    LOAD("tokenizer", clip_tokenizer_load(&p->tokenizer, dir));
    LOAD("text_encoder", clip_text_load_class(&p->text_encoder, dir,
                                             model_index_get(&p->mi, "text_encoder")->cls));
    LOAD("unet", unet_load(&p->unet, dir));
    LOAD("vae", vae_load(&p->vae, dir));
#undef LOAD
    SD_TRY(load_scheduler_config(p));
    const vae_config *vc = vae_get_config(p->vae);
    p->vae_scale_factor = 1 << (vc->n_blocks - 1);
    const unet_config *uc = unet_get_config(p->unet);
    if (uc->in_channels != vc->latent_channels && uc->in_channels != 2 * vc->latent_channels + 1)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet in_channels %d does not fit the vae's %d "
                            "latent channels", p->mi.dir, uc->in_channels, vc->latent_channels);
    if (uc->cross_attention_dim != clip_text_get_config(p->text_encoder)->hidden_size)
        return sd_set_error(SD_ERR_CONFIG, "%s: unet cross_attention_dim %d differs from the text "
                            "encoder's hidden_size %d", p->mi.dir, uc->cross_attention_dim,
                            clip_text_get_config(p->text_encoder)->hidden_size);
    return SD_OK;
}

sd_status sd_pipeline_load(sd_pipeline **out, const char *model_dir, const sd_load_params *params) {
    *out = NULL;
    sd_load_params defaults;
    if (!params) {
        sd_load_params_init(&defaults);
        params = &defaults;
    }
    sd_set_threads(params->threads);
    sd_pipeline *p = calloc(1, sizeof *p);
    if (!p) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = model_index_load(&p->mi, model_dir);
    if (st == SD_OK) st = load_sd(p);
    if (st != SD_OK) {
        sd_pipeline_free(p);
        return st;
    }
    *out = p;
    return SD_OK;
}

void sd_pipeline_free(sd_pipeline *p) {
    if (!p) return;
    if (p->tokenizer) clip_tokenizer_free(p->tokenizer);
    if (p->text_encoder) clip_text_free(p->text_encoder);
    if (p->unet) unet_free(p->unet);
    if (p->vae) vae_free(p->vae);
    cJSON_Delete(p->scheduler_config);
    model_index_free(&p->mi);
    free(p);
}

sd_family sd_pipeline_family(const sd_pipeline *p) { return p->mi.family; }
const char *sd_pipeline_class(const sd_pipeline *p) { return p->mi.class_name; }

void sd_pipeline_default_size(const sd_pipeline *p, int *width, int *height) {
    int s = unet_get_config(p->unet)->sample_size * p->vae_scale_factor;
    *width = *height = s;
}

const char *sd_pipeline_scheduler_class(const sd_pipeline *p) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p->scheduler_config, "_class_name");
    return cJSON_IsString(c) ? c->valuestring : "?";
}

void sd_gen_params_init(sd_gen_params *g) {
    memset(g, 0, sizeof *g);
    g->prompt = "";
    g->steps = 50;
    g->guidance = 7.5;
    g->batch = 1;
}

void sd_result_free(sd_result *r) {
    for (int i = 0; i < r->n_images; i++) image_free(&r->images[i]);
    free(r->images);
    free(r->latents);
    memset(r, 0, sizeof *r);
}

sd_status sd_generate(sd_pipeline *p, const sd_gen_params *g, sd_result *out) {
    memset(out, 0, sizeof *out);
    return sd_generate_sd(p, g, out);
}

sd_status sd_tokenize_json(const sd_pipeline *p, const char *prompt, char **json) {
    *json = NULL;
    int n = clip_tokenizer_max_length(p->tokenizer);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = clip_tokenize_padded(p->tokenizer, prompt, ids, n);
    if (st == SD_OK) {
        cJSON *root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "tokenizer");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        *json = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        if (!*json) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    free(ids);
    return st;
}
