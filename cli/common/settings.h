/* The tools' side of the library's settings: the library reads no environment variable and prints
 * nothing, so the tools read the variables they document and hand them over, and print the
 * library's log messages. */
#ifndef SD_CLI_SETTINGS_H
#define SD_CLI_SETTINGS_H

#include <stdbool.h>

#include "../../include/sd.h"

/* SD_KERNEL_ISA (avx512, avx2, generic: sd_set_kernel_isa, for the whole process) and
 * SD_VAE_TILE_LIMIT_MB (a whole number of MB, at least 1: *vae_tile_limit_mb, 0 when unset). A
 * malformed value: false and a message naming the variable in *err (static). */
bool cli_settings_from_env(int *vae_tile_limit_mb, const char **err);

/* Prints the library's messages at `min` and above on stderr as "tool: message". */
void cli_log_to_stderr(const char *tool, sd_log_level min);

#endif
