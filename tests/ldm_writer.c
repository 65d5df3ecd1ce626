/* tests/ldm_writer.h: diffusers folder -> one original-layout safetensors file. The tables are
 * built as diffusers' conversion scripts build them: (original, diffusers) prefix pairs applied
 * by substring replacement, over the standard block counts (4 levels for SD 1.x/2.x, 3 for SDXL;
 * the tiny fixtures keep those counts and layers_per_block 2). */
#include "ldm_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"

typedef struct {
    char sd[96], hf[96];
} pair;

typedef struct {
    st_entry *e;
    char **names;
    void **owned;
    int n, cap, n_owned;
} out_list;

static void add(out_list *o, const char *name, const st_tensor *t, const void *data, int ndim,
                const int64_t *shape) {
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->e = realloc(o->e, (size_t)o->cap * sizeof *o->e);
        o->names = realloc(o->names, (size_t)o->cap * sizeof *o->names);
    }
    o->names[o->n] = strdup(name);
    st_entry *e = &o->e[o->n++];
    memset(e, 0, sizeof *e);
    e->name = o->names[o->n - 1];
    e->dtype = t->dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, sizeof e->shape[0] * (size_t)ndim);
    e->data = data;
}

static void *own(out_list *o, size_t n) {
    o->owned = realloc(o->owned, (size_t)(o->n_owned + 1) * sizeof *o->owned);
    return o->owned[o->n_owned++] = malloc(n ? n : 1);
}

/* Python's str.replace(old, new): every occurrence. */
static void replace_all(char *s, size_t cap, const char *old, const char *new_) {
    char buf[512];
    size_t used = 0;
    const size_t lo = strlen(old), ln = strlen(new_);
    for (const char *p = s; *p;) {
        if (!strncmp(p, old, lo) && used + ln < sizeof buf) {
            memcpy(buf + used, new_, ln);
            used += ln;
            p += lo;
        } else if (used + 1 < sizeof buf) {
            buf[used++] = *p++;
        } else {
            break;
        }
    }
    buf[used] = '\0';
    snprintf(s, cap, "%s", buf);
}

static int unet_layer_pairs(pair *p, int xl) {
    int n = 0;
    const int levels = xl ? 3 : 4;
    for (int i = 0; i < levels; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(p[n].hf, 96, "down_blocks.%d.resnets.%d.", i, j);
            snprintf(p[n++].sd, 96, "input_blocks.%d.0.", 3 * i + j + 1);
            if (xl ? i > 0 : i < 3) {
                snprintf(p[n].hf, 96, "down_blocks.%d.attentions.%d.", i, j);
                snprintf(p[n++].sd, 96, "input_blocks.%d.1.", 3 * i + j + 1);
            }
        }
        for (int j = 0; j < 3; j++) {
            snprintf(p[n].hf, 96, "up_blocks.%d.resnets.%d.", i, j);
            snprintf(p[n++].sd, 96, "output_blocks.%d.0.", 3 * i + j);
            if (xl ? i < 2 : i > 0) {
                snprintf(p[n].hf, 96, "up_blocks.%d.attentions.%d.", i, j);
                snprintf(p[n++].sd, 96, "output_blocks.%d.1.", 3 * i + j);
            }
        }
        if (i < 3) {
            snprintf(p[n].hf, 96, "down_blocks.%d.downsamplers.0.conv.", i);
            snprintf(p[n++].sd, 96, "input_blocks.%d.0.op.", 3 * (i + 1));
            snprintf(p[n].hf, 96, "up_blocks.%d.upsamplers.0.", i);
            snprintf(p[n++].sd, 96, "output_blocks.%d.%d.", 3 * i + 2, i == 0 ? 1 : 2);
        }
    }
    snprintf(p[n].hf, 96, "mid_block.attentions.0.");
    snprintf(p[n++].sd, 96, "middle_block.1.");
    for (int j = 0; j < 2; j++) {
        snprintf(p[n].hf, 96, "mid_block.resnets.%d.", j);
        snprintf(p[n++].sd, 96, "middle_block.%d.", 2 * j);
    }
    if (xl) { /* the SDXL script's fix-up: up_blocks.0 has attentions, its upsampler is third */
        snprintf(p[n].hf, 96, "output_blocks.2.1.conv.");
        snprintf(p[n++].sd, 96, "output_blocks.2.2.conv.");
    }
    return n;
}

static void convert_unet(out_list *o, const st_file *f, int xl, const char *prefix) {
    static const char *const whole[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."}, {"out.0.", "conv_norm_out."}, {"out.2.", "conv_out."},
        {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
    };
    static const char *const resnet[][2] = {
        {"in_layers.0", "norm1"}, {"in_layers.2", "conv1"}, {"out_layers.0", "norm2"},
        {"out_layers.3", "conv2"}, {"emb_layers.1", "time_emb_proj"}, {"skip_connection", "conv_shortcut"},
    };
    pair layers[128];
    const int nl = unet_layer_pairs(layers, xl);
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        char k[512];
        snprintf(k, sizeof k, "%s", t->name);
        int done = 0;
        for (size_t w = 0; w < sizeof whole / sizeof *whole && !done; w++) {
            const size_t l = strlen(whole[w][1]);
            if (!strncmp(k, whole[w][1], l) && !strchr(k + l, '.')) {
                snprintf(k, sizeof k, "%s%s", whole[w][0], t->name + l);
                done = 1;
            }
        }
        if (!done) {
            if (strstr(k, "resnets"))
                for (size_t r = 0; r < sizeof resnet / sizeof *resnet; r++)
                    replace_all(k, sizeof k, resnet[r][1], resnet[r][0]);
            for (int l = 0; l < nl; l++) replace_all(k, sizeof k, layers[l].hf, layers[l].sd);
        }
        char name[600];
        snprintf(name, sizeof name, "%s%s", prefix, k);
        add(o, name, t, t->data, t->ndim, t->shape);
    }
}

static void convert_vae(out_list *o, const st_file *f, const char *prefix) {
    pair map[64];
    int n = 0;
#define P(SD, HF) (snprintf(map[n].sd, 96, "%s", SD), snprintf(map[n].hf, 96, "%s", HF), n++)
    P("nin_shortcut", "conv_shortcut");
    P("norm_out", "conv_norm_out");
    P("mid.attn_1.", "mid_block.attentions.0.");
    for (int i = 0; i < 4; i++) {
        char sd[96], hf[96];
        for (int j = 0; j < 2; j++) {
            snprintf(hf, 96, "encoder.down_blocks.%d.resnets.%d.", i, j);
            snprintf(sd, 96, "encoder.down.%d.block.%d.", i, j);
            P(sd, hf);
        }
        if (i < 3) {
            snprintf(hf, 96, "down_blocks.%d.downsamplers.0.", i);
            snprintf(sd, 96, "down.%d.downsample.", i);
            P(sd, hf);
            snprintf(hf, 96, "up_blocks.%d.upsamplers.0.", i);
            snprintf(sd, 96, "up.%d.upsample.", 3 - i);
            P(sd, hf);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(hf, 96, "decoder.up_blocks.%d.resnets.%d.", i, j);
            snprintf(sd, 96, "decoder.up.%d.block.%d.", 3 - i, j);
            P(sd, hf);
        }
    }
    for (int i = 0; i < 2; i++) {
        char sd[96], hf[96];
        snprintf(hf, 96, "mid_block.resnets.%d.", i);
        snprintf(sd, 96, "mid.block_%d.", i + 1);
        P(sd, hf);
    }
#undef P
    static const char *const attn[][2] = {
        {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."},
    };
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        char k[512];
        snprintf(k, sizeof k, "%s", t->name);
        for (int m = 0; m < n; m++) replace_all(k, sizeof k, map[m].hf, map[m].sd);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim;
        if (strstr(t->name, "attentions")) {
            for (size_t a = 0; a < sizeof attn / sizeof *attn; a++) replace_all(k, sizeof k, attn[a][1], attn[a][0]);
            /* the script's reshape_weight_for_sd: linear weights become 1x1 convolutions */
            if (ndim == 2) shape[2] = shape[3] = 1, ndim = 4;
        }
        char name[600];
        snprintf(name, sizeof name, "%s%s", prefix, k);
        add(o, name, t, t->data, ndim, shape);
    }
}

/* transformers CLIP -> OpenCLIP text tower: the SDXL script's textenc_conversion_lst applied as
 * one regex alternation (leftmost match, first alternative), q/k/v concatenated, the projection
 * transposed. */
static void convert_openclip(out_list *o, const st_file *f, const char *prefix) {
    static const char *const lst[][2] = {
        {"transformer.resblocks.", "text_model.encoder.layers."}, {"ln_1", "layer_norm1"},
        {"ln_2", "layer_norm2"}, {".c_fc.", ".fc1."}, {".c_proj.", ".fc2."}, {".attn", ".self_attn"},
        {"ln_final.", "text_model.final_layer_norm."},
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    };
    char name[600];
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t0 = &f->tensors[i];
        if (strstr(t0->name, "position_ids")) continue;
        /* transformers 5 saves CLIPTextModel without the text_model level: the tables expect it. */
        st_tensor renamed = *t0;
        char full[400];
        snprintf(full, sizeof full, "text_model.%s", t0->name);
        if (strncmp(t0->name, "text_model.", 11) && strcmp(t0->name, "text_projection.weight"))
            renamed.name = full;
        const st_tensor *t = &renamed;
        if (!strcmp(t->name, "text_projection.weight")) {
            const size_t es = st_dtype_size(t->dtype), r = (size_t)t->shape[0], c = (size_t)t->shape[1];
            uint8_t *buf = own(o, t->nbytes);
            for (size_t a = 0; a < r; a++)
                for (size_t b = 0; b < c; b++)
                    memcpy(buf + (b * r + a) * es, (const uint8_t *)t->data + (a * c + b) * es, es);
            const int64_t shape[2] = {t->shape[1], t->shape[0]};
            snprintf(name, sizeof name, "%stext_projection", prefix);
            add(o, name, t, buf, 2, shape);
            continue;
        }
        const char *q = strstr(t->name, ".self_attn.q_proj.");
        if (strstr(t->name, ".self_attn.k_proj.") || strstr(t->name, ".self_attn.v_proj.")) continue;
        if (q) { /* in_proj = cat(q, k, v) along rows */
            char base[256], kn[400], vn[400];
            snprintf(base, sizeof base, "%.*s", (int)(q - t->name), t->name);
            const char *what = q + strlen(".self_attn.q_proj.");
            snprintf(kn, sizeof kn, "%s.self_attn.k_proj.%s", base, what);
            snprintf(vn, sizeof vn, "%s.self_attn.v_proj.%s", base, what);
            const size_t skip = t->name == full ? 11 : 0; /* stored without text_model. */
            const st_tensor *tk = st_find(f, kn + skip), *tv = st_find(f, vn + skip);
            if (!tk || !tv) continue;
            uint8_t *buf = own(o, 3 * t->nbytes);
            memcpy(buf, t->data, t->nbytes);
            memcpy(buf + t->nbytes, tk->data, t->nbytes);
            memcpy(buf + 2 * t->nbytes, tv->data, t->nbytes);
            int64_t shape[ST_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            shape[0] *= 3;
            char k[400];
            snprintf(k, sizeof k, "%s.self_attn.in_proj_%.64s", base, what);
            replace_all(k, sizeof k, "text_model.encoder.layers.", "transformer.resblocks.");
            replace_all(k, sizeof k, ".self_attn.in_proj_", ".attn.in_proj_");
            snprintf(name, sizeof name, "%s%s", prefix, k);
            add(o, name, t, buf, t->ndim, shape);
            continue;
        }
        char k[512];
        size_t used = 0;
        for (const char *p = t->name; *p && used + 64 < sizeof k;) {
            size_t a = 0;
            for (; a < sizeof lst / sizeof *lst; a++)
                if (!strncmp(p, lst[a][1], strlen(lst[a][1]))) break;
            if (a < sizeof lst / sizeof *lst) {
                used += (size_t)snprintf(k + used, sizeof k - used, "%s", lst[a][0]);
                p += strlen(lst[a][1]);
            } else {
                k[used++] = *p++;
            }
        }
        k[used] = '\0';
        snprintf(name, sizeof name, "%s%s", prefix, k);
        add(o, name, t, t->data, t->ndim, t->shape);
    }
}

/* A CLIP text encoder under `prefix`, its names as transformers 4 saved them (text_model.*, which
 * every original-layout checkpoint carries): a fixture saved by transformers 5 lacks that level. */
static void copy_prefixed(out_list *o, const st_file *f, const char *prefix) {
    char name[600];
    for (int i = 0; i < f->n_tensors; i++) {
        const char *n = f->tensors[i].name;
        const bool bare = strncmp(n, "text_model.", 11) && strcmp(n, "text_projection.weight");
        snprintf(name, sizeof name, "%s%s%s", prefix, bare ? "text_model." : "", n);
        add(o, name, &f->tensors[i], f->tensors[i].data, f->tensors[i].ndim, f->tensors[i].shape);
    }
}

static void free_list(out_list *o) {
    for (int i = 0; i < o->n; i++) free(o->names[i]);
    for (int i = 0; i < o->n_owned; i++) free(o->owned[i]);
    free(o->e);
    free(o->names);
    free(o->owned);
}

static sd_status open_part(st_file *f, const char *folder, const char *part, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", folder, part, file);
    return st_open(f, path);
}

sd_status ldmw_write(const char *folder, const char *out_path, ldmw_flavour flavour,
                     const ldmw_options *opt) {
    st_file unet, vae, te, te2;
    memset(&vae, 0, sizeof vae);
    memset(&te, 0, sizeof te);
    memset(&te2, 0, sizeof te2);
    SD_TRY(open_part(&unet, folder, "unet", "diffusion_pytorch_model.safetensors"));
    sd_status st = opt->skip_vae ? SD_OK : open_part(&vae, folder, "vae", "diffusion_pytorch_model.safetensors");
    if (st == SD_OK) st = open_part(&te, folder, "text_encoder", "model.safetensors");
    if (st == SD_OK && flavour == LDMW_SDXL) st = open_part(&te2, folder, "text_encoder_2", "model.safetensors");
    out_list o = {0};
    static const float ema = 0.9999f, betas[4] = {0.00085f, 0.001f, 0.0011f, 0.0012f};
    if (st == SD_OK) {
        convert_unet(&o, &unet, flavour == LDMW_SDXL, "model.diffusion_model.");
        if (!opt->skip_vae) convert_vae(&o, &vae, "first_stage_model.");
        if (flavour == LDMW_SD1) copy_prefixed(&o, &te, "cond_stage_model.transformer.");
        if (flavour == LDMW_SD2) convert_openclip(&o, &te, "cond_stage_model.model.");
        if (flavour == LDMW_SDXL) {
            copy_prefixed(&o, &te, "conditioner.embedders.0.transformer.");
            convert_openclip(&o, &te2, "conditioner.embedders.1.model.");
        }
        if (opt->with_extras) { /* what training scripts leave: ignored by the loader */
            const st_tensor s = {.dtype = ST_F32};
            const int64_t one[1] = {1}, four[1] = {4};
            add(&o, "model_ema.decay", &s, &ema, 1, one);
            add(&o, "betas", &s, betas, 1, four);
            add(&o, "alphas_cumprod", &s, betas, 1, four);
        }
        st = st_write(out_path, o.e, o.n, NULL, 0);
    }
    free_list(&o);
    st_close(&unet);
    if (!opt->skip_vae) st_close(&vae);
    st_close(&te);
    if (flavour == LDMW_SDXL) st_close(&te2);
    return st;
}

sd_status ldmw_write_component(const char *folder, const char *component, const char *out_path,
                               ldmw_flavour flavour, int prefixed) {
    const int te = !strncmp(component, "text_encoder", 12);
    st_file f;
    SD_TRY(open_part(&f, folder, component, te ? "model.safetensors"
                                               : "diffusion_pytorch_model.safetensors"));
    out_list o = {0};
    sd_status st = SD_OK;
    if (!strcmp(component, "unet"))
        convert_unet(&o, &f, flavour == LDMW_SDXL, prefixed ? "model.diffusion_model." : "");
    else if (!strcmp(component, "vae"))
        convert_vae(&o, &f, prefixed ? "first_stage_model." : "");
    else if (!strcmp(component, "text_encoder") && flavour == LDMW_SD1)
        copy_prefixed(&o, &f, prefixed ? "cond_stage_model.transformer." : "");
    else if (!strcmp(component, "text_encoder") && flavour == LDMW_SD2)
        convert_openclip(&o, &f, prefixed ? "cond_stage_model.model." : "");
    else if (!strcmp(component, "text_encoder") && flavour == LDMW_SDXL)
        copy_prefixed(&o, &f, prefixed ? "conditioner.embedders.0.transformer." : "");
    else if (!strcmp(component, "text_encoder_2") && flavour == LDMW_SDXL)
        convert_openclip(&o, &f, prefixed ? "conditioner.embedders.1.model." : "");
    else
        st = sd_set_error(SD_ERR_ARG, "ldmw_write_component: no %s here", component);
    if (st == SD_OK) st = st_write(out_path, o.e, o.n, NULL, 0);
    free_list(&o);
    st_close(&f);
    return st;
}
