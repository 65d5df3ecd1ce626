/* FP32 FMA peak of this machine, measured: each thread runs a loop of independent FMAs on the
 * widest vectors of the given instruction set level; GFLOP/s on one thread and on `threads`
 * threads at once (best of a few runs, and of the values already in *one and *all). */
#ifndef SD_BENCH_PEAK_H
#define SD_BENCH_PEAK_H

#include "../kernels/cpu.h"

void peak_measure(kern_isa isa, int threads, double *one, double *all);

#endif
