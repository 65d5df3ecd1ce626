/* Thread counts. The library's parallel loops are OpenMP regions, whose size is a setting of the
 * thread that starts them (omp_set_num_threads is per thread). A pipeline keeps the count it was
 * loaded with and applies it around each call on the calling thread, so the count holds on
 * whatever thread the call runs, and the caller's own setting is left as it was. */
#ifndef SD_THREADS_H
#define SD_THREADS_H

/* Sets the calling thread's count to `threads` (0: every core) and returns the previous one, for
 * sd_threads_end. */
int sd_threads_begin(int threads);
void sd_threads_end(int previous);

/* Sets the calling thread's count for good (0: every core): tests and benchmarks that call the
 * modules directly. */
void sd_set_threads(int threads);

#endif
