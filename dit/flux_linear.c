#include "flux_linear.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/gemm.h"

enum { FLUX_NAME_MAX = 256 };

sd_status flux_linear_load(flux_linear *l, const sd_weights *w, int in, int out, bool bias,
                           size_t stream_tile, const char *fmt, ...) {
    char prefix[FLUX_NAME_MAX], name[FLUX_NAME_MAX + 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memset(l, 0, sizeof *l);
    if (!stream_tile) return nn_linear_load(&l->lin, w, in, out, bias, "%s", prefix);

    l->lin.in = in;
    l->lin.out = out;
    snprintf(name, sizeof name, "%s.weight", prefix);
    const st_tensor *t = weights_find(w, name);
    if (!t) return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' not found", w->dir, name);
    const char *file = weights_file_of(w, name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return sd_set_error(SD_ERR_TENSOR,
                            "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", file, name,
                            st_dtype_name(t->dtype));
    const int64_t shape[2] = {out, in};
    SD_TRY(st_check_shape(t, file, 2, shape));
    l->wt = t;
    const size_t rows = stream_tile / (size_t)(in > 0 ? in : 1);
    l->tile_rows = rows < 1 ? 1 : rows < (size_t)out ? (int)rows : out;
    if (bias) {
        const int64_t bs[1] = {out};
        SD_TRY(nn_read_tensor(w, &l->lin.b, 1, bs, "%s.bias", prefix));
    }
    return SD_OK;
}

void flux_linear_free(flux_linear *l) {
    nn_linear_free(&l->lin);
    l->wt = NULL;
}

size_t flux_linear_tile_floats(const flux_linear *l) {
    return l->wt ? (size_t)l->tile_rows * l->lin.in : 0;
}

/* Rows [r0, r0 + n) of the mapped weight into dst [n][in] as float32. */
static void convert_rows(const st_tensor *t, int in, int r0, int n, float *dst) {
    const size_t esize = st_dtype_size(t->dtype);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)r0 * in * esize;
    const long total = (long)n * in;
    if (t->dtype == ST_BF16) {
        /* bf16 is the top half of a float32: a shift, which the compiler vectorises. The mapping
         * need not be 2-byte aligned, hence memcpy. */
#pragma omp parallel for schedule(static)
        for (long i = 0; i < total; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        st_tensor row = *t;
        row.ndim = 1;
        row.shape[0] = in;
        row.nbytes = (size_t)in * esize;
        row.data = src + (size_t)r * in * esize;
        st_to_f32(&row, dst + (size_t)r * in);
    }
}

void flux_linear_run(const flux_linear *l, const float *x, int lda, long x_bs, float *y, int ldy,
                     long y_bs, int rows, int batch, bool accumulate, float *tile) {
    const int in = l->lin.in, out = l->lin.out;
    if (!l->wt) {
        for (int b = 0; b < batch; b++)
            gemm_nt(rows, out, in, x + b * x_bs, lda, l->lin.w, in, y + b * y_bs, ldy, l->lin.b,
                    accumulate);
        return;
    }
    const int step = l->tile_rows;
    for (int n0 = 0; n0 < out; n0 += step) {
        const int n = out - n0 < step ? out - n0 : step;
        convert_rows(l->wt, in, n0, n, tile);
        for (int b = 0; b < batch; b++)
            gemm_nt(rows, n, in, x + b * x_bs, lda, tile, in, y + b * y_bs + n0, ldy,
                    l->lin.b ? l->lin.b + n0 : NULL, accumulate);
    }
}

void flux_linear_forward(const flux_linear *l, const float *x, float *y, int rows, float *tile) {
    flux_linear_run(l, x, l->lin.in, 0, y, l->lin.out, 0, rows, 1, false, tile);
}
