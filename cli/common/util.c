#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char message[1024];
static bool pending;

sd_status cli_fail(sd_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    pending = true;
    return status;
}

const char *cli_error(void) {
    if (!pending) return sd_last_error();
    pending = false;
    return message;
}

char *cli_strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *cli_path_join(const char *dir, const char *name) {
    const size_t n = strlen(dir);
    return cli_strfmt("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

bool cli_file_exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

bool cli_dir_exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

sd_status cli_read_file(const char *path, char **out) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return cli_fail(SD_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    sd_status st = SD_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(buf, cap);
            if (!grown) {
                st = cli_fail(SD_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = grown;
        }
        const size_t got = fread(buf + len, 1, cap - len - 1, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) st = cli_fail(SD_ERR_IO, "%s: read failed", path);
            break;
        }
    }
    fclose(fp);
    if (st != SD_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    return SD_OK;
}

/* core/fileutil.h's test hook, SD_TEST_KILL_WRITE="NAME:put" or "NAME:commit", for the one file
 * the CLI writes itself (sd-compare's report.json): "put" kills once half the bytes are on disk,
 * "commit" once all are, before the rename. Returns 1 (put), 2 (commit) or 0. */
static int test_kill_point(const char *path) {
    const char *v = getenv("SD_TEST_KILL_WRITE"), *colon = v ? strchr(v, ':') : NULL;
    if (!colon || colon == v) return 0;
    const size_t n = (size_t)(colon - v), len = strlen(path);
    if (len < n || memcmp(path + len - n, v, n)) return 0;
    return !strncmp(colon + 1, "put", 3) ? 1 : !strcmp(colon + 1, "commit") ? 2 : 0;
}

sd_status cli_write_file(const char *path, const void *data, size_t len) {
    char *tmp = cli_strfmt("%s.tmp-%ld", path, (long)getpid());
    if (!tmp) return cli_fail(SD_ERR_NOMEM, "%s: out of memory", path);
    FILE *fp = fopen(tmp, "wb");
    sd_status st = SD_OK;
    if (!fp) {
        st = cli_fail(SD_ERR_IO, "%s: %s", tmp, strerror(errno));
    } else {
        const int kill_at = test_kill_point(path);
        if (kill_at == 1) {
            fwrite(data, 1, len / 2, fp);
            fflush(fp);
            raise(SIGKILL);
        }
        const bool wrote = fwrite(data, 1, len, fp) == len;
        const int err = errno;
        const bool closed = fclose(fp) == 0;
        if (kill_at == 2) raise(SIGKILL);
        if (!closed || !wrote)
            st = cli_fail(SD_ERR_IO, "%s: write failed: %s", path, strerror(wrote ? errno : err));
        else if (rename(tmp, path) != 0)
            st = cli_fail(SD_ERR_IO, "%s: %s", path, strerror(errno));
        if (st != SD_OK) remove(tmp);
    }
    free(tmp);
    return st;
}
