/* The int8 GEMM engine (not a public header): gemm_internal.h's blocking with int8 operands.
 *
 * Packed weight (gemm_int8_packed_size bytes): P = ceil(n / NR) panels, k4 = ceil(k / 4):
 * - panel q's int8 values at q * k4 * NR * 4, as [k4][NR][4] (4 consecutive k of a column side by
 *   side: the group vpdpbusd multiplies against 4 broadcast bytes of A), zeros past n and k;
 * - then int32 corr[P][nkb][NR]: -128 * (sum of the block's int8 values of the column), added to
 *   every sum to take out the +128 that makes A's bytes unsigned;
 * - then float sw[P * NR]: the columns' scales (0 past n).
 * Rows of A come through the fp32 engine's loaders (gemm_load_a_fn: plain rows, or convolution
 * patches gathered from NHWC) a k block at a time and are quantized into a small tile of bytes
 * qa + 128 (kc4 groups of 4 per row; a partial group padded with 128, against zero weights) with
 * one scale per row. */
#ifndef SD_GEMM_INT8_INTERNAL_H
#define SD_GEMM_INT8_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gemm_int8.h"
#include "gemm_internal.h"

enum {
    INT8_APITCH = GEMM_INT8_KC / 4 + 16, /* row pitch of the A tile in groups of 4 (uint32) */
    INT8_MR_MAX = 14,
};

/* C[0..mr)[0..nr) = (load_c ? C : 0) + float(corr[j] + sum a * b) * (sa[r] * sw[j]) (+ bias),
 * in that order of fp32 operations. a: mr rows of kc4 groups (pitch INT8_APITCH); b: kc4 rows
 * of GEMM_INT8_NR groups. */
typedef void (*gemm_int8_ukernel_fn)(int kc4, const uint32_t *a, const int8_t *b,
                                     const int32_t *corr, const float *sa, const float *sw,
                                     float *c, long ldc, int mr, int nr, const float *bias,
                                     int load_c);
/* Quantizes rows x kc floats (pitch GEMM_APITCH) into bytes (pitch INT8_APITCH groups) and sa.
 * The tile is private to a kernel and its quantizer: the AVX2 vpmaddwd kernel's holds the same
 * values as int16 (pitch 2 * INT8_APITCH, its 2 rows well within the engine's buffer of
 * INT8_MR_MAX * INT8_APITCH). */
typedef void (*gemm_int8_quant_fn)(const float *src, int rows, int kc, uint32_t *dst, float *sa);

typedef struct {
    int mr;
    gemm_int8_ukernel_fn kernel;
    gemm_int8_quant_fn quant;
} gemm_int8_kernel;

const gemm_int8_kernel *gemm_int8_kernel_generic(void);
const gemm_int8_kernel *gemm_int8_kernel_avx2(void);     /* AVX2 (vpmaddwd on int16) */
const gemm_int8_kernel *gemm_int8_kernel_avxvnni(void);  /* AVX2 + AVX-VNNI */
const gemm_int8_kernel *gemm_int8_kernel_avx512(void);   /* AVX-512 BW + VNNI */
/* The fastest the active level and the CPU allow. */
const gemm_int8_kernel *gemm_int8_kernel_active(void);

typedef struct {
    int m, n, k;
    gemm_load_a_fn load_a;
    const void *a_ctx;
    const void *packed;
    float *c;
    long ldc;
    const float *bias; /* [n] or NULL */
    int accumulate;
} gemm_int8_problem;

void gemm_int8_run(const gemm_int8_problem *p);

/* Packs a [n][k] weight whose row `col` starts at b + col * ldb; with taps == 1 it is k contiguous
 * values, with taps > 1 a PyTorch conv weight [cin][taps] read in the (tap, cin) order the patch
 * loader gathers (k = taps * cin). */
void gemm_int8_pack(int n, int k, const float *b, long ldb, int taps, void *packed);

/* Where the parts of a packed weight lie. */
static inline int int8_groups(int k) { return (k + 3) / 4; }
static inline int int8_panels(int n) { return (n + GEMM_INT8_NR - 1) / GEMM_INT8_NR; }
static inline size_t int8_corr_offset(int n, int k) {
    return ((size_t)int8_panels(n) * int8_groups(k) * GEMM_INT8_NR * 4 + 63) / 64 * 64;
}
static inline size_t int8_scale_offset(int n, int k) {
    return int8_corr_offset(n, k) +
           ((size_t)int8_panels(n) * gemm_int8_blocks(k) * GEMM_INT8_NR * 4 + 63) / 64 * 64;
}

/* The scale of a row from the bits of its largest magnitude (the largest |x| bits as unsigned
 * integers: for non-negative floats their order is the floats' order, and NaNs sort above
 * infinity, so any vector width finds the same value). *inv is the factor that maps the row to
 * [-127, 127]; 0 when the row is taken as zeros (tiny, or not finite: scale NaN). */
static inline float int8_scale(uint32_t amax_bits, float *inv) {
    if (amax_bits >= 0x7f800000u) {
        *inv = 0.0f;
        return NAN;
    }
    if (amax_bits < 0x0d800000u) { /* 2^-100 */
        *inv = 0.0f;
        return 0.0f;
    }
    float amax;
    memcpy(&amax, &amax_bits, sizeof amax);
    *inv = 127.0f / amax;
    return amax / 127.0f;
}

/* nearest-even rounding of x * inv, clamped (|x * inv| can exceed 127 by an ulp). */
static inline int int8_round(float x, float inv) {
    const float v = nearbyintf(x * inv);
    return v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v;
}

static inline uint32_t int8_abs_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

#endif
