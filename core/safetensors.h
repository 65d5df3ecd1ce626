/* safetensors files through mmap.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
 * {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end of the header), then the
 * data. st_open validates everything a lying or truncated file could get wrong (header length,
 * JSON, dtype names, shape * dtype size == end - begin, offsets inside the file, no overlaps)
 * so that later code can trust every st_tensor it is handed. */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    /* ggml's block types, only in GGUF files (gguf.h): runs of 32 (or 256 for the K types)
     * values sharing fp16 scales, kept as stored and dequantized where read (gguf_quant.h). */
    ST_Q4_0, ST_Q4_1, ST_Q5_0, ST_Q5_1, ST_Q8_0, ST_Q2_K, ST_Q3_K, ST_Q4_K, ST_Q5_K, ST_Q6_K
} st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* into the mapping; not necessarily aligned to the element size */
    size_t nbytes;
} st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    st_tensor *tensors; /* sorted by name */
} st_file;

sd_status st_open(st_file *f, const char *path);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
/* Whether any tensor's name starts with `prefix` (a binary search over the sorted names). */
bool st_has_prefix(const st_file *f, const char *prefix);
const char *st_dtype_name(st_dtype dtype);
/* Bytes per element; 0 for the block types, whose sizes st_dtype_bytes gives. */
size_t st_dtype_size(st_dtype dtype);
/* Values per block: 1, or 32 / 256 for the block types. */
int st_dtype_block(st_dtype dtype);
/* Bytes of n consecutive values (a row, a run of rows; n a whole number of blocks). */
size_t st_dtype_bytes(st_dtype dtype, int64_t n);
bool st_is_quantized(st_dtype dtype);
int64_t st_numel(const st_tensor *t);
/* Whether the tensor's rows (its last dimension) are whole blocks of its dtype, as every tensor
 * but a GGUF tensor reshaped back by comfy.gguf.orig_shape metadata is: only such rows may be cut
 * or read one at a time; any tensor can be read whole (st_to_f32). */
bool st_rows_whole_blocks(const st_tensor *t);
/* What st_to_f32 reads: F32, F16, BF16, F64, or a block type (dequantized exactly). */
int st_is_float(st_dtype dtype);

/* Converts a floating tensor (st_is_float) to float32, n = st_numel(t) elements. */
void st_to_f32(const st_tensor *t, float *out);

/* Checks that t has exactly the given shape; the error names the tensor and `file`. */
sd_status st_check_shape(const st_tensor *t, const char *file, int ndim, const int64_t *shape);

/* Finds `name`, checks its shape (ndim < 0 skips the check) and returns a malloc'd float32 copy. */
sd_status st_read_f32(const st_file *f, const char *name, int ndim, const int64_t *shape,
                      float **out);

/* One tensor to write. `data` is in the layout and dtype given (little-endian). */
typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_entry;

/* Writes a safetensors file through a temporary name and a rename, so an existing file is either
 * kept or replaced whole. `metadata` is an optional list of n_meta key/value string pairs. */
sd_status st_write(const char *path, const st_entry *entries, int n, const char *const *metadata,
                   int n_meta);

/* Gives back the resident pages wholly inside [data, data + nbytes) of a mapping (madvise
 * MADV_DONTNEED on the page-aligned interior): RSS drops, the page cache keeps the data and the
 * next read faults it back unchanged. Only for read-only file mappings (st_file's); a no-op for
 * spans of less than a page. */
void st_release_pages(const void *data, size_t nbytes);

/* Scalar conversions used across the engine. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_f16(float f);  /* round to nearest even, as torch does */
uint16_t st_f32_to_bf16(float f); /* round to nearest even, as torch does */

#endif
