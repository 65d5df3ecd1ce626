/* Where the bundled configs of single-file checkpoints are (sd.h, sd_set_configs_dir): a folder
 * the caller set, else one found beside the installed program or library, else the paths the
 * build recorded. The lookup beside the binary keeps an install relocatable (a PREFIX chosen at
 * `make install` only, a tree copied elsewhere) without reading any environment variable. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../include/sd.h"

#ifndef SD_CONFIGS_DIR
#define SD_CONFIGS_DIR "configs" /* the source tree's (the Makefile passes its absolute path) */
#endif
#ifndef SD_CONFIGS_INSTALL_DIR
#define SD_CONFIGS_INSTALL_DIR "/usr/local/share/sd/configs"
#endif

static char set_dir[PATH_MAX]; /* process-wide; "" when unset */

void sd_set_configs_dir(const char *path) {
    snprintf(set_dir, sizeof set_dir, "%s", path ? path : "");
}

/* <folder of `file`>/../share/sd/configs, normalised, into out when it exists. */
static bool beside(const char *file, char *out) {
    const char *slash = file ? strrchr(file, '/') : NULL;
    if (!slash) return false;
    char guess[PATH_MAX + 32];
    snprintf(guess, sizeof guess, "%.*s/../share/sd/configs", (int)(slash - file), file);
    return sd_dir_exists(guess) && realpath(guess, out);
}

const char *sd_configs_dir(void) {
    static _Thread_local char found[PATH_MAX];
    if (set_dir[0]) return snprintf(found, sizeof found, "%s", set_dir), found;
    /* The shared library's own file (lib/), or for a program linked statically its path as run;
     * then the running program itself (bin/). */
    Dl_info info;
    if (dladdr((void *)sd_configs_dir, &info) && beside(info.dli_fname, found)) return found;
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0 && (exe[n] = '\0', beside(exe, found))) return found;
    static const char *const built[] = {SD_CONFIGS_INSTALL_DIR, SD_CONFIGS_DIR};
    for (size_t i = 0; i < sizeof built / sizeof *built; i++)
        if (sd_dir_exists(built[i])) return snprintf(found, sizeof found, "%s", built[i]), found;
    return NULL;
}
