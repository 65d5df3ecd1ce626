/* Large, long-lived buffers (packed weights, scratch arenas) on transparent huge pages.
 *
 * A 512x512 SD 1.5 step streams 3.4 GB of packed fp32 weights and 130 MB of activations; with
 * 4 KB pages that is almost a million TLB entries' worth of memory per step. On kernels whose
 * transparent_hugepage mode is "madvise" (Debian's default) buffers only get 2 MB pages when asked
 * for, which is what sd_big_alloc does for buffers of 2 MB or more (smaller ones: 64-byte aligned
 * as before). Freed with free(). Where huge pages are off, the madvise is a no-op. */
#ifndef SD_BIGALLOC_H
#define SD_BIGALLOC_H

#include <stddef.h>

void *sd_big_alloc(size_t bytes);

#endif
