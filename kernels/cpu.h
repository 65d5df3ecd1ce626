/* Which instruction set the kernels use.
 *
 * The library is built without -march flags so the same binary runs anywhere; the fast kernels are
 * compiled per instruction set (function target attributes, target.h) and picked at run time from
 * what the CPU and OS support. Every level computes the same bits: each kernel performs the same
 * sequence of rounded operations whatever the vector width (vec_generic.h), so a level changes
 * the speed only. Tests and benchmarks can step down to a lower level to exercise every path; the
 * public sd_set_kernel_isa (which the tools and the test suite call with $SD_KERNEL_ISA) does the
 * same for a whole process. The library itself reads no environment variable. */
#ifndef SD_CPU_H
#define SD_CPU_H

/* Levels are ranked within one architecture, generic lowest, so "every level from the best down"
 * is a loop from kern_isa_supported() to KERN_ISA_GENERIC on any CPU. Rank 1 is AVX2 on x86 and
 * NEON on aarch64 (the same number: a build has only one of them; kern_isa_name tells which). */
typedef enum {
    KERN_ISA_GENERIC = 0,
    KERN_ISA_AVX2 = 1,   /* x86 */
    KERN_ISA_AVX512 = 2, /* x86 */
    KERN_ISA_NEON = 1,   /* aarch64 */
} kern_isa;

/* The best level this machine runs: AVX-512 needs avx512f, AVX2 needs avx2 and fma; NEON needs
 * the kernel's HWCAP_ASIMD (every aarch64 Linux reports it). */
kern_isa kern_isa_supported(void);
/* The level the kernels use now (the supported one unless lowered). */
kern_isa kern_isa_active(void);
/* Selects a level, clamped to what is supported; returns the level now in use. Not meant to be
 * called while kernels run on other threads. */
kern_isa kern_isa_set(kern_isa isa);
const char *kern_isa_name(kern_isa isa);

/* Whether the CPU has FMA instructions that must be asked for (x86: the fma flag; 0 elsewhere,
 * aarch64 included, whose baseline fmaf is one instruction). The generic level's C kernels then run
 * a copy compiled to use them for fmaf; without, fmaf is libm's (exact, about 15x slower). */
int kern_fma_supported(void);
/* Tests: with 0, kern_fma_supported() says no whatever the CPU has, so the portable level runs its
 * baseline copy (libm's fmaf) as on a CPU without FMA. Returns the previous setting. Not meant to
 * be called while kernels run on other threads. */
int kern_fma_set_allowed(int allowed);
/* Whether the CPU has F16C (vcvtph2ps): every AVX2 CPU made has it, but the AVX2 level does not
 * promise it, so the f16 widening checks. */
int kern_f16c_supported(void);

/* bf16 compute (--precision bf16): the fast bf16 kernels need avx512_bf16 (vdpbf16ps,
 * vcvtne2ps2bf16) on top of the AVX-512 level. kern_bf16_active() is true when they run now (the
 * CPU has them and the active level is AVX-512); kern_bf16_unavailable() says why not (NULL when
 * active), for callers that fall back to fp32. bf16 kernels called without them run a portable
 * emulation with the same arithmetic (slow; tests only). */
int kern_bf16_supported(void);
int kern_bf16_active(void);
const char *kern_bf16_unavailable(void);

/* int8 compute (--precision int8): vpdpbusd kernels where the CPU has them (AVX512-VNNI at the
 * AVX-512 level, AVX-VNNI at the AVX2 level); otherwise AVX2's vpmaddwd kernel or portable C.
 * Every kernel computes the same bits (gemm_int8.h). */
int kern_int8_vnni512_supported(void);
int kern_int8_avxvnni_supported(void);
/* The int8 kernel the active level runs: "avx512-vnni", "avx-vnni", "avx2" or "generic". */
const char *kern_int8_kernel_name(void);
/* Tests: with 0, neither VNNI form is reported, so the AVX2 and portable int8 kernels run as on a
 * CPU without them. Returns the previous setting. */
int kern_int8_vnni_set_allowed(int allowed);

#endif
