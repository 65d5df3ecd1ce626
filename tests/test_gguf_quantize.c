/* ggml's reference quantizers (core/gguf_quantize.c) and --weights-dtype q* at the layer level
 * (core/weights_quant.c, nn/layers.c):
 * - each block type against a block worked out by hand (below, next to each case: the scale and
 *   min rounding, the 6-bit scale packing, the nibble / high-bit layout), inputs chosen so that
 *   every intermediate is exact and ggml's refinement loops cannot move the result;
 * - every type on random data: dequantized blocks are within the type's step of the input, and
 *   a Linear layer loaded under the policy multiplies exactly as the dequantized weight does;
 * - which weights stay at 16 bits (the README's list) and in which dtype;
 * - bad input: rows not a whole number of blocks, a non-float source, errors naming the tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/gguf_quant.h"
#include "../core/gguf_quantize.h"
#include "../core/safetensors.h"
#include "../core/weights.h"
#include "../kernels/gemm.h"
#include "../nn/layers.h"
#include "test.h"

static void expect_bytes(const char *what, const uint8_t *got, const uint8_t *want, int n) {
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++)
        if (got[i] != want[i]) bad = i;
    CHECK(bad < 0, "%s: byte %d is 0x%02x, expected 0x%02x", what, bad, bad >= 0 ? got[bad] : 0,
          bad >= 0 ? want[bad] : 0);
    if (bad < 0) printf("ok %s: %d bytes as worked out by hand\n", what, n);
}

/* Q8_0: amax 127 gives d = 127 / 127 = 1 (fp16 0x3C00) and 1/d = 1, so q = roundf(x): 2.5 -> 3,
 * -2.5 -> -3 (roundf rounds half away from zero, as ggml's quantize_row_q8_0_ref; lrintf would
 * give 2), 0.5 -> 1, 1.49 -> 1. A second block with amax 16: d = 16/127 = 0.1259843 -> fp16
 * 0x3008 (2^-3 * (1 + 8/1024), mantissa 8.06 rounded), q = roundf(x * 127/16): 1 -> 8 (7.94),
 * -16 -> -127, 3 -> 24 (23.81). */
static void test_q8_0(void) {
    float x[64] = {127, 2.5f, -2.5f, 0.5f, 1.49f, -127};
    x[32] = 1, x[33] = -16, x[34] = 3;
    uint8_t got[68], want[68] = {0x00, 0x3C, 127, 3, (uint8_t)-3, 1, 1, (uint8_t)-127};
    want[34] = 0x08, want[35] = 0x30, want[36] = 8, want[37] = (uint8_t)-127, want[38] = 24;
    gguf_quantize_row(GGUF_TYPE_Q8_0, x, got, 64);
    expect_bytes("Q8_0 blocks", got, want, 68);
}

/* Q4_0: d = (value of largest magnitude) / -8. Block 1: max -8 -> d = 1 (0x3C00), q = min(15,
 * (int8)(x + 8.5)): -8 -> 0, 7 -> 15, 7.6 -> 16 -> 15, 0 -> 8, -0.6 -> 7 (7.9 truncated), 0.4 ->
 * 8 (8.9 truncated). Block 2: max +8 -> d = -1 (0xBC00): 8 -> (int8)0.5 = 0, -7 -> 15, 1 -> 7.
 * Value j sits in the low nibble of byte j, value j + 16 in its high nibble. */
static void test_q4_0(void) {
    float x[64] = {-8, 7, 7.6f, 0, -0.6f, 0.4f};
    x[16] = 7, x[17] = -0.6f;
    x[32] = 8, x[33] = -7, x[48] = 1;
    uint8_t got[36], want[36];
    memset(want, 0x88, sizeof want); /* zeros are q 8 in both nibbles */
    want[0] = 0x00, want[1] = 0x3C;
    want[2] = 0 | 15 << 4, want[3] = 15 | 7 << 4, want[4] = 15 | 8 << 4, want[5] = 8 | 8 << 4;
    want[6] = 7 | 8 << 4, want[7] = 8 | 8 << 4;
    want[18] = 0x00, want[19] = 0xBC;
    want[20] = 0 | 7 << 4, want[21] = 15 | 8 << 4;
    gguf_quantize_row(GGUF_TYPE_Q4_0, x, got, 64);
    expect_bytes("Q4_0 blocks", got, want, 36);
}

/* Q4_K / Q5_K: sub-block j (of 8, 32 values) holds s * (l - 4), s = 1, 2, 4, 8, 1, 2, 4, 8 and
 * l = i % 16 (Q4_K) or i (Q5_K) at position i: each is exact on its own lattice (min -4s, scale
 * s, zero error, so no trial scale improves on it). max scale 8, max min 32: d = fp16(8/63) =
 * 0.126953125 (0x3010: mantissa 16.25 -> 16), dmin = fp16(32/63) = 0.5078125 (0x3810); 6-bit
 * scales nearest(63/8 * s) = 8, 16, 32 (31.5, half to even), 63 and the same for the mins
 * (nearest(63/32 * 4s)). Requantized against the rounded scales, (x + dmin*m) / (d*sc) =
 * (l + 0.0625) / 1.015625 rounds to l for every l <= 31. Scale bytes (j < 4 low 6 bits of bytes
 * j and j + 4, j >= 4 nibbles of byte j + 4 and the top bits of bytes j - 4 and j):
 * 08 50 A0 FF 08 50 A0 FF 88 00 00 FF. */
static void k_block(float *x, bool five) {
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 32; i++) x[32 * j + i] = (float)(1 << (j % 4)) * ((five ? i : i % 16) - 4);
}

static void test_q4_k_q5_k(void) {
    static const uint8_t head[16] = {0x10, 0x30, 0x10, 0x38, 0x08, 0x50, 0xA0, 0xFF,
                                     0x08, 0x50, 0xA0, 0xFF, 0x88, 0x00, 0x00, 0xFF};
    float x[256];
    uint8_t got[176], want[176];
    k_block(x, false);
    memcpy(want, head, 16);
    for (int p = 0; p < 4; p++) /* values 64p + i low nibble, 64p + 32 + i high */
        for (int i = 0; i < 32; i++) want[16 + 32 * p + i] = (uint8_t)((i % 16) | (i % 16) << 4);
    gguf_quantize_row(GGUF_TYPE_Q4_K, x, got, 256);
    expect_bytes("Q4_K block", got, want, 144);
    k_block(x, true);
    memcpy(want, head, 16);
    for (int i = 0; i < 32; i++) want[16 + i] = i >= 16 ? 0xFF : 0x00; /* fifth bits, 2 a pair */
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 32; i++) want[48 + 32 * p + i] = (uint8_t)((i & 15) | (i & 15) << 4);
    gguf_quantize_row(GGUF_TYPE_Q5_K, x, got, 256);
    expect_bytes("Q5_K block", got, want, 176);
}

/* Q6_K: sub-block b (of 16, 16 values) holds -32 s, 16 s and zeros, s = 1, 2, 4, 8 cycling:
 * make_qx_quants' scale is s exactly (every sum exact; the trial scales explain less). The
 * largest is +8: iscale = -128/8 = -16, d = 1/iscale = -0.0625 (0xAC00), int8 scales
 * nearest(-16 s) = -16, -32, -64, -128 (F0 E0 C0 80); d * scale = s, so L = x/s + 32 = 0, 48,
 * 32: low nibbles all 0 (ql all zero), high pairs 0, 3, 2: qh = 00 at positions 0 and 16 of
 * each 32, FF at 1 and 17, AA elsewhere. */
static void test_q6_k(void) {
    float x[256] = {0};
    for (int b = 0; b < 16; b++) {
        const float s = (float)(1 << (b % 4));
        x[16 * b] = -32 * s;
        x[16 * b + 1] = 16 * s;
    }
    uint8_t got[210], want[210] = {0};
    for (int i = 0; i < 64; i++) want[128 + i] = i % 16 == 0 ? 0x00 : i % 16 == 1 ? 0xFF : 0xAA;
    for (int b = 0; b < 16; b++) want[192 + b] = (uint8_t)(int8_t)(-16 * (1 << (b % 4)));
    want[208] = 0x00, want[209] = 0xAC;
    gguf_quantize_row(GGUF_TYPE_Q6_K, x, got, 256);
    expect_bytes("Q6_K block", got, want, 210);
    /* An all-zero block: d 0, everything zero (ggml's GROUP_MAX_EPS early exit). */
    memset(x, 0, sizeof x);
    memset(want, 0, sizeof want);
    memset(got, 0xEE, sizeof got);
    gguf_quantize_row(GGUF_TYPE_Q6_K, x, got, 256);
    expect_bytes("Q6_K zero block", got, want, 210);
}

static const struct {
    uint32_t type;
    st_dtype st;
    weights_dtype policy;
    const char *name;
    double step; /* the largest error per value, relative to the block's largest magnitude */
} types[] = {
    {GGUF_TYPE_Q8_0, ST_Q8_0, WEIGHTS_TO_Q8_0, "Q8_0", 0.5 / 127 + 1e-3},
    {GGUF_TYPE_Q4_0, ST_Q4_0, WEIGHTS_TO_Q4_0, "Q4_0", 1.0 / 8 + 1e-2},
    {GGUF_TYPE_Q4_K, ST_Q4_K, WEIGHTS_TO_Q4_K, "Q4_K", 0.15},
    {GGUF_TYPE_Q5_K, ST_Q5_K, WEIGHTS_TO_Q5_K, "Q5_K", 0.08},
    {GGUF_TYPE_Q6_K, ST_Q6_K, WEIGHTS_TO_Q6_K, "Q6_K", 0.04},
};

/* Random data through every quantizer and back (core's dequantizer, tested against hand-made
 * blocks in test_gguf.c): within the type's quantization step of the input. */
static void test_round_trip(void) {
    enum { N = 1024 };
    float x[N], y[N];
    uint8_t q[N * 2];
    fill_random(x, N, 77);
    for (int i = 0; i < N; i++) x[i] *= 1 + (i / 256) * 3; /* blocks of different ranges */
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        gguf_quantize_row(types[t].type, x, q, N);
        gguf_dequantize(types[t].type, q, y, N);
        double worst = 0;
        for (int b = 0; b < N; b += 256) {
            float amax = 0;
            /* Plain compares, not fmaxf/fmax: Debian 12's aarch64 gcc stops with an internal
             * error vectorizing those reductions (make cross-aarch64). */
            for (int i = b; i < b + 256; i++)
                if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
            for (int i = b; i < b + 256; i++) {
                const double e = fabs(y[i] - x[i]) / amax;
                if (e > worst) worst = e;
            }
        }
        CHECK(worst <= types[t].step, "%s round trip: error %.4g of the block's range > %.4g",
              types[t].name, worst, types[t].step);
        if (worst <= types[t].step)
            printf("ok %s round trip: largest error %.4g of the block's range\n", types[t].name, worst);
    }
}

/* A folder with one safetensors file of the given tensors (F32 or F16 data). */
static void write_model(const char *dir, const st_entry *e, int n) {
    mkdir(dir, 0700);
    char *path = sd_path_join(dir, "model.safetensors");
    CHECK_OK(st_write(path, e, n, NULL, 0));
    free(path);
}

static void remove_model(const char *dir) {
    char *f = sd_path_join(dir, "model.safetensors");
    if (f) unlink(f);
    rmdir(dir);
    free(f);
}

/* Under each Q policy, a Linear layer whose weight is quantized at load multiplies exactly as
 * gemm on the dequantized weight (the test's own dequantization through the blocks the
 * reference quantizer makes); the kept ones hold 16 bits (F32 source -> F16, F16 source as
 * stored); every bias is rounded to f16. */
static void test_layers(const char *tmp) {
    enum { IN = 512, OUT = 24, SMALL = 96 };
    float *w = malloc(sizeof(float) * OUT * IN), *b = malloc(sizeof(float) * OUT);
    float *ws = malloc(sizeof(float) * OUT * SMALL);
    uint16_t *w16 = malloc(2 * OUT * IN);
    fill_random(w, (size_t)OUT * IN, 1);
    fill_random(b, OUT, 2);
    fill_random(ws, (size_t)OUT * SMALL, 3);
    for (int i = 0; i < OUT * IN; i++) w16[i] = st_f32_to_f16(w[i] * 0.5f);
    const st_entry e[] = {
        {"blocks.0.attn.to_q.weight", ST_F32, 2, {OUT, IN}, w},
        {"blocks.0.attn.to_q.bias", ST_F32, 1, {OUT}, b},
        {"blocks.0.attn.to_k.weight", ST_F16, 2, {OUT, IN}, w16},
        {"blocks.0.ff.proj.weight", ST_F32, 2, {OUT, SMALL}, ws},
        {"time_embedding.linear_1.weight", ST_F32, 2, {OUT, IN}, w},
        {"proj_out.weight", ST_F32, 2, {OUT, IN}, w},
        {"x_embedder.weight", ST_F16, 2, {OUT, IN}, w16},
    };
    char dir[512];
    snprintf(dir, sizeof dir, "%s/layers", tmp);
    write_model(dir, e, (int)(sizeof e / sizeof *e));
    float x[3 * IN], got[3 * OUT], want[3 * OUT], *deq = malloc(sizeof(float) * OUT * IN);
    uint8_t *blocks = malloc((size_t)OUT * IN * 2);
    fill_random(x, 3 * IN, 4);
    for (size_t tp = 0; tp < 2 * sizeof types / sizeof *types; tp++) {
        /* Each type resident, then paged: the blocks then live in a temporary file mapping
         * (weights_spill) whose pages are given back after each forward. */
        const size_t t = tp % (sizeof types / sizeof *types);
        const bool paged = tp >= sizeof types / sizeof *types;
        weights_policy pol = {.dtype = types[t].policy, .low_memory = paged};
        sd_weights sw;
        CHECK_OK(weights_open(&sw, dir, "model", &pol));
        sw.keep_stored = true;
        nn_linear l;
        const int rows[2] = {IN, SMALL};
        int elems, bytes;
        gguf_type_block(types[t].type, &elems, &bytes);
        /* to_q: F32, quantized; to_k: F16, quantized from the f16 values. */
        for (int k = 0; k < 2; k++) {
            CHECK_OK(nn_linear_load(&l, &sw, IN, OUT, k == 0, "blocks.0.attn.to_%c", k ? 'k' : 'q'));
            CHECK(l.src.n_parts == 1 && l.src.type == (kern_dtype)(KERN_Q4_0 + (types[t].st - ST_Q4_0)),
                  "%s: to_%c is not held as %s blocks", types[t].name, k ? 'k' : 'q', types[t].name);
            CHECK((l.own_map[0] > 0) == paged && l.release == paged && l.own[0],
                  "%s%s: to_%c's blocks %s a file mapping", types[t].name, paged ? " paged" : "",
                  k ? 'k' : 'q', paged ? "not in" : "in");
            /* Twice: the second forward faults the given-back pages in again. */
            nn_linear_forward(&l, x, got, 3);
            for (int i = 0; i < OUT * IN; i++) deq[i] = k ? st_f16_to_f32(w16[i]) : w[i];
            gguf_quantize_row(types[t].type, deq, blocks, (int64_t)OUT * IN);
            gguf_dequantize(types[t].type, blocks, deq, (int64_t)OUT * IN);
            float bias16[OUT];
            for (int i = 0; i < OUT; i++) bias16[i] = st_f16_to_f32(st_f32_to_f16(b[i]));
            nn_linear_forward(&l, x, got, 3);
            /* The reference: the same layer loaded from float32 values (dequantized weight, the
             * f16-rounded bias), packed the usual way. */
            char rdir[600];
            snprintf(rdir, sizeof rdir, "%s/ref-%zu-%d", tmp, tp, k);
            const st_entry re[] = {{"l.weight", ST_F32, 2, {OUT, IN}, deq},
                                   {"l.bias", ST_F32, 1, {OUT}, bias16}};
            write_model(rdir, re, k ? 1 : 2);
            sd_weights rw;
            nn_linear rl;
            CHECK_OK(weights_open(&rw, rdir, "model", NULL));
            rw.keep_stored = true;
            CHECK_OK(nn_linear_load(&rl, &rw, IN, OUT, k == 0, "l"));
            nn_linear_forward(&rl, x, want, 3);
            nn_linear_free(&rl);
            weights_close(&rw);
            remove_model(rdir);
            char what[96];
            snprintf(what, sizeof what, "%s Linear (%s source%s) vs dequantized weight", types[t].name,
                     k ? "F16" : "F32", paged ? ", paged" : "");
            CHECK(!memcmp(got, want, sizeof got), "%s: not identical", what);
            if (!memcmp(got, want, sizeof got)) printf("ok %s: identical\n", what);
            nn_linear_free(&l);
        }
        /* Kept: rows of 96 (a whole number of Q8_0/Q4_0 blocks, not of K blocks), the time
         * embedding, the top-level proj_out (F32 -> F16) and x_embedder (F16 as stored). */
        CHECK_OK(nn_linear_load(&l, &sw, rows[1], OUT, false, "blocks.0.ff.proj"));
        const kern_dtype small_want = elems == 32 ? (kern_dtype)(KERN_Q4_0 + (types[t].st - ST_Q4_0)) : KERN_F16;
        CHECK(l.src.n_parts == 1 && l.src.type == small_want, "%s: ff.proj (rows of 96) held as kern type %d, expected %d",
              types[t].name, (int)l.src.type, (int)small_want);
        nn_linear_free(&l);
        static const char *const kept[] = {"time_embedding.linear_1", "proj_out", "x_embedder"};
        for (int k = 0; k < 3; k++) {
            CHECK_OK(nn_linear_load(&l, &sw, IN, OUT, false, "%s", kept[k]));
            CHECK(l.src.n_parts == 1 && l.src.type == KERN_F16, "%s: %s held as kern type %d, not F16",
                  types[t].name, kept[k], (int)l.src.type);
            nn_linear_free(&l);
        }
        weights_close(&sw);
    }
    printf("ok kept weights: rows not whole blocks, embeddings, first/last layers at 16 bits\n");
    free(w), free(b), free(ws), free(w16), free(deq), free(blocks);
}

/* The list itself, by name: what the README says stays at 16 bits. */
static void test_kept_list(void) {
    static const struct {
        const char *name;
        int64_t row;
        bool kept;
    } cases[] = {
        {"conv_in.weight", 256, true},
        {"conv_out.weight", 256, true},
        {"proj_out.weight", 256, true},
        {"norm_out.linear.weight", 256, true},
        {"text_projection.weight", 256, true},
        {"time_embedding.linear_1.weight", 256, true},
        {"add_embedding.linear_2.weight", 256, true},
        {"time_text_embed.timestep_embedder.linear_1.weight", 256, true},
        {"x_embedder.weight", 256, true},
        {"context_embedder.weight", 256, true},
        {"text_model.embeddings.token_embedding.weight", 256, true},
        {"encoder.embed_tokens.weight", 256, true},
        {"down_blocks.0.attentions.0.proj_out.weight", 256, false},
        {"down_blocks.0.resnets.0.time_emb_proj.weight", 256, false},
        {"transformer_blocks.0.attn.to_q.weight", 256, false},
        {"single_transformer_blocks.3.proj_out.weight", 256, false},
        {"transformer_blocks.0.norm1.linear.weight", 256, false},
        {"text_model.encoder.layers.0.mlp.fc1.weight", 256, false},
        {"transformer_blocks.0.attn.to_q.weight", 160, true}, /* not whole K blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *why = weights_quant_kept(cases[i].name, cases[i].row, ST_Q4_K);
        CHECK((why != NULL) == cases[i].kept, "%s (rows of %lld): %s, expected %s", cases[i].name,
              (long long)cases[i].row, why ? why : "quantized", cases[i].kept ? "kept" : "quantized");
    }
    CHECK(!weights_quant_kept("transformer_blocks.0.attn.to_q.weight", 160, ST_Q8_0),
          "rows of 160 are whole Q8_0 blocks");
    printf("ok kept list: %zu names\n", sizeof cases / sizeof *cases);
}

/* Bad input: errors name the tensor. */
static void test_errors(void) {
    float x[64] = {0};
    const st_tensor odd = {.name = "odd", .dtype = ST_F32, .ndim = 2, .shape = {2, 48}, .data = x,
                           .nbytes = sizeof(float) * 96};
    void *out = (void *)1;
    sd_status st = weights_quantize(&odd, ST_Q4_K, "blocks.1.odd.weight", &out);
    CHECK(st != SD_OK && out == NULL && strstr(sd_last_error(), "blocks.1.odd.weight") &&
              strstr(sd_last_error(), "48"),
          "rows of 48 as Q4_K: %s", sd_last_error());
    printf("ok error: %s\n", sd_last_error());
    const int32_t ids[4] = {0};
    const st_tensor ints = {.name = "ids", .dtype = ST_I32, .ndim = 2, .shape = {1, 32}, .data = ids,
                            .nbytes = 128};
    st = weights_quantize(&ints, ST_Q8_0, "position_ids", &out);
    CHECK(st != SD_OK && strstr(sd_last_error(), "position_ids"), "I32 as Q8_0: %s", sd_last_error());
    printf("ok error: %s\n", sd_last_error());
    const st_tensor vec = {.name = "v", .dtype = ST_F32, .ndim = 1, .shape = {64}, .data = x,
                           .nbytes = sizeof x};
    st = weights_quantize(&vec, ST_Q2_K, "norm.weight", &out);
    CHECK(st != SD_OK && strstr(sd_last_error(), "norm.weight"), "Q2_K: %s", sd_last_error());
    printf("ok error: %s\n", sd_last_error());
}

int main(void) {
    test_q8_0();
    test_q4_0();
    test_q4_k_q5_k();
    test_q6_k();
    test_round_trip();
    test_kept_list();
    test_errors();
    char tmp[] = "/tmp/sd_quant_XXXXXX";
    if (mkdtemp(tmp)) {
        test_layers(tmp);
        char *d = sd_path_join(tmp, "layers");
        if (d) remove_model(d);
        rmdir(tmp);
        free(d);
    }
    return test_summary();
}
