/* The kernels written once on the vec_*.h primitives, compiled for AVX-512: activations, norms
 * and attention (16 lanes). The GEMM microkernel is gemm_avx512.c. */
#include "target.h"

#if KERN_X86
#include "vec_avx512.h"
#include "vec_math.h"

#define KERN_NAME(name) name##_avx512
/* Attention tile: 32 queries (2 vectors) x 14 keys, 28 accumulators of the 32 zmm registers. */
#define ATT_QV 2
#define ATT_KG 14

#include "act_body.h"
#include "attention_body.h"
#include "norm_body.h"
#else
typedef int isa_avx512_unused; /* ISO C wants something in a translation unit */
#endif
