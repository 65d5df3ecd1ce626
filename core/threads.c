#include "threads.h"

#include <omp.h>

void sd_set_threads(int threads) {
    omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

int sd_threads_begin(int threads) {
    const int previous = omp_get_max_threads();
    sd_set_threads(threads);
    return previous;
}

void sd_threads_end(int previous) { omp_set_num_threads(previous); }
