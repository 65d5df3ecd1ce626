/* Shared by the kernel benchmark's files. */
#ifndef SD_BENCH_H
#define SD_BENCH_H

#include <stddef.h>

extern double bench_peak1, bench_peakn; /* GFLOP/s: one thread, all threads */
extern int bench_threads;               /* all threads */

/* 64-byte aligned floats in [-1, 1) (free with free()). */
float *bench_randbuf(size_t n);
/* Best seconds over `reps` runs of fn(ctx) after one warm-up run. */
double bench_best_time(void (*fn)(void *), void *ctx, int reps);

/* One step of the SD 1.5 UNet (batch 2, 64x64 latents) or one VAE decode (64x64 -> 512x512),
 * each distinct layer timed at its real shape and multiplied by how often it occurs. */
void bench_model_unet(void);
void bench_model_vae(void);
/* The stored-weight GEMM with GGUF blocks (Q8_0, Q4_K) against float32 (bench/gguf.c). */
void bench_gguf(void);

#endif
