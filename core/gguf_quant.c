/* Block types of GGUF tensors and their dequantization (gguf_quant.h). Each dequantizer is one
 * block at a time, reading the block's bytes by offset (so no struct packing or host byte order
 * matters), with ggml's expressions kept as they are: a reordered product would round otherwise. */
#include "gguf_quant.h"

#include <string.h>

#include "safetensors.h"

enum { QK = 32, QK_K = 256 };

typedef struct {
    uint32_t type;
    const char *name;
    int elems, bytes; /* 0: a ggml type this program does not read */
} type_info;

static const type_info types[] = {
    {GGUF_TYPE_F32, "F32", 1, 4},       {GGUF_TYPE_F16, "F16", 1, 2},
    {GGUF_TYPE_Q4_0, "Q4_0", QK, 18},   {GGUF_TYPE_Q4_1, "Q4_1", QK, 20},
    {GGUF_TYPE_Q5_0, "Q5_0", QK, 22},   {GGUF_TYPE_Q5_1, "Q5_1", QK, 24},
    {GGUF_TYPE_Q8_0, "Q8_0", QK, 34},   {9, "Q8_1", 0, 0},
    {GGUF_TYPE_Q2_K, "Q2_K", QK_K, 84}, {GGUF_TYPE_Q3_K, "Q3_K", QK_K, 110},
    {GGUF_TYPE_Q4_K, "Q4_K", QK_K, 144}, {GGUF_TYPE_Q5_K, "Q5_K", QK_K, 176},
    {GGUF_TYPE_Q6_K, "Q6_K", QK_K, 210}, {15, "Q8_K", 0, 0},
    {16, "IQ2_XXS", 0, 0}, {17, "IQ2_XS", 0, 0}, {18, "IQ3_XXS", 0, 0}, {19, "IQ1_S", 0, 0},
    {20, "IQ4_NL", 0, 0}, {21, "IQ3_S", 0, 0}, {22, "IQ2_S", 0, 0}, {23, "IQ4_XS", 0, 0},
    {24, "I8", 0, 0}, {25, "I16", 0, 0}, {26, "I32", 0, 0}, {27, "I64", 0, 0},
    {28, "F64", 0, 0}, {29, "IQ1_M", 0, 0}, {GGUF_TYPE_BF16, "BF16", 1, 2},
    {34, "TQ1_0", 0, 0}, {35, "TQ2_0", 0, 0}, {39, "MXFP4", 0, 0},
};

static const type_info *info(uint32_t type) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].type == type) return &types[i];
    return NULL;
}

bool gguf_type_block(uint32_t type, int *elems, int *bytes) {
    const type_info *t = info(type);
    if (!t || !t->elems) return false;
    *elems = t->elems;
    *bytes = t->bytes;
    return true;
}

const char *gguf_type_name(uint32_t type) {
    const type_info *t = info(type);
    return t ? t->name : NULL;
}

static float half(const uint8_t *b) { return st_f16_to_f32((uint16_t)(b[0] | b[1] << 8)); }

/* Q4_0: d, 16 bytes of nibbles; low nibbles are values 0..15, high ones 16..31, offset by 8. */
static void q4_0(const uint8_t *b, float *y) {
    const float d = half(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        const int x0 = (qs[j] & 0x0F) - 8, x1 = (qs[j] >> 4) - 8;
        y[j] = x0 * d;
        y[j + QK / 2] = x1 * d;
    }
}

/* Q4_1: d, m, nibbles unsigned: x * d + m. */
static void q4_1(const uint8_t *b, float *y) {
    const float d = half(b), m = half(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        const int x0 = qs[j] & 0x0F, x1 = qs[j] >> 4;
        y[j] = x0 * d + m;
        y[j + QK / 2] = x1 * d + m;
    }
}

/* Q5_0 / Q5_1: the fifth bit of value j is bit j of the 32-bit little-endian qh. */
static void q5(const uint8_t *b, float *y, bool with_min) {
    const float d = half(b), m = with_min ? half(b + 2) : 0.0f;
    const uint8_t *h = b + (with_min ? 4 : 2);
    const uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                        (uint32_t)h[3] << 24;
    const uint8_t *qs = h + 4;
    for (int j = 0; j < QK / 2; j++) {
        const int xh0 = (int)(((qh >> j) << 4) & 0x10), xh1 = (int)((qh >> (j + 12)) & 0x10);
        if (with_min) {
            y[j] = ((qs[j] & 0x0F) | xh0) * d + m;
            y[j + QK / 2] = ((qs[j] >> 4) | xh1) * d + m;
        } else {
            y[j] = (((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + QK / 2] = (((qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

static void q8_0(const uint8_t *b, float *y) {
    const float d = half(b);
    for (int j = 0; j < QK; j++) y[j] = (int8_t)b[2 + j] * d;
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min, each times d / dmin), 64 bytes of
 * 2-bit values, d, dmin. Each 32-byte run of qs holds 4 groups of 32 values (shifts 0,2,4,6),
 * each group two sub-blocks of 16 with scales of their own. */
static void q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *q = b + 16;
    const float d = half(b + 80), min = half(b + 82);
    int is = 0;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half16 = 0; half16 < 2; half16++) {
                const uint8_t s = sc[is++];
                const float dl = d * (s & 0x0F), ml = min * (s >> 4);
                for (int l = 0; l < 16; l++)
                    *y++ = dl * ((int8_t)((q[l + 16 * half16] >> shift) & 3)) - ml;
            }
        }
        q += 32;
    }
}

/* Q3_K: hmask (the third bit), 2-bit values, 16 6-bit scales packed in 12 bytes (low 4 bits of
 * scale j in byte j % 8, high or low nibble by j / 8; high 2 bits in byte 8 + j % 4, at bit
 * 2 * (j / 4)), offset by 32; d. A value is its 2 bits minus 4 when its hmask bit is clear. */
static void q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32, *s12 = b + 96;
    const float d_all = half(b + 108);
    int8_t scales[16];
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? s12[j] & 0x0F : s12[j - 8] >> 4;
        const int hi = (s12[8 + j % 4] >> (2 * (j / 4))) & 3;
        scales[j] = (int8_t)(lo | hi << 4);
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half16 = 0; half16 < 2; half16++) {
                const float dl = d_all * (scales[is++] - 32);
                const int o = 16 * half16;
                for (int l = 0; l < 16; l++)
                    *y++ = dl * ((int8_t)((q[l + o] >> shift) & 3) - ((hm[l + o] & m) ? 0 : 4));
            }
            m <<= 1;
        }
        q += 32;
    }
}

void gguf_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K (qh NULL) and Q5_K: d, dmin, 12 scale bytes, [qh 32 bytes,] 4-bit values; 8 sub-blocks
 * of 32, value * (d * scale) - dmin * min. */
static void q45_k(const uint8_t *b, float *y, bool five) {
    const float d = half(b), min = half(b + 2);
    const uint8_t *scales = b + 4, *qh = five ? b + 16 : NULL, *ql = b + (five ? 48 : 16);
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
        uint8_t sc, m;
        gguf_scale_min_k4(is, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        gguf_scale_min_k4(is + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * ((ql[l] & 0x0F) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * ((ql[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
        ql += 32;
        u1 <<= 2;
        u2 <<= 2;
    }
}

/* Q6_K: low 4 bits (128 bytes), high 2 bits (64 bytes), 16 int8 scales, d; values offset 32. */
static void q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = half(b + 208);
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int8_t q1 = (int8_t)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int8_t q2 = (int8_t)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

void gguf_dequantize(uint32_t type, const void *blocks, float *out, int64_t n) {
    const uint8_t *b = blocks;
    int elems = 1, bytes = 4;
    if (!gguf_type_block(type, &elems, &bytes)) return;
    for (int64_t i = 0; i < n; i += elems, b += bytes, out += elems) {
        switch (type) {
        case GGUF_TYPE_F32: memcpy(out, b, 4); break; /* little-endian hosts only, as the reader */
        case GGUF_TYPE_F16: *out = half(b); break;
        case GGUF_TYPE_BF16: *out = st_bf16_to_f32((uint16_t)(b[0] | b[1] << 8)); break;
        case GGUF_TYPE_Q4_0: q4_0(b, out); break;
        case GGUF_TYPE_Q4_1: q4_1(b, out); break;
        case GGUF_TYPE_Q5_0: q5(b, out, false); break;
        case GGUF_TYPE_Q5_1: q5(b, out, true); break;
        case GGUF_TYPE_Q8_0: q8_0(b, out); break;
        case GGUF_TYPE_Q2_K: q2_k(b, out); break;
        case GGUF_TYPE_Q3_K: q3_k(b, out); break;
        case GGUF_TYPE_Q4_K: q45_k(b, out, false); break;
        case GGUF_TYPE_Q5_K: q45_k(b, out, true); break;
        case GGUF_TYPE_Q6_K: q6_k(b, out); break;
        default: break;
        }
    }
}

/* The block types in st_dtype's order (ST_Q4_0 ... ST_Q6_K). */
static const uint32_t st_blocks[] = {
    GGUF_TYPE_Q4_0, GGUF_TYPE_Q4_1, GGUF_TYPE_Q5_0, GGUF_TYPE_Q5_1, GGUF_TYPE_Q8_0,
    GGUF_TYPE_Q2_K, GGUF_TYPE_Q3_K, GGUF_TYPE_Q4_K, GGUF_TYPE_Q5_K, GGUF_TYPE_Q6_K,
};
_Static_assert(sizeof st_blocks / sizeof *st_blocks == ST_Q6_K - ST_Q4_0 + 1,
               "one st_dtype per block type");

bool gguf_st_dtype(uint32_t type, st_dtype *out) {
    switch (type) {
    case GGUF_TYPE_F32: *out = ST_F32; return true;
    case GGUF_TYPE_F16: *out = ST_F16; return true;
    case GGUF_TYPE_BF16: *out = ST_BF16; return true;
    default: break;
    }
    for (int i = 0; i <= ST_Q6_K - ST_Q4_0; i++)
        if (st_blocks[i] == type) {
            *out = (st_dtype)(ST_Q4_0 + i);
            return true;
        }
    return false;
}

uint32_t gguf_type_of_st(st_dtype dtype) {
    return st_is_quantized(dtype) ? st_blocks[dtype - ST_Q4_0] : GGUF_TYPE_F32;
}
