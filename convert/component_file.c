/* A component's weights from a file of its own (component_file.h). The layout is settled by
 * marker keys, in this order: an original checkpoint prefix (the part of a whole checkpoint),
 * bare original keys, diffusers keys. A file whose markers belong to another component is named
 * as that component, so that `--vae unet.safetensors` says what went wrong. */
#include "component_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

/* The renamings a layout applies to a key with its prefix removed (ldm_names.h's contract). */
static int as_is(const ldm_part *p, const char *key, weights_rename out[3]) {
    (void)p;
    if (snprintf(out[0].name, sizeof out[0].name, "%s", key) < (int)sizeof out[0].name) return 1;
    sd_set_error(SD_ERR_FORMAT, "tensor name '%s' is too long", key);
    return -1;
}
static int ldm_unet(const ldm_part *p, const char *key, weights_rename out[3]) {
    return ldm_unet_name(key, p->levels, out);
}
static int ldm_vae(const ldm_part *p, const char *key, weights_rename out[3]) {
    return ldm_vae_name(key, p->levels, out);
}
static int ldm_clip(const ldm_part *p, const char *key, weights_rename out[3]) {
    (void)p;
    return ldm_clip_name(key, out);
}
static int sd3_clip_l(const ldm_part *p, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    (void)p;
    return sd3_clip_l_name(key, out);
}
static int sd3_mmdit(const ldm_part *p, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    return sd3_mmdit_name(key, p->levels, out);
}
static int ldm_openclip(const ldm_part *p, const char *key, weights_rename out[3]) {
    /* SDXL's second encoder projects; SD 2.x's CLIPTextModel does not */
    return ldm_openclip_name(key, !strcmp(p->component, "text_encoder_2"), out);
}

/* One way a component may be stored. `marker` starts some key of such a file; `prefix` is cut
 * off every key before renaming (keys without it are not the component's: a whole checkpoint).
 * Another layout (say, a transformer in its authors' naming) is one more row with its own
 * renaming. */
typedef struct {
    const char *component; /* diffusers folder name */
    const char *marker;
    const char *prefix;
    int kind;              /* ldm_part_kind measured for the renaming, or -1 */
    component_rename_fn rename;
} layout;

static const layout layouts[] = {
    {"vae", "first_stage_model.", "first_stage_model.", LDM_VAE, ldm_vae},
    {"vae", "encoder.down.", "", LDM_VAE, ldm_vae},
    {"vae", "decoder.up.", "", LDM_VAE, ldm_vae},
    {"vae", "encoder.down_blocks.", "", -1, as_is},
    {"vae", "decoder.up_blocks.", "", -1, as_is},
    {"unet", "model.diffusion_model.", "model.diffusion_model.", LDM_UNET, ldm_unet},
    {"unet", "input_blocks.", "", LDM_UNET, ldm_unet},
    {"unet", "down_blocks.", "", -1, as_is},
    {"text_encoder", "cond_stage_model.transformer.", "cond_stage_model.transformer.", -1,
     ldm_clip},
    {"text_encoder", "conditioner.embedders.0.transformer.", "conditioner.embedders.0.transformer.",
     -1, ldm_clip},
    {"text_encoder", "cond_stage_model.model.", "cond_stage_model.model.", -1, ldm_openclip},
    {"text_encoder", "transformer.resblocks.", "", -1, ldm_openclip},
    {"text_encoder", "text_model.", "", -1, as_is},
    {"text_encoder", "encoder.layers.", "", -1, as_is}, /* transformers 5: no text_model level */
    {"text_encoder_2", "conditioner.embedders.1.model.", "conditioner.embedders.1.model.", -1,
     ldm_openclip},
    {"text_encoder_2", "conditioner.embedders.0.model.", "conditioner.embedders.0.model.", -1,
     ldm_openclip}, /* the SDXL refiner's only encoder */
    {"text_encoder_2", "transformer.resblocks.", "", -1, ldm_openclip},
    {"text_encoder_2", "text_model.", "", -1, as_is},
    {"text_encoder_2", "encoder.layers.", "", -1, as_is},
    {"text_encoder_2", "text_encoders.clip_g.transformer.", "text_encoders.clip_g.transformer.", -1,
     as_is}, /* SD3's CLIP-G out of a whole SD3 file */
    /* SD3's CLIP-L (layout key "sd3_clip_l": a CLIPTextModelWithProjection text_encoder). Out of
     * a whole SD3 file it gets diffusers' from_single_file identity projection; a bare file
     * (ComfyUI's clip_l.safetensors) keeps its own projection when it has one, else the same
     * identity (pick_layout). */
    {"sd3_clip_l", "text_encoders.clip_l.transformer.", "text_encoders.clip_l.transformer.", -1,
     sd3_clip_l},
    {"sd3_clip_l", "text_model.", "", -1, sd3_clip_l},
    {"sd3_clip_l", "encoder.layers.", "", -1, as_is},
    /* T5EncoderModel, whichever component it is (layout key "t5"): an SD3 checkpoint's, or
     * transformers' names as the t5xxl files hold them (ComfyUI's too: the same names). */
    {"t5", "text_encoders.t5xxl.transformer.", "text_encoders.t5xxl.transformer.", -1, as_is},
    {"t5", "encoder.block.", "", -1, as_is},
    /* SD3 / SD3.5's SD3Transformer2DModel (layout key "sd3_transformer"): Stability's MMDiT as
     * in a whole SD3 file (model.diffusion_model.joint_blocks...) or bare (ComfyUI's
     * diffusion_models files), else diffusers' names. */
    {"sd3_transformer", "model.diffusion_model.joint_blocks.", "model.diffusion_model.", LDM_MMDIT,
     sd3_mmdit},
    {"sd3_transformer", "joint_blocks.", "", LDM_MMDIT, sd3_mmdit},
    {"sd3_transformer", "transformer_blocks.", "", -1, as_is},
};

/* What a file's keys look like, for the message when they are not the asked component's. */
static const char *looks_like(const st_file *f) {
    static const char *const guess[][2] = {
        {"model.diffusion_model.", "a whole checkpoint (UNet and more)"},
        {"input_blocks.", "a UNet"}, {"down_blocks.", "a UNet"},
        {"first_stage_model.", "a VAE"}, {"encoder.down", "a VAE"}, {"decoder.up", "a VAE"},
        {"text_model.", "a CLIP text encoder"}, {"transformer.resblocks.", "an OpenCLIP text encoder"},
        {"cond_stage_model.", "a text encoder"}, {"conditioner.", "a text encoder"},
        {"transformer_blocks.", "a diffusion transformer"}, {"double_blocks.", "a FLUX transformer"},
        {"joint_blocks.", "an SD3 transformer (MMDiT)"},
        {"encoder.block.", "a T5 encoder"}, {"lora_", "a LoRA"},
    };
    for (size_t i = 0; i < sizeof guess / sizeof *guess; i++)
        for (int t = 0; t < f->n_tensors; t++)
            if (!strncmp(f->tensors[t].name, guess[i][0], strlen(guess[i][0]))) return guess[i][1];
    return NULL;
}

static bool has_original_layout(const char *component) {
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++)
        if (!strcmp(layouts[i].component, component)) return true;
    return false;
}

/* The VAE's levels (decoder.up.N) and the UNet's layers_per_block (the first level's
 * downsampler input_blocks.N.0.op ends it), read under the part's prefix as ldm_source.c does
 * for whole checkpoints. */
static void measure(ldm_part *p, const st_file *f) {
    const size_t l = strlen(p->prefix);
    int max_input = 0, lpb = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        const char *k = f->tensors[i].name;
        int n;
        char tail[64];
        if (strncmp(k, p->prefix, l)) continue;
        k += l;
        if (p->kind == LDM_VAE && sscanf(k, "decoder.up.%d.", &n) == 1 && n + 1 > p->levels)
            p->levels = n + 1;
        if (p->kind == LDM_MMDIT && sscanf(k, "joint_blocks.%d.", &n) == 1 && n + 1 > p->levels)
            p->levels = n + 1;
        if (p->kind == LDM_UNET && sscanf(k, "input_blocks.%d.%63s", &n, tail) == 2) {
            if (n > max_input) max_input = n;
            if (!strcmp(tail, "0.op.weight") && (lpb < 0 || n - 1 < lpb)) lpb = n - 1;
        }
    }
    if (p->kind == LDM_UNET) p->levels = lpb < 0 ? max_input : lpb;
}

/* The renaming callback of weights_open_renamed: diffusers keys as they are, original ones
 * through ldm_names.h; a name that fails is reported with the file it came from. */
static int rename_key(void *ctx, const char *key, weights_rename out[3]) {
    const component_file *c = ctx;
    const ldm_part *p = &c->part;
    const size_t l = strlen(p->prefix);
    if (strncmp(key, p->prefix, l)) return 0;
    /* The training loss (an LDM autoencoder's discriminator) some VAE releases keep. */
    if (c->rename == ldm_vae && !strncmp(key + l, "loss.", 5)) return 0;
    const int n = c->rename(p, key + l, out);
    if (n < 0) sd_wrap_error(SD_ERR_FORMAT, "%s (%s)", c->path, c->option);
    return n;
}

static sd_status open_source(sd_weights *w, const weights_source *src, const weights_policy *policy) {
    const component_file *c = (const component_file *)src;
    char label[1200];
    if (c->diffusers)
        snprintf(label, sizeof label, "%s (%s, diffusers names)", c->path, c->option);
    else if (c->part.prefix[0])
        snprintf(label, sizeof label, "%s (%s, %s* in the original layout as diffusers %s)",
                 c->path, c->option, c->part.prefix, c->part.component);
    else
        snprintf(label, sizeof label, "%s (%s, bare original-layout keys as diffusers %s)",
                 c->path, c->option, c->part.component);
    return weights_open_renamed(w, c->path, label, rename_key, (void *)c, policy);
}

static sd_status refuse_pickle(const char *path, const char *option) {
    static const char *const pickled[] = {".ckpt", ".pt", ".pth", ".bin"};
    const size_t n = strlen(path);
    for (size_t i = 0; i < sizeof pickled / sizeof *pickled; i++) {
        const size_t l = strlen(pickled[i]);
        if (n >= l && !strcmp(path + n - l, pickled[i]))
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s (%s): a pickled PyTorch file; this program "
                                "never unpickles (loading one can run arbitrary code). Convert it "
                                "to .safetensors once, e.g. with python: from safetensors.torch "
                                "import save_file; sd = torch.load(path, weights_only=True); "
                                "save_file(sd.get('state_dict', sd), 'model.safetensors')",
                                path, option);
    }
    return SD_OK;
}

static sd_status pick_layout(component_file *c, const st_file *f, const char *component,
                             const char *cls) {
    const bool with_proj = cls && !strcmp(cls, "CLIPTextModelWithProjection");
    const char *kind = cls && !strcmp(cls, "T5EncoderModel")           ? "t5"
                       : cls && !strcmp(cls, "SD3Transformer2DModel")     ? "sd3_transformer"
                       : with_proj && !strcmp(component, "text_encoder") ? "sd3_clip_l"
                                                                          : component;
    const layout *hit = NULL;
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts && !hit; i++)
        if (!strcmp(layouts[i].component, kind) && st_has_prefix(f, layouts[i].marker))
            hit = &layouts[i];
    if (!hit && has_original_layout(kind)) {
        const char *what = looks_like(f);
        if (what)
            return sd_set_error(SD_ERR_FORMAT, "%s (%s): the file holds %s, not the %s weights",
                                c->path, c->option, what, component);
        return sd_set_error(SD_ERR_FORMAT, "%s (%s): tensor '%s' is in neither the diffusers "
                            "nor the original (LDM) layout of a %s", c->path, c->option,
                            f->n_tensors ? f->tensors[0].name : "(none)", component);
    }
    ldm_part *p = &c->part;
    p->base.open = open_source;
    p->path = c->path;
    p->component = component;
    p->present = true;
    /* Components without a known original layout (transformer, T5) are taken as stored. */
    c->rename = hit ? hit->rename : as_is;
    if (c->rename == sd3_clip_l && !hit->prefix[0] && st_find(f, "text_projection.weight"))
        c->rename = as_is;
    c->diffusers = c->rename == as_is;
    snprintf(p->prefix, sizeof p->prefix, "%s", hit ? hit->prefix : "");
    p->kind = hit && hit->kind >= 0 ? (ldm_part_kind)hit->kind : LDM_CLIP;
    if (hit && hit->kind >= 0) measure(p, f);
    return SD_OK;
}

sd_status component_file_open(component_file *c, const char *path, const char *component,
                              const char *cls, const char *option) {
    memset(c, 0, sizeof *c);
    c->path = strdup(path);
    c->option = strdup(option);
    if (!c->path || !c->option) {
        component_file_close(c);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    sd_status st = refuse_pickle(path, option);
    st_file f;
    if (st == SD_OK) {
        st = st_open(&f, path);
        if (st != SD_OK) st = sd_wrap_error(st, "%s", option);
    }
    if (st == SD_OK) {
        st = pick_layout(c, &f, component, cls);
        st_close(&f);
    }
    if (st != SD_OK) component_file_close(c);
    return st;
}

void component_file_close(component_file *c) {
    free(c->path);
    free(c->option);
    memset(c, 0, sizeof *c);
}
