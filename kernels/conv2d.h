/* 2D convolution over NHWC activations.
 *
 * x: [n][h][w][cin]; weights: [cout][kh][kw][cin] (PyTorch's [cout][cin][kh][kw] reordered once at
 * load, so one output pixel is a dot product of a contiguous patch row with a weight row);
 * y: [n][oh][ow][cout]. Zero padding may differ per side (the VAE encoder pads right/bottom only).
 * oh = (h + pad_t + pad_b - kh) / stride + 1, likewise ow. */
#ifndef SD_CONV2D_H
#define SD_CONV2D_H

#include <stddef.h>
#include <stdint.h>

#include "../core/arena.h"
#include "convert.h"

typedef struct {
    int cin, cout, kh, kw, stride;
    int pad_t, pad_l, pad_b, pad_r;
} conv2d_shape;

static inline int conv2d_out_h(const conv2d_shape *s, int h) {
    return (h + s->pad_t + s->pad_b - s->kh) / s->stride + 1;
}
static inline int conv2d_out_w(const conv2d_shape *s, int w) {
    return (w + s->pad_l + s->pad_r - s->kw) / s->stride + 1;
}

/* The convolution runs as a GEMM whose rows (output pixels) are gathered from x a few at a time,
 * so no im2col buffer is made. conv2d_nhwc packs the weights into `scratch` for the call (released
 * before returning; with NULL it packs them block by block, same numbers). Results do not
 * depend on the number of threads. */
void conv2d_nhwc(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                 const float *bias, float *y, sd_arena *scratch);
void conv2d_nhwc_ref(const conv2d_shape *s, const float *x, int n, int h, int w, const float *weight,
                     const float *bias, float *y);

/* Weights packed once (at load) into the GEMM engine's panel layout: conv2d_packed_size floats
 * (64-byte aligned storage), from [cout][kh][kw][cin] weights. conv2d_nhwc_packed then skips the
 * per-call packing; the results are bit-identical to conv2d_nhwc. */
size_t conv2d_packed_size(const conv2d_shape *s);
void conv2d_pack_weights(const conv2d_shape *s, const float *ohwi, float *packed);
void conv2d_nhwc_packed(const conv2d_shape *s, const float *x, int n, int h, int w,
                        const float *packed, const float *bias, float *y, sd_arena *scratch);

/* The same packing straight from PyTorch's [cout][cin][kh][kw] weights (bit-identical to
 * conv2d_weight_from_oihw then conv2d_pack_weights), without the reordered copy: loading a model
 * then touches one buffer fewer per layer and reorders on all threads. */
void conv2d_pack_weights_oihw(const conv2d_shape *s, const float *oihw, float *packed);

/* Weights kept in the dtype they are stored in (float32, f16 or bf16), in PyTorch's
 * [cout][cin][kh][kw] layout, possibly unaligned (a safetensors mapping): widened while being
 * packed, per call, into the GEMM engine's per-thread packing buffer (no allocation once it has
 * grown to the largest layer). Bit-identical to conv2d_nhwc_packed with the widened weights. */
void conv2d_nhwc_stored(const conv2d_shape *s, const float *x, int n, int h, int w,
                        const void *oihw, kern_dtype t, const float *bias, float *y);
/* conv2d_pack_weights_oihw from 16-bit storage: the same packed floats as from the widened
 * weights. */
void conv2d_pack_weights_oihw_widen_f16(const conv2d_shape *s, const void *oihw, float *packed);
void conv2d_pack_weights_oihw_widen_bf16(const conv2d_shape *s, const void *oihw, float *packed);

/* Reorders PyTorch [cout][cin][kh][kw] weights into [cout][kh][kw][cin]. */
void conv2d_weight_from_oihw(const float *oihw, int cout, int cin, int kh, int kw, float *ohwi);

/* bf16 compute (gemm_bf16.h): weights packed once as bf16 (conv2d_bf16_packed_size uint16_t values,
 * 64-byte aligned storage), input patches rounded to bf16 while gathered, fp32 sums. Results do
 * not depend on the number of threads; they differ from conv2d_nhwc_bf16_ref only by the order of
 * fp32 sums. Without avx512_bf16 (kern_bf16_active) a portable emulation runs: slow. */
size_t conv2d_bf16_packed_size(const conv2d_shape *s);
void conv2d_pack_weights_oihw_bf16(const conv2d_shape *s, const float *oihw, uint16_t *packed);
void conv2d_pack_weights_bf16(const conv2d_shape *s, const float *ohwi, uint16_t *packed);
void conv2d_nhwc_packed_bf16(const conv2d_shape *s, const float *x, int n, int h, int w,
                             const uint16_t *packed, const float *bias, float *y, sd_arena *scratch);
/* The definition: conv2d_nhwc_ref with every input and weight rounded to bf16, summed a pair of
 * k (taps x cin, in that order) at a time. [cout][kh][kw][cin] weights. */
void conv2d_nhwc_bf16_ref(const conv2d_shape *s, const float *x, int n, int h, int w,
                          const float *weight, const float *bias, float *y);

/* int8 compute (gemm_int8.h): weights quantized per output channel and packed once
 * (conv2d_int8_packed_size bytes, 64-byte aligned storage), input patches quantized per row and
 * k block while gathered, int32 sums. The same bits on every instruction set level and thread
 * count as conv2d_nhwc_int8_ref. */
size_t conv2d_int8_packed_size(const conv2d_shape *s);
void conv2d_pack_weights_oihw_int8(const conv2d_shape *s, const float *oihw, void *packed);
void conv2d_nhwc_packed_int8(const conv2d_shape *s, const float *x, int n, int h, int w,
                             const void *packed, const float *bias, float *y);
/* The definition: the patches gathered into rows (taps x cin, in that order) and multiplied by
 * gemm_int8_nt_ref. [cout][kh][kw][cin] weights. */
void conv2d_nhwc_int8_ref(const conv2d_shape *s, const float *x, int n, int h, int w,
                          const float *weight, const float *bias, float *y);

#endif
