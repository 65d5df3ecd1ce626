/* Black Forest Labs' FLUX.1 names to diffusers' (bfl_flux.h), as diffusers'
 * convert_flux_transformer_checkpoint_to_diffusers maps them. Fused tensors become row views:
 * a double block's img_attn.qkv / txt_attn.qkv into three equal parts, a single block's linear1
 * into q, k, v (dim rows each) and the MLP's input (the rest). The final modulation is the one
 * tensor that needs a copy: BFL chunks it as (shift, scale), diffusers' AdaLayerNormContinuous
 * as (scale, shift). */
#include "bfl_flux.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"

static int bad_key(const bfl_flux_file *f, const char *key, const char *why) {
    sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s%s' %s", f->path, f->prefix, key, why);
    return -1;
}

/* head + rest into r->name, where rest must be "weight" or "bias" (a Linear's). */
static int put_linear(const bfl_flux_file *f, const char *key, weights_rename *r,
                      const char *head, const char *rest) {
    if (strcmp(rest, "weight") && strcmp(rest, "bias"))
        return bad_key(f, key, "is not a weight or bias of a FLUX.1 linear layer");
    snprintf(r->name, sizeof r->name, "%s%s", head, rest);
    return 1;
}

/* Finds the entry of `map` whose BFL prefix starts `rest`; NULL if none. */
static const char *const *match(const char *const (*map)[2], size_t n, const char *rest) {
    for (size_t i = 0; i < n; i++)
        if (!strncmp(rest, map[i][0], strlen(map[i][0]))) return map[i];
    return NULL;
}

#define MATCH(map, rest) match(map, sizeof map / sizeof *map, rest)

static int name_double(const bfl_flux_file *f, const char *key, int n, const char *rest,
                       weights_rename out[WEIGHTS_RENAME_MAX]) {
    char head[160];
    static const char *const norms[][2] = {
        {"img_attn.norm.query_norm.scale", "attn.norm_q.weight"},
        {"img_attn.norm.key_norm.scale", "attn.norm_k.weight"},
        {"txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"},
        {"txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"},
    };
    for (size_t i = 0; i < sizeof norms / sizeof *norms; i++)
        if (!strcmp(rest, norms[i][0])) {
            snprintf(out[0].name, sizeof out[0].name, "transformer_blocks.%d.%s", n, norms[i][1]);
            return 1;
        }
    static const char *const qkv[][4] = {
        {"img_attn.qkv.", "attn.to_q.", "attn.to_k.", "attn.to_v."},
        {"txt_attn.qkv.", "attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj."},
    };
    for (int i = 0; i < 2; i++)
        if (!strncmp(rest, qkv[i][0], strlen(qkv[i][0]))) {
            for (int j = 0; j < 3; j++) {
                snprintf(head, sizeof head, "transformer_blocks.%d.%s", n, qkv[i][1 + j]);
                if (put_linear(f, key, &out[j], head, rest + strlen(qkv[i][0])) < 0) return -1;
                out[j].part = j;
                out[j].n_parts = 3;
            }
            return 3;
        }
    static const char *const map[][2] = {
        {"img_mod.lin.", "norm1.linear."},     {"txt_mod.lin.", "norm1_context.linear."},
        {"img_attn.proj.", "attn.to_out.0."},  {"txt_attn.proj.", "attn.to_add_out."},
        {"img_mlp.0.", "ff.net.0.proj."},      {"img_mlp.2.", "ff.net.2."},
        {"txt_mlp.0.", "ff_context.net.0.proj."}, {"txt_mlp.2.", "ff_context.net.2."},
    };
    const char *const *m = MATCH(map, rest);
    if (!m) return bad_key(f, key, "is not part of a FLUX.1 double block");
    snprintf(head, sizeof head, "transformer_blocks.%d.%s", n, m[1]);
    return put_linear(f, key, &out[0], head, rest + strlen(m[0]));
}

static int name_single(const bfl_flux_file *f, const char *key, int n, const char *rest,
                       weights_rename out[WEIGHTS_RENAME_MAX]) {
    char head[160];
    if (!strcmp(rest, "norm.query_norm.scale") || !strcmp(rest, "norm.key_norm.scale")) {
        snprintf(out[0].name, sizeof out[0].name, "single_transformer_blocks.%d.attn.norm_%c.weight",
                 n, rest[5] == 'q' ? 'q' : 'k');
        return 1;
    }
    if (!strncmp(rest, "linear1.", 8)) {
        /* FLUX.1's mlp_ratio is 4: linear1 holds 3 * dim rows of q, k, v, then 4 * dim. */
        static const char *const parts[] = {"attn.to_q.", "attn.to_k.", "attn.to_v.", "proj_mlp."};
        for (int j = 0; j < 4; j++) {
            snprintf(head, sizeof head, "single_transformer_blocks.%d.%s", n, parts[j]);
            if (put_linear(f, key, &out[j], head, rest + 8) < 0) return -1;
            out[j].row0 = j * f->dim;
            out[j].rows = j < 3 ? f->dim : 4 * f->dim;
        }
        return 4;
    }
    static const char *const map[][2] = {
        {"modulation.lin.", "norm.linear."}, {"linear2.", "proj_out."},
    };
    const char *const *m = MATCH(map, rest);
    if (!m) return bad_key(f, key, "is not part of a FLUX.1 single block");
    snprintf(head, sizeof head, "single_transformer_blocks.%d.%s", n, m[1]);
    return put_linear(f, key, &out[0], head, rest + strlen(m[0]));
}

/* A block's index: the number after `what` ("double_blocks.") and the rest after its dot. */
static int block_index(const char *key, const char *what, const char **rest) {
    const size_t l = strlen(what);
    if (strncmp(key, what, l)) return -1;
    char *end;
    const long n = strtol(key + l, &end, 10);
    if (end == key + l || *end != '.' || n < 0 || n > 100000) return -2;
    *rest = end + 1;
    return (int)n;
}

static int name_bfl(const bfl_flux_file *f, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    const char *rest;
    int n = block_index(key, "double_blocks.", &rest);
    if (n >= f->num_layers) {
        char why[160];
        snprintf(why, sizeof why, "is in double block %d, but the folder's config has num_layers "
                 "%d", n, f->num_layers);
        return bad_key(f, key, why);
    }
    if (n >= 0) return name_double(f, key, n, rest, out);
    n = block_index(key, "single_blocks.", &rest);
    if (n >= f->num_single_layers) {
        char why[160];
        snprintf(why, sizeof why, "is in single block %d, but the folder's config has "
                 "num_single_layers %d", n, f->num_single_layers);
        return bad_key(f, key, why);
    }
    if (n >= 0) return name_single(f, key, n, rest, out);
    static const char *const map[][2] = {
        {"img_in.", "x_embedder."},
        {"txt_in.", "context_embedder."},
        {"time_in.in_layer.", "time_text_embed.timestep_embedder.linear_1."},
        {"time_in.out_layer.", "time_text_embed.timestep_embedder.linear_2."},
        {"vector_in.in_layer.", "time_text_embed.text_embedder.linear_1."},
        {"vector_in.out_layer.", "time_text_embed.text_embedder.linear_2."},
        {"guidance_in.in_layer.", "time_text_embed.guidance_embedder.linear_1."},
        {"guidance_in.out_layer.", "time_text_embed.guidance_embedder.linear_2."},
        {"final_layer.linear.", "proj_out."},
        {"final_layer.adaLN_modulation.1.", "norm_out.linear."},
    };
    const char *const *m = MATCH(map, key);
    if (!m) return bad_key(f, key, "is not in Black Forest Labs' FLUX.1 transformer layout");
    /* FLUX.1 [dev] embeds the guidance scale, [schnell] does not: the file and folder differ. */
    if (!strncmp(key, "guidance_in.", 12) && !f->guidance_embeds)
        return bad_key(f, key, "embeds guidance (FLUX.1 [dev]), but the folder's config has "
                       "guidance_embeds false (FLUX.1 [schnell]): pass a [dev] folder");
    out[0].swap_halves = !strcmp(m[0], "final_layer.adaLN_modulation.1.");
    return put_linear(f, key, &out[0], m[1], key + strlen(m[0]));
}

static int rename_tensor(void *ctx, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]) {
    const bfl_flux_file *f = ctx;
    const size_t l = strlen(f->prefix);
    /* A ComfyUI checkpoint may carry the VAE and text encoders beside the transformer. */
    if (strncmp(key, f->prefix, l)) return 0;
    key += l;
    if (!f->bfl) {
        snprintf(out[0].name, sizeof out[0].name, "%s", key);
        return 1;
    }
    return name_bfl(f, key, out);
}

static sd_status open_set(sd_weights *w, const weights_source *src, const weights_policy *policy) {
    const bfl_flux_file *f = (const bfl_flux_file *)src;
    char label[600];
    snprintf(label, sizeof label, "%s (%s as diffusers transformer)", f->path,
             f->bfl ? "Black Forest Labs' layout" : "diffusers' layout");
    return weights_open_renamed(w, f->path, label, rename_tensor, (void *)f, policy);
}

static bool ends_with(const char *s, const char *suffix) {
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static sd_status read_counts(bfl_flux_file *f, const char *config_json) {
    sd_cfg c;
    SD_TRY(cfg_open(&c, config_json));
    /* FluxTransformer2DModel's defaults, as dit/flux_load.c reads them. */
    f->num_layers = cfg_int(&c, "num_layers", 19);
    f->num_single_layers = cfg_int(&c, "num_single_layers", 38);
    f->guidance_embeds = cfg_bool(&c, "guidance_embeds", false);
    const sd_status st = cfg_status(&c);
    cfg_close(&c);
    return st;
}

/* Checks every key through the mapping (and the fused tensors' sizes) before any is loaded. */
static sd_status check_keys(bfl_flux_file *f, const st_file *sf) {
    for (int i = 0; i < sf->n_tensors; i++) {
        const st_tensor *t = &sf->tensors[i];
        weights_rename r[WEIGHTS_RENAME_MAX];
        memset(r, 0, sizeof r);
        const int k = rename_tensor(f, t->name, r);
        if (k < 0) return SD_ERR_FORMAT;
        if (k > 0) f->params += st_numel(t);
        if (k == 4 && (t->ndim < 1 || t->shape[0] != 7 * f->dim))
            return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has %lld rows, expected 7 x %lld "
                                "(q, k, v and the 4x MLP of the hidden size of img_in)", f->path,
                                t->name, t->ndim ? (long long)t->shape[0] : 0LL, (long long)f->dim);
    }
    return SD_OK;
}

sd_status bfl_flux_open(bfl_flux_file *f, const char *path, const char *config_json) {
    memset(f, 0, sizeof *f);
    static const char *const pickled[] = {".ckpt", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof pickled / sizeof *pickled; i++)
        if (ends_with(path, pickled[i]))
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a pickled PyTorch file; this program "
                                "never unpickles (loading one can run arbitrary code): use the "
                                ".safetensors release", path);
    f->base.open = open_set;
    f->path = strdup(path);
    if (!f->path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_status st = read_counts(f, config_json);
    st_file sf;
    if (st == SD_OK) st = st_open(&sf, path);
    if (st != SD_OK) {
        bfl_flux_close(f);
        return st;
    }
    /* Bare as BFL release it, under ComfyUI's prefix, or under the shorter one diffusers'
     * from_single_file also strips. */
    static const char *const prefixes[] = {"", "model.diffusion_model.", "diffusion_model."};
    const st_tensor *in = NULL;
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && !in; i++) {
        char key[64];
        snprintf(key, sizeof key, "%simg_in.weight", prefixes[i]);
        if ((in = st_find(&sf, key))) {
            snprintf(f->prefix, sizeof f->prefix, "%s", prefixes[i]);
            f->bfl = true;
        }
    }
    if (!in) in = st_find(&sf, "x_embedder.weight");
    if (!in || in->ndim != 2) {
        st = sd_set_error(SD_ERR_FORMAT, "%s: not a FLUX.1 transformer: no 2-D img_in.weight "
                          "(Black Forest Labs' layout, bare or under model.diffusion_model.) nor "
                          "x_embedder.weight (diffusers'); its first tensor is '%s'", path,
                          sf.n_tensors ? sf.tensors[0].name : "(none)");
    } else {
        f->dim = in->shape[0];
        f->dtype = in->dtype == ST_F16 ? "fp16" : in->dtype == ST_BF16 ? "bf16" : "fp32";
        st = check_keys(f, &sf);
        if (st == SD_OK && f->bfl) st = bfl_flux_check_config(f, &sf, config_json);
    }
    st_close(&sf);
    if (st != SD_OK) bfl_flux_close(f);
    return st;
}

void bfl_flux_close(bfl_flux_file *f) {
    free(f->path);
    f->path = NULL;
}
