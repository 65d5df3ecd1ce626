#include "fileutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

sd_status sd_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sd_set_error(SD_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return sd_set_error(SD_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        fclose(fp);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, size, fp);
    int err = ferror(fp);
    fclose(fp);
    if (err || got != size) {
        free(buf);
        return sd_set_error(SD_ERR_IO, "%s: read failed", path);
    }
    buf[size] = '\0';
    *out = buf;
    if (len) *len = size;
    return SD_OK;
}

int sd_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int sd_dir_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

char *sd_strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *sd_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir);
    return sd_strfmt("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

void sd_test_kill_point(const char *path, int *put_at, int *commit) {
    *put_at = 0, *commit = 0;
    const char *v = getenv("SD_TEST_KILL_WRITE"), *colon = v ? strchr(v, ':') : NULL;
    if (!colon || colon == v) return;
    const size_t n = (size_t)(colon - v), len = strlen(path);
    if (len < n || memcmp(path + len - n, v, n)) return;
    if (!strncmp(colon + 1, "put", 3)) {
        *put_at = colon[4] == ':' ? atoi(colon + 5) : 1;
        if (*put_at < 1) *put_at = 1;
    } else if (!strcmp(colon + 1, "commit")) {
        *commit = 1;
    }
}

sd_status sd_writer_open(sd_file_writer *w, const char *path) {
    memset(w, 0, sizeof *w);
    w->path = strdup(path);
    w->tmp_path = sd_strfmt("%s.tmp-%ld", path, (long)getpid());
    if (!w->path || !w->tmp_path) {
        free(w->path);
        free(w->tmp_path);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    }
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp) {
        sd_status st = sd_set_error(SD_ERR_IO, "%s: %s", w->tmp_path, strerror(errno));
        free(w->path);
        free(w->tmp_path);
        memset(w, 0, sizeof *w);
        return st;
    }
    sd_test_kill_point(path, &w->kill_put, &w->kill_commit);
    return SD_OK;
}

void sd_writer_put(sd_file_writer *w, const void *data, size_t n) {
    if (!w->failed && n && fwrite(data, 1, n, w->fp) != n) w->failed = errno ? errno : EIO;
    if (w->kill_put && n && --w->kill_put == 0) {
        fflush(w->fp); /* the partial file on disk, as a kill would find it */
        raise(SIGKILL);
    }
}

static void writer_release(sd_file_writer *w) {
    free(w->path);
    free(w->tmp_path);
    memset(w, 0, sizeof *w);
}

sd_status sd_writer_commit(sd_file_writer *w) {
    if (fflush(w->fp) != 0 && !w->failed) w->failed = errno ? errno : EIO;
    if (fclose(w->fp) != 0 && !w->failed) w->failed = errno ? errno : EIO;
    if (w->kill_commit) raise(SIGKILL);
    sd_status st = SD_OK;
    if (w->failed) {
        st = sd_set_error(SD_ERR_IO, "%s: write failed: %s", w->path, strerror(w->failed));
        remove(w->tmp_path);
    } else if (rename(w->tmp_path, w->path) != 0) {
        st = sd_set_error(SD_ERR_IO, "%s: %s", w->path, strerror(errno));
        remove(w->tmp_path);
    }
    writer_release(w);
    return st;
}

void sd_writer_abort(sd_file_writer *w) {
    if (w->fp) fclose(w->fp);
    if (w->tmp_path) remove(w->tmp_path);
    writer_release(w);
}

sd_status sd_map_file(const char *path, size_t min_size, const char *kind, void **map,
                      size_t *size) {
    *map = NULL, *size = 0;
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return sd_set_error(SD_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    sd_status st = SD_OK;
    if (fstat(fd, &sb) != 0) st = sd_set_error(SD_ERR_IO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) st = sd_set_error(SD_ERR_IO, "%s: not a regular file", path);
    else if ((size_t)sb.st_size < min_size)
        st = sd_set_error(SD_ERR_FORMAT, "%s: %lld bytes is too short for a %s file", path,
                          (long long)sb.st_size, kind);
    if (st == SD_OK) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            st = sd_set_error(SD_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        } else {
            *map = m;
            *size = (size_t)sb.st_size;
        }
    }
    close(fd);
    return st;
}
