/* The parameter structs' defaults and how the library reads a caller's copy (sd.h's ABI rules: a
 * program built against an older or newer sd.h passes its own struct_size). */
#include <math.h>
#include <string.h>

#include "api_internal.h"

void api_init_params(void *dst, size_t size, const void *defaults, size_t defaults_size) {
    if (size < sizeof(size_t)) return; /* not even room for struct_size: nothing sensible to do */
    memcpy(dst, defaults, size < defaults_size ? size : defaults_size);
    if (size > defaults_size) memset((char *)dst + defaults_size, 0, size - defaults_size);
    memcpy(dst, &size, sizeof size);
}

sd_status api_copy_params(void *dst, size_t dst_size, const void *src, size_t first_size,
                          const char *name) {
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size < first_size)
        return sd_set_error(SD_ERR_ARG, "%s: struct_size is %zu, less than the %zu of the first "
                            "release (initialise it with %s_init)", name, size, first_size, name);
    if (size > dst_size) {
        const unsigned char *tail = (const unsigned char *)src + dst_size;
        for (size_t i = 0; i < size - dst_size; i++)
            if (tail[i])
                return sd_set_error(SD_ERR_UNSUPPORTED, "%s: member at byte %zu is set, and this "
                                    "library (version %s, %zu-byte %s) does not know it", name,
                                    dst_size + i, sd_version(), dst_size, name);
    }
    memcpy(dst, src, size < dst_size ? size : dst_size);
    memcpy(dst, &size, sizeof size);
    return SD_OK;
}

void sd_load_params_init_size(sd_load_params *p, size_t size) {
    const sd_load_params d = {.struct_size = sizeof d}; /* every default is 0 */
    api_init_params(p, size, &d, sizeof d);
}

void sd_gen_params_init_size(sd_gen_params *g, size_t size) {
    const sd_gen_params d = {
        .struct_size = sizeof d,
        .prompt = "",
        .steps = 0,      /* the family's default */
        .guidance = NAN, /* the family's default */
        .strength = NAN, /* the task's default */
        .batch = 1,
    };
    api_init_params(g, size, &d, sizeof d);
}

void sd_vae_params_init_size(sd_vae_params *p, size_t size) {
    const sd_vae_params d = {.struct_size = sizeof d};
    api_init_params(p, size, &d, sizeof d);
}

void sd_vae_decode_params_init_size(sd_vae_decode_params *p, size_t size) {
    const sd_vae_decode_params d = {.struct_size = sizeof d, .tile_overlap = -1};
    api_init_params(p, size, &d, sizeof d);
}
