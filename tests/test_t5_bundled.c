/* The bundled T5 tokenizer (configs/t5-tokenizer: FLUX.1-dev's tokenizer_2, t5-v1_1-xxl's 32100
 * pieces, tokenizer.json stored as tokenizer.json.gz) loaded through t5_tokenizer_load as SD3 and
 * FLUX single files use it, against the ids transformers gives
 * (tests/fixtures/extra/t5_vocab_refs.json, tools/reference/t5_vocab_refs.py): every prompt's full ids
 * and its padded77. Also the .gz reading: a plain tokenizer.json wins over the .gz, a corrupt
 * and a truncated .gz are errors naming the file. Prints the load time of the 32k vocabulary. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../text_encoder/t5_tokenizer.h"
#include "test.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *bundled(void) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/t5-tokenizer", sd_configs_dir() ? sd_configs_dir() : "configs");
    return buf;
}

/* got[0..n) against the JSON int array `want`; the message names the prompt and the first
 * difference. */
static bool same_ids(const int32_t *got, int n, const cJSON *want, const char *what,
                     const char *prompt) {
    const int n_want = cJSON_GetArraySize(want);
    int i = 0;
    const cJSON *w = want ? want->child : NULL;
    for (; i < n && w; i++, w = w->next)
        if (!cJSON_IsNumber(w) || got[i] != (int32_t)w->valuedouble) break;
    const bool ok = i == n && i == n_want;
    CHECK(ok, "%s of \"%s\": first difference at %d: got %d, want %d (lengths %d, %d)", what,
          prompt, i, i < n ? got[i] : -1, w && cJSON_IsNumber(w) ? (int)w->valuedouble : -1, n,
          n_want);
    return ok;
}

static void test_refs(void) {
    t5_tokenizer *tok = NULL;
    const double t0 = now_ms();
    CHECK_OK(t5_tokenizer_load(&tok, bundled()));
    printf("load %s (tokenizer.json.gz, 32100 pieces): %.1f ms\n", bundled(), now_ms() - t0);
    char *text = NULL;
    CHECK_OK(sd_read_file(fixture("extra/t5_vocab_refs.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(root, "source");
    CHECK(cJSON_GetArraySize(cases) >= 64, "t5_vocab_refs.json: %d cases, want the 54 of "
          "t5_tokenizer_cases.json and the 10 extra", cJSON_GetArraySize(cases));
    if (!tok || !cases) {
        cJSON_Delete(root);
        t5_tokenizer_free(tok);
        return;
    }
    printf("reference: %s\n", cJSON_IsString(source) ? source->valuestring : "transformers");
    CHECK(cJSON_IsNumber(vocab) && t5_tokenizer_vocab_size(tok) == (int)vocab->valuedouble,
          "vocabulary size %d, the reference's %d", t5_tokenizer_vocab_size(tok),
          cJSON_IsNumber(vocab) ? (int)vocab->valuedouble : -1);
    CHECK(t5_tokenizer_eos_id(tok) == 1 && t5_tokenizer_pad_id(tok) == 0 &&
          t5_tokenizer_unk_id(tok) == 2 && t5_tokenizer_max_length(tok) == 512,
          "eos 1, pad 0, unk 2, model_max_length 512: got %d %d %d %d", t5_tokenizer_eos_id(tok),
          t5_tokenizer_pad_id(tok), t5_tokenizer_unk_id(tok), t5_tokenizer_max_length(tok));
    int n_ok = 0, n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt");
        if (!cJSON_IsString(prompt)) {
            CHECK(0, "case %d has no prompt", n_cases);
            continue;
        }
        int32_t *ids = NULL, padded[77];
        int n = 0, n_real = -1;
        CHECK_OK(t5_tokenize(tok, prompt->valuestring, &ids, &n));
        bool ok = ids && same_ids(ids, n, cJSON_GetObjectItemCaseSensitive(c, "ids"), "ids",
                                  prompt->valuestring);
        CHECK_OK(t5_tokenize_padded(tok, prompt->valuestring, padded, 77, &n_real));
        ok &= same_ids(padded, 77, cJSON_GetObjectItemCaseSensitive(c, "padded77"), "padded77",
                       prompt->valuestring);
        free(ids);
        n_cases++, n_ok += ok;
    }
    printf("bundled T5 tokenizer: %d of %d prompts as the reference\n", n_ok, n_cases);
    cJSON_Delete(root);
    t5_tokenizer_free(tok);
}

/* A copy of the bundled folder in `dir` whose tokenizer.json.gz is `gz` (n bytes). */
static void write_folder(const char *dir, const unsigned char *gz, size_t n) {
    static const char *const names[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < 2; i++) {
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(sd_read_file(test_path(bundled(), names[i]), &text, &len));
        FILE *f = fopen(test_path(dir, names[i]), "wb");
        CHECK(f && text && fwrite(text, 1, len, f) == len, "write %s", names[i]);
        if (f) fclose(f);
        free(text);
    }
    FILE *f = fopen(test_path(dir, "tokenizer.json.gz"), "wb");
    CHECK(f && fwrite(gz, 1, n, f) == n, "write tokenizer.json.gz");
    if (f) fclose(f);
}

static void expect_error(const char *dir, const char *text, const char *what) {
    t5_tokenizer *tok = NULL;
    const sd_status st = t5_tokenizer_load(&tok, dir);
    CHECK(st == SD_ERR_FORMAT && !tok && strstr(sd_last_error(), "tokenizer.json.gz") &&
          strstr(sd_last_error(), text), "%s: %s (%s), want '%s' naming the file", what,
          sd_status_name(st), sd_last_error(), text);
    t5_tokenizer_free(tok);
}

static void test_gz_errors(void) {
    char *gz = NULL;
    size_t n = 0;
    CHECK_OK(sd_read_file(test_path(bundled(), "tokenizer.json.gz"), &gz, &n));
    if (!gz || n < 1000) {
        free(gz);
        return;
    }
    const char *dir = test_output_dir("t5_bundled");
    /* Truncated: the first half of the stream. */
    write_folder(dir, (unsigned char *)gz, n / 2);
    expect_error(dir, "truncated", "a truncated tokenizer.json.gz");
    /* Corrupt: bytes in the middle of the deflate data changed (the CRC-32 or the stream
     * structure catches it). */
    for (size_t i = n / 2; i < n / 2 + 16; i++) gz[i] ^= 0x5a;
    write_folder(dir, (unsigned char *)gz, n);
    expect_error(dir, "corrupt", "a corrupt tokenizer.json.gz");
    /* Not gzip at all. */
    write_folder(dir, (const unsigned char *)"{\"model\": {}}", 13);
    expect_error(dir, "corrupt", "a plain JSON file named .gz");
    /* A plain tokenizer.json beside it is read instead (the .gz is still the bad one). */
    FILE *f = fopen(test_path(dir, "tokenizer.json"), "wb");
    CHECK(f != NULL, "write tokenizer.json");
    if (f) {
        fputs("{\"model\": {\"type\": \"BPE\"}}", f);
        fclose(f);
    }
    t5_tokenizer *tok = NULL;
    const sd_status st = t5_tokenizer_load(&tok, dir);
    CHECK(st == SD_ERR_UNSUPPORTED && strstr(sd_last_error(), "tokenizer.json:"),
          "tokenizer.json beside tokenizer.json.gz is read first: %s", sd_last_error());
    t5_tokenizer_free(tok);
    unlink(test_path(dir, "tokenizer.json"));
    free(gz);
}

/* Every bundled folder whose model has a T5 reaches the same tokenizer through its link. */
static void test_links(void) {
    static const char *const dirs[] = {"sd3-medium/tokenizer_3", "sd35-medium/tokenizer_3",
                                       "sd35-large/tokenizer_3", "flux1-dev/tokenizer_2",
                                       "flux1-schnell/tokenizer_2"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", sd_configs_dir() ? sd_configs_dir() : "configs",
                 dirs[i]);
        t5_tokenizer *tok = NULL;
        CHECK_OK(t5_tokenizer_load(&tok, path));
        CHECK(tok && t5_tokenizer_vocab_size(tok) == 32100, "%s: %d pieces, want 32100", dirs[i],
              tok ? t5_tokenizer_vocab_size(tok) : -1);
        t5_tokenizer_free(tok);
    }
}

int main(void) {
    test_refs();
    test_links();
    test_gz_errors();
    return test_summary();
}
