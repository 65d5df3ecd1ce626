/* The layers models are built from: weights loaded by checkpoint name (shape-checked), and a
 * forward call.
 *
 * How a Linear / conv layer holds its weight depends on the set it is loaded from (sd_weights):
 * - by default, and always when the set's loader did not opt in (keep_stored), a float32 copy in
 *   the layout the kernel wants, made once at load (the mapped source pages are given back);
 * - with keep_stored, an F16/BF16 weight stays where the file has it (a pointer into the
 *   mapping, no float32 copy) and is widened while being packed, per forward call; the numbers
 *   are those of the float32 path with the widened weights, bit for bit; so does a Linear
 *   weight in a GGUF block type (Q8_0, Q4_K, ...), dequantized while packed (a convolution's is
 *   dequantized at load into a float32 copy: the convolution kernels take no blocks);
 * - policy.dtype F16/BF16 converts the weight at load into a buffer of that dtype, then as above;
 * - policy.dtype Q8_0/Q4_0/Q4_K/Q5_K/Q6_K quantizes a Linear weight at load into ggml's blocks
 *   (core/weights_quant.c), unless weights_quant_kept keeps it; a kept weight, and every
 *   convolution, is held at 16 bits (an F32 one converted to F16, a 16-bit one as stored); with
 *   low_memory the blocks are moved to a temporary file mapping (weights_spill) and paged;
 * - policy.low_memory keeps every weight where it is stored (float32 too), packs it per call and
 *   gives its mapped pages back after each forward;
 * - policy.precision BF16 packs the weights of the layers packed once at load (nn_linear_pack,
 *   every convolution) as bf16, wherever they were read from; unpacked Linear layers stay fp32;
 *   INT8 packs the same layers as int8 per output channel (gemm_int8.h).
 * The policy is the one the set was opened with (weights_open): no global state, so models loaded
 * on different threads, or one after the other, choose independently.
 *
 * Loaders take the tensor prefix printf-style, e.g.
 *     nn_linear_load(&l, w, 320, 320, true, "down_blocks.%d.attentions.%d.proj_in", b, i);
 * reads "<prefix>.weight" ([out][in]) and "<prefix>.bias" ([out]). Every error names the tensor and
 * the folder. A layer is zero-initialised before load; *_free accepts a zeroed or loaded layer. */
#ifndef SD_LAYERS_H
#define SD_LAYERS_H

#include <stdbool.h>

#include "../core/arena.h"
#include "../core/weights.h"
#include "../kernels/conv2d.h"
#include "../kernels/gemm.h"

#define NN_FMT __attribute__((format(printf, 6, 7)))

typedef struct {
    int in, out;
    float *w;      /* [out][in]; NULL once packed, and for stored weights */
    float *b;      /* [out] or NULL */
    float *packed; /* the weight in the GEMM engine's panel layout (nn_linear_pack), or NULL */
    uint16_t *packed_bf16; /* instead of packed under bf16 packing (gemm_bf16_pack_b_nt) */
    void *packed_int8;     /* instead of packed under int8 packing (gemm_int8_pack_b_nt) */
    /* Stored weights (src.n_parts > 0): [out][in] rows as stored, in up to GEMM_B_MAX_PARTS
     * arrays (nn_linear_stack); own[i] is the buffer part i was converted into at load, NULL when
     * the part points into the mapping. */
    gemm_b_stored src;
    void *own[GEMM_B_MAX_PARTS];
    size_t own_map[GEMM_B_MAX_PARTS]; /* > 0: own[i] is a weights_spill file mapping of that
                                       * many bytes (blocks quantized at load in a paged run) */
    bool release;   /* give the mapped parts' pages back after each forward */
    bool pack_bf16; /* nn_linear_pack packs as bf16 (the set's policy.precision) */
    bool pack_int8; /* nn_linear_pack packs as int8 (the set's policy.precision) */
} nn_linear;

sd_status nn_linear_load(nn_linear *l, const sd_weights *w, int in, int out, bool bias,
                         const char *fmt, ...) NN_FMT;
/* Converts the weight to the GEMM engine's panel layout once, so that forward calls stop packing
 * it per call (same numbers); w is freed. For layers whose users only call nn_linear_forward.
 * A stored weight stays stored (packed per call), except under bf16 packing: it is then widened
 * and packed as bf16 once, as a float32 copy would be, and its mapped pages are given back. */
sd_status nn_linear_pack(nn_linear *l);
/* Stacks layers that read the same input into one [sum out_i][in] layer (fused Q/K/V), whatever
 * way they hold their weights: float32 copies are concatenated, stored weights of one dtype
 * become parts, a mix is widened to float32 copies.
 * Biases are concatenated when every part has one (none or all must). The parts are consumed
 * (freed or moved) even on failure. Call before nn_linear_pack. */
sd_status nn_linear_stack(nn_linear *dst, nn_linear *parts, int n);
/* y[m][out] = x[m][in] W^T + b; x and y must not overlap. */
void nn_linear_forward(const nn_linear *l, const float *x, float *y, int m);
/* The strided form, for b < batch and r < rows:
 *   y[b*y_bs + r*ldy + j] (+)= sum_i x[b*x_bs + r*lda + i] * W[j][i] + bias[j],  j < out,
 * accumulating into y when `accumulate`. Strides let a caller read or write a column slice of a
 * wider matrix and one stream's rows of each batch item of a joint [text; image] sequence (Flux);
 * a low-memory layer gives its pages back once, after the last item. */
void nn_linear_run(const nn_linear *l, const float *x, int lda, long x_bs, float *y, int ldy,
                   long y_bs, int rows, int batch, bool accumulate);
/* y[m][out] += x[m][in] W^T + b (a residual add folded into the product). */
void nn_linear_forward_add(const nn_linear *l, const float *x, float *y, int m);
void nn_linear_free(nn_linear *l);

typedef struct {
    conv2d_shape s;
    float *w; /* packed for the GEMM engine (conv2d_pack_weights), not [cout][kh][kw][cin];
               * NULL for stored weights */
    float *b; /* [cout] or NULL */
    uint16_t *w_bf16; /* instead of w under bf16 packing (conv2d_pack_weights_oihw_bf16) */
    void *w_int8;     /* instead of w under int8 packing (conv2d_pack_weights_oihw_int8) */
    /* Stored weights: [cout][cin][kh][kw] as stored (the mapping, or `own` when converted at
     * load), packed per call. */
    const void *src;
    kern_dtype src_type;
    void *own;
    bool release; /* give the mapped pages back after each forward */
} nn_conv2d;

/* A square kernel k with symmetric padding `pad`; the weight must be [cout][cin][k][k]. Padding can
 * be changed after loading (the VAE encoder's downsampler pads right and bottom only). Also
 * accepts a Linear [cout][cin] weight when k == 1 (SD2's linear proj_in stored as conv, or the
 * reverse, both seen in conversions). */
sd_status nn_conv2d_load(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k, int stride,
                         int pad, const char *fmt, ...) __attribute__((format(printf, 8, 9)));
/* The same for a convolution without bias (nn.Conv2d(..., bias=False): AutoencoderTiny's
 * downsampling and inner decoder convs): no "<prefix>.bias" is read. */
sd_status nn_conv2d_load_nobias(nn_conv2d *c, const sd_weights *w, int cin, int cout, int k,
                                int stride, int pad, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* x: [n][h][wd][cin] -> y: [n][oh][ow][cout]. */
void nn_conv2d_forward(const nn_conv2d *c, const float *x, int n, int h, int wd, float *y,
                       sd_arena *scratch);
/* The same with a shape that differs from c->s only in its padding (a band of a larger image
 * padded only where it meets the image's edge). */
void nn_conv2d_forward_shape(const nn_conv2d *c, const conv2d_shape *s, const float *x, int n,
                             int h, int wd, float *y, sd_arena *scratch);
void nn_conv2d_free(nn_conv2d *c);

typedef struct {
    int c, groups;
    float eps;
    float *gamma, *beta; /* [c] */
} nn_norm;

/* GroupNorm: "<prefix>.weight" / "<prefix>.bias" of shape [c]; c must divide into groups. */
sd_status nn_group_norm_load(nn_norm *g, const sd_weights *w, int c, int groups, float eps,
                             const char *fmt, ...) NN_FMT;
/* x, y: [n][hw][c] (y may be x); silu: apply SiLU afterwards. */
void nn_group_norm_forward(const nn_norm *g, const float *x, float *y, int n, int hw, bool silu);

/* LayerNorm over the last dimension; `affine` false for elementwise_affine=False norms. */
sd_status nn_layer_norm_load(nn_norm *g, const sd_weights *w, int c, bool affine, float eps,
                             const char *fmt, ...) NN_FMT;
void nn_layer_norm_forward(const nn_norm *g, const float *x, float *y, int rows);
void nn_norm_free(nn_norm *g);

/* Reads a float tensor of the given shape (printf-style name) into a malloc'd float32 buffer. */
sd_status nn_read_tensor(const sd_weights *w, float **out, int ndim, const int64_t *shape,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
