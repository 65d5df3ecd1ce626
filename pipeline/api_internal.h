/* Helpers of the public entry points (pipeline/api_*.c, pipeline.c): reading the caller's
 * size-prefixed parameter structs (the ABI rules in sd.h). */
#ifndef SD_API_INTERNAL_H
#define SD_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/error.h"
#include "../include/sd.h"

/* The sizes of the first release of each struct (the end of its last member then). A caller built
 * against that header passes exactly these; a later header only adds members after them, so these
 * constants must never change. */
#define SD_LOAD_PARAMS_FIRST_SIZE (offsetof(sd_load_params, low_memory) + sizeof(bool))
#define SD_GEN_PARAMS_FIRST_SIZE (offsetof(sd_gen_params, user) + sizeof(void *))
#define SD_VAE_PARAMS_FIRST_SIZE (offsetof(sd_vae_params, decoder_only) + sizeof(bool))
#define SD_VAE_DECODE_PARAMS_FIRST_SIZE                                                            \
    (offsetof(sd_vae_decode_params, tile_limit_mb) + sizeof(int))

/* Copies the caller's struct `src` (its struct_size bytes, as far as dst_size) over `dst`, which
 * holds the defaults, so members the caller's header did not have keep them. dst's struct_size
 * becomes the caller's. Refused, naming the struct: a size under first_size (SD_ERR_ARG: not
 * initialised with its _init function, or garbage), and a larger one whose bytes beyond ours are
 * not all zero (SD_ERR_UNSUPPORTED: the caller set members this library does not know). */
sd_status api_copy_params(void *dst, size_t dst_size, const void *src, size_t first_size,
                          const char *name);

/* Writes `defaults` (defaults_size bytes) over the caller's struct of `size` bytes: as far as both
 * reach, zeros beyond ours; then struct_size = size. */
void api_init_params(void *dst, size_t size, const void *defaults, size_t defaults_size);

#endif
