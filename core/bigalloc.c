#include "bigalloc.h"

#include <stdlib.h>
#include <sys/mman.h>

enum { HUGE_PAGE = 2u << 20 };

void *sd_big_alloc(size_t bytes) {
    if (bytes < HUGE_PAGE) return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
    const size_t size = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(HUGE_PAGE, size);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, size, MADV_HUGEPAGE); /* advice only: failure leaves ordinary pages */
#endif
    return p;
}
