/* A1111's prompt syntax (text_encoder/a1111_*.c) against tools/reference/a1111_prompts.py, an
 * independent Python version checked there against A1111's own doctests: for each of the
 * fixture's prompts (tests/fixtures/extra/a1111_prompts.json), the prompt-editing schedule (ends
 * and texts) and, for each scheduled text, every chunk's 77 token ids, float64 weights (exactly)
 * and textual-inversion placements, with the fixture's triggers. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../text_encoder/a1111_prompt.h"
#include "test.h"

enum { MAX_TRIGGERS = 8 };

typedef struct {
    a1111_trigger t[MAX_TRIGGERS];
    const char *name[MAX_TRIGGERS];
    int32_t *ids[MAX_TRIGGERS];
    int n;
} triggers;

static void load_triggers(const clip_tokenizer *tok, const cJSON *emb, triggers *tr) {
    int first = 0;
    for (const cJSON *e = emb ? emb->child : NULL; e && tr->n < MAX_TRIGGERS; e = e->next) {
        int32_t *ids = NULL;
        int n = 0;
        CHECK_OK(clip_tokenize(tok, e->string, &ids, &n));
        const int k = tr->n++;
        tr->ids[k] = ids, tr->name[k] = e->string;
        tr->t[k] = (a1111_trigger){ids ? ids + 1 : NULL, n - 2, (int)e->valuedouble, first};
        first += (int)e->valuedouble;
    }
}

/* The expected vector table entry at each position from the fixture's [offset, name] pairs. */
static void expected_vectors(const triggers *tr, const cJSON *fixes, int32_t *want) {
    for (int i = 0; i < A1111_CHUNK_LEN; i++) want[i] = -1;
    for (const cJSON *f = fixes ? fixes->child : NULL; f; f = f->next) {
        const int off = cJSON_GetArrayItem(f, 0)->valueint;
        const char *name = cJSON_GetArrayItem(f, 1)->valuestring;
        for (int k = 0; k < tr->n; k++)
            if (!strcmp(tr->name[k], name))
                for (int v = 0; v < tr->t[k].n_vectors && off + v < A1111_CHUNK_LEN; v++)
                    want[off + v] = tr->t[k].first_vector + v;
    }
}

/* One scheduled text's chunks; returns false (after printing) on the first difference. */
static bool compare_chunks(const clip_tokenizer *tok, const triggers *tr, const char *prompt,
                           const char *text, const cJSON *want) {
    a1111_chunks c;
    if (a1111_chunk(tok, text, tr->t, tr->n, &c) != SD_OK) {
        printf("  \"%s\": %s\n", text, sd_last_error());
        return false;
    }
    bool ok = c.n_chunks == cJSON_GetArraySize(want);
    if (!ok) printf("  \"%s\": %d chunks, want %d\n", prompt, c.n_chunks, cJSON_GetArraySize(want));
    int k = 0;
    for (const cJSON *w = want->child; ok && w; w = w->next, k++) {
        const cJSON *ids = cJSON_GetObjectItem(w, "ids"), *ws = cJSON_GetObjectItem(w, "weights");
        int32_t vec[A1111_CHUNK_LEN];
        expected_vectors(tr, cJSON_GetObjectItem(w, "fixes"), vec);
        for (int i = 0; ok && i < A1111_CHUNK_LEN; i++) {
            const size_t at = (size_t)k * A1111_CHUNK_LEN + i;
            const int want_id = cJSON_GetArrayItem(ids, i)->valueint;
            const double want_w = cJSON_GetArrayItem(ws, i)->valuedouble;
            if (c.ids[at] != want_id || c.weights[at] != want_w || c.vector[at] != vec[i]) {
                printf("  \"%s\" (text \"%s\"), chunk %d position %d: id %d weight %.17g vector "
                       "%d, want %d %.17g %d\n", prompt, text, k, i, c.ids[at], c.weights[at],
                       c.vector[at], want_id, want_w, vec[i]);
                ok = false;
            }
        }
    }
    a1111_chunks_free(&c);
    return ok;
}

static void test_fixture(void) {
    clip_tokenizer *tok = NULL;
    CHECK_OK(clip_tokenizer_load(&tok, fixture("clip_tokenizer")));
    char *text = NULL;
    CHECK_OK(sd_read_file(fixture("extra/a1111_prompts.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK(cJSON_GetArraySize(cases) >= 60, "a1111_prompts.json: %d cases (at least 60)",
          cJSON_GetArraySize(cases));
    if (!tok || !cases) goto done;
    triggers tr = {0};
    load_triggers(tok, cJSON_GetObjectItem(root, "embeddings"), &tr);
    int n_ok = 0, n = 0, n_sched = 0, n_chunks_max = 0;
    for (const cJSON *c = cases->child; c; c = c->next, n++) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        const int steps = cJSON_GetObjectItem(c, "steps")->valueint;
        const cJSON *want = cJSON_GetObjectItem(c, "schedule");
        a1111_sched_entry *e = NULL;
        int ne = 0;
        bool ok = a1111_schedule(prompt, steps, &e, &ne) == SD_OK;
        ok = ok && ne == cJSON_GetArraySize(want);
        if (!ok) printf("  \"%s\": %d schedule entries, want %d\n", prompt, ne,
                        cJSON_GetArraySize(want));
        n_sched += ne > 1;
        int k = 0;
        for (const cJSON *w = want->child; ok && w; w = w->next, k++) {
            const char *wt = cJSON_GetObjectItem(w, "text")->valuestring;
            const int end = cJSON_GetObjectItem(w, "end")->valueint;
            if (e[k].end != end || strcmp(e[k].text, wt)) {
                printf("  \"%s\": entry %d is (%d, \"%s\"), want (%d, \"%s\")\n", prompt, k,
                       e[k].end, e[k].text, end, wt);
                ok = false;
                break;
            }
            const cJSON *chunks = cJSON_GetObjectItem(w, "chunks");
            if (cJSON_GetArraySize(chunks) > n_chunks_max) n_chunks_max = cJSON_GetArraySize(chunks);
            ok = compare_chunks(tok, &tr, prompt, wt, chunks);
        }
        a1111_schedule_free(e, ne);
        n_ok += ok;
    }
    CHECK(n_ok == n, "A1111 prompts: %d of %d cases match the Python reference", n_ok, n);
    printf("A1111 prompts: %d of %d cases match (%d with prompt editing, up to %d chunks)\n", n_ok,
           n, n_sched, n_chunks_max);
    for (int k = 0; k < tr.n; k++) free(tr.ids[k]);
done:
    cJSON_Delete(root);
    clip_tokenizer_free(tok);
}

/* reconstruct_cond_batch: the first entry whose end is >= the (0-based) sampler step. */
static void test_pick(void) {
    a1111_sched_entry *e = NULL;
    int n = 0;
    CHECK_OK(a1111_schedule("a [b:3] c", 10, &e, &n));
    CHECK(n == 2 && e[0].end == 3 && e[1].end == 10, "schedule of \"a [b:3] c\"");
    if (n == 2) {
        const int want[10] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
        bool ok = true;
        for (int s = 0; s < 10; s++) ok &= a1111_schedule_pick(e, n, s) == want[s];
        CHECK(ok, "steps 0-3 take the entry ending at 3, steps 4-9 the next");
    }
    a1111_schedule_free(e, n);
    a1111_piece *p = NULL;
    CHECK_OK(a1111_parse_attention("a (red:1.3) fox BREAK [x]", &p, &n));
    char *plain = p ? a1111_plain_text(p, n) : NULL;
    CHECK(plain && !strcmp(plain, "a red fox x"), "plain text: \"%s\"", plain ? plain : "(null)");
    free(plain);
    a1111_pieces_free(p, n);
}

int main(void) {
    test_fixture();
    test_pick();
    return test_summary();
}
