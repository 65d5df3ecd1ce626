/* Test-only: writes a diffusers FluxTransformer2DModel folder as one file in Black Forest Labs'
 * layout (flux1-dev.safetensors), the other way round from the library (convert/bfl_flux.c),
 * following BFL's model definition (flux/model.py, flux/modules/layers.py): MLPEmbedder's
 * in_layer/out_layer, SelfAttention's fused qkv and QKNorm's .scale, Modulation's lin,
 * SingleStreamBlock's linear1 = [q; k; v; mlp_in] and linear2, LastLayer's adaLN_modulation
 * chunked as (shift, scale). Written independently of convert/ so that a shared misreading
 * cannot pass unnoticed. */
#ifndef SD_TEST_BFL_WRITER_H
#define SD_TEST_BFL_WRITER_H

#include "../core/error.h"

/* Ways to spoil the file for the error tests; all-zero: a faithful file. */
typedef struct {
    const char *prefix;    /* before every key ("model.diffusion_model." as ComfyUI saves) */
    const char *drop;      /* leave out the BFL keys starting with this */
    const char *extra;     /* add a copy of img_in.bias under this BFL name */
    const char *shrink;    /* write this BFL tensor with half its rows */
    int f32;               /* widen every tensor to float32 (an fp32 release) */
} bflw_options;

/* `transformer_dir` holds config.json and diffusion_pytorch_model.safetensors. */
sd_status bflw_write(const char *transformer_dir, const char *out_path, const bflw_options *opt);

#endif
