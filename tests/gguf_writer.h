/* Test-only GGUF writer: raw files (any type id, shape, offset, for the error tests) and
 * conversions of a safetensors file into a GGUF whose tensors are quantized with ggml's
 * reference quantizers (core/gguf_quantize.c: quantize_row_q8_0_ref, quantize_row_q4_K_ref), beside an fp32
 * safetensors file holding the same blocks dequantized by this file's own decoder, written
 * independently of core/gguf*.c so that a shared misreading cannot pass unnoticed. */
#ifndef SD_TEST_GGUF_WRITER_H
#define SD_TEST_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids used by the tests. */
enum { GW_F32 = 0, GW_F16 = 1, GW_Q8_0 = 8, GW_Q4_K = 12, GW_BF16 = 30 };

typedef struct {
    const char *name;
    uint32_t type;
    int ndim;
    int64_t ne[4];     /* innermost first */
    const void *data;
    size_t nbytes;
    int64_t offset;    /* >= 0: written as this data offset instead of the computed one */
    int orig_ndim;     /* > 0: comfy.gguf.orig_shape.<name> = orig_shape[0..orig_ndim) (INT32
                        * array, torch order), as city96's converter writes for a reshaped tensor */
    int64_t orig_shape[4];
} gw_tensor;

/* Writes a little-endian GGUF v3: a few metadata entries (general.architecture = "test", a
 * string array, a uint32, an int64, a float32, a bool; general.alignment when alignment != 0),
 * the tensor infos, and the data, each tensor at the next multiple of the alignment (32 if 0). */
bool gw_write(const char *path, const gw_tensor *t, int n, uint32_t alignment);

/* This file's own decoders of Q8_0 / Q4_K blocks (the quantizer is the library's
 * gguf_quantize_row, ggml's reference formulas). */
void gw_decode_q8_0(const uint8_t *b, float *y, int64_t n);
void gw_decode_q4_k(const uint8_t *b, float *y, int64_t n);

/* `src` (a safetensors file, float tensors only) as a GGUF at `gguf_path`: each tensor of 2 or
 * more dims whose row length is a multiple of 256 as Q4_K, of 32 as Q8_0, otherwise F16; 1-dim
 * tensors F32 (as city96's files keep biases and norms). `ref_path` receives the fp32
 * safetensors file of the values those blocks stand for. Counts of each type go to counts[4]
 * (Q4_K, Q8_0, F16, F32) when not NULL. */
bool gw_convert(const char *src, const char *gguf_path, const char *ref_path, int counts[4]);
/* city96's convert.py with shape_fix (its SD 1.x / SDXL templates): a tensor of 2 or more dims
 * whose element count is a multiple of 256 but whose last dimension is not (a 3x3 convolution,
 * a 320-wide Linear) is stored as rows of 256, quantized as Q4_K, with its shape in
 * comfy.gguf.orig_shape.<name>; the rest as gw_convert. counts[4] also counts them in Q4_K. */
bool gw_convert_reshaped(const char *src, const char *gguf_path, const char *ref_path,
                         int counts[4], int *reshaped);
/* The same with Q4_K left out when !q4_k (a "Q8_0 file": every matrix whose rows are a
 * multiple of 32 as Q8_0), and no reference file when ref_path is NULL. */
bool gw_convert_as(const char *src, const char *gguf_path, const char *ref_path, bool q4_k,
                   int counts[4]);

#endif
