/* Floating-point work of a model call, counted from its config: 2 x the multiply-adds of every
 * convolution, Linear layer (1x1 projections included) and attention product (Q K^T and P V, the
 * full square even where a causal mask lets a kernel skip half). Norms, activations, softmax and
 * copies are left out: they are a few GFLOP against the TFLOPs of the products. */
#ifndef SD_BENCH_FLOPS_H
#define SD_BENCH_FLOPS_H

#include "../text_encoder/clip_text.h"
#include "../unet/unet.h"
#include "../vae/vae.h"

typedef struct {
    double conv, linear, attention;
} bench_flops;

static inline double bench_flops_total(const bench_flops *f) {
    return f->conv + f->linear + f->attention;
}

/* One unet_forward at `batch` (2 for one CFG step) on h x w latents with ctx_len context tokens. */
bench_flops bench_flops_unet(const unet_config *c, int batch, int h, int w, int ctx_len);
/* One vae_decode of an h x w latent (post_quant_conv included when the model has one). */
bench_flops bench_flops_vae_decode(const vae_config *c, int h, int w);
/* One clip_text_encode of `batch` sequences of len tokens (all layers, pooled projection). */
bench_flops bench_flops_clip(const clip_text_config *c, int batch, int len);

#endif
