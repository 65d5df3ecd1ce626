#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

/* The callback and its argument change together, so they are read and written under a lock (the
 * callback itself runs outside it: it may take its time, and several threads may log at once). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static sd_log_fn log_fn;
static void *log_user;

void sd_set_log_callback(sd_log_fn fn, void *user) {
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    pthread_mutex_unlock(&log_lock);
}

void sd_log(sd_log_level level, const char *fmt, ...) {
    pthread_mutex_lock(&log_lock);
    const sd_log_fn fn = log_fn;
    void *const user = log_user;
    pthread_mutex_unlock(&log_lock);
    if (!fn) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fn(user, level, line);
}
