#include "settings.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

bool cli_settings_from_env(int *vae_tile_limit_mb, const char **err) {
    static char msg[512];
    *vae_tile_limit_mb = 0;
    const char *isa = getenv("SD_KERNEL_ISA");
    if (isa && *isa && sd_set_kernel_isa(isa) != SD_OK) {
        snprintf(msg, sizeof msg, "SD_KERNEL_ISA: %s", sd_last_error());
        *err = msg;
        return false;
    }
    const char *v = getenv("SD_VAE_TILE_LIMIT_MB");
    if (v && *v) {
        char *end;
        errno = 0;
        const long mb = strtol(v, &end, 10);
        if (*end || errno || mb < 1 || mb > INT_MAX) {
            snprintf(msg, sizeof msg, "SD_VAE_TILE_LIMIT_MB is '%s'; it should be a whole number "
                     "of MB, at least 1", v);
            *err = msg;
            return false;
        }
        *vae_tile_limit_mb = (int)mb;
    }
    return true;
}

typedef struct {
    const char *tool;
    sd_log_level min;
} log_target;

static log_target target;

static void print_log(void *user, sd_log_level level, const char *message) {
    const log_target *t = user;
    if (level >= t->min) fprintf(stderr, "%s: %s\n", t->tool, message);
}

void cli_log_to_stderr(const char *tool, sd_log_level min) {
    target = (log_target){tool, min};
    sd_set_log_callback(print_log, &target);
}
