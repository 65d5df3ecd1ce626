/* SD3 / SD3.5 single files (ldm_source.h): Stability's layout, model.diffusion_model.* (the
 * MMDiT), first_stage_model.* (the 16-channel VAE, LDM names, no quant convolutions) and
 * text_encoders.{clip_l,clip_g,t5xxl}.transformer.* (transformers' names). What the file holds
 * is read from its tensors as diffusers' convert_sd3_transformer_checkpoint_to_diffusers and
 * infer_diffusers_model_type read it: the depth from joint_blocks, dual attention from attn2,
 * qk norm from ln_q, the position table from pos_embed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "ldm_source.h"

static const char *dtype_name(const st_tensor *t) {
    return !t ? "?" : t->dtype == ST_F16 ? "fp16" : t->dtype == ST_BF16 ? "bf16" : "fp32";
}

sd_status ldm_sd3_detect(ldm_checkpoint *c, const st_file *f) {
    ldm_part *vae = &c->parts[1];
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        int n;
        char tail[96];
        if (!strncmp(t->name, "model.diffusion_model.", 22)) c->unet_params += st_numel(t);
        if (sscanf(t->name, "model.diffusion_model.joint_blocks.%d.%95s", &n, tail) == 2 && n >= 0) {
            if (n + 1 > c->sd3_layers) c->sd3_layers = n + 1;
            if (!strncmp(tail, "x_block.attn2.", 14) && n < 64) c->sd3_dual_mask |= 1ull << n;
            if (strstr(tail, ".ln_q.")) c->sd3_qk_norm = true;
        }
        if (sscanf(t->name, "first_stage_model.decoder.up.%d.", &n) == 1 && n + 1 > vae->levels)
            vae->levels = n + 1;
    }
    const st_tensor *in = st_find(f, "model.diffusion_model.x_embedder.proj.weight");
    if (in && in->ndim == 4) c->in_channels = (int)in->shape[1];
    c->unet_dtype = dtype_name(in);
    const st_tensor *pos = st_find(f, "model.diffusion_model.pos_embed");
    if (pos && pos->ndim == 3) c->sd3_pos_embed_max = (int)lround(sqrt((double)pos->shape[1]));
    const st_tensor *ctx = st_find(f, "model.diffusion_model.context_embedder.weight");
    if (ctx && ctx->ndim == 2) c->sd3_caption_dim = (int)ctx->shape[0];
    c->family = c->sd3_dual_mask ? LDM_SD35_MEDIUM : c->sd3_qk_norm ? LDM_SD35_LARGE : LDM_SD3;

    ldm_set_part(c, 0, "transformer", "model.diffusion_model.", LDM_MMDIT);
    c->parts[0].levels = c->sd3_layers;
    if (st_has_prefix(f, "first_stage_model.")) ldm_set_part(c, 1, "vae", "first_stage_model.", LDM_VAE);
    static const struct { const char *component, *prefix; ldm_part_kind kind; } enc[] = {
        {"text_encoder", "text_encoders.clip_l.transformer.", LDM_CLIP_SD3L},
        {"text_encoder_2", "text_encoders.clip_g.transformer.", LDM_AS_IS},
        {"text_encoder_3", "text_encoders.t5xxl.transformer.", LDM_AS_IS},
    };
    for (int i = 0; i < 3; i++)
        if (st_has_prefix(f, enc[i].prefix)) ldm_set_part(c, 2 + i, enc[i].component, enc[i].prefix, enc[i].kind);
    for (int i = 0; i < f->n_tensors; i++) {
        const char *k = f->tensors[i].name;
        if (strncmp(k, "text_encoders.", 14)) continue;
        bool known = false;
        for (int e = 0; e < 3 && !known; e++) known = !strncmp(k, enc[e].prefix, strlen(enc[e].prefix));
        if (!known)
            return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s' is not in an SD3 file's text "
                                "encoders (text_encoders.clip_l.transformer.*, clip_g, t5xxl)",
                                c->path, k);
    }
    return SD_OK;
}

static sd_status disagree(const ldm_checkpoint *c, const char *config_json, const char *tensor,
                          const char *key, long file, long config) {
    return sd_set_error(SD_ERR_CONFIG, "%s: the SD3 file says %s %ld (%s), but %s has %ld: pass "
                        "--config DIR of a folder that describes this model", c->path, key, file,
                        tensor, config_json, config);
}

sd_status ldm_checkpoint_check_sd3(const ldm_checkpoint *c, const char *config_json) {
    sd_cfg cfg;
    SD_TRY(cfg_open(&cfg, config_json));
    const int layers = cfg_int(&cfg, "num_layers", 18);
    const int caption = cfg_int(&cfg, "caption_projection_dim", 1152);
    const int pos = cfg_has(&cfg, "pos_embed_max_size") ? cfg_int(&cfg, "pos_embed_max_size", 96) : 0;
    const bool qk = cfg_has(&cfg, "qk_norm");
    int dual[64];
    const int n_dual = cfg_int_list(&cfg, "dual_attention_layers", dual, 64);
    uint64_t mask = 0;
    for (int i = 0; i < n_dual && i < 64; i++)
        if (dual[i] >= 0 && dual[i] < 64) mask |= 1ull << dual[i];
    sd_status st = cfg_status(&cfg);
    cfg_close(&cfg);
    if (st != SD_OK) return st;
    if (c->sd3_layers != layers)
        return disagree(c, config_json, "model.diffusion_model.joint_blocks.N", "num_layers",
                        c->sd3_layers, layers);
    if (c->sd3_caption_dim != caption)
        return disagree(c, config_json, "model.diffusion_model.context_embedder.weight",
                        "caption_projection_dim", c->sd3_caption_dim, caption);
    if (c->sd3_pos_embed_max != pos)
        return disagree(c, config_json, "model.diffusion_model.pos_embed", "pos_embed_max_size",
                        c->sd3_pos_embed_max, pos);
    if (c->sd3_qk_norm != qk)
        return disagree(c, config_json, "model.diffusion_model.joint_blocks.N.*.attn.ln_q",
                        "qk_norm (set)", c->sd3_qk_norm, qk);
    if (c->sd3_dual_mask != mask) {
        int first = 0;
        while (first < 63 && !((c->sd3_dual_mask ^ mask) >> first & 1)) first++;
        const bool in_file = c->sd3_dual_mask >> first & 1;
        return sd_set_error(SD_ERR_CONFIG, "%s: joint block %d %s a second attention "
                            "(model.diffusion_model.joint_blocks.%d.x_block.attn2.*), but %s's "
                            "dual_attention_layers %s it: pass --config DIR of a folder that "
                            "describes this model", c->path, first, in_file ? "has" : "lacks",
                            first, config_json, in_file ? "lacks" : "lists");
    }
    return SD_OK;
}
