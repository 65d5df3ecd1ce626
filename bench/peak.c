#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include "peak.h"
#include "../kernels/target.h"

#if KERN_X86
#include <immintrin.h>
#endif
#if KERN_ARM64
#include <arm_neon.h>
#endif

/* 16 accumulators: more than FMA latency x FMA pipes on current x86 cores (4 x 2), so the loop
 * is bound by FMA throughput alone. The empty asm keeps the compiler from folding the chains. */
#define ACC12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ACC16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

#if KERN_X86
KERN_TARGET_AVX512 static float loop_avx512(long iters) {
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
#define INIT(i) __m512 v##i = _mm512_set1_ps((float)i);
    ACC16(INIT)
#undef INIT
    for (long it = 0; it < iters; it++) {
#define STEP(i) v##i = _mm512_fmadd_ps(v##i, m, a);
        ACC16(STEP)
#undef STEP
        __asm__ volatile("" : "+v"(v0), "+v"(v1), "+v"(v2), "+v"(v3), "+v"(v4), "+v"(v5), "+v"(v6),
                         "+v"(v7));
        __asm__ volatile("" : "+v"(v8), "+v"(v9), "+v"(v10), "+v"(v11), "+v"(v12), "+v"(v13),
                         "+v"(v14), "+v"(v15));
    }
    __m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, v##i);
    ACC16(SUM)
#undef SUM
    return _mm512_reduce_add_ps(s);
}

KERN_TARGET_AVX2 static float loop_avx2(long iters) {
    /* 16 ymm registers only: 12 accumulators plus the two constants. */
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
#define INIT(i) __m256 v##i = _mm256_set1_ps((float)i);
    ACC12(INIT)
#undef INIT
    for (long it = 0; it < iters; it++) {
#define STEP(i) v##i = _mm256_fmadd_ps(v##i, m, a);
        ACC12(STEP)
#undef STEP
        __asm__ volatile("" : "+x"(v0), "+x"(v1), "+x"(v2), "+x"(v3), "+x"(v4), "+x"(v5), "+x"(v6),
                         "+x"(v7), "+x"(v8), "+x"(v9), "+x"(v10), "+x"(v11));
    }
    __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, v##i);
    ACC12(SUM)
#undef SUM
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}
#endif

#if KERN_ARM64
/* 16 of the 32 q registers: at least FMA latency x FMA pipes on current cores (Neoverse V1/V2,
 * Apple's: 4 x 4). */
static float loop_neon(long iters) {
    const float32x4_t m = vdupq_n_f32(0.999999f), a = vdupq_n_f32(1e-6f);
#define INIT(i) float32x4_t v##i = vdupq_n_f32((float)i);
    ACC16(INIT)
#undef INIT
    for (long it = 0; it < iters; it++) {
#define STEP(i) v##i = vfmaq_f32(a, v##i, m);
        ACC16(STEP)
#undef STEP
        __asm__ volatile("" : "+w"(v0), "+w"(v1), "+w"(v2), "+w"(v3), "+w"(v4), "+w"(v5), "+w"(v6),
                         "+w"(v7));
        __asm__ volatile("" : "+w"(v8), "+w"(v9), "+w"(v10), "+w"(v11), "+w"(v12), "+w"(v13),
                         "+w"(v14), "+w"(v15));
    }
    float32x4_t s = vdupq_n_f32(0.0f);
#define SUM(i) s = vaddq_f32(s, v##i);
    ACC16(SUM)
#undef SUM
    return vaddvq_f32(s);
}
#endif

/* A vector register operand for the empty asm (SSE on x86, NEON on aarch64). */
#if defined(__aarch64__)
#define VREG(v) "+w"(v)
#else
#define VREG(v) "+x"(v)
#endif

/* Baseline x86-64 has no FMA: count a multiply and an add on 4-wide SSE vectors as one FMA. */
static float loop_generic(long iters) {
    typedef float vec4 __attribute__((vector_size(16)));
    const vec4 m = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, a = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
#define INIT(i) vec4 v##i = {(float)i, 0, 0, 0};
    ACC12(INIT)
#undef INIT
    for (long it = 0; it < iters; it++) {
#define STEP(i) v##i = v##i * m + a;
        ACC12(STEP)
#undef STEP
        __asm__ volatile("" : VREG(v0), VREG(v1), VREG(v2), VREG(v3), VREG(v4), VREG(v5), VREG(v6),
                         VREG(v7), VREG(v8), VREG(v9), VREG(v10), VREG(v11));
    }
    vec4 s = v0 + v1 + v2 + v3 + v4 + v5 + v6 + v7 + v8 + v9 + v10 + v11;
    return s[0];
}

/* flops of one loop iteration */
static double iter_flops(kern_isa isa) {
#if KERN_ARM64
    if (isa == KERN_ISA_NEON) return 16 * 8.0;
#else
    if (isa == KERN_ISA_AVX512) return 16 * 32.0;
    if (isa == KERN_ISA_AVX2) return 12 * 16.0;
#endif
    return 12 * 8.0;
}

static float run(kern_isa isa, long iters) {
#if KERN_X86
    if (isa == KERN_ISA_AVX512) return loop_avx512(iters);
    if (isa == KERN_ISA_AVX2) return loop_avx2(iters);
#elif KERN_ARM64
    if (isa == KERN_ISA_NEON) return loop_neon(iters);
#endif
    return loop_generic(iters);
}

static double clock_now(int threads) {
    const char *e = getenv("BENCH_CPUTIME");
    if (threads > 1 || !e || !atoi(e)) return omp_get_wtime();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double measure(kern_isa isa, int threads, long iters) {
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = clock_now(threads);
        float s = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : s)
        s += run(isa, iters);
        double t = clock_now(threads) - t0;
        sink += s;
        double gf = threads * iters * iter_flops(isa) / t * 1e-9;
        if (gf > best) best = gf;
    }
    (void)sink;
    return best;
}

void peak_measure(kern_isa isa, int threads, double *one, double *all) {
    /* About 0.1 s per run at a few hundred GFLOP/s. Keeps the best of this and any earlier
     * measurement: on a shared machine any run can only come out too low. */
    const long iters = (long)(3e10 / iter_flops(isa) / 8);
    const double p1 = measure(isa, 1, iters), pn = threads > 1 ? measure(isa, threads, iters) : p1;
    if (p1 > *one) *one = p1;
    if (pn > *all) *all = pn;
}
