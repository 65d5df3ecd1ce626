/* Detecting what an original-layout checkpoint holds, and opening each component through the
 * name tables (ldm_source.h). Families follow the text encoders' key prefixes, which is what
 * diffusers' infer_diffusers_model_type keys on (conditioner.embedders.1 = SDXL base,
 * conditioner.embedders.0.model = the refiner, OpenCLIP under cond_stage_model = SD 2.x); the
 * UNet's shapes settle a file without text encoders (label_emb: SDXL, 1024-wide cross-attention:
 * SD 2.x, as diffusers' "v2" check reads it). */
#include "ldm_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldm_names.h"

static int rename_key(const ldm_part *p, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    switch (p->kind) {
    case LDM_UNET: return ldm_unet_name(key, p->levels, out);
    case LDM_VAE: return ldm_vae_name(key, p->levels, out);
    case LDM_CLIP: return ldm_clip_name(key, out);
    case LDM_OPENCLIP: /* SDXL's second encoder projects; SD 2.x's CLIPTextModel does not */
        return ldm_openclip_name(key, !strcmp(p->component, "text_encoder_2"), out);
    case LDM_MMDIT: return sd3_mmdit_name(key, p->levels, out);
    case LDM_CLIP_SD3L: return sd3_clip_l_name(key, out);
    case LDM_AS_IS:
        if (snprintf(out[0].name, sizeof out[0].name, "%s", key) < (int)sizeof out[0].name) return 1;
        sd_set_error(SD_ERR_FORMAT, "tensor '%s%s': name too long", p->prefix, key);
        return -1;
    }
    return 0;
}

/* weights_open_renamed's callback: the part's keys through its table; a key no table knows is
 * reported with the file it is in. */
static int rename_part(void *ctx, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    const ldm_part *p = ctx;
    const size_t l = strlen(p->prefix);
    if (strncmp(key, p->prefix, l)) return 0;
    const int n = rename_key(p, key + l, out);
    if (n < 0) sd_wrap_error(SD_ERR_FORMAT, "%s", p->path);
    return n;
}

static sd_status open_part(sd_weights *w, const weights_source *src, const weights_policy *policy) {
    const ldm_part *p = (const ldm_part *)src;
    char label[600];
    snprintf(label, sizeof label, "%s (%s* as diffusers %s)", p->path, p->prefix, p->component);
    return weights_open_renamed(w, p->path, label, rename_part, (void *)p, policy);
}

void ldm_set_part(ldm_checkpoint *c, int i, const char *component, const char *prefix,
                  ldm_part_kind kind) {
    ldm_part *p = &c->parts[i];
    p->base.open = open_part;
    p->path = c->path;
    p->component = component;
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix);
    p->kind = kind;
    p->present = true;
}

/* Keys a checkpoint may hold besides its components: the EMA copy (diffusers ignores it unless
 * asked), and top-level buffers of the training script (betas, alphas_cumprod, ..., v_pred). */
static bool expected_key(const char *k) {
    static const char *const prefixes[] = {
        "model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.",
        "model_ema.", "text_encoders.", /* SD3: clip_l, clip_g, t5xxl */
    };
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (!strncmp(k, prefixes[i], strlen(prefixes[i]))) return true;
    return !strchr(k, '.');
}

static bool ends_with(const char *s, const char *suffix) {
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static sd_status refuse_pickle(const char *path) {
    static const char *const pickled[] = {".ckpt", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof pickled / sizeof *pickled; i++)
        if (ends_with(path, pickled[i]))
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a pickled PyTorch file; this program "
                                "never unpickles (loading one can run arbitrary code). Convert it "
                                "to .safetensors once, e.g. with python: from safetensors.torch "
                                "import save_file; sd = torch.load(path, weights_only=True); "
                                "save_file(sd.get('state_dict', sd), 'model.safetensors')", path);
    return SD_OK;
}

static void measure(ldm_checkpoint *c, const st_file *f) {
    ldm_part *unet = &c->parts[0], *vae = &c->parts[1];
    int max_input = 0;
    unet->levels = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        int n;
        char tail[64];
        if (!strncmp(t->name, "model.diffusion_model.", 22)) c->unet_params += st_numel(t);
        if (sscanf(t->name, "model.diffusion_model.input_blocks.%d.%63s", &n, tail) == 2) {
            if (n > max_input) max_input = n;
            /* The first level's downsampler ends it: layers_per_block resnets come before. */
            if (!strcmp(tail, "0.op.weight") && (unet->levels < 0 || n - 1 < unet->levels))
                unet->levels = n - 1;
        }
        if (sscanf(t->name, "first_stage_model.decoder.up.%d.", &n) == 1 && n + 1 > vae->levels)
            vae->levels = n + 1;
    }
    if (unet->levels < 0) unet->levels = max_input; /* one level, no downsampler */
    const st_tensor *in = st_find(f, "model.diffusion_model.input_blocks.0.0.weight");
    if (in && in->ndim == 4) c->in_channels = (int)in->shape[1];
    c->unet_dtype = !in ? "?" : in->dtype == ST_F16 ? "fp16" : in->dtype == ST_BF16 ? "bf16" : "fp32";
    /* diffusers' "v2" check: the cross-attention key width of the first attention. */
    for (int i = 0; i < f->n_tensors && !c->context_dim; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!strncmp(t->name, "model.diffusion_model.input_blocks.", 35) &&
            ends_with(t->name, ".attn2.to_k.weight") && t->ndim == 2)
            c->context_dim = (int)t->shape[1];
    }
}

sd_status ldm_checkpoint_open(ldm_checkpoint *c, const char *path) {
    memset(c, 0, sizeof *c);
    SD_TRY(refuse_pickle(path));
    st_file f;
    SD_TRY(st_open(&f, path));
    sd_status st = SD_OK;
    for (int i = 0; i < f.n_tensors && st == SD_OK; i++)
        if (!expected_key(f.tensors[i].name))
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s' is not in the original (LDM) "
                              "checkpoint layout (model.diffusion_model.*, first_stage_model.*, "
                              "cond_stage_model.*, conditioner.embedders.*; SD3: "
                              "text_encoders.*); for a diffusers "
                              "model pass its folder", path, f.tensors[i].name);
    if (st == SD_OK && !st_has_prefix(&f, "model.diffusion_model."))
        st = sd_set_error(SD_ERR_FORMAT, "%s: no UNet (model.diffusion_model.*) in the file; "
                          "first tensor '%s'", path, f.n_tensors ? f.tensors[0].name : "(none)");
    /* stable-diffusion.cpp's convert renames the text encoders of SDXL (CLIP-G as
     * cond_stage_model.1.transformer.*) and SD 2.x (OpenCLIP-H as cond_stage_model.transformer.*,
     * which is SD 1.x's prefix: told apart by the UNet's cross-attention width) to its own
     * names; read as SD 1.x they would fail later on a shape, so they are refused here. */
    const st_tensor *sdcpp_g = NULL;
    for (int i = 0; i < f.n_tensors && !sdcpp_g; i++)
        if (!strncmp(f.tensors[i].name, "cond_stage_model.1.", 19)) sdcpp_g = &f.tensors[i];
    if (st == SD_OK && sdcpp_g)
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: tensor '%s': stable-diffusion.cpp's own names "
                          "for SDXL's second text encoder (cond_stage_model.1.*) are not read; "
                          "use a checkpoint in the original layout (conditioner.embedders.*)",
                          path, sdcpp_g->name);
    if (st == SD_OK && !(c->path = strdup(path))) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st != SD_OK) {
        st_close(&f);
        return st;
    }
    if (st_has_prefix(&f, "model.diffusion_model.joint_blocks.")) {
        st = ldm_sd3_detect(c, &f);
        st_close(&f);
        if (st != SD_OK) ldm_checkpoint_close(c);
        return st;
    }
    ldm_set_part(c, 0, "unet", "model.diffusion_model.", LDM_UNET);
    if (st_has_prefix(&f, "first_stage_model.")) ldm_set_part(c, 1, "vae", "first_stage_model.", LDM_VAE);
    measure(c, &f);
    if (c->context_dim == 1024 && st_has_prefix(&f, "cond_stage_model.transformer.")) {
        st_close(&f);
        ldm_checkpoint_close(c);
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: an SD 2.x UNet (cross-attention width 1024) "
                            "with its text encoder as cond_stage_model.transformer.* "
                            "(stable-diffusion.cpp's names) is not read; use a checkpoint in the "
                            "original layout (cond_stage_model.model.*)", path);
    }
    const bool label_emb = st_has_prefix(&f, "model.diffusion_model.label_emb.");
    if (st_has_prefix(&f, "conditioner.embedders.1.model.")) {
        c->family = LDM_SDXL;
        if (st_has_prefix(&f, "conditioner.embedders.0.transformer."))
            ldm_set_part(c, 2, "text_encoder", "conditioner.embedders.0.transformer.", LDM_CLIP);
        ldm_set_part(c, 3, "text_encoder_2", "conditioner.embedders.1.model.", LDM_OPENCLIP);
    } else if (st_has_prefix(&f, "conditioner.embedders.0.model.")) {
        c->family = LDM_SDXL_REFINER;
        ldm_set_part(c, 3, "text_encoder_2", "conditioner.embedders.0.model.", LDM_OPENCLIP);
    } else if (st_has_prefix(&f, "cond_stage_model.model.")) {
        c->family = LDM_SD2;
        ldm_set_part(c, 2, "text_encoder", "cond_stage_model.model.", LDM_OPENCLIP);
    } else if (st_has_prefix(&f, "cond_stage_model.transformer.")) {
        c->family = LDM_SD1;
        ldm_set_part(c, 2, "text_encoder", "cond_stage_model.transformer.", LDM_CLIP);
    } else {
        c->family = label_emb ? LDM_SDXL : c->context_dim == 1024 ? LDM_SD2 : LDM_SD1;
    }
    c->v_pred = st_find(&f, "v_pred") != NULL;
    st_close(&f);
    return SD_OK;
}

void ldm_checkpoint_close(ldm_checkpoint *c) {
    free(c->path);
    memset(c, 0, sizeof *c);
}

const weights_source *ldm_checkpoint_source(const ldm_checkpoint *c, const char *component) {
    for (int i = 0; i < LDM_N_PARTS; i++)
        if (c->parts[i].present && !strcmp(c->parts[i].component, component))
            return &c->parts[i].base;
    return NULL;
}

const char *ldm_family_name(ldm_family f) {
    switch (f) {
    case LDM_SD1: return "SD 1.x";
    case LDM_SD2: return "SD 2.x";
    case LDM_SDXL: return "SDXL";
    case LDM_SDXL_REFINER: return "SDXL refiner";
    case LDM_SD3: return "SD3 medium";
    case LDM_SD35_MEDIUM: return "SD3.5 medium";
    case LDM_SD35_LARGE: return "SD3.5 large";
    }
    return "?";
}
