#include "act.h"

#include "act_internal.h"
#include "cpu.h"
#include "target.h"

/* Chunks for threads: element-wise work, so any split gives the same numbers. */
enum { ACT_CHUNK = 1 << 14 };

static const act_kernels *kernels(void) {
    switch (kern_isa_active()) {
#if KERN_X86
    case KERN_ISA_AVX512: return act_kernels_avx512();
    case KERN_ISA_AVX2: return act_kernels_avx2();
    default: return kern_fma_supported() ? act_kernels_generic_fma() : act_kernels_generic();
#elif KERN_ARM64
    case KERN_ISA_NEON: return act_kernels_neon();
    default: return act_kernels_generic();
#else
    default: return act_kernels_generic();
#endif
    }
}

static void apply(act_kind kind, float *x, size_t n) {
    const act_kernels *k = kernels();
    const long chunks = (long)((n + ACT_CHUNK - 1) / ACT_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (long c = 0; c < chunks; c++) {
        const size_t i0 = (size_t)c * ACT_CHUNK, len = n - i0 < ACT_CHUNK ? n - i0 : ACT_CHUNK;
        k->apply(kind, x + i0, len);
    }
}

void act_silu(float *x, size_t n) { apply(ACT_SILU, x, n); }
void act_gelu(float *x, size_t n) { apply(ACT_GELU, x, n); }
void act_gelu_tanh(float *x, size_t n) { apply(ACT_GELU_TANH, x, n); }
void act_quick_gelu(float *x, size_t n) { apply(ACT_QUICK_GELU, x, n); }

void act_geglu(const float *in, float *out, int rows, int d) {
    const act_kernels *k = kernels();
    /* Sequential over rows when aliasing: row r's output [r*d, r*d+d) never overlaps the input of
     * a later row (starting at 2*d*(r+1)), but a parallel loop could write row r before row r/2
     * read its input. */
    if (in == out) {
        for (int r = 0; r < rows; r++) k->geglu_row(in + (long)r * 2 * d, out + (long)r * d, d);
        return;
    }
#pragma omp parallel for schedule(static) if ((long)rows * d > ACT_CHUNK)
    for (int r = 0; r < rows; r++) k->geglu_row(in + (long)r * 2 * d, out + (long)r * d, d);
}
