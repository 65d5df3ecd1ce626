/* Small file helpers: whole-file reads, path joins, and a writer that never leaves a half-written
 * file behind (it writes `<path>.tmp-<pid>` and renames over `path` only once everything is out). */
#ifndef SD_FILEUTIL_H
#define SD_FILEUTIL_H

#include <stddef.h>
#include <stdio.h>

#include "error.h"

/* Reads a whole file into a NUL-terminated malloc'd buffer; *len (if not NULL) excludes the NUL. */
sd_status sd_read_file(const char *path, char **out, size_t *len);

int sd_file_exists(const char *path); /* a regular file */

/* Maps a regular file read-only (private) whole: *map and *size on SD_OK. A file shorter than
 * min_size is an SD_ERR_FORMAT saying it is too short for a `kind` file ("safetensors", "GGUF");
 * errors name the path. Unmap with munmap(*map, *size). */
sd_status sd_map_file(const char *path, size_t min_size, const char *kind, void **map,
                      size_t *size);
int sd_dir_exists(const char *path);

/* snprintf into a malloc'd string; NULL when out of memory. */
char *sd_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Path of `name` in `dir` (malloc'd). */
char *sd_path_join(const char *dir, const char *name);

typedef struct {
    char *path, *tmp_path;
    FILE *fp;
    int failed; /* a write failed: commit reports it and removes the temporary file */
    int kill_put;    /* the test hook below: SIGKILL at this put (1-based; 0: never) */
    int kill_commit; /* ... or before the rename */
} sd_file_writer;

/* Test hook for tests/reliability/test_kill.sh: with SD_TEST_KILL_WRITE="NAME:put[:K]" the
 * process SIGKILLs itself in the writer of the first file whose path ends in NAME, just after its
 * K-th write (default 1) reached the temporary file; "NAME:commit" once the temporary file is
 * complete and closed, before the rename. A kill from outside landing at that point, made
 * deterministic. *put_at / *commit get 0 when the variable does not name `path`. */
void sd_test_kill_point(const char *path, int *put_at, int *commit);

sd_status sd_writer_open(sd_file_writer *w, const char *path);
void sd_writer_put(sd_file_writer *w, const void *data, size_t n);
/* Flushes, closes and renames into place; on any earlier failure removes the temporary file. */
sd_status sd_writer_commit(sd_file_writer *w);
/* Abandons the write: the temporary file is removed, `path` is untouched. */
void sd_writer_abort(sd_file_writer *w);

#endif
