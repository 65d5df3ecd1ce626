/* Messages besides errors, for the caller's log callback (sd_set_log_callback in sd.h): a fallback
 * the library took, an input it adjusted, a choice it made. Nothing is printed: with no callback
 * set a message is dropped. */
#ifndef SD_LOG_H
#define SD_LOG_H

#include "../include/sd.h"

/* Formats one line (printf-style, no trailing newline) and hands it to the callback, on the
 * calling thread. */
void sd_log(sd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
