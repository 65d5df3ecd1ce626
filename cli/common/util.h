/* What the tools need besides the library: their own error messages, strings, paths and files.
 * The tools include nothing of the library but sd.h, so these are theirs.
 *
 * Errors: a failing library call leaves its message in sd_last_error(); a failure the tool finds
 * itself (a bad list, a folder it cannot make) is recorded with cli_fail. cli_error() gives the
 * message to print: the tool's own when one is pending, else the library's. */
#ifndef SD_CLI_UTIL_H
#define SD_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "../../include/sd.h"

/* Records a message (printf-style) and returns `status`. */
sd_status cli_fail(sd_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the failure being reported: cli_fail's when one is pending (reading it clears
 * it), else sd_last_error(). */
const char *cli_error(void);

/* Propagate a failing status unchanged. */
#define CLI_TRY(expr)                                                                              \
    do {                                                                                           \
        sd_status cli_try_status_ = (expr);                                                        \
        if (cli_try_status_ != SD_OK) return cli_try_status_;                                      \
    } while (0)

/* A malloc'd formatted string, or NULL when out of memory. */
char *cli_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* dir + "/" + name (no doubled slash), malloc'd. */
char *cli_path_join(const char *dir, const char *name);
bool cli_file_exists(const char *path); /* a regular file */
bool cli_dir_exists(const char *path);

/* The whole file, malloc'd and NUL-terminated. */
sd_status cli_read_file(const char *path, char **out);
/* Writes len bytes through a temporary name and a rename, so an existing file is either kept or
 * replaced whole. */
sd_status cli_write_file(const char *path, const void *data, size_t len);

#endif
