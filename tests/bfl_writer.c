/* tests/bfl_writer.h: diffusers' FLUX transformer -> one Black Forest Labs file. Each BFL tensor
 * is listed with the diffusers tensors whose rows it stacks, in BFL's order (as diffusers'
 * scripts/convert_flux_to_diffusers.py splits them, read backwards). */
#include "bfl_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/safetensors.h"

enum { MAX_OUT = 1024 };

typedef struct {
    const st_file *src;
    const bflw_options *opt;
    st_entry e[MAX_OUT];
    char *names[MAX_OUT];
    void *data[MAX_OUT];
    int n, used; /* used: diffusers tensors read (each exactly once in a faithful file) */
    sd_status st;
} writer;

/* Writes BFL tensor `bfl` (prefixed) as the rows of diffusers tensors hf[0..n) stacked; `swap`
 * stacks the second half of hf[0]'s rows before the first. */
static void emit(writer *w, const char *bfl, const char *const *hf, int n, int swap) {
    if (w->st != SD_OK) return;
    if (w->opt->drop && !strncmp(bfl, w->opt->drop, strlen(w->opt->drop))) return;
    const st_tensor *t[4];
    size_t bytes = 0;
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        t[i] = st_find(w->src, hf[i]);
        if (!t[i]) {
            w->st = sd_set_error(SD_ERR_FORMAT, "bfl_writer: no '%s'", hf[i]);
            return;
        }
        w->used++;
        bytes += t[i]->nbytes;
        rows += t[i]->shape[0];
    }
    uint8_t *buf = malloc(bytes ? bytes : 1), *at = buf;
    if (swap) {
        const size_t half = t[0]->nbytes / 2;
        memcpy(at, (const uint8_t *)t[0]->data + half, half);
        memcpy(at + half, t[0]->data, half);
    } else {
        for (int i = 0; i < n; i++) at = (uint8_t *)memcpy(at, t[i]->data, t[i]->nbytes) + t[i]->nbytes;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->dtype = t[0]->dtype;
    e->ndim = t[0]->ndim;
    memcpy(e->shape, t[0]->shape, sizeof e->shape);
    e->shape[0] = rows;
    if (w->opt->shrink && !strcmp(bfl, w->opt->shrink)) e->shape[0] = rows / 2;
    if (w->opt->f32 && e->dtype != ST_F32) { /* exact widening of the stored values */
        st_tensor src = {.dtype = e->dtype, .ndim = e->ndim, .data = buf};
        memcpy(src.shape, e->shape, sizeof src.shape);
        src.shape[0] = rows;
        float *wide = malloc((size_t)st_numel(&src) * sizeof *wide + 1);
        if (wide) st_to_f32(&src, wide);
        free(buf);
        buf = (uint8_t *)wide;
        if (!buf) w->st = sd_set_error(SD_ERR_NOMEM, "bfl_writer: out of memory");
        e->dtype = ST_F32;
    }
    char name[300];
    snprintf(name, sizeof name, "%s%s", w->opt->prefix ? w->opt->prefix : "", bfl);
    w->names[w->n] = strdup(name);
    e->name = w->names[w->n];
    e->data = w->data[w->n] = buf;
    w->n++;
}

/* A Linear's weight and bias: BFL name `bfl`, diffusers name(s) `hf` stacked. */
static void linear(writer *w, const char *bfl, const char *const *hf, int n, int swap) {
    static const char *const wb[] = {"weight", "bias"};
    for (int k = 0; k < 2; k++) {
        char b[300], h[4][300];
        const char *hp[4];
        snprintf(b, sizeof b, "%s.%s", bfl, wb[k]);
        for (int i = 0; i < n; i++) {
            snprintf(h[i], sizeof h[i], "%s.%s", hf[i], wb[k]);
            hp[i] = h[i];
        }
        emit(w, b, hp, n, swap);
    }
}

static void linear1(writer *w, const char *bfl, const char *hf) { linear(w, bfl, &hf, 1, 0); }

static void double_block(writer *w, int i) {
    char b[200], h[4][200];
    const char *hp[4] = {h[0], h[1], h[2], h[3]};
    const char *const sides[2][6] = {
        /* BFL stream, its modulation, q, k, v (diffusers), out projection */
        {"img", "norm1", "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"},
        {"txt", "norm1_context", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
         "attn.to_add_out"},
    };
    for (int s = 0; s < 2; s++) {
        const char *const *x = sides[s];
        snprintf(b, sizeof b, "double_blocks.%d.%s_mod.lin", i, x[0]);
        snprintf(h[0], sizeof h[0], "transformer_blocks.%d.%s.linear", i, x[1]);
        linear1(w, b, h[0]);
        snprintf(b, sizeof b, "double_blocks.%d.%s_attn.qkv", i, x[0]);
        for (int j = 0; j < 3; j++) snprintf(h[j], sizeof h[j], "transformer_blocks.%d.%s", i, x[2 + j]);
        linear(w, b, hp, 3, 0);
        snprintf(b, sizeof b, "double_blocks.%d.%s_attn.proj", i, x[0]);
        snprintf(h[0], sizeof h[0], "transformer_blocks.%d.%s", i, x[5]);
        linear1(w, b, h[0]);
        const char *ff = s ? "ff_context" : "ff";
        snprintf(b, sizeof b, "double_blocks.%d.%s_mlp.0", i, x[0]);
        snprintf(h[0], sizeof h[0], "transformer_blocks.%d.%s.net.0.proj", i, ff);
        linear1(w, b, h[0]);
        snprintf(b, sizeof b, "double_blocks.%d.%s_mlp.2", i, x[0]);
        snprintf(h[0], sizeof h[0], "transformer_blocks.%d.%s.net.2", i, ff);
        linear1(w, b, h[0]);
        const char *qn[2] = {s ? "norm_added_q" : "norm_q", s ? "norm_added_k" : "norm_k"};
        const char *bn[2] = {"query_norm", "key_norm"};
        for (int j = 0; j < 2; j++) {
            snprintf(b, sizeof b, "double_blocks.%d.%s_attn.norm.%s.scale", i, x[0], bn[j]);
            snprintf(h[0], sizeof h[0], "transformer_blocks.%d.attn.%s.weight", i, qn[j]);
            emit(w, b, hp, 1, 0);
        }
    }
}

static void single_block(writer *w, int i) {
    char b[200], h[4][200];
    const char *hp[4] = {h[0], h[1], h[2], h[3]};
    static const char *const in[] = {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"};
    for (int j = 0; j < 4; j++) snprintf(h[j], sizeof h[j], "single_transformer_blocks.%d.%s", i, in[j]);
    snprintf(b, sizeof b, "single_blocks.%d.linear1", i);
    linear(w, b, hp, 4, 0);
    snprintf(b, sizeof b, "single_blocks.%d.linear2", i);
    snprintf(h[0], sizeof h[0], "single_transformer_blocks.%d.proj_out", i);
    linear1(w, b, h[0]);
    snprintf(b, sizeof b, "single_blocks.%d.modulation.lin", i);
    snprintf(h[0], sizeof h[0], "single_transformer_blocks.%d.norm.linear", i);
    linear1(w, b, h[0]);
    snprintf(b, sizeof b, "single_blocks.%d.norm.query_norm.scale", i);
    snprintf(h[0], sizeof h[0], "single_transformer_blocks.%d.attn.norm_q.weight", i);
    emit(w, b, hp, 1, 0);
    snprintf(b, sizeof b, "single_blocks.%d.norm.key_norm.scale", i);
    snprintf(h[0], sizeof h[0], "single_transformer_blocks.%d.attn.norm_k.weight", i);
    emit(w, b, hp, 1, 0);
}

sd_status bflw_write(const char *dir, const char *out_path, const bflw_options *opt) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    sd_cfg c;
    SD_TRY(cfg_open(&c, path));
    const int n_double = cfg_int(&c, "num_layers", 19), n_single = cfg_int(&c, "num_single_layers", 38);
    const bool guidance = cfg_bool(&c, "guidance_embeds", false);
    cfg_close(&c);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    st_file f;
    SD_TRY(st_open(&f, path));
    writer *w = calloc(1, sizeof *w);
    w->src = &f;
    w->opt = opt;
    linear1(w, "img_in", "x_embedder");
    linear1(w, "txt_in", "context_embedder");
    linear1(w, "time_in.in_layer", "time_text_embed.timestep_embedder.linear_1");
    linear1(w, "time_in.out_layer", "time_text_embed.timestep_embedder.linear_2");
    linear1(w, "vector_in.in_layer", "time_text_embed.text_embedder.linear_1");
    linear1(w, "vector_in.out_layer", "time_text_embed.text_embedder.linear_2");
    if (guidance) {
        linear1(w, "guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1");
        linear1(w, "guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2");
    }
    for (int i = 0; i < n_double; i++) double_block(w, i);
    for (int i = 0; i < n_single; i++) single_block(w, i);
    linear1(w, "final_layer.linear", "proj_out");
    const char *mod = "norm_out.linear";
    linear(w, "final_layer.adaLN_modulation.1", &mod, 1, 1); /* (scale, shift) -> (shift, scale) */
    if (opt->extra) {
        const char *bias = "x_embedder.bias";
        emit(w, opt->extra, &bias, 1, 0);
    }
    sd_status st = w->st;
    if (st == SD_OK && !opt->drop && w->used != f.n_tensors + (opt->extra ? 1 : 0))
        st = sd_set_error(SD_ERR_FORMAT, "bfl_writer: %d of the %d diffusers tensors written",
                          w->used, f.n_tensors);
    if (st == SD_OK) st = st_write(out_path, w->e, w->n, NULL, 0);
    for (int i = 0; i < w->n; i++) free(w->names[i]), free(w->data[i]);
    free(w);
    st_close(&f);
    return st;
}
