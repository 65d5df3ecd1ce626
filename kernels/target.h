/* Compiling one function for an instruction set the build flags do not enable (not a public
 * header).
 *
 * The library is built for the baseline ISA so that one binary runs anywhere; each fast kernel
 * carries a target attribute per function. GCC and clang both honour the attribute for the
 * function and for the intrinsics inlined into it (clang ignores `#pragma GCC target`, so the
 * attribute is the portable spelling). Such a function is only called after cpu.c has checked
 * that the CPU and the OS support that level. */
#ifndef SD_KERN_TARGET_H
#define SD_KERN_TARGET_H

#if defined(__x86_64__) || defined(__i386__)
#define KERN_X86 1
/* The portable kernels again, with fmaf as one instruction (cpu.h, kern_fma_supported). */
#define KERN_TARGET_FMA __attribute__((target("fma")))
#define KERN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define KERN_TARGET_AVX2_F16C __attribute__((target("avx2,fma,f16c")))
#define KERN_TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f")))
#define KERN_TARGET_AVX512_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512bf16")))
/* int8 compute (gemm_int8.h): vpdpbusd in its EVEX (AVX512-VNNI) and VEX (AVX-VNNI) forms. */
#define KERN_TARGET_AVX512_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vnni")))
#define KERN_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#else
#define KERN_X86 0
#endif

/* aarch64: NEON (Advanced SIMD, with fused multiply-add) is part of the baseline ISA, so its
 * kernels need no target attribute; cpu.c still asks the OS (HWCAP_ASIMD) before using them. */
#if defined(__aarch64__)
#define KERN_ARM64 1
#else
#define KERN_ARM64 0
#endif

/* A helper inlined into its caller whatever the optimisation level: the SIMD register tiles live
 * in arrays that only stay in registers once every loop over them is unrolled. */
#define KERN_INLINE static inline __attribute__((always_inline))
/* Before a loop over such an array: unrolled whole (clang needs its own spelling to do so). */
#if defined(__clang__)
#define KERN_UNROLL _Pragma("clang loop unroll(full)")
#else
#define KERN_UNROLL _Pragma("GCC unroll 16")
#endif

#endif
