#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { SD_ERROR_MAX = 1024 };
static _Thread_local char error_message[SD_ERROR_MAX];

sd_status sd_set_error(sd_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return status;
}

sd_status sd_wrap_error(sd_status status, const char *fmt, ...) {
    char old[SD_ERROR_MAX];
    memcpy(old, error_message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    /* Append ": <old message>", cut at the buffer's end if it has to be. */
    size_t used = n < 0 ? 0 : (size_t)n < sizeof error_message ? (size_t)n : sizeof error_message - 1;
    size_t room = sizeof error_message - 1 - used, old_len = strnlen(old, sizeof old - 1);
    const char sep[] = ": ";
    for (size_t i = 0; i < 2 && room; i++, room--) error_message[used++] = sep[i];
    size_t take = old_len < room ? old_len : room;
    memcpy(error_message + used, old, take);
    error_message[used + take] = '\0';
    return status;
}

const char *sd_last_error(void) { return error_message[0] ? error_message : "no error recorded"; }

void sd_clear_error(void) { error_message[0] = '\0'; }

const char *sd_status_string(sd_status status) {
    switch (status) {
    case SD_OK: return "ok";
    case SD_ERR_IO: return "I/O error";
    case SD_ERR_FORMAT: return "format error";
    case SD_ERR_CONFIG: return "config error";
    case SD_ERR_TENSOR: return "tensor error";
    case SD_ERR_ARG: return "invalid argument";
    case SD_ERR_UNSUPPORTED: return "unsupported";
    case SD_ERR_NOMEM: return "out of memory";
    case SD_ERR_CANCELLED: return "cancelled";
    case SD_ERR_BUSY: return "busy";
    }
    return "unknown error";
}
