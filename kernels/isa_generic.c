/* The portable kernels (vec_generic.h: one lane, plain C), for any CPU: activations, norms,
 * attention and the GEMM microkernel, with the same arithmetic as the SIMD ones. isa_generic_fma.c
 * compiles this file again for x86 CPUs with FMA instructions. */
#ifndef KERN_NAME
#define KERN_NAME(name) name##_generic
#endif

#include "vec_generic.h"
#include "vec_math.h"

/* Attention tile: 4 queries x 4 keys of scalar accumulators. */
#define ATT_QV 4
#define ATT_KG 4

#include "act_body.h"
#include "attention_body.h"
#include "gemm_generic_body.h"
#include "norm_body.h"
