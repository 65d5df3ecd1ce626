/* The portable kernels again for x86 CPUs that have FMA instructions (every AVX2 CPU, and any
 * run limited to the generic level with SD_KERNEL_ISA=generic): fmaf is then one instruction
 * rather than a call into libm's software-or-hardware fmaf, about 15x faster, with the same
 * results, since fmaf is exact either way. Elsewhere fmaf is an instruction of the baseline ISA
 * (aarch64) or the only choice, and this file is empty. */
#include "target.h"

#if KERN_X86
#define VEC_GENERIC_TARGET KERN_TARGET_FMA
#define KERN_NAME(name) name##_generic_fma
#include "isa_generic.c"
#else
typedef int isa_generic_fma_unused; /* ISO C wants something in a translation unit */
#endif
