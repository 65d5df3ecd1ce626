#include "sysinfo.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void sysinfo_cpu_model(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = 0;
        break;
    }
    fclose(fp);
}

/* First line of a command's output, or "" when it fails. */
static void first_line(const char *cmd, char *out, size_t size) {
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) return;
    if (!fgets(out, (int)size, p)) out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    pclose(p);
}

void sysinfo_git_commit(char *out, size_t size, bool *dirty) {
    first_line("git rev-parse --short=12 HEAD 2>/dev/null", out, size);
    if (!out[0]) snprintf(out, size, "unknown");
    char line[256];
    first_line("git status --porcelain --untracked-files=no 2>/dev/null", line, sizeof line);
    *dirty = line[0] != 0;
}

void sysinfo_loadavg(double avg[3]) {
    avg[0] = avg[1] = avg[2] = -1.0;
    FILE *fp = fopen("/proc/loadavg", "r");
    if (!fp) return;
    if (fscanf(fp, "%lf %lf %lf", &avg[0], &avg[1], &avg[2]) != 3) avg[0] = avg[1] = avg[2] = -1.0;
    fclose(fp);
}

double sysinfo_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* KB on Linux */
}

long sysinfo_minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

void sysinfo_utc_now(char *out, size_t size) {
    const time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- allocation counting: this file must be linked with -Wl,--wrap=malloc,--wrap=calloc,...
 * (the __real_ functions exist only then) ---- */

static atomic_long alloc_calls;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);

static inline void count(void) { atomic_fetch_add_explicit(&alloc_calls, 1, memory_order_relaxed); }

void *__wrap_malloc(size_t n) {
    count();
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t size) {
    count();
    return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n) {
    count();
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t align, size_t n) {
    count();
    return __real_aligned_alloc(align, n);
}
int __wrap_posix_memalign(void **p, size_t align, size_t n) {
    count();
    return __real_posix_memalign(p, align, n);
}

long sysinfo_alloc_calls(void) { return atomic_load(&alloc_calls); }
