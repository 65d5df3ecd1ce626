/* Widening 16-bit float storage (IEEE half, bfloat16) to float32, for weights kept in the dtype
 * they were stored in and converted while being packed. Both conversions are exact, so a weight
 * used through them gives the same numbers as the same weight stored as float32.
 *
 * The sources may be unaligned (tensors inside a safetensors mapping need not be). The fast paths
 * (AVX-512 vcvtph2ps, F16C under AVX2; bf16 is a 16-bit shift) follow kern_isa_active(); the
 * _ref versions are the plain definitions they are tested against. */
#ifndef SD_CONVERT_H
#define SD_CONVERT_H

#include <stddef.h>

/* The dtype of weights handed to the stored-dtype kernels (gemm_nt_stored, conv2d_nhwc_stored). */
typedef enum { KERN_F32 = 0, KERN_F16 = 1, KERN_BF16 = 2 } kern_dtype;

static inline size_t kern_dtype_size(kern_dtype t) { return t == KERN_F32 ? 4 : 2; }

void kern_f16_to_f32(const void *src, float *dst, size_t n);
void kern_bf16_to_f32(const void *src, float *dst, size_t n);
/* Any of the three (KERN_F32 is a copy). */
void kern_to_f32(kern_dtype t, const void *src, float *dst, size_t n);

void kern_f16_to_f32_ref(const void *src, float *dst, size_t n);
void kern_bf16_to_f32_ref(const void *src, float *dst, size_t n);

#endif
