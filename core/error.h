/* Error reporting shared by every module.
 *
 * Library functions return an sd_status; on failure they first record a one-line message that
 * names the file, tensor or key at fault (sd_set_error), which the caller reads back with
 * sd_last_error(). Nothing in the library prints or exits: the CLI decides what to do. The
 * message buffer is thread-local so parallel loaders do not trample each other. */
#ifndef SD_ERROR_H
#define SD_ERROR_H

typedef enum {
    SD_OK = 0,
    SD_ERR_IO,          /* a file is missing, unreadable or unwritable */
    SD_ERR_FORMAT,      /* a file exists but its contents are malformed (JSON, safetensors, PNG) */
    SD_ERR_CONFIG,      /* a config key is missing, of the wrong type or out of range */
    SD_ERR_TENSOR,      /* a tensor is missing or has the wrong shape or dtype */
    SD_ERR_ARG,         /* a caller passed an impossible value (size, steps, option) */
    SD_ERR_UNSUPPORTED, /* valid input that this engine does not implement */
    SD_ERR_NOMEM,
    SD_ERR_CANCELLED,   /* the event callback asked to stop (sd_generate: no result) */
} sd_status;

/* Records the message (printf-style) and returns `status`, so errors read
 * `return sd_set_error(SD_ERR_IO, "%s: %s", path, strerror(errno));`. */
sd_status sd_set_error(sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends context to the current message: "loading unet: <old message>". Returns `status`. */
sd_status sd_wrap_error(sd_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *sd_last_error(void);
void sd_clear_error(void);
const char *sd_status_name(sd_status status);

/* Propagate a failing status unchanged. */
#define SD_TRY(expr)                                                                               \
    do {                                                                                           \
        sd_status sd_try_status_ = (expr);                                                         \
        if (sd_try_status_ != SD_OK) return sd_try_status_;                                       \
    } while (0)

#endif
