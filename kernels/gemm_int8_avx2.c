/* int8 GEMM microkernels for the AVX2 level: 3 x 32 tiles (12 ymm int32 accumulators) with
 * AVX-VNNI's vpdpbusd where the CPU has it, and 2 x 32 tiles with vpmaddwd elsewhere.
 *
 * Without VNNI: vpmaddubsw (u8 x s8, pairs summed into an int16) would saturate, since
 * 255 * 127 * 2 does not fit in an int16; splitting A's bytes to avoid that costs two of them and
 * two vpmaddwd per 32 products, no faster than fp32 FMAs. Instead both operands are widened to
 * int16 (A's bytes qa + 128 zero-extended, B's sign-extended) and vpmaddwd multiplies 16 pairs
 * into 8 exact int32 sums: 16 products per multiply instruction, twice an 8-wide FMA. Every sum
 * is the exact integer the other kernels compute, and the fp32 epilogue is the same sequence of
 * operations, so the bits are the same. */
#include "gemm_int8_internal.h"
#include "target.h"

#if KERN_X86
#include <immintrin.h>

/* Lanes j < n set (n clamped to 0..8), for maskload / maskstore. */
KERN_INLINE KERN_TARGET_AVX2 __m256i lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* C = (load_c ? C : 0) + float(acc) * (sa * sw) (+ bias) for one row's four vectors. */
KERN_INLINE KERN_TARGET_AVX2 void store_row(const __m256i acc[4], float sar, const float *sw,
                                            float *cr, int nr, const float *bias, int load_c) {
    const __m256 s = _mm256_set1_ps(sar);
    for (int v = 0; v < 4; v++) {
        const __m256i m = lanes(nr - 8 * v);
        __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), _mm256_mul_ps(s, _mm256_loadu_ps(sw + 8 * v)));
        if (load_c) x = _mm256_add_ps(_mm256_maskload_ps(cr + 8 * v, m), x);
        if (bias) x = _mm256_add_ps(x, _mm256_maskload_ps(bias + 8 * v, m));
        _mm256_maskstore_ps(cr + 8 * v, m, x);
    }
}

/* ---- AVX-VNNI ---- */

#define VNNI_FN KERN_INLINE KERN_TARGET_AVXVNNI

/* acc += the 4-byte dot products of u8 a and s8 b per int32 lane; inline assembly under gcc for
 * the reason given in gemm_int8_avx512.c (its intrinsic's accumulators are copied around each
 * instruction). */
VNNI_FN __m256i dpbusd(__m256i acc, __m256i a, __m256i b) {
#if defined(__clang__)
    return _mm256_dpbusd_avx_epi32(acc, a, b);
#else
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "xm"(b));
    return acc;
#endif
}

VNNI_FN void vnni_tile(const int rows, int kc4, const uint32_t *a, const int8_t *b,
                       const int32_t *corr, const float *sa, const float *sw, float *c, long ldc,
                       int nr, const float *bias, int load_c) {
    __m256i acc[3][4];
    KERN_UNROLL
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm256_setzero_si256();
    for (int g = 0; g < kc4; g++) {
        const int8_t *bg = b + g * 4 * GEMM_INT8_NR;
        KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            const __m256i av = _mm256_set1_epi32((int)a[r * INT8_APITCH + g]);
            KERN_UNROLL
            for (int v = 0; v < 4; v++)
                acc[r][v] = dpbusd(acc[r][v], av, _mm256_loadu_si256((const __m256i *)(bg + 32 * v)));
        }
    }
    /* the correction after the loop: started from shared values, the accumulators get copied */
    KERN_UNROLL
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++)
            acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_loadu_si256((const __m256i *)(corr + 8 * v)));
    KERN_UNROLL
    for (int r = 0; r < rows; r++) store_row(acc[r], sa[r], sw, c + r * ldc, nr, bias, load_c);
}

KERN_TARGET_AVXVNNI static void vnni_kernel(int kc4, const uint32_t *a, const int8_t *b,
                                            const int32_t *corr, const float *sa, const float *sw,
                                            float *c, long ldc, int mr, int nr, const float *bias,
                                            int load_c) {
    switch (mr) {
    case 3: vnni_tile(3, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c); break;
    case 2: vnni_tile(2, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c); break;
    case 1: vnni_tile(1, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c); break;
    default: break;
    }
}

/* ---- AVX2: vpmaddwd on widened bytes ---- */

/* One row's 8 columns from two accumulators of 4 columns each, whose int32 lanes hold a column's
 * two pair sums side by side: vphaddd adds them (per 128-bit half), vpermq restores the order. */
KERN_INLINE KERN_TARGET_AVX2 __m256i columns8(__m256i x, __m256i y) {
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(x, y), 0xd8);
}

/* Half a panel (16 columns, from column 16 * h) for `rows` rows: B's 16 bytes of 4 columns x 4 k
 * sign-extended to int16 (once per group for all rows), A's group of 4 int16 (quant_wide's tile)
 * broadcast, vpmaddwd: 2 products a lane, exact in int32. */
KERN_INLINE KERN_TARGET_AVX2 void avx2_half(const int rows, int h, int kc4, const uint32_t *a,
                                            const int8_t *b, __m256i out[2][4]) {
    __m256i acc[2][4];
    KERN_UNROLL
    for (int r = 0; r < rows; r++)
        KERN_UNROLL
        for (int v = 0; v < 4; v++) acc[r][v] = _mm256_setzero_si256();
    for (int g = 0; g < kc4; g++) {
        const int8_t *bg = b + g * 4 * GEMM_INT8_NR + 64 * h;
        __m256i bw[4];
        KERN_UNROLL
        for (int v = 0; v < 4; v++)
            bw[v] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bg + 16 * v)));
        KERN_UNROLL
        for (int r = 0; r < rows; r++) {
            long long a4; /* the group's 4 int16 (the tile is quant_wide's) */
            memcpy(&a4, a + r * 2 * INT8_APITCH + 2 * g, sizeof a4);
            const __m256i aw = _mm256_set1_epi64x(a4);
            KERN_UNROLL
            for (int v = 0; v < 4; v++) acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(aw, bw[v]));
        }
    }
    KERN_UNROLL
    for (int r = 0; r < rows; r++) {
        out[r][2 * h] = columns8(acc[r][0], acc[r][1]);
        out[r][2 * h + 1] = columns8(acc[r][2], acc[r][3]);
    }
}

KERN_INLINE KERN_TARGET_AVX2 void avx2_tile(const int rows, int kc4, const uint32_t *a,
                                            const int8_t *b, const int32_t *corr, const float *sa,
                                            const float *sw, float *c, long ldc, int nr,
                                            const float *bias, int load_c) {
    __m256i acc[2][4];
    avx2_half(rows, 0, kc4, a, b, acc);
    if (nr > 16) avx2_half(rows, 1, kc4, a, b, acc);
    else
        for (int r = 0; r < rows; r++) acc[r][2] = acc[r][3] = _mm256_setzero_si256();
    KERN_UNROLL
    for (int r = 0; r < rows; r++) {
        for (int v = 0; v < 4; v++)
            acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_loadu_si256((const __m256i *)(corr + 8 * v)));
        store_row(acc[r], sa[r], sw, c + r * ldc, nr, bias, load_c);
    }
}

KERN_TARGET_AVX2 static void avx2_kernel(int kc4, const uint32_t *a, const int8_t *b,
                                         const int32_t *corr, const float *sa, const float *sw,
                                         float *c, long ldc, int mr, int nr, const float *bias,
                                         int load_c) {
    switch (mr) {
    case 2: avx2_tile(2, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c); break;
    case 1: avx2_tile(1, kc4, a, b, corr, sa, sw, c, ldc, nr, bias, load_c); break;
    default: break;
    }
}

/* gemm_int8_quantize 8 floats at a time (as the AVX-512 quantizer): unsigned max of the |x|
 * bits, then x * inv rounded by vcvtps2dq (nearest even), clamped, + 128, and the low byte of
 * each lane gathered into 8 bytes. */
KERN_INLINE KERN_TARGET_AVX2 void quant_rows(const float *src, int rows, int kc, uint32_t *dst,
                                             float *sa, const int wide) {
    const int padded = (kc + 3) & ~3;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    for (int r = 0; r < rows; r++) {
        const float *s = src + r * GEMM_APITCH;
        uint8_t *d = (uint8_t *)(dst + r * INT8_APITCH);
        uint16_t *d16 = (uint16_t *)(dst + r * 2 * INT8_APITCH);
        __m256i mx = _mm256_setzero_si256();
        for (int q = 0; q < kc; q += 8) {
            const __m256i x = _mm256_castps_si256(_mm256_maskload_ps(s + q, lanes(kc - q)));
            mx = _mm256_max_epu32(mx, _mm256_and_si256(x, absmask));
        }
        __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
        m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0x4e));
        m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0xb1));
        float inv;
        sa[r] = int8_scale((uint32_t)_mm_cvtsi128_si32(m4), &inv);
        if (inv == 0.0f) {
            if (wide)
                for (int q = 0; q < padded; q++) d16[q] = 128;
            else
                memset(d, 128, (size_t)padded);
            continue;
        }
        const __m256 vinv = _mm256_set1_ps(inv);
        const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
        const __m256i off = _mm256_set1_epi32(128);
        for (int q = 0; q < padded; q += 8) {
            const __m256 x = _mm256_maskload_ps(s + q, lanes(kc - q));
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(x, vinv));
            v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lo), hi), off);
            if (wide) {
                const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                memcpy(d16 + q, &w, (size_t)(padded - q < 8 ? padded - q : 8) * 2);
                continue;
            }
            v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), join);
            const long long bytes = _mm_cvtsi128_si64(_mm256_castsi256_si128(v));
            memcpy(d + q, &bytes, (size_t)(padded - q < 8 ? padded - q : 8));
        }
    }
}

KERN_TARGET_AVX2 static void quant(const float *src, int rows, int kc, uint32_t *dst, float *sa) {
    quant_rows(src, rows, kc, dst, sa, 0);
}

/* For the vpmaddwd kernel: the same values as int16 (pitch 2 * INT8_APITCH uint32), so that a
 * group of 4 is one 8-byte broadcast instead of a broadcast and a widening per row. */
KERN_TARGET_AVX2 static void quant_wide(const float *src, int rows, int kc, uint32_t *dst, float *sa) {
    quant_rows(src, rows, kc, dst, sa, 1);
}

const gemm_int8_kernel *gemm_int8_kernel_avxvnni(void) {
    static const gemm_int8_kernel k = {3, vnni_kernel, quant};
    return &k;
}

const gemm_int8_kernel *gemm_int8_kernel_avx2(void) {
    static const gemm_int8_kernel k = {2, avx2_kernel, quant_wide};
    return &k;
}

#else

const gemm_int8_kernel *gemm_int8_kernel_avxvnni(void) { return gemm_int8_kernel_generic(); }
const gemm_int8_kernel *gemm_int8_kernel_avx2(void) { return gemm_int8_kernel_generic(); }

#endif
