/* tests/sd3_writer.h: an SD3 diffusers folder -> one file in Stability's layout. Every diffusers
 * tensor name is rewritten by an ordered (diffusers, original) substring table, as diffusers'
 * to-original scripts do; the three projections of an attention are concatenated (q, k, v) into
 * one qkv tensor. The VAE goes through tests/ldm_writer.c's table (the same AutoencoderKL naming
 * as SD 1.x), the text encoders keep transformers' names under their prefixes. */
#include "sd3_writer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/safetensors.h"
#include "ldm_writer.h"

typedef struct {
    st_entry e[2048];
    char *names[2048];
    void *owned[2048];
    int n, n_owned;
} out_list;

static void add(out_list *o, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                const void *data) {
    if (o->n == 2048) return;
    st_entry *e = &o->e[o->n];
    memset(e, 0, sizeof *e);
    e->name = o->names[o->n++] = strdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, sizeof *shape * (size_t)ndim);
    e->data = data;
}

static void *own(out_list *o, size_t n) { return o->owned[o->n_owned++] = malloc(n ? n : 1); }

static void free_list(out_list *o) {
    for (int i = 0; i < o->n; i++) free(o->names[i]);
    for (int i = 0; i < o->n_owned; i++) free(o->owned[i]);
}

/* First occurrence of `old` replaced by `new_`; whether it was there. */
static int replace(char *s, size_t cap, const char *old, const char *new_) {
    char *at = strstr(s, old);
    if (!at) return 0;
    char rest[512];
    snprintf(rest, sizeof rest, "%s", at + strlen(old));
    snprintf(at, cap - (size_t)(at - s), "%s%s", new_, rest);
    return 1;
}

static void add_swapped(out_list *o, const char *name, const st_tensor *t) {
    uint8_t *buf = own(o, t->nbytes);
    const size_t half = t->nbytes / 2;
    memcpy(buf, (const uint8_t *)t->data + half, half);
    memcpy(buf + half, t->data, half);
    add(o, name, t->dtype, t->ndim, t->shape, buf);
}

/* q, then the k and v tensors named, one after the other along rows (the fused qkv). */
static sd_status add_qkv(out_list *o, const st_file *f, const st_tensor *q, const char *k_name,
                         const char *v_name, const char *name) {
    const st_tensor *k = st_find(f, k_name), *v = st_find(f, v_name);
    if (!k || !v) return sd_set_error(SD_ERR_FORMAT, "sd3w: %s without %s / %s", q->name, k_name, v_name);
    uint8_t *buf = own(o, q->nbytes * 3);
    memcpy(buf, q->data, q->nbytes);
    memcpy(buf + q->nbytes, k->data, k->nbytes);
    memcpy(buf + 2 * q->nbytes, v->data, v->nbytes);
    int64_t shape[ST_MAX_DIMS];
    memcpy(shape, q->shape, sizeof shape);
    shape[0] *= 3;
    add(o, name, q->dtype, q->ndim, shape, buf);
    return SD_OK;
}

static sd_status convert_transformer(out_list *o, const st_file *f) {
    int last = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        int n;
        if (sscanf(f->tensors[i].name, "transformer_blocks.%d.", &n) == 1 && n > last) last = n;
    }
    /* diffusers -> original, inside a block (after "transformer_blocks.N.") */
    static const char *const block[][2] = {
        {"attn.norm_added_q.", "context_block.attn.ln_q."}, {"attn.norm_added_k.", "context_block.attn.ln_k."},
        {"attn.norm_q.", "x_block.attn.ln_q."}, {"attn.norm_k.", "x_block.attn.ln_k."},
        {"attn2.norm_q.", "x_block.attn2.ln_q."}, {"attn2.norm_k.", "x_block.attn2.ln_k."},
        {"attn.to_out.0.", "x_block.attn.proj."}, {"attn.to_add_out.", "context_block.attn.proj."},
        {"attn2.to_out.0.", "x_block.attn2.proj."},
        {"norm1_context.linear.", "context_block.adaLN_modulation.1."},
        {"norm1.linear.", "x_block.adaLN_modulation.1."},
        {"ff_context.net.0.proj.", "context_block.mlp.fc1."}, {"ff_context.net.2.", "context_block.mlp.fc2."},
        {"ff.net.0.proj.", "x_block.mlp.fc1."}, {"ff.net.2.", "x_block.mlp.fc2."},
    };
    static const char *const top[][2] = {
        {"pos_embed.pos_embed", "pos_embed"}, {"pos_embed.proj.", "x_embedder.proj."},
        {"time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."},
        {"time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."},
        {"time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0."},
        {"time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2."},
        {"context_embedder.", "context_embedder."}, {"proj_out.", "final_layer.linear."},
        {"norm_out.linear.", "final_layer.adaLN_modulation.1."},
    };
    /* the fused attentions: (q name, k, v, original) */
    static const char *const fused[][4] = {
        {"attn.to_q.", "attn.to_k.", "attn.to_v.", "x_block.attn.qkv."},
        {"attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj.", "context_block.attn.qkv."},
        {"attn2.to_q.", "attn2.to_k.", "attn2.to_v.", "x_block.attn2.qkv."},
    };
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        char name[600];
        int n, off = 0;
        if (sscanf(t->name, "transformer_blocks.%d.%n", &n, &off) == 1 && off > 0) {
            const char *rest = t->name + off;
            int done = 0;
            for (size_t a = 0; a < sizeof fused / sizeof *fused && !done; a++) {
                for (int j = 1; j < 3; j++) /* k and v are written with their q */
                    if (!strncmp(rest, fused[a][j], strlen(fused[a][j]))) done = 1;
                if (done || strncmp(rest, fused[a][0], strlen(fused[a][0]))) continue;
                const char *tail = rest + strlen(fused[a][0]);
                char kn[300], vn[300];
                snprintf(kn, sizeof kn, "transformer_blocks.%d.%s%s", n, fused[a][1], tail);
                snprintf(vn, sizeof vn, "transformer_blocks.%d.%s%s", n, fused[a][2], tail);
                snprintf(name, sizeof name, "model.diffusion_model.joint_blocks.%d.%s%s", n, fused[a][3], tail);
                SD_TRY(add_qkv(o, f, t, kn, vn, name));
                done = 1;
            }
            if (done) continue;
            snprintf(name, sizeof name, "%s", rest);
            size_t b = 0;
            while (b < sizeof block / sizeof *block && !replace(name, sizeof name, block[b][0], block[b][1])) b++;
            if (b == sizeof block / sizeof *block)
                return sd_set_error(SD_ERR_FORMAT, "sd3w: no original name for %s", t->name);
            char full[700];
            snprintf(full, sizeof full, "model.diffusion_model.joint_blocks.%d.%s", n, name);
            /* the pre-only last context block's modulation is an AdaLayerNormContinuous */
            if (n == last && !strncmp(rest, "norm1_context.", 14)) add_swapped(o, full, t);
            else add(o, full, t->dtype, t->ndim, t->shape, t->data);
            continue;
        }
        snprintf(name, sizeof name, "%s", t->name);
        size_t b = 0;
        while (b < sizeof top / sizeof *top && strncmp(name, top[b][0], strlen(top[b][0]))) b++;
        if (b == sizeof top / sizeof *top)
            return sd_set_error(SD_ERR_FORMAT, "sd3w: no original name for %s", t->name);
        char full[700];
        snprintf(full, sizeof full, "model.diffusion_model.%s%s", top[b][1], name + strlen(top[b][0]));
        if (!strcmp(top[b][0], "norm_out.linear.")) add_swapped(o, full, t);
        else add(o, full, t->dtype, t->ndim, t->shape, t->data);
    }
    return SD_OK;
}

static void copy_prefixed(out_list *o, const st_file *f, const char *prefix) {
    for (int i = 0; i < f->n_tensors; i++) {
        char name[600];
        snprintf(name, sizeof name, "%s%s", prefix, f->tensors[i].name);
        add(o, name, f->tensors[i].dtype, f->tensors[i].ndim, f->tensors[i].shape, f->tensors[i].data);
    }
}

static sd_status open_part(st_file *f, const char *folder, const char *part, const char *file) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/%s", folder, part, file);
    return st_open(f, path);
}

sd_status sd3w_write(const char *folder, const char *out_path, int with_t5, const char *extra_key,
                     const char *tmp_dir) {
    char vae_path[PATH_MAX];
    snprintf(vae_path, sizeof vae_path, "%s/sd3w-vae.safetensors", tmp_dir);
    /* the VAE in LDM names, first_stage_model.* (SD3's has no quant convolutions to drop) */
    SD_TRY(ldmw_write_component(folder, "vae", vae_path, LDMW_SD1, 1));
    st_file parts[5];
    memset(parts, 0, sizeof parts);
    sd_status st = open_part(&parts[0], folder, "transformer", "diffusion_pytorch_model.safetensors");
    int opened = st == SD_OK;
    if (st == SD_OK) st = st_open(&parts[1], vae_path), opened += st == SD_OK;
    if (st == SD_OK) st = open_part(&parts[2], folder, "text_encoder", "model.safetensors"), opened += st == SD_OK;
    if (st == SD_OK) st = open_part(&parts[3], folder, "text_encoder_2", "model.safetensors"), opened += st == SD_OK;
    if (st == SD_OK && with_t5)
        st = open_part(&parts[4], folder, "text_encoder_3", "model.safetensors"), opened += st == SD_OK;
    static out_list o;
    memset(&o, 0, sizeof o);
    static const float zero[4] = {0};
    if (st == SD_OK) st = convert_transformer(&o, &parts[0]);
    if (st == SD_OK) {
        copy_prefixed(&o, &parts[1], "");
        copy_prefixed(&o, &parts[2], "text_encoders.clip_l.transformer.");
        copy_prefixed(&o, &parts[3], "text_encoders.clip_g.transformer.");
        if (with_t5) copy_prefixed(&o, &parts[4], "text_encoders.t5xxl.transformer.");
        if (extra_key) add(&o, extra_key, ST_F32, 1, (const int64_t[]){4}, zero);
        st = st_write(out_path, o.e, o.n, NULL, 0);
    }
    free_list(&o);
    for (int i = 0; i < opened; i++) st_close(&parts[i]);
    unlink(vae_path);
    return st;
}

sd_status sd3w_reference_folder(const char *folder, const char *dir) {
    static const char *const linked[] = {"model_index.json", "scheduler", "text_encoder_2",
                                         "text_encoder_3", "tokenizer", "tokenizer_2",
                                         "tokenizer_3", "transformer", "vae"};
    mkdir(dir, 0755);
    char src[PATH_MAX], dst[PATH_MAX], abs[PATH_MAX];
    for (size_t i = 0; i < sizeof linked / sizeof *linked; i++) {
        snprintf(src, sizeof src, "%s/%s", folder, linked[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, linked[i]);
        unlink(dst);
        if (realpath(src, abs) && symlink(abs, dst))
            return sd_set_error(SD_ERR_IO, "sd3w: cannot link %s", dst);
    }
    snprintf(dst, sizeof dst, "%s/text_encoder", dir);
    mkdir(dst, 0755);
    snprintf(src, sizeof src, "%s/text_encoder/config.json", folder);
    snprintf(dst, sizeof dst, "%s/text_encoder/config.json", dir);
    unlink(dst);
    if (!realpath(src, abs) || symlink(abs, dst))
        return sd_set_error(SD_ERR_IO, "sd3w: cannot link %s", dst);
    st_file te;
    SD_TRY(open_part(&te, folder, "text_encoder", "model.safetensors"));
    static out_list o;
    memset(&o, 0, sizeof o);
    sd_status st = SD_OK;
    for (int i = 0; i < te.n_tensors && st == SD_OK; i++) {
        const st_tensor *t = &te.tensors[i];
        if (strcmp(t->name, "text_projection.weight")) {
            add(&o, t->name, t->dtype, t->ndim, t->shape, t->data);
            continue;
        }
        if (t->dtype != ST_F32 || t->ndim != 2 || t->shape[0] != t->shape[1])
            st = sd_set_error(SD_ERR_FORMAT, "sd3w: %s is not a square F32 matrix", t->name);
        float *eye = own(&o, t->nbytes);
        if (st == SD_OK) {
            memset(eye, 0, t->nbytes);
            for (int64_t r = 0; r < t->shape[0]; r++) eye[r * t->shape[0] + r] = 1.0f;
            add(&o, t->name, t->dtype, t->ndim, t->shape, eye);
        }
    }
    snprintf(dst, sizeof dst, "%s/text_encoder/model.safetensors", dir);
    if (st == SD_OK) st = st_write(dst, o.e, o.n, NULL, 0);
    free_list(&o);
    st_close(&te);
    return st;
}
