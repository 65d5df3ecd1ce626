/* The CLIP tokenizer against transformers' ids for the 54 prompts of tokenizer_cases.json (full,
 * padded to 77 with <|endoftext|>, padded with "!"), plus error handling and a few Unicode
 * normalization facts from UAX #15. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../text_encoder/clip_tokenizer.h"
#include "../text_encoder/unicode.h"
#include "test.h"

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

/* The tokenizer as transformers 5 saves it: tokenizer.json alone, no vocab.json / merges.txt.
 * The recorded file (tools/reference/extra_refs.py's save_pretrained) holds exactly the
 * vocabulary of vocab.json and the merges of merges.txt (as [a, b] pairs); to keep the tree
 * small enough to travel, the fixture keeps the rest of it (tokenizer_skeleton.json, with an
 * empty vocab and merges) and the file is put back together here, in a folder of its own. */
static const char *assemble_tokenizer_json(void) {
    static char dir[600];
    snprintf(dir, sizeof dir, "%s", test_output_dir("clip_tokenizer_json"));
    char *skel = NULL, *vocab = NULL, *merges = NULL;
    char *out = NULL;
    size_t n_out = 0;
    FILE *mem = NULL;
    const char *result = NULL;
    if (sd_read_file(fixture("clip_tokenizer_json/tokenizer_skeleton.json"), &skel, NULL) != SD_OK ||
        sd_read_file(fixture("clip_tokenizer/vocab.json"), &vocab, NULL) != SD_OK ||
        sd_read_file(fixture("clip_tokenizer/merges.txt"), &merges, NULL) != SD_OK)
        goto done;
    char *v = strstr(skel, "\"vocab\": {}"), *m = strstr(skel, "\"merges\": []");
    if (!v || !m || m < v || !(mem = open_memstream(&out, &n_out))) goto done;
    fwrite(skel, 1, (size_t)(v - skel), mem);
    fprintf(mem, "\"vocab\": %s", vocab);
    fwrite(v + 11, 1, (size_t)(m - (v + 11)), mem);
    fputs("\"merges\": [", mem);
    int first = 1;
    for (char *line = strtok(merges, "\n"); line; line = strtok(NULL, "\n")) {
        char *sp = strchr(line, ' ');
        if (line[0] == '#' || !sp) continue; /* the "#version" header */
        *sp = 0;
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(line));
        cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
        char *txt = cJSON_PrintUnformatted(pair);
        fprintf(mem, "%s%s", first ? "" : ",", txt);
        first = 0;
        free(txt);
        cJSON_Delete(pair);
    }
    fprintf(mem, "]%s", m + 12);
    fclose(mem);
    mem = NULL;
    char path[700], cfg[700];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    char *cfg_text = NULL;
    size_t n_cfg = 0;
    FILE *f = fopen(path, "wb");
    const int ok = f && fwrite(out, 1, n_out, f) == n_out;
    if (f) fclose(f);
    if (ok && sd_read_file(fixture("clip_tokenizer_json/tokenizer_config.json"), &cfg_text, &n_cfg) == SD_OK &&
        (f = fopen(cfg, "wb"))) {
        if (fwrite(cfg_text, 1, n_cfg, f) == n_cfg) result = dir;
        fclose(f);
    }
    free(cfg_text);
done:
    if (mem) fclose(mem);
    free(out);
    free(skel);
    free(vocab);
    free(merges);
    return result;
}

static void test_cases(void) {
    clip_tokenizer *tok = NULL, *bang = NULL, *from_json = NULL;
    double t0 = now_ms();
    CHECK_OK(clip_tokenizer_load(&tok, fixture("clip_tokenizer")));
    printf("load clip_tokenizer: %.1f ms\n", now_ms() - t0);
    CHECK_OK(clip_tokenizer_load(&bang, fixture("clip_tokenizer_pad_bang")));
    const char *json_dir = assemble_tokenizer_json();
    CHECK(json_dir != NULL, "tokenizer.json put back together from the fixture's parts");
    t0 = now_ms();
    if (json_dir) CHECK_OK(clip_tokenizer_load(&from_json, json_dir));
    printf("load clip_tokenizer_json (tokenizer.json): %.1f ms\n", now_ms() - t0);
    char *text = NULL;
    CHECK_OK(sd_read_file(fixture("tokenizer_cases.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    CHECK(cJSON_GetArraySize(cases) == 54, "tokenizer_cases.json has %d cases, expected 54",
          cJSON_GetArraySize(cases));
    if (!tok || !bang || !from_json || !cases) goto done;

    CHECK(clip_tokenizer_max_length(tok) == 77, "model_max_length %d",
          clip_tokenizer_max_length(tok));
    int n_full = 0, n_ok = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
        const cJSON *want_ids = cJSON_GetObjectItemCaseSensitive(c, "ids");
        const cJSON *want_pad = cJSON_GetObjectItemCaseSensitive(c, "padded77");
        const cJSON *want_bang = cJSON_GetObjectItemCaseSensitive(c, "padded77_pad_bang");
        int32_t *ids = NULL, padded[77];
        int n = 0, before = test_failed;
        CHECK_OK(clip_tokenize(tok, prompt, &ids, &n));
        check_ids("ids", prompt, ids, n, want_ids);
        free(ids);
        CHECK_OK(clip_tokenize_padded(tok, prompt, padded, 77));
        check_ids("padded77", prompt, padded, 77, want_pad);
        CHECK_OK(clip_tokenize_padded(bang, prompt, padded, 77));
        check_ids("padded77_pad_bang", prompt, padded, 77, want_bang);
        CHECK_OK(clip_tokenize_padded(from_json, prompt, padded, 77));
        check_ids("padded77 (tokenizer.json)", prompt, padded, 77, want_pad);
        n_full++, n_ok += test_failed == before;
        if (strcmp(prompt, "a photo of a cat") == 0) { /* the special ids, read off the fixture */
            const cJSON *first = want_ids->child, *last = cJSON_GetArrayItem(want_ids, n - 1);
            CHECK(clip_tokenizer_bos_id(tok) == first->valuedouble, "bos id %d",
                  clip_tokenizer_bos_id(tok));
            CHECK(clip_tokenizer_eos_id(tok) == last->valuedouble, "eos id %d",
                  clip_tokenizer_eos_id(tok));
            CHECK(clip_tokenizer_pad_id(tok) == cJSON_GetArrayItem(want_pad, 76)->valuedouble,
                  "pad id %d", clip_tokenizer_pad_id(tok));
            CHECK(clip_tokenizer_pad_id(bang) == cJSON_GetArrayItem(want_bang, 76)->valuedouble,
                  "pad id (\"!\") %d", clip_tokenizer_pad_id(bang));
            const char *cat =
                clip_tokenizer_token(tok, (int)cJSON_GetArrayItem(want_ids, 5)->valuedouble);
            CHECK(cat && strcmp(cat, "cat</w>") == 0, "token of 'cat' is %s", cat ? cat : "NULL");
        }
    }
    printf("%s %d/%d prompts give transformers' ids (full, padded, padded with \"!\")\n",
           n_ok == n_full ? "ok  " : "FAIL", n_ok, n_full);

    /* Timing for the record: the longest prompt. */
    const char *longest = NULL;
    cJSON_ArrayForEach(c, cases) {
        const char *p = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
        if (!longest || strlen(p) > strlen(longest)) longest = p;
    }
    int32_t padded[77];
    t0 = now_ms();
    for (int r = 0; r < 100; r++) clip_tokenize_padded(tok, longest, padded, 77);
    printf("tokenize a %zu-byte prompt: %.3f ms\n", strlen(longest), (now_ms() - t0) / 100);
done:
    cJSON_Delete(root);
    clip_tokenizer_free(tok);
    clip_tokenizer_free(bang);
    clip_tokenizer_free(from_json);
}

static void test_bad_prompts(void) {
    clip_tokenizer *tok = NULL;
    CHECK_OK(clip_tokenizer_load(&tok, fixture("clip_tokenizer")));
    if (!tok) return;
    static const char *const bad[] = {
        "caf\xC3",          /* truncated sequence at the end */
        "a \xC3\x28 b",     /* bad continuation byte */
        "\xC0\xAF",         /* overlong "/" */
        "\xED\xA0\x80",     /* UTF-16 surrogate */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xFF",             /* never valid */
        "ok \x80",          /* lone continuation byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = NULL, padded[77];
        int n = -1;
        sd_status st = clip_tokenize(tok, bad[i], &ids, &n);
        CHECK(st == SD_ERR_ARG && ids == NULL && strstr(sd_last_error(), "UTF-8"),
              "invalid UTF-8 #%zu: %s (%s)", i, sd_status_name(st), sd_last_error());
        st = clip_tokenize_padded(tok, bad[i], padded, 77);
        CHECK(st == SD_ERR_ARG, "invalid UTF-8 #%zu (padded): %s", i, sd_status_name(st));
        free(ids);
    }
    int32_t padded[2];
    CHECK(clip_tokenize_padded(tok, "a", padded, 1) == SD_ERR_ARG, "max_length 1 accepted");
    CHECK_OK(clip_tokenize_padded(tok, "a photo", padded, 2));
    CHECK(padded[0] == clip_tokenizer_bos_id(tok) && padded[1] == clip_tokenizer_eos_id(tok),
          "max_length 2 gives %d %d", padded[0], padded[1]);
    clip_tokenizer_free(tok);
}

/* A scratch tokenizer folder: the fixture's files, some replaced. */
static char tmp_dir[64];

static void write_file(const char *name, const char *text, size_t len) {
    char *path = sd_path_join(tmp_dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp) fwrite(text, 1, len, fp), fclose(fp);
    free(path);
}

static void copy_fixture(const char *name) {
    char rel[128], *text = NULL;
    size_t len = 0;
    snprintf(rel, sizeof rel, "clip_tokenizer/%s", name);
    if (sd_read_file(fixture(rel), &text, &len) == SD_OK) write_file(name, text, len);
    free(text);
}

static void remove_file(const char *name) {
    char *path = sd_path_join(tmp_dir, name);
    unlink(path);
    free(path);
}

static void reset_folder(void) {
    copy_fixture("vocab.json");
    copy_fixture("merges.txt");
    copy_fixture("tokenizer_config.json");
}

/* Loading the scratch folder fails with `want` and a message containing `needle`. */
static void expect_load_error(const char *what, sd_status want, const char *needle) {
    clip_tokenizer *t = NULL;
    sd_status st = clip_tokenizer_load(&t, tmp_dir);
    CHECK(st == want && t == NULL && strstr(sd_last_error(), needle),
          "%s: got %s \"%s\", want %s naming \"%s\"", what, sd_status_name(st), sd_last_error(),
          sd_status_name(want), needle);
    clip_tokenizer_free(t);
}

static void write_config(const char *text) {
    write_file("tokenizer_config.json", text, strlen(text));
}

static void test_bad_folders(void) {
    clip_tokenizer *t = NULL;
    sd_status st = clip_tokenizer_load(&t, "/nonexistent/tokenizer");
    CHECK(st == SD_ERR_IO && !t && strstr(sd_last_error(), "/nonexistent/tokenizer"),
          "missing folder: %s \"%s\"", sd_status_name(st), sd_last_error());

    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sd_tok_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    static const char *const files[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    for (int i = 0; i < 3; i++) {
        reset_folder();
        remove_file(files[i]);
        expect_load_error("missing file", SD_ERR_IO, files[i]);
    }

    reset_folder();
    write_file("vocab.json", "{\"a\": 0,", 8);
    expect_load_error("truncated vocab.json", SD_ERR_FORMAT, "vocab.json");
    write_file("vocab.json", "[1, 2]", 6);
    expect_load_error("vocab.json not an object", SD_ERR_FORMAT, "vocab.json");
    write_file("vocab.json", "{\"a\": -3}", 9);
    expect_load_error("negative id", SD_ERR_FORMAT, "vocab.json");

    reset_folder();
    const char *merges = "#version: 0.2\ni n\nt h e\n";
    write_file("merges.txt", merges, strlen(merges));
    expect_load_error("three tokens on a merges line", SD_ERR_FORMAT, "merges.txt line 3");
    merges = "#version: 0.2\ni n\nzzzzzzqq h\n";
    write_file("merges.txt", merges, strlen(merges));
    expect_load_error("merge of an unknown token", SD_ERR_FORMAT, "zzzzzzqq");

    /* tokenizer.json instead of vocab.json + merges.txt: it must hold a CLIP-style BPE model. */
    reset_folder();
    remove_file("vocab.json");
    remove_file("merges.txt");
    const char *tj = "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}";
    write_file("tokenizer.json", tj, strlen(tj));
    expect_load_error("tokenizer.json with a Unigram model", SD_ERR_UNSUPPORTED, "tokenizer.json");
    tj = "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", "
         "\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}";
    write_file("tokenizer.json", tj, strlen(tj));
    expect_load_error("tokenizer.json merge of an unknown token", SD_ERR_FORMAT, "merge 0");
    remove_file("tokenizer.json");

    reset_folder();
    write_config("{\"pad_token\": 5}");
    expect_load_error("numeric pad_token", SD_ERR_CONFIG, "pad_token");
    write_config("{\"bos_token\": {\"lstrip\": false}}");
    expect_load_error("bos_token without content", SD_ERR_CONFIG, "bos_token");
    write_config("{\"model_max_length\": 1e30}");
    expect_load_error("model_max_length 1e30", SD_ERR_CONFIG, "model_max_length");
    write_config("{\"model_max_length\": Infinity}"); /* Python's json writes inf so */
    expect_load_error("model_max_length Infinity", SD_ERR_CONFIG, "model_max_length");
    write_config("{\"model_max_length\": \"77\"}");
    expect_load_error("model_max_length as a string", SD_ERR_CONFIG, "model_max_length");
    write_config("{\"eos_token\": \"<|endoftext|>\"");
    expect_load_error("truncated tokenizer_config.json", SD_ERR_FORMAT, "tokenizer_config.json");

    /* Tokens given as objects, as older releases save them, behave like the strings: the "!"
     * padding fixture again, with pad_token as an AddedToken object. */
    write_config(
        "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<|startoftext|>\", "
        "\"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": false},"
        " \"pad_token\": {\"content\": \"!\"}, \"model_max_length\": 77}");
    st = clip_tokenizer_load(&t, tmp_dir);
    CHECK(st == SD_OK, "object-form tokens: %s %s", sd_status_name(st), sd_last_error());
    if (t) {
        char *text = NULL;
        sd_read_file(fixture("tokenizer_cases.json"), &text, NULL);
        cJSON *root = text ? cJSON_Parse(text) : NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
            const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
            if (!strchr(prompt, '!')) continue;
            int32_t padded[77];
            CHECK_OK(clip_tokenize_padded(t, prompt, padded, 77));
            check_ids("object-form pad \"!\"", prompt, padded, 77,
                      cJSON_GetObjectItemCaseSensitive(c, "padded77_pad_bang"));
        }
        cJSON_Delete(root);
        free(text);
        clip_tokenizer_free(t);
    }

    /* A special token with "normalized": true is matched after normalization (lower-casing
     * here), as the tokenizers library does for such added tokens: "<|StartOfText|>literal" then
     * reads as the fixture's "<|startoftext|>literal". */
    write_config("{\"bos_token\": {\"content\": \"<|startoftext|>\", \"normalized\": true}}");
    st = clip_tokenizer_load(&t, tmp_dir);
    CHECK(st == SD_OK, "normalized bos_token: %s %s", sd_status_name(st), sd_last_error());
    if (t) {
        char *text = NULL;
        sd_read_file(fixture("tokenizer_cases.json"), &text, NULL);
        cJSON *root = text ? cJSON_Parse(text) : NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
            if (strcmp(cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring,
                       "<|startoftext|>literal") != 0)
                continue;
            int32_t *ids = NULL;
            int n = 0;
            CHECK_OK(clip_tokenize(t, "<|StartOfText|>literal", &ids, &n));
            check_ids("normalized special token", "<|StartOfText|>literal", ids, n,
                      cJSON_GetObjectItemCaseSensitive(c, "ids"));
            free(ids);
        }
        cJSON_Delete(root);
        free(text);
        clip_tokenizer_free(t);
    }
    /* special_tokens_map.json over tokenizer_config.json, as transformers reads them (SD 2.x
     * releases: "<|endoftext|>" in the config, "!" in the map, padding with "!"): the "!" padding
     * fixture's ids. A malformed map is an error naming it. */
    write_config("{\"pad_token\": \"<|endoftext|>\", \"model_max_length\": 77}");
    const char *map = "{\"pad_token\": \"!\", \"eos_token\": null}";
    write_file("special_tokens_map.json", map, strlen(map));
    st = clip_tokenizer_load(&t, tmp_dir);
    CHECK(st == SD_OK, "special_tokens_map.json: %s %s", sd_status_name(st), sd_last_error());
    if (t) {
        char *text = NULL;
        sd_read_file(fixture("tokenizer_cases.json"), &text, NULL);
        cJSON *root = text ? cJSON_Parse(text) : NULL;
        const cJSON *c;
        int n_cases = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
            const char *prompt = cJSON_GetObjectItemCaseSensitive(c, "prompt")->valuestring;
            if (!strchr(prompt, '!')) continue;
            int32_t padded[77];
            CHECK_OK(clip_tokenize_padded(t, prompt, padded, 77));
            check_ids("pad \"!\" from special_tokens_map.json", prompt, padded, 77,
                      cJSON_GetObjectItemCaseSensitive(c, "padded77_pad_bang"));
            n_cases++;
        }
        CHECK(n_cases > 0, "special_tokens_map.json: cases with \"!\" found");
        cJSON_Delete(root);
        free(text);
        clip_tokenizer_free(t);
        t = NULL;
    }
    write_file("special_tokens_map.json", "{\"pad_token\": ", 14);
    expect_load_error("truncated special_tokens_map.json", SD_ERR_FORMAT, "special_tokens_map.json");
    remove_file("special_tokens_map.json");

    write_config("{\"pad_token\": {\"content\": \"!\", \"single_word\": true}}");
    expect_load_error("single_word token", SD_ERR_UNSUPPORTED, "pad_token");

    /* A vocab.json that the one-pass reader leaves to cJSON (an entry whose value is not a
     * number, which the tokenizers library skips): both readers must give the same table. */
    reset_folder();
    char *vocab = NULL;
    size_t vlen = 0;
    sd_read_file(fixture("clip_tokenizer/vocab.json"), &vocab, &vlen);
    char *end = vocab ? strrchr(vocab, '}') : NULL;
    if (end) {
        const char *extra = ", \"zz_not_an_id\": \"x\"}";
        char *edited = malloc((size_t)(end - vocab) + strlen(extra) + 1);
        memcpy(edited, vocab, (size_t)(end - vocab));
        strcpy(edited + (end - vocab), extra);
        write_file("vocab.json", edited, strlen(edited));
        free(edited);
        clip_tokenizer *slow = NULL, *fast = NULL;
        CHECK_OK(clip_tokenizer_load(&slow, tmp_dir));
        CHECK_OK(clip_tokenizer_load(&fast, fixture("clip_tokenizer")));
        int differ = -1;
        for (int id = 0; slow && fast && id < 49408 && differ < 0; id++) {
            const char *a = clip_tokenizer_token(slow, id), *b = clip_tokenizer_token(fast, id);
            if (!a || !b || strcmp(a, b) != 0) differ = id;
        }
        CHECK(slow && fast && differ < 0,
              "vocab.json read by cJSON and by the one-pass reader "
              "differ at id %d",
              differ);
        clip_tokenizer_free(slow);
        clip_tokenizer_free(fast);
    }
    free(vocab);

    for (int i = 0; i < 3; i++) remove_file(files[i]);
    rmdir(tmp_dir);
}

/* NFC and lower-casing facts (UAX #15 and the Unicode case mappings), checked directly. */
static void check_nfc(const char *what, const uint32_t *in, size_t n, const uint32_t *want,
                      size_t n_want) {
    uint32_t out[32];
    size_t m = unicode_nfc(in, n, out);
    CHECK(m == n_want && memcmp(out, want, m * sizeof *out) == 0,
          "NFC %s: got %zu code points "
          "starting U+%04X",
          what, m, m ? out[0] : 0);
}

static void test_unicode(void) {
    printf("Unicode tables: version %s\n", unicode_version());
    check_nfc("e + acute", (uint32_t[]){0x65, 0x301}, 2, (uint32_t[]){0xE9}, 1);
    check_nfc("d dot-above + dot-below reorders", (uint32_t[]){0x1E0B, 0x323}, 2,
              (uint32_t[]){0x1E0D, 0x307}, 2);
    check_nfc("Angstrom sign (singleton)", (uint32_t[]){0x212B}, 1, (uint32_t[]){0xC5}, 1);
    check_nfc("U+0958 (composition exclusion)", (uint32_t[]){0x958}, 1, (uint32_t[]){0x915, 0x93C},
              2);
    check_nfc("Hangul L V T", (uint32_t[]){0x1100, 0x1161, 0x11A8}, 3, (uint32_t[]){0xAC01}, 1);
    check_nfc("Hangul LV + T", (uint32_t[]){0xAC00, 0x11A8}, 2, (uint32_t[]){0xAC01}, 1);
    check_nfc("blocked mark", (uint32_t[]){0x61, 0x305, 0x301}, 3, (uint32_t[]){0x61, 0x305, 0x301},
              3);
    check_nfc("ligature kept", (uint32_t[]){0xFB01}, 1, (uint32_t[]){0xFB01}, 1);
    uint32_t low[3];
    int n = unicode_lower(0x130, low);
    CHECK(n == 2 && low[0] == 0x69 && low[1] == 0x307, "lower(U+0130)");
    n = unicode_lower(0x3A3, low);
    CHECK(n == 1 && low[0] == 0x3C3, "lower(capital sigma) is U+03C3 without context");
    n = unicode_lower(0x100, low);
    CHECK(n == 1 && low[0] == 0x101, "lower(U+0100)");
    n = unicode_lower(0x101, low);
    CHECK(n == 1 && low[0] == 0x101, "lower(U+0101)");
    n = unicode_lower(0xFF21, low);
    CHECK(n == 1 && low[0] == 0xFF41, "lower(fullwidth A)");
    CHECK(unicode_is_space(0xA0) && unicode_is_space(0x3000) && !unicode_is_space(0x200B) &&
              !unicode_is_space(0xAD) && !unicode_is_space(0x1C),
          "white space set");
    CHECK(unicode_is_letter(0x6771) && unicode_is_letter(0xD55C) && !unicode_is_letter(0x1F431) &&
              unicode_is_number(0xFF11) && unicode_is_number(0xB2) && !unicode_is_letter(0x2D),
          "letter / number classes");
}

int main(void) {
    test_cases();
    test_bad_prompts();
    test_bad_folders();
    test_unicode();
    return test_summary();
}
