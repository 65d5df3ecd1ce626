/* Widening 16-bit float storage (IEEE half, bfloat16) to float32, for weights kept in the dtype
 * they were stored in and converted while being packed. Both conversions are exact, so a weight
 * used through them gives the same numbers as the same weight stored as float32.
 *
 * The sources may be unaligned (tensors inside a safetensors mapping need not be). The fast paths
 * (AVX-512 vcvtph2ps, F16C under AVX2, NEON fcvtl; bf16 is a 16-bit shift) follow kern_isa_active(); the
 * _ref versions are the plain definitions they are tested against. */
#ifndef SD_CONVERT_H
#define SD_CONVERT_H

#include <stddef.h>

/* The dtype of weights handed to the stored-dtype kernels (gemm_nt_stored, conv2d_nhwc_stored;
 * the block types only to gemm_nt_stored). The block types are GGUF's (core/gguf_quant.h): runs
 * of kern_dtype_block values sharing fp16 scales, dequantized exactly (ggml's arithmetic). */
typedef enum {
    KERN_F32 = 0, KERN_F16 = 1, KERN_BF16 = 2,
    KERN_Q4_0, KERN_Q4_1, KERN_Q5_0, KERN_Q5_1, KERN_Q8_0,
    KERN_Q2_K, KERN_Q3_K, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K
} kern_dtype;

/* Bytes per value of the float types (not the block types: kern_dtype_bytes). */
static inline size_t kern_dtype_size(kern_dtype t) { return t == KERN_F32 ? 4 : 2; }
/* Values per block: 1 for the float types, 32 or 256 for the block types. */
int kern_dtype_block(kern_dtype t);
/* Bytes of n consecutive values, n a whole number of blocks. */
size_t kern_dtype_bytes(kern_dtype t, size_t n);

void kern_f16_to_f32(const void *src, float *dst, size_t n);
void kern_bf16_to_f32(const void *src, float *dst, size_t n);
/* Any of them (KERN_F32 is a copy); for a block type, n is a whole number of blocks from the
 * start of one. */
void kern_to_f32(kern_dtype t, const void *src, float *dst, size_t n);

/* The ggml type id of a block type (core/gguf_quant.h's GGUF_TYPE_*), GGUF_TYPE_F32 (0) for the
 * float types. */
unsigned kern_ggml_type(kern_dtype t);
/* kern_to_f32 of a block type (kernels/dequant.c): fast paths for some types following
 * kern_isa_active(), every value equal to core/gguf_quant.c's gguf_dequantize, the definition. */
void kern_dequantize(kern_dtype t, const void *blocks, float *dst, size_t n);

void kern_f16_to_f32_ref(const void *src, float *dst, size_t n);
void kern_bf16_to_f32_ref(const void *src, float *dst, size_t n);

#endif
