/* Pageable copies of buffers made at load (weights.h, weights_spill): what --weights-dtype q*
 * quantizes would otherwise be anonymous memory, resident for the model's life, where the
 * mapped weights of a paged run are given back after each layer. Written to an unlinked file in
 * $TMPDIR (else /tmp) and mapped shared, read-only, the blocks behave as a file's: MADV_DONTNEED
 * drops the pages, the next forward faults them back from the page cache (or the file). */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

void *weights_spill(const void *data, size_t n) {
    if (!n) return NULL;
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/sd-weights-XXXXXX", dir && *dir ? dir : "/tmp");
    const int fd = mkstemp(path);
    if (fd < 0) return NULL;
    unlink(path); /* the mapping keeps the file; nothing is left behind on exit */
    bool ok = true;
    for (size_t done = 0; ok && done < n;) {
        const ssize_t k = pwrite(fd, (const char *)data + done, n - done, (off_t)done);
        ok = k > 0;
        if (ok) done += (size_t)k;
    }
    void *map = ok ? mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED) {
        sd_log(SD_LOG_WARN, "could not write %zu bytes of quantized weights to %s (disk full?): "
               "they stay resident", n, dir && *dir ? dir : "/tmp");
        return NULL;
    }
    return map;
}

void weights_spill_free(void *map, size_t n) {
    if (map && n) munmap(map, n);
}
