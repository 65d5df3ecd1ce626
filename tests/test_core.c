/* Core: safetensors reading/validation/writing, dtype conversions, config reading, weight sets
 * (single file, sharded index, fp16 variant), the scratch arena. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/arena.h"
#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../core/weights.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

/* Writes raw bytes: an 8-byte length, the header text, then `data_len` zero bytes. */
static void write_raw(const char *path, const char *header, uint64_t claimed_len, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(claimed_len >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++) fputc(0, fp);
    fclose(fp);
}

static void expect_open_error(const char *what, const char *header, int64_t claimed, size_t data,
                              const char *needle) {
    const char *path = tmp("bad.safetensors");
    write_raw(path, header, claimed < 0 ? strlen(header) : (uint64_t)claimed, data);
    st_file f;
    sd_status st = st_open(&f, path);
    CHECK(st != SD_OK, "%s: opened a bad file", what);
    if (st != SD_OK)
        CHECK(strstr(sd_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
              sd_last_error(), needle);
}

static void test_bad_files(void) {
    expect_open_error("truncated header", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      1000, 0, "header length");
    expect_open_error("offsets past the end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      -1, 4, "'a'");
    expect_open_error("shape/offsets mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                      -1, 8, "'a'");
    expect_open_error("overlap",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      -1, 12, "overlap");
    expect_open_error("bad json", "{\"a\":", -1, 0, "JSON");
    expect_open_error("bad dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1,
                      1, "F7");
    expect_open_error("negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}",
                      -1, 0, "shape");
    st_file f;
    CHECK(st_open(&f, tmp("does-not-exist.safetensors")) == SD_ERR_IO, "missing file is an I/O error");
    CHECK(strstr(sd_last_error(), "does-not-exist") != NULL, "missing file named: %s", sd_last_error());
}

static void test_roundtrip(void) {
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    uint16_t h[3] = {st_f32_to_f16(0.5f), st_f32_to_f16(-3.0f), st_f32_to_f16(1e-6f)};
    uint16_t bf[2] = {st_f32_to_bf16(1.0f), st_f32_to_bf16(-0.15625f)};
    st_entry e[3] = {{"x", ST_F32, 2, {2, 3}, a}, {"h", ST_F16, 1, {3}, h}, {"bf", ST_BF16, 1, {2}, bf}};
    const char *meta[2] = {"format", "pt"};
    CHECK_OK(st_write(tmp("rt.safetensors"), e, 3, meta, 1));
    st_file f;
    CHECK_OK(st_open(&f, tmp("rt.safetensors")));
    CHECK(f.n_tensors == 3, "3 tensors, got %d", f.n_tensors);
    float *x = NULL;
    const int64_t shape[2] = {2, 3};
    CHECK_OK(st_read_f32(&f, "x", 2, shape, &x));
    CHECK(x && !memcmp(x, a, sizeof a), "F32 round trip");
    free(x);
    const int64_t wrong[2] = {3, 2};
    CHECK(st_read_f32(&f, "x", 2, wrong, &x) == SD_ERR_TENSOR && strstr(sd_last_error(), "'x'"),
          "wrong shape named: %s", sd_last_error());
    CHECK(st_read_f32(&f, "nope", -1, NULL, &x) == SD_ERR_TENSOR && strstr(sd_last_error(), "'nope'"),
          "missing tensor named: %s", sd_last_error());
    float hv[3], bv[2];
    st_to_f32(st_find(&f, "h"), hv);
    st_to_f32(st_find(&f, "bf"), bv);
    CHECK(hv[0] == 0.5f && hv[1] == -3.0f && fabsf(hv[2] - 1e-6f) < 3e-8f, "F16 values %g %g %g",
          hv[0], hv[1], hv[2]);
    CHECK(bv[0] == 1.0f && bv[1] == -0.15625f, "BF16 values %g %g", bv[0], bv[1]);
    st_close(&f);
}

static void test_f16_conversion(void) {
    /* Every finite half round-trips exactly through float. */
    int bad = 0;
    for (uint32_t i = 0; i < 0x10000; i++) {
        uint16_t hh = (uint16_t)i;
        if ((hh & 0x7c00) == 0x7c00) continue;
        if (st_f32_to_f16(st_f16_to_f32(hh)) != hh) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(st_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "ties to even (down)");
    CHECK(st_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "ties to even (up)");
    CHECK(st_f32_to_f16(70000.0f) == 0x7c00, "overflow to inf");
    CHECK(st_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80, "bf16 ties to even");
}

static void test_fixture_file(void) {
    st_file f;
    CHECK_OK(st_open(&f, fixture("sd15-tiny/pipeline/text_encoder/model.safetensors")));
    const st_tensor *t = st_find(&f, "text_model.embeddings.position_ids");
    CHECK(t && t->dtype == ST_I64, "I64 position_ids present");
    t = st_find(&f, "text_model.embeddings.token_embedding.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 49408 && t->shape[1] == 16, "token embedding shape");
    st_close(&f);
}

static void test_config(void) {
    FILE *fp = fopen(tmp("c.json"), "w");
    fputs("{\"a\": 3, \"b\": 0.5, \"c\": true, \"s\": \"x\", \"n\": null, \"l\": [1, 2, 3],\n"
          " \"inf\": -Infinity, \"str\": \"NaN Infinity\", \"nan\": NaN}", fp);
    fclose(fp);
    sd_cfg c;
    CHECK_OK(cfg_open(&c, tmp("c.json")));
    CHECK(cfg_int(&c, "a", 0) == 3 && cfg_num(&c, "b", 0) == 0.5 && cfg_bool(&c, "c", false),
          "scalars read");
    CHECK(cfg_int(&c, "n", 7) == 7 && cfg_int(&c, "absent", 9) == 9, "null and absent give the default");
    CHECK(isinf(cfg_num(&c, "inf", 0)) && cfg_num(&c, "inf", 0) < 0, "-Infinity parsed");
    CHECK(!strcmp(cfg_str(&c, "str", ""), "NaN Infinity"), "strings untouched");
    CHECK(cfg_num(&c, "nan", 4) == 4, "NaN taken as absent");
    int l[3];
    cfg_int_or_list(&c, "l", l, 3, 0);
    CHECK(l[0] == 1 && l[2] == 3 && cfg_status(&c) == SD_OK, "int list");
    cfg_int_or_list(&c, "a", l, 3, 0);
    CHECK(l[0] == 3 && l[1] == 3 && l[2] == 3, "int broadcast");
    cfg_int(&c, "s", 0);
    CHECK(cfg_status(&c) == SD_ERR_CONFIG && strstr(sd_last_error(), "'s'") &&
              strstr(sd_last_error(), "c.json"),
          "wrong type names key and file: %s", sd_last_error());
    cfg_close(&c);
    fp = fopen(tmp("bad.json"), "w");
    fputs("{\n\"a\": 1,\n\"b\": }\n", fp);
    fclose(fp);
    CHECK(cfg_open(&c, tmp("bad.json")) == SD_ERR_FORMAT && strstr(sd_last_error(), "line 3"),
          "bad JSON located: %s", sd_last_error());
}

static void test_weight_sets(void) {
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    st_entry ea = {"a", ST_F32, 1, {2}, a}, eb = {"b", ST_F32, 1, {3}, b};
    /* sharded */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    mkdir(dir, 0755);
    char *p1 = sd_path_join(dir, "diffusion_pytorch_model-00001-of-00002.safetensors");
    char *p2 = sd_path_join(dir, "diffusion_pytorch_model-00002-of-00002.safetensors");
    CHECK_OK(st_write(p1, &ea, 1, NULL, 0));
    CHECK_OK(st_write(p2, &eb, 1, NULL, 0));
    char *ip = sd_path_join(dir, "diffusion_pytorch_model.safetensors.index.json");
    FILE *fp = fopen(ip, "w");
    fprintf(fp, "{\"metadata\": {}, \"weight_map\": {\"a\": \"diffusion_pytorch_model-00001-of-00002"
                ".safetensors\", \"b\": \"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");
    fclose(fp);
    sd_weights w;
    CHECK_OK(weights_open(&w, dir, NULL, NULL));
    float *x = NULL;
    CHECK_OK(weights_read_f32(&w, "b", -1, NULL, &x));
    CHECK(x && x[2] == 5, "sharded tensor read");
    free(x);
    CHECK(w.n_files == 2, "two shards opened");
    weights_close(&w);
    free(p1), free(p2), free(ip);
    /* fp16 variant only */
    snprintf(dir, sizeof dir, "%s/variant", tmpdir);
    mkdir(dir, 0755);
    uint16_t h[2] = {st_f32_to_f16(1.5f), st_f32_to_f16(-2)};
    st_entry eh = {"h", ST_F16, 1, {2}, h};
    p1 = sd_path_join(dir, "model.fp16.safetensors");
    CHECK_OK(st_write(p1, &eh, 1, NULL, 0));
    CHECK_OK(weights_open(&w, dir, NULL, NULL));
    CHECK_OK(weights_read_f32(&w, "h", -1, NULL, &x));
    CHECK(x && x[0] == 1.5f && x[1] == -2, "fp16 variant read");
    free(x);
    weights_close(&w);
    free(p1);
    /* empty folder */
    snprintf(dir, sizeof dir, "%s/empty", tmpdir);
    mkdir(dir, 0755);
    CHECK(weights_open(&w, dir, NULL, NULL) == SD_ERR_IO && strstr(sd_last_error(), "empty"),
          "empty folder named: %s", sd_last_error());
}

static void test_arena(void) {
    sd_arena a;
    sd_arena_init(&a);
    for (int pass = 0; pass < 3; pass++) {
        float *x = sd_arena_floats(&a, 1000);
        sd_arena_mark m = sd_arena_get_mark(&a);
        float *y = sd_arena_floats(&a, 400000); /* spills past the first block */
        float *z = sd_arena_floats(&a, 3);
        CHECK(((uintptr_t)x & 63) == 0 && ((uintptr_t)y & 63) == 0 && ((uintptr_t)z & 63) == 0,
              "aligned");
        x[999] = 1, y[399999] = 2, z[2] = 3;
        sd_arena_release(&a, m);
        float *w = sd_arena_floats(&a, 10);
        w[9] = 4;
        if (pass > 0) CHECK(a.spill_count == 0, "pass %d allocated (%zu spills)", pass, a.spill_count);
        sd_arena_reset(&a);
    }
    sd_arena_free(&a);

    /* Within one pass: a block emptied by a release is used again before a new one is added
     * (a transformer layer after layer must not spill a fresh block each time). */
    sd_arena_init(&a);
    float *base = sd_arena_floats(&a, 1000);
    base[0] = 1;
    for (int layer = 0; layer < 5; layer++) {
        sd_arena_mark m = sd_arena_get_mark(&a);
        float *big = sd_arena_floats(&a, 600000); /* 2.4 MB: more than the first block holds */
        float *big2 = sd_arena_floats(&a, 600000);
        big[599999] = 1, big2[0] = 2;
        sd_arena_release(&a, m);
    }
    CHECK(a.spill_count == 3, "five layers of two spilling buffers took %zu blocks (want 3)",
          a.spill_count);
    sd_arena_free(&a);

    /* The tests' hook: a spill adds a block of at least SD_ARENA_MIN_SPILL bytes, so small
     * allocations share it; at 1 byte each block is exactly the allocation that needed it. */
    for (int exact = 0; exact < 2; exact++) {
        const size_t saved = sd_arena_set_min_spill(exact ? 1 : SD_ARENA_MIN_SPILL);
        CHECK(saved == SD_ARENA_MIN_SPILL, "min spill was %zu before, not the default", saved);
        sd_arena_init(&a);
        float *p[3] = {sd_arena_floats(&a, 1000), sd_arena_floats(&a, 1), sd_arena_floats(&a, 16)};
        CHECK(p[0] && p[1] && p[2], "allocated");
        CHECK(a.spill_count == (exact ? 3u : 1u), "min spill %s: three allocations took %zu blocks",
              exact ? "1 byte" : "default", a.spill_count);
        sd_arena_free(&a);
        sd_arena_set_min_spill(saved);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-core-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    test_bad_files();
    test_roundtrip();
    test_f16_conversion();
    test_fixture_file();
    test_config();
    test_weight_sets();
    test_arena();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
