/* What the model benchmark records about the machine and the process. */
#ifndef SD_BENCH_SYSINFO_H
#define SD_BENCH_SYSINFO_H

#include <stdbool.h>
#include <stddef.h>

/* /proc/cpuinfo's "model name" (or "unknown"). */
void sysinfo_cpu_model(char *out, size_t size);
/* `git rev-parse --short=12 HEAD` in the current folder ("unknown" outside a checkout); *dirty
 * tells whether tracked files differ from that commit. */
void sysinfo_git_commit(char *out, size_t size, bool *dirty);
/* The 1, 5 and 15 minute load averages (-1 where unreadable). */
void sysinfo_loadavg(double avg[3]);
/* Peak resident set of the process so far, MB. */
double sysinfo_peak_rss_mb(void);
/* Minor page faults of the process so far: a rise during a call means fresh memory was touched. */
long sysinfo_minor_faults(void);
/* Calls to malloc, calloc, realloc, aligned_alloc and posix_memalign from statically linked code
 * (the engine's library and the benchmark) so far, through the linker's --wrap for those
 * functions: a program using this file must be linked with it (the Makefile does so). Calls from
 * shared libraries (OpenMP's runtime, libc itself) are not seen. */
long sysinfo_alloc_calls(void);
/* UTC time as 2026-01-31T12:00:00Z. */
void sysinfo_utc_now(char *out, size_t size);

#endif
