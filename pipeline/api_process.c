/* Process-wide entry points: the version and the kernels' instruction set level. */
#include <string.h>

#include "../core/error.h"
#include "../core/log.h"
#include "../kernels/cpu.h"
#include "../kernels/target.h"

const char *sd_version(void) { return SD_VERSION; }

sd_status sd_set_kernel_isa(const char *name) {
    const kern_isa best = kern_isa_supported();
    kern_isa want;
    /* A level of the other architecture (avx2 on aarch64, neon on x86) is one this CPU does not
     * run: like a level above the CPU's, it becomes the best this CPU has. */
    int foreign = 0;
    if (!name || !*name || !strcmp(name, "best")) want = best;
    else if (!strcmp(name, "avx512") || !strcmp(name, "avx2")) {
        want = !strcmp(name, "avx512") ? KERN_ISA_AVX512 : KERN_ISA_AVX2;
        foreign = KERN_ARM64;
    } else if (!strcmp(name, "neon")) {
        want = KERN_ISA_NEON;
        foreign = !KERN_ARM64;
    } else if (!strcmp(name, "generic")) want = KERN_ISA_GENERIC;
    else
        return sd_set_error(SD_ERR_ARG, "kernel instruction set '%s': expected avx512, avx2, "
                            "neon, generic or best", name);
    if (foreign) want = best;
    const kern_isa got = kern_isa_set(want);
    if (got != want || foreign)
        sd_log(SD_LOG_INFO, "kernel instruction set %s: this CPU runs at most %s", name,
               kern_isa_name(got));
    return SD_OK;
}

const char *sd_kernel_isa(void) { return kern_isa_name(kern_isa_active()); }
