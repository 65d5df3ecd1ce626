/* A generator that reproduces torch.Generator("cpu").manual_seed(seed) followed by torch.randn
 * (float32) bit for bit: MT19937 seeded with the low 32 bits of the seed, and torch's two normal
 * paths (16-element Box-Muller blocks with Cephes-style float log/sincos for tensors of >= 16
 * elements; double-precision Box-Muller with a cached second value below that). The algorithm is
 * described in docs/TORCH_RNG.md. Successive draws continue the stream like torch's do. */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t mt[624];
    int index;
    /* torch's CPUGeneratorImpl caches the second value of a double Box-Muller pair. */
    int has_next_normal;
    double next_normal;
} sd_rng;

void rng_seed(sd_rng *r, uint64_t seed);
uint32_t rng_next_u32(sd_rng *r);
/* torch.randn(n elements) in row-major order of the requested shape. */
void rng_randn(sd_rng *r, float *out, size_t n);

#endif
