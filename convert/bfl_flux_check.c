/* What a Black Forest Labs FLUX.1 transformer file is, read from its tensors (bfl_flux.h): which
 * model a file given alone as -m holds (dev or schnell), and whether its architecture is the one
 * a transformer config.json describes. diffusers' FluxTransformer2DModel.from_single_file reads
 * the same facts from the same tensors (its checkpoint inference: guidance_in present = dev);
 * without this check a tiny or pruned file under the full-size bundled config would fail only in
 * the loader, on the first tensor it lacks, without saying why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "bfl_flux.h"

/* Bare as BFL release it, under ComfyUI's prefix, or under the shorter one diffusers'
 * from_single_file also strips. */
static const char *const prefixes[] = {"", "model.diffusion_model.", "diffusion_model."};

void bfl_flux_probe_file(const char *path, bfl_flux_probe *out) {
    memset(out, 0, sizeof *out);
    st_file sf;
    if (st_open(&sf, path) != SD_OK) {
        sd_clear_error(); /* not ours to report: the checkpoint reader says what is wrong */
        return;
    }
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && !out->flux; i++) {
        char key[64];
        snprintf(key, sizeof key, "%sdouble_blocks.", prefixes[i]);
        if (!st_has_prefix(&sf, key)) continue;
        out->flux = true;
        snprintf(key, sizeof key, "%sguidance_in.", prefixes[i]);
        out->dev = st_has_prefix(&sf, key);
    }
    st_close(&sf);
}

/* One past the largest N of `what`N.* (0: none). The keys were checked by the renaming. */
static int count_blocks(const bfl_flux_file *f, const st_file *sf, const char *what) {
    char head[64];
    snprintf(head, sizeof head, "%s%s", f->prefix, what);
    const size_t l = strlen(head);
    int n = 0;
    for (int i = 0; i < sf->n_tensors; i++) {
        if (strncmp(sf->tensors[i].name, head, l)) continue;
        const long k = strtol(sf->tensors[i].name + l, NULL, 10);
        if (k + 1 > n && k < 100000) n = (int)k + 1;
    }
    return n;
}

/* Dimension `dim` of tensor `name` (under the file's prefix), -1 when absent or lower-rank. */
static long dim_of(const bfl_flux_file *f, const st_file *sf, const char *name, int dim) {
    char key[160];
    snprintf(key, sizeof key, "%s%s", f->prefix, name);
    const st_tensor *t = st_find(sf, key);
    return t && t->ndim > dim ? (long)t->shape[dim] : -1;
}

static sd_status disagree(const bfl_flux_file *f, const char *config_json, const char *what,
                          const char *tensor, const char *key, long file, long config) {
    return sd_set_error(SD_ERR_CONFIG, "%s: the FLUX.1 file's %s is %ld (tensor '%s%s'), but %s "
                        "says %s %ld: pass --config DIR of a diffusers folder that describes this "
                        "model", f->path, what, file, f->prefix, tensor, config_json, key, config);
}

sd_status bfl_flux_check_config(bfl_flux_file *f, const st_file *sf, const char *config_json) {
    sd_cfg c;
    SD_TRY(cfg_open(&c, config_json));
    /* FluxTransformer2DModel's defaults, as dit/flux_load.c reads them. */
    const long heads = cfg_int(&c, "num_attention_heads", 24);
    const long head_dim = cfg_int(&c, "attention_head_dim", 128);
    const long in_channels = cfg_int(&c, "in_channels", 64);
    const long joint = cfg_int(&c, "joint_attention_dim", 4096);
    const long pooled = cfg_int(&c, "pooled_projection_dim", 768);
    const sd_status st = cfg_status(&c);
    cfg_close(&c);
    SD_TRY(st);
    f->n_double = count_blocks(f, sf, "double_blocks.");
    f->n_single = count_blocks(f, sf, "single_blocks.");
    f->has_guidance = dim_of(f, sf, "guidance_in.in_layer.weight", 0) > 0;
    if (f->n_double != f->num_layers)
        return disagree(f, config_json, "double block count", "double_blocks.N", "num_layers",
                        f->n_double, f->num_layers);
    if (f->n_single != f->num_single_layers)
        return disagree(f, config_json, "single block count", "single_blocks.N",
                        "num_single_layers", f->n_single, f->num_single_layers);
    if (f->dim != heads * head_dim)
        return disagree(f, config_json, "hidden size", "img_in.weight",
                        "num_attention_heads x attention_head_dim", (long)f->dim, heads * head_dim);
    const long img_in = dim_of(f, sf, "img_in.weight", 1);
    if (img_in != in_channels)
        return disagree(f, config_json, "input width", "img_in.weight", "in_channels", img_in,
                        in_channels);
    const long txt_in = dim_of(f, sf, "txt_in.weight", 1);
    if (txt_in != joint)
        return disagree(f, config_json, "text width", "txt_in.weight", "joint_attention_dim",
                        txt_in, joint);
    const long vec = dim_of(f, sf, "vector_in.in_layer.weight", 1);
    if (vec != pooled)
        return disagree(f, config_json, "pooled width", "vector_in.in_layer.weight",
                        "pooled_projection_dim", vec, pooled);
    /* A dev file under a schnell config is refused key by key (bfl_flux.c); the other way: */
    if (f->guidance_embeds && !f->has_guidance)
        return sd_set_error(SD_ERR_CONFIG, "%s: the FLUX.1 file has no guidance embedding "
                            "(no '%sguidance_in.*': FLUX.1 [schnell]), but %s says "
                            "guidance_embeds true (FLUX.1 [dev]): pass a [schnell] folder",
                            f->path, f->prefix, config_json);
    return SD_OK;
}
