/* Resource limits enforced before work (issue 22): hostile inputs that claim enormous sizes are
 * refused with an error naming what was too large, and refusing them costs almost no memory
 * (the peak RSS of this process may grow only a few MB over the whole test): a safetensors header
 * and a GGUF tensor info claiming 10^12 elements, PNG and JPEG headers claiming 100000x100000 or
 * 65000x65000 pixels, a PNG text chunk claiming 1 GB, a 10 MB prompt (every tokenizer and
 * A1111's parser), JSON nested 10^5 levels deep (configs, tokenizer files, safetensors headers).
 * sd-server's bodies: tests/test_server.c. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/image.h"
#include "../core/safetensors.h"
#include "../text_encoder/a1111_prompt.h"
#include "../text_encoder/clip_tokenizer.h"
#include "../text_encoder/t5_tokenizer.h"
#include "gguf_writer.h"
#include "test.h"

static char g_dir[] = "/tmp/sd-limits-XXXXXX";

static long peak_rss_kb(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

static const char *write_file(const char *name, const void *data, size_t size) {
    const char *path = test_path(g_dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, size, f) == size && fclose(f) == 0, "%s: cannot write", path);
    return path;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static uint8_t buf[1 << 16];
    *size = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

/* The refusal carried `status` and its message contains `what`. */
static void check_refused(sd_status st, sd_status want, const char *what, const char *label) {
    const char *msg = sd_last_error();
    CHECK(st == want && strstr(msg, what), "%s: got %s '%s', want %s mentioning '%s'", label,
          sd_status_name(st), msg, sd_status_name(want), what);
}

static void test_safetensors_numel(void) {
    /* 10^12 float32 elements: offsets that agree with the shape but lie past the file's end, and
     * offsets that fit the file but disagree with the shape. */
    const char *const headers[] = {
        "{\"huge\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4000000000000]}}",
        "{\"huge\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,8]}}",
        "{\"huge\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}",
        /* Found by fuzzing: shapes beyond int64 (undefined behaviour when converted). */
        "{\"huge\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,8]}}",
        "{\"huge\":{\"dtype\":\"F32\",\"shape\":[3e119,1],\"data_offsets\":[0,8]}}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        size_t h = strlen(headers[i]);
        uint8_t file[256] = {0};
        for (int b = 0; b < 8; b++) file[b] = (uint8_t)(h >> (8 * b));
        memcpy(file + 8, headers[i], h);
        const char *path = write_file("huge.safetensors", file, 8 + h + 8);
        st_file f;
        sd_status st = st_open(&f, path);
        if (st == SD_OK) st_close(&f);
        check_refused(st, SD_ERR_FORMAT, "huge", "safetensors claiming 10^12 elements");
    }
}

/* The same claim in a GGUF: 10^12 values of F32 and of Q8_0 blocks (rows of 10^6, whole blocks of
 * 32) over 64 bytes of data; refused from the tensor info, naming the tensor. */
static void test_gguf_numel(void) {
    static const uint8_t data[64];
    const uint32_t types[] = {GW_F32, GW_Q8_0};
    for (int i = 0; i < 2; i++) {
        gw_tensor t = {.name = "huge",
                       .type = types[i],
                       .ndim = 2,
                       .ne = {1000000, 1000000},
                       .data = data,
                       .nbytes = sizeof data,
                       .offset = -1};
        const char *path = test_path(g_dir, "huge.gguf");
        CHECK(gw_write(path, &t, 1, 0), "%s: cannot write", path);
        st_file f;
        sd_status st = st_open(&f, path);
        if (st == SD_OK) st_close(&f);
        check_refused(st, SD_ERR_FORMAT, "tensor 'huge'", "GGUF claiming 10^12 elements");
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & -(c & 1));
    }
    return ~c;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A small valid PNG (the fuzz seed) with its IHDR claiming w x h (CRC fixed up). */
static void test_png_bomb(void) {
    size_t n = 0;
    uint8_t *png = read_file("tests/fuzz/corpus/png/rgb_text", &n);
    CHECK(png && n > 33 && !memcmp(png + 12, "IHDR", 4), "PNG seed missing or not a PNG");
    if (!png || n <= 33) return;
    put_be32(png + 16, 100000), put_be32(png + 20, 100000);
    put_be32(png + 29, crc32_of(png + 12, 17));
    sd_image img = {0};
    sd_status st = image_read(write_file("bomb.png", png, n), &img);
    check_refused(st, SD_ERR_UNSUPPORTED, "100000x100000", "PNG claiming 100000x100000");
    CHECK(img.rgb == NULL, "a refused PNG left pixels");
    image_free(&img);
}

/* Found by fuzzing (tests/fuzz/regress/png/): a 180-byte PNG whose iTXt chunk claims 1 GB made
 * libpng allocate 1 GB before reading it; refused now as a chunk longer than the file. */
static void test_png_chunk_bomb(void) {
    sd_image img = {0};
    sd_status st = image_read("tests/fuzz/regress/png/oom-itxt-1gb", &img);
    check_refused(st, SD_ERR_FORMAT, "chunk 'iTXt' at byte 71 claims 1073741844 bytes",
                  "PNG chunk claiming 1 GB");
    image_free(&img);
}

/* A small valid JPEG (the fuzz seed) with its SOF0 claiming 65000x65000 (within JPEG's sides,
 * far over the pixel limit). */
static void test_jpeg_bomb(void) {
    size_t n = 0;
    uint8_t *jpg = read_file("tests/fuzz/corpus/jpeg/rgb.jpg", &n);
    size_t sof = 0;
    for (size_t i = 2; jpg && i + 9 < n && !sof; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) sof = i;
    CHECK(sof, "JPEG seed missing or without SOF0");
    if (!sof) return;
    jpg[sof + 5] = 65000 >> 8, jpg[sof + 6] = 65000 & 255; /* height */
    jpg[sof + 7] = 65000 >> 8, jpg[sof + 8] = 65000 & 255; /* width */
    sd_image img = {0};
    sd_status st = image_read(write_file("bomb.jpg", jpg, n), &img);
    check_refused(st, SD_ERR_UNSUPPORTED, "65000x65000", "JPEG claiming 65000x65000");
    image_free(&img);
}

static void test_long_prompt(void) {
    const size_t big = 10u << 20;
    char *text = malloc(big + 1);
    memset(text, 'a', big);
    for (size_t i = 5; i < big; i += 6) text[i] = ' ';
    text[big] = '\0';
    clip_tokenizer *clip = NULL;
    t5_tokenizer *t5 = NULL;
    CHECK_OK(clip_tokenizer_load(&clip, fixture("clip_tokenizer")));
    CHECK_OK(t5_tokenizer_load(&t5, fixture("sd3t5-tiny/pipeline/tokenizer_3")));
    int32_t *ids = NULL, padded[77];
    int n = 0;
    if (clip) {
        check_refused(clip_tokenize(clip, text, &ids, &n), SD_ERR_ARG, "SD_PROMPT_MAX_BYTES",
                      "CLIP, 10 MB prompt");
        check_refused(clip_tokenize_padded(clip, text, padded, 77), SD_ERR_ARG,
                      "SD_PROMPT_MAX_BYTES", "CLIP padded, 10 MB prompt");
        a1111_chunks c;
        check_refused(a1111_chunk(clip, text, NULL, 0, &c), SD_ERR_ARG, "SD_PROMPT_MAX_BYTES",
                      "A1111 chunks, 10 MB prompt");
        /* The limit itself is accepted. */
        text[SD_PROMPT_MAX_BYTES] = '\0';
        CHECK_OK(clip_tokenize(clip, text, &ids, &n));
        free(ids);
        text[SD_PROMPT_MAX_BYTES] = 'a';
    }
    if (t5)
        check_refused(t5_tokenize(t5, text, &ids, &n), SD_ERR_ARG, "SD_PROMPT_MAX_BYTES",
                      "T5, 10 MB prompt");
    a1111_sched_entry *e = NULL;
    check_refused(a1111_schedule(text, 20, &e, &n), SD_ERR_ARG, "SD_PROMPT_MAX_BYTES",
                  "A1111 schedule, 10 MB prompt");
    a1111_piece *p = NULL;
    check_refused(a1111_parse_attention(text, &p, &n), SD_ERR_ARG, "SD_PROMPT_MAX_BYTES",
                  "A1111 emphasis, 10 MB prompt");
    clip_tokenizer_free(clip);
    t5_tokenizer_free(t5);
    free(text);
}

static void test_deep_json(void) {
    const size_t depth = 100000;
    char *text = malloc(2 * depth + 32);
    memset(text, '[', depth);
    memset(text + depth, ']', depth);
    text[2 * depth] = '\0';
    cJSON *j = NULL;
    check_refused(sd_json_parse(text, "deep.json", &j), SD_ERR_FORMAT, "nested deeper",
                  "JSON nested 10^5 deep");
    /* The scan sd-server's body parser uses: bounded by the length (a body is not NUL-terminated),
     * so the same brackets cut short of the limit are not "too deep". */
    CHECK(sd_json_nested_too_deep(text, 2 * depth), "10^5 brackets: too deep");
    CHECK(!sd_json_nested_too_deep(text, 1000), "1000 brackets: within the limit");
    char *quoted = malloc(depth + 8);
    quoted[0] = '[', quoted[1] = '"';
    memset(quoted + 2, '[', depth);
    strcpy(quoted + 2 + depth, "\"]");
    CHECK(!sd_json_nested_too_deep(quoted, depth + 4), "brackets inside a string do not count");
    free(quoted);
    /* As a config file, an object of arrays. */
    text[0] = '{';
    memcpy(text + 1, "\"a\":", 4);
    memset(text + 5, '[', depth - 5);
    memset(text + depth, ']', depth - 5);
    strcpy(text + 2 * depth - 5, "}");
    sd_cfg c;
    sd_status st = cfg_open(&c, write_file("config.json", text, strlen(text)));
    if (st == SD_OK) cfg_close(&c);
    check_refused(st, SD_ERR_FORMAT, "nested deeper", "config.json nested 10^5 deep");
    /* As a safetensors header. */
    size_t h = strlen(text);
    uint8_t *file = malloc(8 + h);
    for (int b = 0; b < 8; b++) file[b] = (uint8_t)(h >> (8 * b));
    memcpy(file + 8, text, h);
    st_file f;
    st = st_open(&f, write_file("deep.safetensors", file, 8 + h));
    if (st == SD_OK) st_close(&f);
    CHECK(st == SD_ERR_FORMAT, "safetensors header nested 10^5 deep: %s", sd_status_name(st));
    free(file);
    free(text);
}

int main(void) {
    if (!mkdtemp(g_dir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    const long before = peak_rss_kb();
    test_safetensors_numel();
    test_gguf_numel();
    test_png_bomb();
    test_png_chunk_bomb();
    test_jpeg_bomb();
    test_long_prompt();
    test_deep_json();
    /* The 10 MB prompt itself and the tokenizers account for most of this; a refusal that
     * allocated by a claimed size would add gigabytes. */
    const long grew = peak_rss_kb() - before;
    printf("peak RSS grew %ld KB refusing everything\n", grew);
    CHECK(grew < 96 * 1024, "peak RSS grew %ld KB", grew);
    const char *const names[] = {"huge.safetensors", "huge.gguf",   "bomb.png",
                                 "bomb.jpg",         "config.json", "deep.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) remove(test_path(g_dir, names[i]));
    rmdir(g_dir);
    return test_summary();
}
