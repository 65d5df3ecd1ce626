/* The GGUF reader (core/gguf.h) and its dequantization (core/gguf_quant.h).
 * Every block type is decoded from a block whose bytes the test chooses, against values worked
 * out by hand in the comments (simple fp16 scales: 0x3C00 = 1, 0x3800 = 0.5, 0x4000 = 2,
 * 0x3400 = 0.25, 0xBC00 = -1). Files written by tests/gguf_writer.c check the metadata, the
 * alignment, the shapes (ne reversed into torch's order) and the st_file view; spoiled files
 * (truncated, an offset past the end, an unknown or unsupported type, a row that is not whole
 * blocks, duplicate names, big-endian, a misaligned offset) give errors naming file and tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/gguf.h"
#include "../core/gguf_quant.h"
#include "../nn/layers.h"
#include "../core/gguf_quantize.h"
#include "gguf_writer.h"
#include "test.h"

static char tmpdir[600];
static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static void set16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)v, b[1] = (uint8_t)(v >> 8); }

/* Decodes one block of `type` and checks y[idx[i]] == want[i] exactly. */
static void check_block(const char *what, uint32_t type, const uint8_t *block, int nvals,
                        const int *idx, const float *want, int n) {
    float y[256];
    int elems, bytes;
    CHECK(gguf_type_block(type, &elems, &bytes) && elems == nvals, "%s: block size", what);
    gguf_dequantize(type, block, y, nvals);
    for (int i = 0; i < n; i++)
        CHECK(y[idx[i]] == want[i], "%s: y[%d] = %.9g, want %.9g", what, idx[i], y[idx[i]],
              want[i]);
}

static void test_blocks(void) {
    uint8_t b[256];
    { /* Q8_0: d = 0.5, qs[j] = j - 16 */
        memset(b, 0, sizeof b), set16(b, 0x3800);
        for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)(j - 16);
        check_block("Q8_0", GGUF_TYPE_Q8_0, b, 32, (int[]){0, 16, 31}, (float[]){-8, 0, 7.5f}, 3);
    }
    { /* Q4_0: d = 2; qs[0] = 0x00: y0 = y16 = (0-8)*2; qs[1] = 0xF3: y1 = (3-8)*2,
       * y17 = (15-8)*2; 0x88 elsewhere: 0 */
        memset(b, 0x88, sizeof b), set16(b, 0x4000);
        b[2] = 0x00, b[3] = 0xF3;
        check_block("Q4_0", GGUF_TYPE_Q4_0, b, 32, (int[]){0, 16, 1, 17, 5},
                    (float[]){-16, -16, -10, 14, 0}, 5);
    }
    { /* Q4_1: d = 0.5, m = -1; qs[0] = 0x4A: y0 = 10*.5-1, y16 = 4*.5-1; zeros give m */
        memset(b, 0, sizeof b), set16(b, 0x3800), set16(b + 2, 0xBC00);
        b[4] = 0x4A;
        check_block("Q4_1", GGUF_TYPE_Q4_1, b, 32, (int[]){0, 16, 3}, (float[]){4, 1, -1}, 3);
    }
    { /* Q5_0: d = 1; qh bits 0 and 16 set: value 0 and value 16 get their fifth bit;
       * qs[0] = 0x21: y0 = (1|16)-16 = 1, y16 = (2|16)-16 = 2; qs[1] = 0: y1 = y17 = -16 */
        memset(b, 0, sizeof b), set16(b, 0x3C00);
        b[2] = 0x01, b[4] = 0x01, b[6] = 0x21;
        check_block("Q5_0", GGUF_TYPE_Q5_0, b, 32, (int[]){0, 16, 1, 17},
                    (float[]){1, 2, -16, -16}, 4);
    }
    { /* Q5_1: d = 0.5, m = 0.25; qh bit 1 set; qs[1] = 0x03: y1 = 19*.5+.25, y17 = .25 */
        memset(b, 0, sizeof b), set16(b, 0x3800), set16(b + 2, 0x3400);
        b[4] = 0x02, b[8 + 1] = 0x03;
        check_block("Q5_1", GGUF_TYPE_Q5_1, b, 32, (int[]){1, 17, 0},
                    (float[]){9.75f, 0.25f, 0.25f}, 3);
    }
    { /* Q2_K: d = 1, dmin = 0.5 (bytes 80, 82). scales[0] = 0x21 (scale 1, min 2), [1] = 0x13
       * (3, 1), [2] = 0x05 (5, 0), [8] = 0x0F (15, 0). qs[0] = 0xE4 (2-bit fields 0,1,2,3),
       * qs[16] = 3, qs[32] = 2.  y0 = 1*0 - .5*2 = -1; y16 = 3*3 - .5*1 = 8.5;
       * y32 (shift 2 of qs[0], scales[2]) = 5*1 = 5; y128 (qs[32], scales[8]) = 15*2 = 30;
       * y48 (shift 2 of qs[16] = 0, scales[3] = 0) = 0 */
        memset(b, 0, sizeof b), set16(b + 80, 0x3C00), set16(b + 82, 0x3800);
        b[0] = 0x21, b[1] = 0x13, b[2] = 0x05, b[8] = 0x0F;
        b[16] = 0xE4, b[16 + 16] = 0x03, b[16 + 32] = 0x02;
        check_block("Q2_K", GGUF_TYPE_Q2_K, b, 256, (int[]){0, 16, 32, 128, 48},
                    (float[]){-1, 8.5f, 5, 30, 0}, 5);
    }
    { /* Q3_K: hmask 0..31, qs 32..95, scales 96..107, d = 0.5 at 108. Scale 0 = 1 (low 4 bits)
       * | 2 << 4 = 33 -> 1; scale 1 = 4 | 2 << 4 = 36 -> 4; scale 8 = 7 (high nibble of byte 0)
       * | 2 << 4 (bits 4-5 of byte 8) = 39 -> 7; scale 2 = 0 -> -32.
       * qs[0] = 3, hmask[0] = 0x11 (bit 0: first 128 values, bit 4: second 128).
       * y0 = .5*1*3 = 1.5; y16 (qs[16] = 0, no hmask bit: 0-4) = .5*4*-4 = -8;
       * y1 = .5*1*-4 = -2; y32 (qs[0] >> 2 = 0, hmask bit 1 clear: -4, scale 2) = .5*-32*-4 = 64;
       * y128 (qs[32] = 1, hmask[0] bit 4 set, scale 8) = .5*7*1 = 3.5 */
        memset(b, 0, sizeof b), set16(b + 108, 0x3800);
        b[96 + 0] = 0x71, b[96 + 1] = 0x04, b[96 + 8] = 0x22, b[96 + 9] = 0x02;
        b[32] = 0x03, b[0] = 0x11, b[32 + 32] = 0x01;
        check_block("Q3_K", GGUF_TYPE_Q3_K, b, 256, (int[]){0, 16, 1, 32, 128},
                    (float[]){1.5f, -8, -2, 64, 3.5f}, 5);
    }
    /* Q4_K and Q5_K share the scales: d = 1, dmin = 0.5; scales[0] = 0x43 (scale 0 = 3; its
     * top bits give scale 4 +16), [4] = 0x02 (min 0 = 2), [1] = 0x05 (scale 1 = 5), [5] = 0
     * (min 1 = 0), [8] = 0x21 (scale 4 = 1 | 16 = 17, min 4 = 2). */
    memset(b, 0, sizeof b), set16(b, 0x3C00), set16(b + 2, 0x3800);
    b[4 + 0] = 0x43, b[4 + 4] = 0x02, b[4 + 1] = 0x05, b[4 + 8] = 0x21;
    { /* Q4_K: qs at 16. qs[0] = 0x7A: y0 = 3*10 - .5*2 = 29, y32 = 5*7 - 0 = 35;
       * qs[64] = 0x0F (sub-block 4, low nibbles): y128 = 17*15 - .5*2 = 254; y1 = -1 */
        uint8_t k[144];
        memcpy(k, b, sizeof k);
        k[16] = 0x7A, k[16 + 64] = 0x0F;
        check_block("Q4_K", GGUF_TYPE_Q4_K, k, 256, (int[]){0, 32, 128, 1},
                    (float[]){29, 35, 254, -1}, 4);
    }
    { /* Q5_K: qh at 16, qs at 48. qh[0] = 0x07: bits 0, 1 give y0 and y32 +16, bit 2 gives
       * y64 +16. qs[0] = 0x7A: y0 = 3*26 - 1 = 77, y32 = 5*23 = 115; y64 (scale 2 = 0, min 2 = 0)
       * = 0 */
        uint8_t k[176];
        memcpy(k, b, sizeof k);
        k[16] = 0x07, k[48] = 0x7A;
        check_block("Q5_K", GGUF_TYPE_Q5_K, k, 256, (int[]){0, 32, 64, 1},
                    (float[]){77, 115, 0, -1}, 4);
    }
    { /* Q6_K: ql 0..127, qh 128..191, scales 192..207, d = 0.5 at 208. scales 0, 2, 4, 6 =
       * 2, -3, 1, 4. ql[0] = 0x21, ql[32] = 0x05, qh[0] = 0xE4 (2-bit fields 0, 1, 2, 3).
       * y0 = .5*2*((1|0<<4)-32) = -31; y32 = .5*-3*((5|1<<4)-32) = 16.5;
       * y64 = .5*1*((2|2<<4)-32) = 1; y96 = .5*4*((0|3<<4)-32) = 32 */
        memset(b, 0, sizeof b), set16(b + 208, 0x3800);
        b[192] = 2, b[194] = (uint8_t)-3, b[196] = 1, b[198] = 4;
        b[0] = 0x21, b[32] = 0x05, b[128] = 0xE4;
        check_block("Q6_K", GGUF_TYPE_Q6_K, b, 256, (int[]){0, 32, 64, 96},
                    (float[]){-31, 16.5f, 1, 32}, 4);
    }
    { /* F16 0xC500 = -5, BF16 0x3FC0 = 1.5, F32 */
        float y = 0;
        set16(b, 0xC500);
        gguf_dequantize(GGUF_TYPE_F16, b, &y, 1);
        CHECK(y == -5.0f, "F16: %g", y);
        set16(b, 0x3FC0);
        gguf_dequantize(GGUF_TYPE_BF16, b, &y, 1);
        CHECK(y == 1.5f, "BF16: %g", y);
        const float v = -0.375f;
        gguf_dequantize(GGUF_TYPE_F32, &v, &y, 1);
        CHECK(y == v, "F32: %g", y);
    }
    int e, s;
    CHECK(!gguf_type_block(15, &e, &s) && !strcmp(gguf_type_name(15), "Q8_K"), "Q8_K not read");
    CHECK(gguf_type_name(999) == NULL, "an id ggml does not define has no name");
}

/* The writer's quantizers decode (by the reader) to what its own decoder says, and close to x. */
static void test_quantizers(void) {
    float x[512], a[512], r[512];
    uint8_t q[2 * 144];
    fill_random(x, 512, 3);
    gguf_quantize_row(GW_Q4_K, x, q, 512);
    gw_decode_q4_k(q, a, 512);
    gguf_dequantize(GGUF_TYPE_Q4_K, q, r, 512);
    CHECK(!memcmp(a, r, sizeof a), "Q4_K: reader == the writer's own decoder");
    double err = 0;
    for (int i = 0; i < 512; i++) err = err > fabs(r[i] - x[i]) ? err : fabs(r[i] - x[i]);
    CHECK(err < 0.08, "Q4_K max error %g (4 bits over [-1, 1))", err);
    gguf_quantize_row(GW_Q8_0, x, q, 256);
    gw_decode_q8_0(q, a, 256);
    gguf_dequantize(GGUF_TYPE_Q8_0, q, r, 256);
    CHECK(!memcmp(a, r, 256 * sizeof *a), "Q8_0: reader == the writer's own decoder");
    err = 0;
    for (int i = 0; i < 256; i++) err = err > fabs(r[i] - x[i]) ? err : fabs(r[i] - x[i]);
    CHECK(err < 0.005, "Q8_0 max error %g", err);
}

/* Three tensors: "w" Q8_0 [3][64] (ne 64, 3), "b" F32 [5], "h" F16 [2][2][2]. */
static float wx[192], bx[5] = {1, -2, 3.5f, 0, 0.25f};
static uint8_t wq[6 * 34];
static uint16_t hx[8] = {0x3C00, 0x4000, 0x3800, 0xBC00, 0, 0x3400, 0x4200, 0xC000};

static int sample(gw_tensor t[3]) {
    fill_random(wx, 192, 9);
    gguf_quantize_row(GW_Q8_0, wx, wq, 192);
    t[0] = (gw_tensor){"w", GW_Q8_0, 2, {64, 3}, wq, sizeof wq, -1, 0, {0}};
    t[1] = (gw_tensor){"b", GW_F32, 1, {5}, bx, sizeof bx, -1, 0, {0}};
    t[2] = (gw_tensor){"h", GW_F16, 3, {2, 2, 2}, hx, sizeof hx, -1, 0, {0}};
    return 3;
}

static void test_file(void) {
    gw_tensor t[3];
    const int n = sample(t);
    CHECK(gw_write(tmp("ok.gguf"), t, n, 64), "write");
    gguf_file g;
    CHECK_OK(gguf_open(&g, tmp("ok.gguf")));
    if (!g.map) return;
    CHECK(g.version == 3 && g.n_tensors == 3 && g.alignment == 64, "header: v%u, %d tensors, "
          "alignment %zu", g.version, g.n_tensors, g.alignment);
    int64_t v = 0;
    char s[16];
    const gguf_kv *kv = gguf_find_kv(&g, "test.u32");
    CHECK(kv && gguf_kv_int(kv, &v) && v == 123456, "test.u32 = %lld", (long long)v);
    kv = gguf_find_kv(&g, "test.i64");
    CHECK(kv && gguf_kv_int(kv, &v) && v == -5, "test.i64 = %lld", (long long)v);
    kv = gguf_find_kv(&g, "test.flag");
    CHECK(kv && gguf_kv_int(kv, &v) && v == 1, "test.flag");
    kv = gguf_find_kv(&g, "general.architecture");
    CHECK(kv && gguf_kv_string(kv, s, sizeof s) && !strcmp(s, "test"), "architecture");
    kv = gguf_find_kv(&g, "test.names");
    CHECK(kv && kv->type == GGUF_VAL_ARRAY && kv->elem_type == GGUF_VAL_STRING && kv->n == 2,
          "string array");
    kv = gguf_find_kv(&g, "test.f32");
    CHECK(kv && kv->type == GGUF_VAL_FLOAT32 && !gguf_kv_int(kv, &v), "a float is no integer");
    for (int i = 0; i < g.n_tensors; i++)
        CHECK(((const uint8_t *)g.tensors[i].data - (const uint8_t *)g.map) % 64 == 0,
              "tensor %s at a multiple of general.alignment", g.tensors[i].name);
    CHECK(g.tensors[0].nbytes == 6 * 34 && !memcmp(g.tensors[0].data, wq, sizeof wq), "w's blocks");
    gguf_close(&g);

    st_file f;
    CHECK_OK(st_open(&f, tmp("ok.gguf")));
    const st_tensor *w = st_find(&f, "w"), *b = st_find(&f, "b"), *h = st_find(&f, "h");
    /* Every tensor stays as stored, in the file's mapping; st_to_f32 dequantizes. */
    CHECK(w && w->dtype == ST_Q8_0 && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 64 &&
          w->nbytes == sizeof wq && !memcmp(w->data, wq, sizeof wq), "w as [3][64] Q8_0 blocks");
    CHECK(h && h->dtype == ST_F16 && h->ndim == 3 && h->shape[0] == 2 &&
          !memcmp(h->data, hx, sizeof hx), "h as [2][2][2] F16");
    CHECK(b && b->dtype == ST_F32 && !memcmp(b->data, bx, sizeof bx), "b as stored");
    CHECK(st_dtype_bytes(ST_Q8_0, 64) == 68 && st_dtype_block(ST_Q4_K) == 256 &&
          st_dtype_bytes(ST_Q4_K, 512) == 288 && !strcmp(st_dtype_name(ST_Q5_K), "Q5_K") &&
          st_is_float(ST_Q8_0) && !st_is_float(ST_I8), "block dtypes' sizes and names");
    float hv[8] = {1, 2, 0.5f, -1, 0, 0.25f, 3, -2}, hy[8], wy[192], wz[192];
    if (h) st_to_f32(h, hy);
    CHECK(h && !memcmp(hy, hv, sizeof hv), "h widened");
    gw_decode_q8_0(wq, wy, 192);
    if (w) st_to_f32(w, wz);
    CHECK(w && !memcmp(wz, wy, sizeof wy), "w dequantized");
    if (w) { /* low-memory mode gives pages back; the file mapping reads them back unchanged */
        st_release_pages(f.map, f.map_size);
        st_to_f32(w, wz);
        CHECK(!memcmp(w->data, wq, sizeof wq) && !memcmp(wz, wy, sizeof wy),
              "w after st_release_pages");
    }
    st_close(&f);
}

/* A spoiled file must fail with `want` and a message holding the path and `needle`. */
static void expect_error(const char *what, const char *path, sd_status want, const char *needle) {
    gguf_file g;
    const sd_status st = gguf_open(&g, path);
    const char *msg = sd_last_error();
    CHECK(st == want && strstr(msg, path) && strstr(msg, needle), "%s: %s: %s", what,
          sd_status_name(st), msg);
    if (st == SD_OK) gguf_close(&g);
    else printf("ok %s: %s\n", what, msg);
}

static void patch(const char *path, long at, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, at, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

/* The offset of the first `s` in the file (0 when absent: the check then fails). */
static long find(const char *path, const char *s) {
    static char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + strlen(s) <= n; i++)
        if (!memcmp(buf + i, s, strlen(s))) return (long)i;
    return 0;
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fclose(f);
    return n;
}

static void test_errors(void) {
    gw_tensor t[3];
    const int n = sample(t);
    gw_write(tmp("trunc.gguf"), t, n, 0);
    CHECK(truncate(tmp("trunc.gguf"), file_size(tmp("trunc.gguf")) - 40) == 0, "truncate");
    expect_error("truncated data", tmp("trunc.gguf"), SD_ERR_FORMAT, "'h'");
    gw_write(tmp("trunc2.gguf"), t, n, 0);
    CHECK(truncate(tmp("trunc2.gguf"), 200) == 0, "truncate");
    expect_error("truncated header", tmp("trunc2.gguf"), SD_ERR_FORMAT, "truncated");

    gw_tensor u[3];
    memcpy(u, t, sizeof u);
    u[1].offset = 1 << 20;
    gw_write(tmp("far.gguf"), u, n, 0);
    expect_error("offset past the end", tmp("far.gguf"), SD_ERR_FORMAT, "'b'");
    memcpy(u, t, sizeof u);
    u[1].offset = 8;
    gw_write(tmp("misaligned.gguf"), u, n, 0);
    expect_error("misaligned offset", tmp("misaligned.gguf"), SD_ERR_FORMAT, "alignment");
    memcpy(u, t, sizeof u);
    u[2].type = 99;
    gw_write(tmp("unknown.gguf"), u, n, 0);
    expect_error("unknown type", tmp("unknown.gguf"), SD_ERR_UNSUPPORTED,
                 "'h': unknown type id 99");
    u[2].type = 16;
    gw_write(tmp("iq.gguf"), u, n, 0);
    expect_error("unsupported type", tmp("iq.gguf"), SD_ERR_UNSUPPORTED, "IQ2_XXS");
    memcpy(u, t, sizeof u);
    u[0].ne[0] = 48, u[0].ne[1] = 4; /* 192 values, but rows of 48: not whole Q8_0 blocks */
    gw_write(tmp("rows.gguf"), u, n, 0);
    expect_error("row not whole blocks", tmp("rows.gguf"), SD_ERR_FORMAT,
                 "'w': row length ne[0] = 48");
    memcpy(u, t, sizeof u);
    u[2].name = "w";
    gw_write(tmp("dup.gguf"), u, n, 0);
    expect_error("duplicate names", tmp("dup.gguf"), SD_ERR_FORMAT, "'w' appears twice");
    gw_write(tmp("be.gguf"), t, n, 0);
    patch(tmp("be.gguf"), 4, (const uint8_t[]){0, 0, 0, 3}, 4);
    expect_error("big-endian", tmp("be.gguf"), SD_ERR_UNSUPPORTED, "big-endian");
    gw_write(tmp("v9.gguf"), t, n, 0);
    patch(tmp("v9.gguf"), 4, (const uint8_t[]){9, 0, 0, 0}, 4);
    expect_error("version", tmp("v9.gguf"), SD_ERR_UNSUPPORTED, "version 9");
    gw_write(tmp("count.gguf"), t, n, 0);
    patch(tmp("count.gguf"), 8, (const uint8_t[]){0, 0, 0, 0, 0, 0, 0, 1}, 8);
    expect_error("huge tensor count", tmp("count.gguf"), SD_ERR_FORMAT, "do not fit");
    gw_write(tmp("dupkey.gguf"), t, n, 0);
    patch(tmp("dupkey.gguf"), find(tmp("dupkey.gguf"), "test.i64"), "test.u32", 8);
    expect_error("duplicate metadata keys", tmp("dupkey.gguf"), SD_ERR_FORMAT,
                 "'test.u32' appears twice");
    /* st_open hands a GGUF's errors through */
    st_file f;
    CHECK(st_open(&f, tmp("dup.gguf")) == SD_ERR_FORMAT && strstr(sd_last_error(), "appears twice"),
          "st_open of a bad GGUF: %s", sd_last_error());
}

/* The layers over a GGUF set (a component folder whose weights file is a GGUF: "lin.weight"
 * Q8_0 [3][64], "lin.bias" F32 [3]): a Linear layer keeps the Q8_0 blocks where the mapping has
 * them (low-memory too, which gives their pages back), a 1x1 convolution of the same weight falls
 * back to a float32 copy, and the Linear computes what the float32 path gives with the
 * dequantized weight. */
static void test_layers(void) {
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s", tmp("component"));
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    const float bias[3] = {0.5f, -1, 0.25f};
    const gw_tensor t[2] = {{"lin.weight", GW_Q8_0, 2, {64, 3}, wq, sizeof wq, -1, 0, {0}},
                            {"lin.bias", GW_F32, 1, {3}, bias, sizeof bias, -1, 0, {0}}};
    CHECK(gw_write(path, t, 2, 0), "write %s", path);
    float x[2 * 64], wy[192], want[6], got[6];
    fill_random(x, 128, 5);
    gw_decode_q8_0(wq, wy, 192);
    gemm_nt(2, 3, 64, x, 64, wy, 64, want, 3, bias, 0);
    for (int low = 0; low < 2; low++) {
        const weights_policy policy = {.low_memory = low};
        sd_weights w;
        CHECK_OK(weights_open(&w, dir, NULL, &policy));
        w.keep_stored = true;
        const st_tensor *wt = weights_find(&w, "lin.weight");
        nn_linear l;
        CHECK_OK(nn_linear_load(&l, &w, 64, 3, true, "lin"));
        CHECK(wt && l.src.n_parts == 1 && l.src.type == KERN_Q8_0 && l.src.part[0] == wt->data &&
              !l.own[0] && l.release == (low == 1), "Linear 'lin'%s: its Q8_0 blocks as stored",
              low ? " (low memory)" : "");
        CHECK_OK(nn_linear_pack(&l)); /* stays stored */
        CHECK(l.src.n_parts == 1 && !l.packed, "packing leaves the blocks stored");
        for (int rep = 0; rep < 2; rep++) { /* again after the pages went back */
            nn_linear_forward(&l, x, got, 2);
            CHECK(!memcmp(got, want, sizeof want), "Linear 'lin' from blocks == dequantized%s%s",
                  low ? " (low memory)" : "", rep ? ", second call" : "");
        }
        nn_linear_free(&l);
        nn_conv2d c;
        CHECK_OK(nn_conv2d_load(&c, &w, 64, 3, 1, 1, 0, "lin"));
        CHECK(!c.src && c.w, "1x1 conv 'lin': a float32 copy (convolutions take no blocks)");
        nn_conv2d_free(&c);
        weights_close(&w);
    }
}

/* The fuzz corpus's GGUF files (tests/fuzz/corpus/gguf/, written by tests/fuzz/make_seeds.py, a
 * writer independent of tests/gguf_writer.c): the good ones open with what was written, every
 * bad_* one of issue 20's cases fails with an error naming the file and what is wrong. */
static void test_corpus(void) {
    static const char dir[] = "tests/fuzz/corpus/gguf/";
    static const struct {
        const char *file, *needle;
    } bad[] = {
        {"bad_unknown_type", "tensor 'w': unknown type id 99"},
        {"bad_iq_type", "tensor 'w': unsupported type id 16 (IQ2_XXS)"},
        {"bad_row_blocks", "tensor 'w': row length ne[0] = 48 is not a multiple of the Q8_0"},
        {"bad_offset_past_end", "tensor 'q4_k': its 144 bytes at data offset 1048576 run past"},
        {"bad_misaligned", "tensor 'q4_k': offset 40 is not a multiple of the alignment 32"},
        {"bad_overlap", "tensors 'q4_k' and 'q8_0' overlap"},
        {"bad_duplicate_names", "tensor 'w' appears twice"},
        {"bad_duplicate_keys", "metadata key 'k' appears twice"},
        {"bad_truncated", "tensor 'q4_k'"},
        {"bad_big_endian", "big-endian"},
        {"bad_huge_shape", "tensor 'w'"}, /* 2^60 values claimed: refused before any read */
    };
    char path[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "%s%s", dir, bad[i].file);
        expect_error(bad[i].file, path,
                     strstr(bad[i].file, "type") || strstr(bad[i].file, "endian")
                         ? SD_ERR_UNSUPPORTED
                         : SD_ERR_FORMAT,
                     bad[i].needle);
    }
    static const char *const types[][2] = {
        {"q4_0", "Q4_0"}, {"q4_1", "Q4_1"}, {"q5_0", "Q5_0"}, {"q5_1", "Q5_1"}, {"q8_0", "Q8_0"},
        {"q2_k", "Q2_K"}, {"q3_k", "Q3_K"}, {"q4_k", "Q4_K"}, {"q5_k", "Q5_K"}, {"q6_k", "Q6_K"}};
    for (int i = 0; i < 10; i++) {
        snprintf(path, sizeof path, "%s%s", dir, types[i][0]);
        gguf_file g;
        CHECK(gguf_open(&g, path) == SD_OK, "%s: %s", path, sd_last_error());
        if (g.n_tensors != 1) continue;
        const gguf_tensor *t = &g.tensors[0];
        CHECK(!strcmp(gguf_type_name(t->type), types[i][1]) && t->ndim == 2 && t->ne[1] == 2,
              "%s: a %s tensor of 2 rows", path, types[i][1]);
        gguf_close(&g);
    }
    snprintf(path, sizeof path, "%sall_types", dir);
    gguf_file g;
    CHECK(gguf_open(&g, path) == SD_OK, "%s: %s", path, sd_last_error());
    if (g.n_tensors == 0) return;
    CHECK(g.n_tensors == 13 && g.n_kv == 15, "%s: 13 tensors, 15 entries", path);
    int64_t v = 0;
    char s[16] = "";
    CHECK(gguf_kv_int(gguf_find_kv(&g, "t.i64"), &v) && v == -5, "t.i64 = %lld", (long long)v);
    CHECK(gguf_kv_int(gguf_find_kv(&g, "t.u64"), &v) && v == (int64_t)1 << 40, "t.u64");
    CHECK(gguf_kv_int(gguf_find_kv(&g, "t.i8"), &v) && v == -7, "t.i8");
    CHECK(gguf_kv_string(gguf_find_kv(&g, "general.architecture"), s, sizeof s) &&
              !strcmp(s, "flux"),
          "general.architecture '%s'", s);
    const gguf_kv *arr = gguf_find_kv(&g, "t.arr_str");
    CHECK(arr && arr->type == GGUF_VAL_ARRAY && arr->elem_type == GGUF_VAL_STRING && arr->n == 2,
          "t.arr_str: an array of 2 strings");
    gguf_close(&g);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("gguf"));
    test_blocks();
    test_quantizers();
    test_file();
    test_layers();
    test_errors();
    test_corpus();
    return test_summary();
}
