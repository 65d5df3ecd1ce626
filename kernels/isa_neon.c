/* The kernels written once on the vec_*.h primitives, compiled for aarch64 NEON: activations,
 * norms and attention (4 lanes). The GEMM microkernel is gemm_neon.c. */
#include "target.h"

#if KERN_ARM64
#include "vec_neon.h"
#include "vec_math.h"

#define KERN_NAME(name) name##_neon
/* Attention tile: 8 queries (2 vectors) x 12 keys, 24 accumulators of the 32 q registers. */
#define ATT_QV 2
#define ATT_KG 12

#include "act_body.h"
#include "attention_body.h"
#include "norm_body.h"
#else
typedef int isa_neon_unused; /* ISO C wants something in a translation unit */
#endif
