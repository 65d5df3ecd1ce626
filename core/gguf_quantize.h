/* ggml's reference block quantizers (ggml-quants.c's quantize_row_*_ref), written from their
 * formulas: float32 values into Q8_0, Q4_0, Q4_K, Q5_K or Q6_K blocks, the inverse of
 * gguf_dequantize. Used by --weights-dtype q8_0|q4_0|q4_k|q5_k|q6_k (core/weights_quant.c) to
 * quantize a 16/32-bit release at load, and by the tests' GGUF writer. The same blocks as ggml's
 * for the same input (nearest-int rounding as ggml's nearest_int, half to even; scales rounded
 * to fp16 with round to nearest even; the builds have -ffp-contract=off, so no fused multiply-add
 * changes a rounding). The importance-matrix variants (quantize_*, with quant_weights) are not
 * implemented: llama-quantize without --imatrix and stable-diffusion.cpp use the _ref ones. */
#ifndef SD_GGUF_QUANTIZE_H
#define SD_GGUF_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

/* Whether gguf_quantize_row takes this ggml type (GGUF_TYPE_Q8_0, _Q4_0, _Q4_K, _Q5_K, _Q6_K). */
bool gguf_quantize_supported(uint32_t type);
/* Quantizes n values (a whole number of the type's blocks: 32 for Q8_0/Q4_0, 256 for the K
 * types) into `out` (n / elems * bytes bytes, gguf_type_block). Non-finite input gives whatever
 * ggml's formulas give (no check here: callers check their weights). */
void gguf_quantize_row(uint32_t type, const float *x, void *out, int64_t n);

#endif
