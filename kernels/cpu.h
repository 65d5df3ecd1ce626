/* Which instruction set the kernels use.
 *
 * The library is built without -march flags so the same binary runs anywhere; the fast kernels are
 * compiled per instruction set (GCC target pragmas) and picked at run time from what the CPU and
 * OS support. Tests and benchmarks can step down to a lower level to exercise every path; the
 * environment variable SD_KERNEL_ISA (generic, avx2, avx512) does the same for a whole run. */
#ifndef SD_CPU_H
#define SD_CPU_H

typedef enum { KERN_ISA_GENERIC = 0, KERN_ISA_AVX2 = 1, KERN_ISA_AVX512 = 2 } kern_isa;

/* The best level this machine runs: AVX-512 needs avx512f, AVX2 needs avx2 and fma. */
kern_isa kern_isa_supported(void);
/* The level the kernels use now (the supported one unless lowered). */
kern_isa kern_isa_active(void);
/* Selects a level, clamped to what is supported; returns the level now in use. Not meant to be
 * called while kernels run on other threads. */
kern_isa kern_isa_set(kern_isa isa);
const char *kern_isa_name(kern_isa isa);

#endif
