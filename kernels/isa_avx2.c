/* The kernels written once on the vec_*.h primitives, compiled for AVX2 + FMA: activations,
 * norms and attention (8 lanes). The GEMM microkernel is gemm_avx2.c. */
#include "target.h"

#if KERN_X86
#include "vec_avx2.h"
#include "vec_math.h"

#define KERN_NAME(name) name##_avx2
/* Attention tile: 16 queries (2 vectors) x 6 keys, 12 accumulators of the 16 ymm registers. */
#define ATT_QV 2
#define ATT_KG 6

#include "act_body.h"
#include "attention_body.h"
#include "norm_body.h"
#else
typedef int isa_avx2_unused; /* ISO C wants something in a translation unit */
#endif
