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
} sd_file_writer;

sd_status sd_writer_open(sd_file_writer *w, const char *path);
void sd_writer_put(sd_file_writer *w, const void *data, size_t n);
/* Flushes, closes and renames into place; on any earlier failure removes the temporary file. */
sd_status sd_writer_commit(sd_file_writer *w);
/* Abandons the write: the temporary file is removed, `path` is untouched. */
void sd_writer_abort(sd_file_writer *w);

#endif
