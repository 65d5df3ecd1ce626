/* GGUF files (ggml's format; the quantized FLUX / SD files people share, city96's and
 * stable-diffusion.cpp's) through mmap.
 *
 * Format (little-endian): "GGUF", uint32 version (2 or 3), uint64 tensor count, uint64 metadata
 * count; the metadata as key (uint64 length + bytes), uint32 value type, value (scalars, strings,
 * one-level arrays); the tensor infos as name, uint32 n_dims, uint64 ne[n_dims] (innermost
 * first: ne[0] is the row length), uint32 ggml type, uint64 offset; then, at the next multiple of
 * general.alignment (default 32), the data, each offset relative to it and aligned. gguf_open
 * validates everything a lying or truncated file could get wrong (counts, lengths, value types,
 * dims, types, row lengths that are not a whole number of blocks, offsets and sizes inside the
 * file, overlaps, duplicate keys and names) so that later code can trust every gguf_tensor. */
#ifndef SD_GGUF_H
#define SD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "safetensors.h"

#define GGUF_MAX_DIMS 4

/* Metadata value types (gguf.h's gguf_type). */
typedef enum {
    GGUF_VAL_UINT8 = 0, GGUF_VAL_INT8, GGUF_VAL_UINT16, GGUF_VAL_INT16, GGUF_VAL_UINT32,
    GGUF_VAL_INT32, GGUF_VAL_FLOAT32, GGUF_VAL_BOOL, GGUF_VAL_STRING, GGUF_VAL_ARRAY,
    GGUF_VAL_UINT64, GGUF_VAL_INT64, GGUF_VAL_FLOAT64
} gguf_value_type;

typedef struct {
    char *key;
    gguf_value_type type;
    gguf_value_type elem_type; /* arrays: their elements' type */
    uint64_t n;                /* arrays: element count; else 1 */
    const uint8_t *value;      /* into the mapping: the value's bytes (after the array header) */
} gguf_kv;

typedef struct {
    char *name;
    uint32_t type;             /* ggml type id (gguf_quant.h) */
    int ndim;
    int64_t ne[GGUF_MAX_DIMS]; /* innermost first, as stored */
    const void *data;          /* into the mapping */
    size_t nbytes;
} gguf_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    uint32_t version;
    size_t alignment;
    int n_kv;
    gguf_kv *kv;
    int n_tensors;
    gguf_tensor *tensors;      /* in file order */
} gguf_file;

/* Whether the first bytes of a file are GGUF's magic. */
bool gguf_is_gguf(const void *head, size_t n);

sd_status gguf_open(gguf_file *f, const char *path);
void gguf_close(gguf_file *f);

/* NULL when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
/* An integer scalar (any of the 8 integer types, bool too) as int64; false for other types. */
bool gguf_kv_int(const gguf_kv *kv, int64_t *out);
/* Element i of an array of integers (any of the integer types) as int64; false for other
 * arrays, other types, or i past the end. */
bool gguf_kv_int_at(const gguf_kv *kv, uint64_t i, int64_t *out);
/* A string scalar copied, NUL-terminated and truncated to cap bytes; false if not a string. */
bool gguf_kv_string(const gguf_kv *kv, char *buf, size_t cap);

/* The file's tensors as a safetensors-like st_file (st_open calls it for a GGUF file), so that
 * every loader takes a GGUF wherever it takes a safetensors file: each tensor where the file has
 * it, as F32, F16, BF16 or its block type (ST_Q8_0, ...; st_to_f32 dequantizes them), its shape
 * in torch's order (ne reversed). The st_file keeps the GGUF's mapping. A tensor with
 * `comfy.gguf.orig_shape.<name>` metadata (city96's converter stores a tensor whose last
 * dimension is not a whole number of 256-blocks as rows of 256 to quantize it, and its shape
 * there, an array of integers in torch's order) takes that shape; its rows are then not whole
 * blocks (st_rows_whole_blocks), so it is read through st_to_f32 whole. */
sd_status gguf_open_st(st_file *f, const char *path);

#endif
