/* Test-only: a safetensors file this suite writes, checked tensor for tensor against the manifest
 * of the file diffusers wrote or read (tools/reference/file_refs.py, dit_file_refs.py): names,
 * torch dtypes, shapes and the CRC-32 (zlib.crc32) of each tensor's bytes. */
#ifndef SD_TEST_MANIFEST_H
#define SD_TEST_MANIFEST_H

#include <cjson/cJSON.h>

/* `want` is an array whose entries are objects {name, dtype, shape, crc32} or arrays
 * [name, dtype, shape, crc32]; records CHECK failures under `label`. */
void manifest_check(const char *label, const cJSON *want, const char *path);

/* The JSON file `rel` under tests/fixtures, parsed (NULL when unreadable); cJSON_Delete it. */
cJSON *manifest_read_json(const char *rel);

/* The entry `name` of extra/dit_file_refs.json (tools/reference/dit_file_refs.py): the file at
 * `path` is, tensor for tensor, the one diffusers read, and each component diffusers'
 * from_single_file built from it equalled the fixture folder's, parameter for parameter (so the
 * folder is the reference for images from the file). */
void manifest_check_dit_file(const char *name, const char *path);

#endif
