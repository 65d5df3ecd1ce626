/* Changing a loaded pipeline's LoRAs (sd_pipeline_set_loras): every component that the old or the
 * new set adapts is loaded again from the model files the pipeline already names (mapped, not
 * read(): the pages still in the page cache serve it) with the new set merged, exactly as
 * sd_pipeline_load would load it, so the pixels are those of a fresh load with the new set; the
 * components no LoRA touches (the VAE, usually the text encoders) are kept as they are.
 * The new components are built before the old ones are freed: an error leaves the pipeline
 * with its previous set, unchanged, at the cost of holding both copies of a component for a
 * moment. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/threads.h"
#include "embed_cache.h"
#include "pipeline_internal.h"

typedef enum { KIND_UNET, KIND_FLUX, KIND_SD3, KIND_CLIP, KIND_T5 } model_kind;

/* One component to load again: where the pipeline holds it and what it is. */
typedef struct {
    const char *name;
    model_kind kind;
    void **slot;
    void *fresh; /* loaded with the new set, not yet in the pipeline */
} reload;

static void free_model(model_kind kind, void *m) {
    if (!m) return;
    switch (kind) {
    case KIND_UNET: unet_free(m); break;
    case KIND_FLUX: flux_free(m); break;
    case KIND_SD3: sd3_free(m); break;
    case KIND_CLIP: clip_text_free(m); break;
    case KIND_T5: t5_encoder_free(m); break;
    }
}

/* The components a LoRA can adapt, as this pipeline holds them (a NULL slot: not in it). */
static int adaptable(sd_pipeline *p, reload out[5]) {
    const bool flux = p->mi.family == SD_FAMILY_FLUX;
    const reload all[] = {
        {"unet", KIND_UNET, (void **)&p->unet, NULL},
        {"transformer", flux ? KIND_FLUX : KIND_SD3, flux ? (void **)&p->flux : (void **)&p->sd3,
         NULL},
        {"text_encoder", KIND_CLIP, (void **)&p->text_encoder, NULL},
        /* FLUX.1's second encoder is T5, SD3's third */
        {"text_encoder_2", flux ? KIND_T5 : KIND_CLIP,
         flux ? (void **)&p->t5 : (void **)&p->text_encoder_2, NULL},
        {"text_encoder_3", KIND_T5, flux ? NULL : (void **)&p->t5, NULL},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i].slot && *all[i].slot) out[n++] = all[i];
    return n;
}

static sd_status load_fresh(const sd_pipeline *p, lora_set *set, reload *r) {
    char *dir = pl_component_dir(p, r->name);
    if (!dir) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    weights_policy policy = pl_load_policy(p, r->name);
    policy.lora = set;
    const mi_component *c = model_index_get(&p->mi, r->name);
    sd_status st = SD_OK;
    switch (r->kind) {
    case KIND_UNET: st = unet_load((unet **)&r->fresh, dir, &policy); break;
    case KIND_FLUX: st = flux_load((flux_model **)&r->fresh, dir, &policy); break;
    case KIND_SD3: st = sd3_load((sd3_model **)&r->fresh, dir, &policy); break;
    case KIND_CLIP:
        st = clip_text_load_class((clip_text **)&r->fresh, dir, c ? c->cls : NULL, &policy);
        break;
    case KIND_T5: st = t5_encoder_load((t5_encoder **)&r->fresh, dir, &policy); break;
    }
    free(dir);
    return st;
}

static sd_status switch_loras(sd_pipeline *p, const sd_lora *loras, int n) {
    lora_set *set = NULL;
    SD_TRY(pl_open_loras(p, loras, n, &set));
    reload comps[5];
    const int n_comps = adaptable(p, comps);
    sd_status st = SD_OK;
    for (int i = 0; i < n_comps && st == SD_OK; i++)
        if (lora_set_touches(p->lora, comps[i].name) || lora_set_touches(set, comps[i].name))
            st = load_fresh(p, set, &comps[i]);
    if (st == SD_OK) st = lora_set_check(set);
    if (st != SD_OK) { /* the pipeline keeps its components and its set */
        for (int i = 0; i < n_comps; i++) free_model(comps[i].kind, comps[i].fresh);
        lora_set_free(set);
        return st;
    }
    bool encoders = false;
    for (int i = 0; i < n_comps; i++) {
        if (!comps[i].fresh) continue;
        free_model(comps[i].kind, *comps[i].slot);
        *comps[i].slot = comps[i].fresh;
        encoders |= comps[i].kind == KIND_CLIP || comps[i].kind == KIND_T5;
    }
    lora_set_free(p->lora); /* after the components whose weight sets pointed at it */
    p->lora = set;
    lora_set_release(set);
    if (encoders) pl_cache_clear(p); /* cached prompt embeddings came from the old encoders */
    return SD_OK;
}

sd_status sd_pipeline_set_loras(sd_pipeline *p, const sd_lora *loras, int n) {
    if (!p) return sd_set_error(SD_ERR_ARG, "sd_pipeline_set_loras: the pipeline is NULL");
    if (atomic_exchange(&p->busy, true))
        return sd_set_error(SD_ERR_BUSY, "%s: an sd_generate is running on this pipeline; its "
                            "LoRAs can change once it has returned", p->mi.dir);
    const int threads = sd_threads_begin(p->load.threads);
    const sd_status st = switch_loras(p, loras, n);
    sd_threads_end(threads);
    atomic_store(&p->busy, false);
    return st;
}
