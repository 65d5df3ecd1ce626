/* Error reporting shared by every module.
 *
 * Library functions return an sd_status; on failure they first record a one-line message that
 * names the file, tensor or key at fault (sd_set_error), which the caller reads back with
 * sd_last_error(). Nothing in the library prints or exits: the CLI decides what to do. The
 * message buffer is thread-local so parallel loaders do not trample each other. The sd_status
 * values are public and live in sd.h; this header is the library's own side. */
#ifndef SD_ERROR_H
#define SD_ERROR_H

#include "../include/sd.h"

/* Records the message (printf-style) and returns `status`, so errors read
 * `return sd_set_error(SD_ERR_IO, "%s: %s", path, strerror(errno));`. */
sd_status sd_set_error(sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends context to the current message: "loading unet: <old message>". Returns `status`. */
sd_status sd_wrap_error(sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* sd_last_error() and sd_status_string() are public (sd.h). */
void sd_clear_error(void);
/* The name the modules and tests have always used for sd_status_string. */
#define sd_status_name sd_status_string

/* Propagate a failing status unchanged. */
#define SD_TRY(expr)                                                                               \
    do {                                                                                           \
        sd_status sd_try_status_ = (expr);                                                         \
        if (sd_try_status_ != SD_OK) return sd_try_status_;                                       \
    } while (0)

#endif
