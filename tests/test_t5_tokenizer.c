/* The T5 (SentencePiece unigram) tokenizer against transformers' ids for the 54 prompts of
 * t5_tokenizer_cases.json (full, and padded/truncated to 64) and the flux-tiny runs' recorded
 * tokenizer_2 ids; grapheme clusters and NFKC facts of the precompiled normalizer; error
 * handling. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../text_encoder/grapheme.h"
#include "../text_encoder/t5_tokenizer.h"
#include "../text_encoder/tok_normalizer.h"
#include "../text_encoder/unicode.h"
#include "test.h"

#define TOK_DIR "flux-tiny/pipeline/tokenizer_2"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Compares got[0..n_got) with the JSON int array `want`; prints the prompt and the first
 * difference on failure. */
static void check_ids(const char *what, const char *prompt, const int32_t *got, int n_got,
                      const cJSON *want) {
    int n_want = cJSON_GetArraySize(want), i = 0;
    const cJSON *w = want ? want->child : NULL;
    for (; i < n_got && w; i++, w = w->next)
        if (got[i] != (int32_t)w->valuedouble) break;
    if (i == n_got && i == n_want) {
        CHECK(1, "%s", what);
        return;
    }
    CHECK(0, "%s: prompt \"%s\": first difference at %d: got %d, want %d (lengths %d, %d)", what,
          prompt, i, i < n_got ? got[i] : -1, i < n_want ? (int)w->valuedouble : -1, n_got, n_want);
}

static cJSON *read_json(const char *rel) {
    char *text = NULL;
    CHECK_OK(sd_read_file(fixture(rel), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(root != NULL, "%s parses", rel);
    return root;
}

static void test_cases(void) {
    t5_tokenizer *tok = NULL;
    double t0 = now_ms();
    CHECK_OK(t5_tokenizer_load(&tok, fixture(TOK_DIR)));
    printf("load %s: %.1f ms\n", TOK_DIR, now_ms() - t0);
    cJSON *root = read_json("t5_tokenizer_cases.json");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    CHECK(cJSON_GetArraySize(cases) == 54, "t5_tokenizer_cases.json has %d cases, expected 54",
          cJSON_GetArraySize(cases));
    if (!tok || !cases) goto done;

    CHECK(t5_tokenizer_max_length(tok) == 512, "model_max_length %d", t5_tokenizer_max_length(tok));
    int n_full = 0, n_ok = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
        const cJSON *want_ids = cJSON_GetObjectItemCaseSensitive(c, "ids");
        const cJSON *want_pad = cJSON_GetObjectItemCaseSensitive(c, "padded64");
        int32_t *ids = NULL, padded[64];
        int n = 0, n_real = -1, before = test_failed;
        CHECK_OK(t5_tokenize(tok, prompt, &ids, &n));
        check_ids("ids", prompt, ids, n, want_ids);
        CHECK_OK(t5_tokenize_padded(tok, prompt, padded, 64, &n_real));
        check_ids("padded64", prompt, padded, 64, want_pad);
        int want_real = cJSON_GetArraySize(want_ids) < 64 ? cJSON_GetArraySize(want_ids) : 64;
        CHECK(n_real == want_real, "\"%s\": %d real tokens, want %d", prompt, n_real, want_real);
        free(ids);
        n_full++, n_ok += test_failed == before;
        if (strcmp(prompt, "a photo of a cat") == 0) { /* the special ids, read off the fixture */
            const cJSON *last = cJSON_GetArrayItem(want_ids, cJSON_GetArraySize(want_ids) - 1);
            CHECK(t5_tokenizer_eos_id(tok) == last->valuedouble, "eos id %d",
                  t5_tokenizer_eos_id(tok));
            CHECK(t5_tokenizer_pad_id(tok) == cJSON_GetArrayItem(want_pad, 63)->valuedouble,
                  "pad id %d", t5_tokenizer_pad_id(tok));
            const char *cat =
                t5_tokenizer_token(tok, (int)cJSON_GetArrayItem(want_ids, 9)->valuedouble);
            CHECK(cat && strcmp(cat, "cat") == 0, "token of 'cat' is %s", cat ? cat : "NULL");
            const char *eos = t5_tokenizer_token(tok, t5_tokenizer_eos_id(tok));
            CHECK(eos && strcmp(eos, "</s>") == 0, "eos token %s", eos ? eos : "NULL");
        }
        if (strcmp(prompt, "combining e\xCC\x81 vs \xC3\xA9") == 0) /* "é" is not in the vocab */
            CHECK(t5_tokenizer_unk_id(tok) ==
                      cJSON_GetArrayItem(want_ids, cJSON_GetArraySize(want_ids) - 2)->valuedouble,
                  "unk id %d", t5_tokenizer_unk_id(tok));
    }
    printf("%s %d/%d prompts give transformers' ids (full, padded to 64)\n",
           n_ok == n_full ? "ok  " : "FAIL", n_ok, n_full);
    CHECK(n_full == 54, "%d cases run", n_full);

    /* The prompts of the flux-tiny runs, against the ids the pipeline recorded. */
    static const char *const runs[] = {"flux_dev_like", "flux_nonsquare"};
    for (int r = 0; r < 2; r++) {
        char rel[128];
        snprintf(rel, sizeof rel, "flux-tiny/expected/%s.json", runs[r]);
        cJSON *call = read_json(rel);
        const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(call, "prompt");
        snprintf(rel, sizeof rel, "flux-tiny/expected/%s.safetensors", runs[r]);
        int64_t shape[8];
        int ndim = 0;
        int32_t *want = fixture_ids(rel, "tokenizer_2_prompt_ids", shape, &ndim);
        if (cJSON_IsString(prompt) && want && ndim == 2 && shape[1] == 64) {
            int32_t got[64];
            CHECK_OK(t5_tokenize_padded(tok, prompt->valuestring, got, 64, NULL));
            check_equal_i32(runs[r], got, want, 64);
        } else {
            CHECK(0, "%s: no prompt or tokenizer_2_prompt_ids [1, 64]", runs[r]);
        }
        free(want);
        cJSON_Delete(call);
    }

    /* Timing for the record: the longest prompt. */
    const char *longest = NULL;
    cJSON_ArrayForEach(c, cases) {
        const char *p = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
        if (!longest || strlen(p) > strlen(longest)) longest = p;
    }
    int32_t padded[64];
    t0 = now_ms();
    for (int r = 0; r < 100; r++) t5_tokenize_padded(tok, longest, padded, 64, NULL);
    printf("tokenize a %zu-byte prompt: %.3f ms\n", strlen(longest), (now_ms() - t0) / 100);
done:
    cJSON_Delete(root);
    t5_tokenizer_free(tok);
}

/* ids of `text` without the final EOS, as a malloc'd list. */
static int32_t *ids_of(const t5_tokenizer *t, const char *text, int *n) {
    int32_t *ids = NULL;
    *n = 0;
    if (t5_tokenize(t, text, &ids, n) != SD_OK) return NULL;
    (*n)--;
    return ids;
}

/* Added tokens are cut out of the raw text before normalization: "<text a><token><text b>" gives
 * ids(a), the token's id, ids(b). */
static void test_added_tokens(void) {
    t5_tokenizer *tok = NULL;
    CHECK_OK(t5_tokenizer_load(&tok, fixture(TOK_DIR)));
    if (!tok) return;
    static const char *const tokens[] = {"</s>", "<pad>", "<extra_id_0>", "<extra_id_99>"};
    for (int k = 0; k < 4; k++) {
        char text[128];
        snprintf(text, sizeof text, "a cat%sin  the hat", tokens[k]);
        int na, nb, nt;
        int32_t *a = ids_of(tok, "a cat", &na), *b = ids_of(tok, "in  the hat", &nb);
        int32_t *all = ids_of(tok, text, &nt);
        int32_t want[64];
        int nw = 0;
        if (a && b && all && na + nb + 1 < 64) {
            memcpy(want, a, (size_t)na * sizeof *a);
            nw = na;
            want[nw++] = -1; /* the token's id, checked below */
            memcpy(want + nw, b, (size_t)nb * sizeof *b);
            nw += nb;
            bool same = nt == nw;
            for (int i = 0; same && i < nw; i++) same = i == na || all[i] == want[i];
            const char *spelled = same ? t5_tokenizer_token(tok, all[na]) : NULL;
            CHECK(same && spelled && strcmp(spelled, tokens[k]) == 0,
                  "\"%s\": the added token is not cut out cleanly", text);
        } else {
            CHECK(0, "\"%s\": tokenize failed", text);
        }
        free(a), free(b), free(all);
    }
    /* The tokenizer.json ids of the sentinels (<extra_id_N> is 600 + N in this file). */
    int n;
    int32_t *ids = ids_of(tok, "<extra_id_7>", &n);
    CHECK(ids && n == 1 && ids[0] == 607, "<extra_id_7> gives %d ids, first %d", n,
          ids && n ? ids[0] : -1);
    free(ids);
    CHECK(t5_tokenizer_vocab_size(tok) == 700, "vocab size %d", t5_tokenizer_vocab_size(tok));
    t5_tokenizer_free(tok);
}

/* Cluster lengths of a UTF-8 string, as a string of digits ("21" = two clusters). */
static void check_graphemes(const char *utf8, const char *want) {
    uint32_t cps[64];
    size_t bad;
    long n = unicode_utf8_decode(utf8, strlen(utf8), cps, &bad);
    char got[64] = "";
    size_t k = 0;
    for (size_t i = 0; n > 0 && i < (size_t)n && k < sizeof got - 1;) {
        size_t g = grapheme_next(cps + i, (size_t)n - i);
        got[k++] = (char)('0' + (int)g);
        i += g;
    }
    got[k] = 0;
    CHECK(strcmp(got, want) == 0, "graphemes of \"%s\": %s, want %s", utf8, got, want);
}

/* Boundaries from UAX #29's rules (examples as in its GraphemeBreakTest). */
static void test_graphemes(void) {
    check_graphemes("abc", "111");
    check_graphemes("e\xCC\x81x", "21"); /* GB9: e + combining acute */
    check_graphemes("\r\n\n\r", "211");  /* GB3-GB5 */
    check_graphemes("a\xE2\x80\x8D"
                    "b",
                    "21"); /* GB9: ZWJ extends "a" */
    check_graphemes("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"
                    "a",
                    "31"); /* GB6-GB8: Hangul L V T */
    check_graphemes("\xF0\x9F\x87\xBA\xF0\x9F\x87\xB8\xF0\x9F\x87\xAB", "21"); /* GB12: flags */
    check_graphemes("\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", "3");      /* GB11 */
    check_graphemes("a\xE2\x80\x8D\xF0\x9F\x91\xA9", "21");       /* no GB11 without a pictograph */
    check_graphemes("\xE0\xA4\x95\xE0\xA5\x8D\xE0\xA4\xB7", "3"); /* GB9c: ka virama ssa */
    check_graphemes("\xE0\xA4\x95\xE0\xA4\xB7", "11");            /* no linker: two */
    check_graphemes("\xD8\x80"
                    "a",
                    "2");                             /* GB9b: prepend */
    check_graphemes("\xE0\xA4\x95\xE0\xA4\xBE", "2"); /* GB9a: spacing mark */
    check_graphemes("\x01\xCC\x81", "11");            /* GB4: control breaks */
    printf("grapheme data: Unicode %s\n", grapheme_unicode_version_string());
}

/* The fixture's normalizer (precompiled charsmap + " {2,}" -> " ") on NFKC facts. */
static void test_normalizer(void) {
    cJSON *root = read_json(TOK_DIR "/tokenizer.json");
    tok_normalizer *nz = NULL;
    CHECK_OK(tok_normalizer_load(&nz, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                                 "tokenizer.json"));
    static const char *const cases[][2] = {
        {"\xEF\xBC\xA1\xEF\xBC\xA2", "AB"}, /* full-width letters */
        {"\xEF\xAC\x81", "fi"},             /* ligature */
        {"a\xC2\xA0"
         "b",
         "a b"},                   /* no-break space */
        {"e\xCC\x81", "\xC3\xA9"}, /* composition of a cluster */
        {"x   y  z", "x y z"},     /* the Replace step */
        {"plain text", "plain text"},
    };
    for (size_t i = 0; nz && i < sizeof cases / sizeof *cases; i++) {
        uint32_t in[32], *out = NULL;
        size_t bad, n_out = 0;
        long n = unicode_utf8_decode(cases[i][0], strlen(cases[i][0]), in, &bad);
        CHECK_OK(tok_normalizer_apply(nz, in, (size_t)n, &out, &n_out));
        char got[64];
        size_t len = 0;
        for (size_t k = 0; out && k < n_out && len < 56; k++)
            len += (size_t)unicode_utf8_encode(out[k], got + len);
        got[len] = 0;
        CHECK(strcmp(got, cases[i][1]) == 0, "normalize \"%s\": \"%s\", want \"%s\"", cases[i][0],
              got, cases[i][1]);
        free(out);
    }
    tok_normalizer_free(nz);
    cJSON_Delete(root);
}

/* Random text over tricky ranges (controls, combining marks, Hangul jamo, Indic, emoji, flags,
 * ZWJ, specials' characters): every prompt must tokenize, with ids inside the vocabulary and EOS
 * last. */
static void test_random_text(void) {
    t5_tokenizer *tok = NULL;
    CHECK_OK(t5_tokenizer_load(&tok, fixture(TOK_DIR)));
    if (!tok) return;
    static const uint32_t pool[] = {
        'a',    'Z',    ' ',    '\t',    '\n',    '\r',    '<',     '>',    '/',      's',
        '_',    0x00,   0x7F,   0xA0,    0xAD,    0x301,   0x308,   0x1100, 0x1161,   0x11A8,
        0xAC00, 0x915,  0x94D,  0x937,   0x93E,   0x200B,  0x200C,  0x200D, 0x2581,   0x3000,
        0xFB01, 0xFF21, 0xFE0F, 0x1F468, 0x1F3FB, 0x1F1FA, 0x1F1F8, 0x600,  0x10FFFF, 0xE000,
    };
    enum { NP = sizeof pool / sizeof *pool };
    uint64_t state = 12345;
    int bad = 0, vocab = t5_tokenizer_vocab_size(tok);
    for (int r = 0; r < 300; r++) {
        char text[512];
        size_t len = 0;
        int n_chars = (int)(state % 60);
        for (int k = 0; k < n_chars; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t cp = pool[(state >> 33) % NP];
            if (cp == 0) cp = 1; /* a C string ends at NUL */
            len += (size_t)unicode_utf8_encode(cp, text + len);
        }
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        text[len] = 0;
        int32_t *ids = NULL;
        int n = 0;
        sd_status st = t5_tokenize(tok, text, &ids, &n);
        bool ok = st == SD_OK && n >= 1 && ids[n - 1] == t5_tokenizer_eos_id(tok);
        for (int i = 0; ok && i < n; i++) ok = ids[i] >= 0 && ids[i] < vocab;
        bad += !ok;
        free(ids);
    }
    CHECK(bad == 0, "%d of 300 random prompts failed or gave ids outside the vocabulary", bad);
    t5_tokenizer_free(tok);
}

static void test_bad_prompts(void) {
    t5_tokenizer *tok = NULL;
    CHECK_OK(t5_tokenizer_load(&tok, fixture(TOK_DIR)));
    if (!tok) return;
    static const char *const bad[] = {
        "caf\xC3",          "a \xC3\x28 b", "\xC0\xAF", "\xED\xA0\x80",
        "\xF4\x90\x80\x80", "\xFF",         "ok \x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = NULL, padded[8];
        int n = -1;
        sd_status st = t5_tokenize(tok, bad[i], &ids, &n);
        CHECK(st == SD_ERR_ARG && ids == NULL && strstr(sd_last_error(), "UTF-8"),
              "invalid UTF-8 #%zu: %s (%s)", i, sd_status_name(st), sd_last_error());
        st = t5_tokenize_padded(tok, bad[i], padded, 8, NULL);
        CHECK(st == SD_ERR_ARG, "invalid UTF-8 #%zu (padded): %s", i, sd_status_name(st));
        free(ids);
    }
    int32_t one[1];
    CHECK(t5_tokenize_padded(tok, "a", one, 0, NULL) == SD_ERR_ARG, "max_length 0 accepted");
    CHECK_OK(t5_tokenize_padded(tok, "a photo", one, 1, NULL));
    CHECK(one[0] == t5_tokenizer_eos_id(tok), "max_length 1 gives %d", one[0]);
    t5_tokenizer_free(tok);
}

/* ---- bad folders ---- */

static char tmp_dir[64];
static char *json_text; /* the fixture's tokenizer.json */

static void write_file(const char *name, const char *text) {
    char *path = sd_path_join(tmp_dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp) fwrite(text, 1, strlen(text), fp), fclose(fp);
    free(path);
}

static void remove_file(const char *name) {
    char *path = sd_path_join(tmp_dir, name);
    unlink(path);
    free(path);
}

/* Writes tokenizer.json with the first `from` replaced by `to`. */
static void write_json_with(const char *from, const char *to) {
    const char *at = strstr(json_text, from);
    if (!at) {
        CHECK(0, "fixture tokenizer.json has no \"%s\"", from);
        return;
    }
    size_t head = (size_t)(at - json_text), len = strlen(json_text);
    char *s = malloc(len + strlen(to) + 1);
    memcpy(s, json_text, head);
    strcpy(s + head, to);
    strcat(s, at + strlen(from));
    write_file("tokenizer.json", s);
    free(s);
}

static void expect_load_error(const char *what, sd_status want, const char *needle) {
    t5_tokenizer *t = NULL;
    sd_status st = t5_tokenizer_load(&t, tmp_dir);
    CHECK(st == want && t == NULL && strstr(sd_last_error(), needle),
          "%s: got %s \"%s\", want %s naming \"%s\"", what, sd_status_name(st), sd_last_error(),
          sd_status_name(want), needle);
    t5_tokenizer_free(t);
}

static void test_bad_folders(void) {
    t5_tokenizer *t = NULL;
    sd_status st = t5_tokenizer_load(&t, "/nonexistent/tokenizer_2");
    CHECK(st == SD_ERR_IO && !t && strstr(sd_last_error(), "/nonexistent/tokenizer_2"),
          "missing folder: %s \"%s\"", sd_status_name(st), sd_last_error());
    CHECK_OK(sd_read_file(fixture(TOK_DIR "/tokenizer.json"), &json_text, NULL));
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sd_t5tok_XXXXXX");
    if (!json_text || !mkdtemp(tmp_dir)) {
        CHECK(0, "setup failed");
        free(json_text);
        return;
    }
    expect_load_error("missing tokenizer.json", SD_ERR_IO, "tokenizer.json");

    /* Without the optional files the T5Tokenizer defaults apply. */
    write_file("tokenizer.json", json_text);
    CHECK_OK(t5_tokenizer_load(&t, tmp_dir));
    if (t) CHECK(t5_tokenizer_eos_id(t) == 1 && t5_tokenizer_pad_id(t) == 0, "default specials");
    t5_tokenizer_free(t);

    write_json_with("\"type\": \"Precompiled\"", "\"type\": \"NFKD\"");
    expect_load_error("unsupported normalizer", SD_ERR_UNSUPPORTED, "NFKD");
    write_json_with("\"Regex\": \" {2,}\"", "\"Regex\": \"(a|b)+\"");
    expect_load_error("unsupported Replace regex", SD_ERR_UNSUPPORTED, "(a|b)+");
    write_json_with("\"type\": \"Unigram\"", "\"type\": \"BPE\"");
    expect_load_error("unsupported model", SD_ERR_UNSUPPORTED, "BPE");
    write_json_with("\"precompiled_charsmap\": \"", "\"precompiled_charsmap\": \"!");
    expect_load_error("bad base64", SD_ERR_FORMAT, "base64");
    write_json_with("\"unk_id\": 2", "\"unk_id\": 9999");
    expect_load_error("unk_id out of range", SD_ERR_FORMAT, "unk_id");
    write_file("tokenizer.json", "{\"model\": ");
    expect_load_error("truncated JSON", SD_ERR_FORMAT, "tokenizer.json");

    write_file("tokenizer.json", json_text);
    write_file("tokenizer_config.json", "{\"tokenizer_class\": \"LlamaTokenizer\"}");
    expect_load_error("other tokenizer class", SD_ERR_UNSUPPORTED, "LlamaTokenizer");
    write_file("tokenizer_config.json", "{\"eos_token\": 5}");
    expect_load_error("bad eos_token", SD_ERR_CONFIG, "eos_token");
    write_file("tokenizer_config.json", "[1, 2]");
    expect_load_error("config not an object", SD_ERR_FORMAT, "tokenizer_config.json");
    /* special_tokens_map.json overrides tokenizer_config.json. */
    write_file("tokenizer_config.json", "{\"pad_token\": \"<unk>\"}");
    write_file("special_tokens_map.json", "{\"pad_token\": \"</s>\"}");
    CHECK_OK(t5_tokenizer_load(&t, tmp_dir));
    if (t)
        CHECK(t5_tokenizer_pad_id(t) == 1, "pad from special_tokens_map: %d",
              t5_tokenizer_pad_id(t));
    t5_tokenizer_free(t);

    remove_file("special_tokens_map.json");
    remove_file("tokenizer_config.json");
    remove_file("tokenizer.json");
    rmdir(tmp_dir);
    free(json_text);
}

int main(void) {
    test_cases();
    test_added_tokens();
    test_graphemes();
    test_normalizer();
    test_random_text();
    test_bad_prompts();
    test_bad_folders();
    return test_summary();
}
