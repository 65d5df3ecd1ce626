/* Helpers of tests/fuzz/fuzz.h. */
#include "fuzz.h"

#include "../../server/images.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256];
static char g_path[512];

static void remove_dir(void) {
    /* The harnesses write a handful of known names; remove whatever is there. */
    char cmd[300];
    if (!g_dir[0] || !strstr(g_dir, "/sd-fuzz-")) return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) return;
}

const char *fuzz_dir(void) {
    if (!g_dir[0]) {
        /* In memory where there is a tmpfs: rewriting one file per input on a disk file system
         * costs a flush each time (ext4 flushes a file truncated and rewritten when it is
         * closed): 3000 GGUF inputs took 15 s in /tmp, under 1 s here. */
        snprintf(g_dir, sizeof(g_dir), "/dev/shm/sd-fuzz-XXXXXX");
        if (!mkdtemp(g_dir)) {
            snprintf(g_dir, sizeof(g_dir), "/tmp/sd-fuzz-XXXXXX");
            if (!mkdtemp(g_dir)) abort();
        }
        atexit(remove_dir);
    }
    return g_dir;
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    snprintf(g_path, sizeof(g_path), "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(g_path, "wb");
    if (!f) return NULL;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size) return NULL;
    return g_path;
}

char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fuzz_split(const uint8_t *data, size_t size, int n, const uint8_t **part, size_t *len) {
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        part[i] = data + at;
        size_t end = at;
        if (i < n - 1) {
            while (end < size && data[end] != 0) end++;
        } else {
            end = size;
        }
        len[i] = end - at;
        at = end < size ? end + 1 : size;
    }
}

void fuzz_server_init(void) {
    static int done;
    if (done) return;
    char err[600];
    if (!srv_images_init(err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    atexit(srv_images_cleanup);
    done = 1;
}

const char *fuzz_root(void) {
#ifdef FUZZ_ROOT
    return FUZZ_ROOT;
#else
    return ".";
#endif
}
