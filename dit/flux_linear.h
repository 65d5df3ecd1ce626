/* A Linear layer whose weight is either resident float32 (an nn_linear) or streamed from the
 * safetensors mapping in its stored dtype and converted a tile of output rows at a time into
 * scratch just before the GEMM (see flux_weights_mode in flux.h for why). */
#ifndef SD_FLUX_LINEAR_H
#define SD_FLUX_LINEAR_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/weights.h"
#include "../nn/layers.h"

typedef struct {
    nn_linear lin;       /* resident: w [out][in] and b; streamed: only b */
    const st_tensor *wt; /* streamed: the mapped weight [out][in] (F32/F16/BF16); else NULL */
    int tile_rows;       /* streamed: output rows converted at a time */
} flux_linear;

/* Floats of weight converted per tile by default: enough output columns for the GEMM to run near
 * full speed, a minor part of the scratch (16 MB). */
#define FLUX_TILE_FLOATS ((size_t)1 << 22)

/* stream_tile 0: resident float32. Otherwise streamed, converting about stream_tile floats (at
 * least one row) at a time. */
sd_status flux_linear_load(flux_linear *l, const sd_weights *w, int in, int out, bool bias,
                           size_t stream_tile, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
void flux_linear_free(flux_linear *l);

/* For b < batch and r < rows:
 *   y[b*y_bs + r*ldy + j] (+)= sum_i x[b*x_bs + r*lda + i] * W[j][i] + bias[j],  j < out.
 * Strides let a layer read or write a column slice of a wider matrix (the single-stream block's
 * [attention | MLP] concatenation) and one stream's rows of a joint [text; image] sequence for
 * every batch item, with each streamed weight tile converted once for all of them. */
/* `tile` holds flux_linear_tile_floats(l) floats for a streamed layer (NULL is fine otherwise). */
void flux_linear_run(const flux_linear *l, const float *x, int lda, long x_bs, float *y, int ldy,
                     long y_bs, int rows, int batch, bool accumulate, float *tile);

/* Contiguous rows: y[rows][out] = x[rows][in] W^T + b. */
void flux_linear_forward(const flux_linear *l, const float *x, float *y, int rows, float *tile);

/* The conversion buffer a streamed layer needs (0 for a resident one). */
size_t flux_linear_tile_floats(const flux_linear *l);

#endif
