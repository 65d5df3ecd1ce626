/* ggml's tensor types as GGUF files store them: which ids this program reads, their block sizes,
 * and their dequantization to float32. The block layouts and the arithmetic follow ggml
 * (ggml-common.h's block_* structs, ggml-quants.c's dequantize_row_*): every value is computed in
 * fp32 from the block's fp16 scales in the order ggml computes it, so a dequantized tensor equals
 * ggml's bit for bit (the build has -ffp-contract=off: no fused multiply-adds change a rounding).
 * diffusers' own GGUF path decodes in float16 arithmetic instead and differs by up to ~2.5e-4. */
#ifndef SD_GGUF_QUANT_H
#define SD_GGUF_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "safetensors.h"

/* ggml_type ids (ggml.h): the ones read here. */
enum {
    GGUF_TYPE_F32 = 0,
    GGUF_TYPE_F16 = 1,
    GGUF_TYPE_Q4_0 = 2,
    GGUF_TYPE_Q4_1 = 3,
    GGUF_TYPE_Q5_0 = 6,
    GGUF_TYPE_Q5_1 = 7,
    GGUF_TYPE_Q8_0 = 8,
    GGUF_TYPE_Q2_K = 10,
    GGUF_TYPE_Q3_K = 11,
    GGUF_TYPE_Q4_K = 12,
    GGUF_TYPE_Q5_K = 13,
    GGUF_TYPE_Q6_K = 14,
    GGUF_TYPE_BF16 = 30,
};

/* Whether `type` is read here; if so its block: `elems` values in `bytes` bytes (1 and 4 for
 * F32, 32 for the Q*_0/_1 types, 256 for the K types). */
bool gguf_type_block(uint32_t type, int *elems, int *bytes);
/* The type's ggml name ("Q4_K"), also for ggml types not read here ("IQ2_XXS"); NULL for an id
 * ggml does not define (as far as this program knows). */
const char *gguf_type_name(uint32_t type);
/* Dequantizes n values (a whole number of blocks) of a type gguf_type_block accepts. */
void gguf_dequantize(uint32_t type, const void *blocks, float *out, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block, from its 12 scale
 * bytes `q` (ggml's get_scale_min_k4); shared with the packers' fast dequantizers. */
void gguf_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m);

/* The st_dtype a tensor of a type gguf_type_block accepts is seen as (F32, F16, BF16 or a
 * block type); false for the others. */
bool gguf_st_dtype(uint32_t type, st_dtype *out);
/* The ggml type of a block st_dtype (st_is_quantized); GGUF_TYPE_F32 for any other. */
uint32_t gguf_type_of_st(st_dtype dtype);

#endif
