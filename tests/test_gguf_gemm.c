/* GGUF block types kept quantized in the stored-weight GEMM (gemm_nt_stored with a KERN_Q*
 * type): every product must equal, bit for bit, gemm_nt on the same weights dequantized
 * beforehand by core/gguf_quant.c's gguf_dequantize (the definition, itself tested against
 * hand-computed blocks in test_gguf.c). Also kern_dequantize (the packers' fast paths) against
 * gguf_dequantize, per instruction set, from every block offset of a row.
 *
 * The blocks are random bytes with sane fp16 scales: every bit pattern of the quantized values
 * is a valid block, so random bytes reach every value and scale index a real file can hold. */
#include <stdlib.h>
#include <string.h>

#include "../core/gguf_quant.h"
#include "../core/safetensors.h"
#include "../kernels/convert.h"
#include "../kernels/cpu.h"
#include "../kernels/gemm.h"
#include "../kernels/gemm_internal.h"
#include "test.h"

/* Each block type, its ggml id, and where its fp16 scales sit in a block. */
static const struct {
    kern_dtype t;
    uint32_t ggml;
    const char *name;
    int scales[2]; /* byte offsets of fp16 fields; -1: none */
} types[] = {
    {KERN_Q4_0, GGUF_TYPE_Q4_0, "Q4_0", {0, -1}},   {KERN_Q4_1, GGUF_TYPE_Q4_1, "Q4_1", {0, 2}},
    {KERN_Q5_0, GGUF_TYPE_Q5_0, "Q5_0", {0, -1}},   {KERN_Q5_1, GGUF_TYPE_Q5_1, "Q5_1", {0, 2}},
    {KERN_Q8_0, GGUF_TYPE_Q8_0, "Q8_0", {0, -1}},   {KERN_Q2_K, GGUF_TYPE_Q2_K, "Q2_K", {80, 82}},
    {KERN_Q3_K, GGUF_TYPE_Q3_K, "Q3_K", {108, -1}}, {KERN_Q4_K, GGUF_TYPE_Q4_K, "Q4_K", {0, 2}},
    {KERN_Q5_K, GGUF_TYPE_Q5_K, "Q5_K", {0, 2}},    {KERN_Q6_K, GGUF_TYPE_Q6_K, "Q6_K", {208, -1}},
};
enum { N_TYPES = sizeof types / sizeof *types };

static uint64_t rng_state;
static uint32_t next_u32(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* n values (whole blocks) of type ti at an odd address inside the returned allocation (block
 * sizes like 34 bytes leave rows unaligned in a real file anyway); *wide gets them dequantized
 * by the definition. */
static uint8_t *make_blocks(int ti, size_t n, uint64_t seed, const uint8_t **data, float **wide) {
    int elems, bytes;
    gguf_type_block(types[ti].ggml, &elems, &bytes);
    const size_t nb = n / (size_t)elems, total = nb * (size_t)bytes;
    uint8_t *raw = malloc(total + 1), *b = raw + 1;
    rng_state = seed;
    for (size_t i = 0; i < total; i++) b[i] = (uint8_t)next_u32();
    for (size_t i = 0; i < nb; i++)
        for (int s = 0; s < 2; s++) {
            if (types[ti].scales[s] < 0) continue;
            /* A scale in [2^-12, 2^-6), either sign: small enough that no product overflows. */
            const float mag = (float)(1 + next_u32() % 1024) / 1024.0f / 64.0f;
            const uint16_t h = st_f32_to_f16(next_u32() & 1 ? -mag : mag);
            memcpy(b + i * (size_t)bytes + types[ti].scales[s], &h, 2);
        }
    *wide = malloc(n * sizeof **wide);
    gguf_dequantize(types[ti].ggml, b, *wide, (int64_t)n);
    *data = b;
    return raw;
}

static int same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof *a); }

/* kern_dequantize from every block of a few rows, in runs of several lengths. */
static void test_dequantize(kern_isa isa, int ti) {
    const int qb = kern_dtype_block(types[ti].t);
    int elems = 0, bytes = 0;
    CHECK(gguf_type_block(types[ti].ggml, &elems, &bytes) && elems == qb &&
          kern_dtype_bytes(types[ti].t, (size_t)qb * 3) == (size_t)bytes * 3,
          "%s: kern_dtype_block / bytes agree with gguf_type_block", types[ti].name);
    const size_t n = (size_t)qb * 24;
    const uint8_t *data;
    float *want, *got = malloc(n * sizeof *got);
    uint8_t *raw = make_blocks(ti, n, 1000 + (uint64_t)ti, &data, &want);
    int bad = 0;
    for (size_t start = 0; start < n; start += (size_t)qb)
        for (size_t len = (size_t)qb; start + len <= n; len += (size_t)qb * 5) {
            memset(got, 0xFF, len * sizeof *got);
            kern_dequantize(types[ti].t, data + kern_dtype_bytes(types[ti].t, start), got, len);
            bad += !same_bits(got, want + start, len);
        }
    CHECK(!bad, "[%s] %s: %d runs of kern_dequantize differ from gguf_dequantize",
          kern_isa_name(isa), types[ti].name, bad);
    free(raw);
    free(want);
    free(got);
}

static void test_gemm(kern_isa isa, int ti) {
    const int qb = kern_dtype_block(types[ti].t);
    /* (m, n, blocks of k): panel edges, a k whose engine blocks start inside weight blocks
     * (640 = 3 blocks of 213.3: 20 blocks of 32; 1056: 33), several k blocks, few rows (packed
     * per work item) and more than GEMM_ITEM_PACK_ROWS (packed whole). */
    const int shapes[][3] = {{1, 1, 1},           {5, 33, 1},       {77, 96, qb == 32 ? 20 : 3},
                             {30, 70, qb == 32 ? 33 : 5}, {3, 1280, qb == 32 ? 96 : 12},
                             {1030, 40, qb == 32 ? 20 : 3}};
    int bad_pack = 0, bad_gemm = 0, bad_parts = 0, cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2] * qb;
        const uint8_t *data;
        float *wide;
        uint8_t *raw = make_blocks(ti, (size_t)n * k, 100 + si, &data, &wide);
        float *a = malloc((size_t)m * k * sizeof *a), *bias = malloc((size_t)n * sizeof *bias);
        float *want = malloc((size_t)m * n * sizeof *want), *got = malloc((size_t)m * n * sizeof *got);
        fill_random(a, (size_t)m * k, 7 + si);
        fill_random(bias, (size_t)n, 9 + si);
        const size_t psize = gemm_packed_size(n, k);
        float *pw = malloc(psize * sizeof *pw), *pg = malloc(psize * sizeof *pg);
        gemm_pack_b_nt(n, k, wide, k, pw);
        const gemm_b_stored one = {types[ti].t, 1, {data}, {n}};
        gemm_pack_b_nt_stored_ref(&one, n, k, pg);
        bad_pack += !same_bits(pg, pw, psize);
        /* Both the whole-B packing and the block-by-block fallback of the engine. */
        for (int limit = 0; limit < 2; limit++) {
            gemm_set_pack_limit(limit ? GEMM_PACK_LIMIT : 0);
            for (int acc = 0; acc < 2; acc++) {
                fill_random(want, (size_t)m * n, 11);
                memcpy(got, want, (size_t)m * n * sizeof *got);
                gemm_nt(m, n, k, a, k, wide, k, want, n, acc ? NULL : bias, acc);
                gemm_nt_stored(m, n, k, a, k, &one, got, n, acc ? NULL : bias, acc);
                bad_gemm += !same_bits(got, want, (size_t)m * n);
                if (n >= 3) { /* the same B as three stacked parts (a fused projection) */
                    const size_t row = kern_dtype_bytes(types[ti].t, (size_t)k);
                    const int r0 = n / 3, r1 = n / 2 - n / 3 + 1, r2 = n - r0 - r1;
                    const gemm_b_stored parts = {
                        types[ti].t, 3, {data, data + (size_t)r0 * row, data + (size_t)(r0 + r1) * row},
                        {r0, r1, r2}};
                    gemm_nt_stored(m, n, k, a, k, &parts, got, n, acc ? NULL : bias, 0);
                    gemm_nt(m, n, k, a, k, wide, k, want, n, acc ? NULL : bias, 0);
                    bad_parts += !same_bits(got, want, (size_t)m * n);
                }
                cases++;
            }
        }
        gemm_set_pack_limit(GEMM_PACK_LIMIT);
        free(raw);
        free(wide);
        free(a);
        free(bias);
        free(want);
        free(got);
        free(pw);
        free(pg);
    }
    const char *isa_name = kern_isa_name(isa), *name = types[ti].name;
    CHECK(!bad_pack, "[%s] %s: the reference packing differs from gemm_pack_b_nt of the "
          "dequantized weight", isa_name, name);
    CHECK(!bad_gemm, "[%s] %s: %d of %d gemm_nt_stored products differ from gemm_nt", isa_name,
          name, bad_gemm, cases);
    CHECK(!bad_parts, "[%s] %s: %d stacked-part products differ", isa_name, name, bad_parts);
    printf("ok gemm_nt_stored [%s] %s: %d cases bit-identical to gemm_nt on the dequantized "
           "weight\n", isa_name, name, cases);
}

int main(void) {
    /* The dequantizers on every instruction set; the products (whose packing differs only
     * between the vector ISAs' panel packers, already tested on float32 weights) on the vector
     * ones, or on the plain one where there is none: the scalar engine is slow. */
    const kern_isa best = kern_isa_supported();
    for (int isa = KERN_ISA_GENERIC; isa <= (int)best; isa++) {
        kern_isa_set((kern_isa)isa);
        for (int ti = 0; ti < N_TYPES; ti++) {
            test_dequantize((kern_isa)isa, ti);
            if (isa == (int)best || isa >= KERN_ISA_AVX2) test_gemm((kern_isa)isa, ti);
        }
    }
    kern_isa_set(best);
    return test_summary();
}
