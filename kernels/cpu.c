#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#include <stdatomic.h>
#include <stddef.h>

#include "target.h"

/* -1 until first use; every thread computes the same value, so the first-use race is benign. */
static atomic_int active_isa = -1;

kern_isa kern_isa_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
    if (__builtin_cpu_supports("avx512f")) return KERN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KERN_ISA_AVX2;
#elif defined(__aarch64__) && defined(__linux__)
    /* ASIMD is architecturally mandatory for aarch64 Linux, but the kernel says so explicitly. */
    if (getauxval(AT_HWCAP) & HWCAP_ASIMD) return KERN_ISA_NEON;
#elif defined(__aarch64__)
    /* Elsewhere (macOS) every aarch64 CPU has it and there is no HWCAP to ask. */
    return KERN_ISA_NEON;
#endif
    return KERN_ISA_GENERIC;
}

kern_isa kern_isa_active(void) {
    int isa = atomic_load_explicit(&active_isa, memory_order_relaxed);
    if (isa < 0) {
        isa = (int)kern_isa_supported();
        atomic_store(&active_isa, isa);
    }
    return (kern_isa)isa;
}

kern_isa kern_isa_set(kern_isa isa) {
    kern_isa best = kern_isa_supported();
    if (isa > best) isa = best;
    if (isa < KERN_ISA_GENERIC) isa = KERN_ISA_GENERIC;
    atomic_store(&active_isa, (int)isa);
    return isa;
}

const char *kern_isa_name(kern_isa isa) {
    switch (isa) {
#if KERN_ARM64
    case KERN_ISA_NEON: return "neon";
#else
    case KERN_ISA_AVX512: return "avx512";
    case KERN_ISA_AVX2: return "avx2";
#endif
    default: return "generic";
    }
}

static atomic_int fma_allowed = 1;

int kern_fma_set_allowed(int allowed) { return atomic_exchange(&fma_allowed, allowed != 0); }

int kern_fma_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return atomic_load_explicit(&fma_allowed, memory_order_relaxed) && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int kern_f16c_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c"). The YMM
     * state it needs is checked with AVX2 (kern_isa_supported). */
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
#else
    return 0;
#endif
}

int kern_bf16_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

int kern_bf16_active(void) { return kern_bf16_supported() && kern_isa_active() == KERN_ISA_AVX512; }

const char *kern_bf16_unavailable(void) {
    if (!kern_bf16_supported()) return "this CPU does not report avx512_bf16";
    if (kern_isa_active() != KERN_ISA_AVX512)
        return "the kernels are limited below AVX-512 (sd_set_kernel_isa; the tools' "
               "SD_KERNEL_ISA)";
    return NULL;
}

static atomic_int vnni_allowed = 1;

int kern_int8_vnni_set_allowed(int allowed) { return atomic_exchange(&vnni_allowed, allowed != 0); }

int kern_int8_vnni512_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return atomic_load_explicit(&vnni_allowed, memory_order_relaxed) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

int kern_int8_avxvnni_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* CPUID leaf 7 sub-leaf 1, EAX bit 4 (not every compiler's __builtin_cpu_supports knows
     * "avxvnni"); the YMM state it needs is checked with AVX2. */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return atomic_load_explicit(&vnni_allowed, memory_order_relaxed) &&
           __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
#else
    return 0;
#endif
}

const char *kern_int8_kernel_name(void) {
    const kern_isa isa = kern_isa_active();
    if (!KERN_X86) return "generic"; /* NEON shares AVX2's level number; no int8 kernel of its own */
    if (isa == KERN_ISA_AVX512 && kern_int8_vnni512_supported()) return "avx512-vnni";
    if (isa >= KERN_ISA_AVX2 && kern_int8_avxvnni_supported()) return "avx-vnni";
    if (isa >= KERN_ISA_AVX2) return "avx2";
    return "generic";
}
