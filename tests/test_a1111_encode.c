/* Generations with A1111's prompt syntax on the tiny models (pipeline/prompt_a1111.c):
 *   - emphasis: the prompt embeddings of a weighted two-chunk prompt equal A1111's "Original"
 *     formula z * w * mean(z) / mean(z * w), computed here in float64 from the unweighted encoder
 *     output of the same chunk (SD 1.x; SD 2.x with its "!" padding after the first EOS);
 *   - a prompt without syntax gives the plain syntax's embeddings bit for bit;
 *   - the shorter side is padded with the empty prompt's chunk;
 *   - prompt editing and alternation switch the conditioning at A1111's steps: the latents
 *     follow the first text's run exactly up to the switch, then leave it;
 *   - SD3: CLIP rows as the plain syntax's for a prompt without syntax, then T5's; Flux: T5's rows
 *     weighted by the same formula (each piece tokenized alone), pooled from CLIP's first chunk. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../text_encoder/a1111_prompt.h"
#include "../text_encoder/clip_text.h"
#include "../text_encoder/t5_encoder.h"
#include "../text_encoder/t5_tokenizer.h"
#include "test.h"

enum { MAX_STEPS = 8 };

typedef struct {
    float *pos, *neg, *pooled, *steps[MAX_STEPS];
    int pos_tokens, neg_tokens, dim, n_steps, pooled_n;
    size_t step_n;
    bool embeds_only; /* cancel at the first model call */
} capture;

static float *dup_floats(const float *x, size_t n) {
    float *d = malloc(n * sizeof *d);
    if (d) memcpy(d, x, n * sizeof *d);
    return d;
}

static int on_event(void *user, const sd_event *e) {
    capture *c = user;
    const sd_tensor *t = &e->tensor;
    if ((e->kind == SD_EVENT_PROMPT_EMBEDS || e->kind == SD_EVENT_NEGATIVE_EMBEDS) && e->index == 0) {
        const bool neg = e->kind == SD_EVENT_NEGATIVE_EMBEDS;
        float **dst = neg ? &c->neg : &c->pos;
        free(*dst);
        *dst = dup_floats(t->data, (size_t)t->h * t->c);
        *(neg ? &c->neg_tokens : &c->pos_tokens) = t->h;
        c->dim = t->c;
    }
    if (e->kind == SD_EVENT_POOLED_EMBEDS) {
        free(c->pooled);
        c->pooled = dup_floats(t->data, (size_t)t->c);
        c->pooled_n = t->c;
    }
    if (e->kind == SD_EVENT_MODEL_INPUT && c->embeds_only) return 1;
    if (e->kind == SD_EVENT_STEP && c->n_steps < MAX_STEPS) {
        c->step_n = (size_t)t->batch * t->h * t->w * t->c;
        c->steps[c->n_steps++] = dup_floats(t->data, c->step_n);
    }
    return 0;
}

static void capture_free(capture *c) {
    free(c->pos), free(c->neg), free(c->pooled);
    for (int i = 0; i < c->n_steps; i++) free(c->steps[i]);
    memset(c, 0, sizeof *c);
}

/* The UNet families' runs use Euler (order 1: one model call per step); SD3 / Flux their own. */
static const char *run_scheduler = "EulerDiscreteScheduler";
static int run_max_sequence = 0;

static sd_status run(sd_pipeline *p, const char *prompt, const char *neg, sd_prompt_syntax syntax,
                     int steps, capture *c) {
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = prompt, g.negative_prompt = neg, g.prompt_syntax = syntax;
    g.width = g.height = 64, g.steps = steps, g.seed = 7;
    g.scheduler = run_scheduler, g.max_sequence_length = run_max_sequence;
    g.on_event = on_event, g.user = c;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    if (st == SD_OK) sd_result_free(&r);
    return c->embeds_only && st == SD_ERR_CANCELLED ? SD_OK : st;
}

static bool same(const float *a, const float *b, size_t n) {
    return a && b && !memcmp(a, b, n * sizeof *a);
}

static const char *long_prompt(void) {
    static char buf[2048];
    int n = snprintf(buf, sizeof buf, "a (red:1.3) fox, ((masterpiece)), [blurry]");
    for (int i = 0; i < 30; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, i % 3 ? ", thing %d" : ", (thing %d:0.7)", i);
    snprintf(buf + n, sizeof buf - (size_t)n, ", ((((last words))))");
    return buf;
}

/* The formula, independently: chunks from a1111_chunk (checked against the Python reference in
 * test_a1111_prompts), each chunk encoded without weights, weighted and renormalized in float64. */
static void test_emphasis(const char *model) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/pipeline", model);
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture(dir), NULL));
    snprintf(dir, sizeof dir, "%s/pipeline/tokenizer", model);
    clip_tokenizer *tok = NULL;
    CHECK_OK(clip_tokenizer_load(&tok, fixture(dir)));
    snprintf(dir, sizeof dir, "%s/pipeline/text_encoder", model);
    clip_text *te = NULL;
    CHECK_OK(clip_text_load(&te, fixture(dir), NULL));
    if (!p || !tok || !te) goto done;
    const char *prompt = long_prompt();
    capture c = {.embeds_only = true};
    CHECK_OK(run(p, prompt, NULL, SD_PROMPT_A1111, 2, &c));
    a1111_chunks ch;
    CHECK_OK(a1111_chunk(tok, prompt, NULL, 0, &ch));
    const clip_text_config *tc = clip_text_get_config(te);
    const int h = tc->hidden_size, L = A1111_CHUNK_LEN;
    CHECK(ch.n_chunks == 2 && c.pos_tokens == 2 * L && c.dim == h,
          "%s: %d chunks, embeddings [%d][%d]", model, ch.n_chunks, c.pos_tokens, c.dim);
    if (ch.n_chunks != 2 || c.pos_tokens != 2 * L || c.dim != h) goto free_run;
    float *want = malloc((size_t)2 * L * h * sizeof *want), *z = malloc((size_t)L * h * sizeof *z);
    int n_weighted = 0;
    for (int k = 0; k < 2; k++) {
        int32_t ids[A1111_CHUNK_LEN];
        bool after_eos = false; /* process_tokens: the pad token after the first EOS (SD 2.x) */
        for (int i = 0; i < L; i++) {
            ids[i] = after_eos ? clip_tokenizer_pad_id(tok) : ch.ids[k * L + i];
            after_eos |= ch.ids[k * L + i] == clip_tokenizer_eos_id(tok);
        }
        CHECK_OK(clip_text_encode(te, ids, 1, L, tc->num_layers, true, z, NULL));
        double m0 = 0, m1 = 0;
        for (int i = 0; i < L * h; i++) {
            m0 += z[i];
            m1 += z[i] * ch.weights[k * L + i / h];
        }
        for (int i = 0; i < L; i++) n_weighted += ch.weights[k * L + i] != 1.0;
        for (int i = 0; i < L * h; i++)
            want[(size_t)k * L * h + i] = (float)(z[i] * ch.weights[k * L + i / h] * (m0 / m1));
    }
    CHECK(n_weighted > 10, "%s: %d weighted tokens", model, n_weighted);
    char what[256];
    snprintf(what, sizeof what, "%s: a1111 embeddings vs z*w*mean(z)/mean(z*w) (float64)", model);
    check_rel(what, c.pos, want, (size_t)2 * L * h, 1e-6);
    free(want), free(z);
free_run:
    a1111_chunks_free(&ch);
    capture_free(&c);
done:
    clip_text_free(te);
    clip_tokenizer_free(tok);
    sd_pipeline_free(p);
}

static void test_plain_and_padding(sd_pipeline *p) {
    capture a = {.embeds_only = true}, b = {.embeds_only = true}, e = {.embeds_only = true};
    CHECK_OK(run(p, "a photo of a cat", "ugly", SD_PROMPT_A1111, 2, &a));
    CHECK_OK(run(p, "a photo of a cat", "ugly", SD_PROMPT_PLAIN, 2, &b));
    CHECK(a.pos_tokens == 77 && b.pos_tokens == 77 && same(a.pos, b.pos, (size_t)77 * a.dim) &&
              same(a.neg, b.neg, (size_t)77 * a.dim),
          "a prompt without syntax: a1111 embeddings equal the plain syntax's bit for bit");
    capture_free(&a), capture_free(&b);
    CHECK_OK(run(p, long_prompt(), "lowres", SD_PROMPT_A1111, 2, &a));
    CHECK_OK(run(p, "", NULL, SD_PROMPT_A1111, 2, &e));
    CHECK(a.neg_tokens == 154 && e.pos_tokens == 77 &&
              same(a.neg + (size_t)77 * a.dim, e.pos, (size_t)77 * a.dim),
          "the negative prompt padded to 2 chunks with the empty prompt's chunk (%d tokens)",
          a.neg_tokens);
    capture_free(&a), capture_free(&e);
}

/* "[cat:dog:1]" over 3 steps: steps 0 and 1 take "cat", step 2 "dog" (reconstruct_cond_batch's
 * current_step <= end_at_step); "[cat|dog]": cat, cat, dog. */
static void test_editing(sd_pipeline *p) {
    const char *edits[2] = {"a [cat:dog:1] photo", "a [cat|dog] photo"};
    capture cat = {0}, dog = {0};
    CHECK_OK(run(p, "a cat photo", NULL, SD_PROMPT_A1111, 3, &cat));
    CHECK_OK(run(p, "a dog photo", NULL, SD_PROMPT_A1111, 3, &dog));
    for (int k = 0; k < 2; k++) {
        capture ed = {0};
        CHECK_OK(run(p, edits[k], NULL, SD_PROMPT_A1111, 3, &ed));
        const size_t n = ed.step_n;
        CHECK(ed.n_steps == 3 && cat.n_steps == 3 && same(ed.steps[0], cat.steps[0], n) &&
                  same(ed.steps[1], cat.steps[1], n),
              "\"%s\": steps 0 and 1 as \"a cat photo\"", edits[k]);
        CHECK(ed.n_steps == 3 && !same(ed.steps[2], cat.steps[2], n) &&
                  !same(ed.steps[2], dog.steps[2], n),
              "\"%s\": step 2 conditioned on \"a dog photo\" (differs from both runs)", edits[k]);
        capture_free(&ed);
    }
    capture_free(&cat), capture_free(&dog);
    /* Heun: two model calls per step (calls 0-1 step 0, 2-3 step 1, 4 step 2) */
    run_scheduler = "HeunDiscreteScheduler";
    capture h_ed = {0}, h_cat = {0};
    CHECK_OK(run(p, edits[0], NULL, SD_PROMPT_A1111, 3, &h_ed));
    CHECK_OK(run(p, "a cat photo", NULL, SD_PROMPT_A1111, 3, &h_cat));
    bool first4 = h_ed.n_steps == 5 && h_cat.n_steps == 5;
    for (int i = 0; first4 && i < 4; i++) first4 = same(h_ed.steps[i], h_cat.steps[i], h_ed.step_n);
    CHECK(first4 && !same(h_ed.steps[4], h_cat.steps[4], h_ed.step_n),
          "Heun: \"%s\" follows \"a cat photo\" for the 4 calls of steps 0-1, then leaves it "
          "(%d calls)", edits[0], h_ed.n_steps);
    capture_free(&h_ed), capture_free(&h_cat);
    run_scheduler = "EulerDiscreteScheduler";
    capture same_text = {0}, ref = {0};
    CHECK_OK(run(p, "[a cat:a dog:0] photo", NULL, SD_PROMPT_A1111, 2, &same_text));
    CHECK_OK(run(p, "a dog photo", NULL, SD_PROMPT_A1111, 2, &ref));
    CHECK(same_text.n_steps == 2 && same(same_text.steps[1], ref.steps[1], ref.step_n),
          "[from:to:0] is `to` from the start");
    capture_free(&same_text), capture_free(&ref);
}

/* transformers' CLIP with A1111's emphasis, recorded on a device by
 * tools/reference/a1111_device_refs.py (extra/a1111_refs.json); until then, nothing to compare. */
static void test_device_refs(void) {
    char *text = NULL;
    /* Recorded on the device (tools/reference/a1111_device_refs.py): missing is a failure. */
    CHECK(sd_file_exists(fixture("extra/a1111_refs.json")), "extra/a1111_refs.json present");
    if (!sd_file_exists(fixture("extra/a1111_refs.json"))) return;
    CHECK_OK(sd_read_file(fixture("extra/a1111_refs.json"), &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItem(root, "emphasis");
    CHECK(cJSON_GetArraySize(cases) > 0, "a1111_refs.json has emphasis cases");
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        char dir[512], tname[600];
        snprintf(dir, sizeof dir, "%s/pipeline", cJSON_GetObjectItem(c, "model")->valuestring);
        sd_pipeline *p = NULL;
        CHECK_OK(sd_pipeline_load(&p, fixture(dir), NULL));
        capture cap = {.embeds_only = true};
        run_scheduler = strncmp(dir, "sd3", 3) ? "EulerDiscreteScheduler" : NULL;
        if (p) CHECK_OK(run(p, cJSON_GetObjectItem(c, "prompt")->valuestring, NULL,
                            SD_PROMPT_A1111, 2, &cap));
        run_scheduler = "EulerDiscreteScheduler";
        snprintf(tname, sizeof tname, "%s.cond", name);
        int64_t shape[3];
        int nd = 0;
        float *want = fixture_tensor("extra/a1111_refs.safetensors", tname, shape, &nd);
        const bool fits = want && cap.pos && nd == 3 && shape[1] == cap.pos_tokens &&
                          shape[2] == cap.dim;
        CHECK(fits, "%s: shape", name);
        if (fits) check_rel(name, cap.pos, want, (size_t)shape[1] * shape[2], 1e-5);
        free(want);
        capture_free(&cap);
        sd_pipeline_free(p);
    }
    cJSON_Delete(root);
}

/* SD3 as A1111 runs it: CLIP rows (both encoders, one emphasis over the joined row) then as many
 * T5 rows (zeros without T5). A prompt without syntax: the CLIP rows are the plain syntax's. */
static void test_sd3(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3-tiny/pipeline"), NULL));
    if (!p) return;
    run_scheduler = NULL;
    capture a = {.embeds_only = true}, b = {.embeds_only = true}, l = {0};
    CHECK_OK(run(p, "a photo of a cat", NULL, SD_PROMPT_A1111, 2, &a));
    CHECK_OK(run(p, "a photo of a cat", NULL, SD_PROMPT_PLAIN, 2, &b));
    bool zeros = a.pos != NULL;
    for (size_t i = (size_t)77 * a.dim; zeros && i < (size_t)154 * a.dim; i++) zeros = a.pos[i] == 0;
    CHECK(a.pos_tokens == 154 && b.pos && same(a.pos, b.pos, (size_t)77 * a.dim) && zeros,
          "SD3: a1111 CLIP rows equal the plain syntax's, then 77 T5 rows (zeros without T5); "
          "%d tokens", a.pos_tokens);
    CHECK_OK(run(p, long_prompt(), "lowres", SD_PROMPT_A1111, 2, &l));
    CHECK(l.pos_tokens == 4 * 77 && l.n_steps == 2, "SD3: a two-chunk prompt runs (%d tokens)",
          l.pos_tokens);
    capture_free(&a), capture_free(&b), capture_free(&l);
    run_scheduler = "EulerDiscreteScheduler";
    sd_pipeline_free(p);
}

/* SD3's one emphasis over the joined row [clip_l | clip_g | zeros] (Sd3ClipLG), independently:
 * both encoders run unweighted on the chunk (CLIP-G with 0 after the first EOS), joined, weighted
 * and renormalized in float64 over the whole padded row. */
static void test_sd3_emphasis(void) {
    const char *dirs[4] = {"sd3-tiny/pipeline/tokenizer", "sd3-tiny/pipeline/tokenizer_2",
                           "sd3-tiny/pipeline/text_encoder", "sd3-tiny/pipeline/text_encoder_2"};
    clip_tokenizer *tok[2] = {NULL, NULL};
    clip_text *te[2] = {NULL, NULL};
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3-tiny/pipeline"), NULL));
    for (int k = 0; k < 2; k++) {
        CHECK_OK(clip_tokenizer_load(&tok[k], fixture(dirs[k])));
        CHECK_OK(clip_text_load(&te[k], fixture(dirs[2 + k]), NULL));
    }
    if (!p || !tok[0] || !tok[1] || !te[0] || !te[1]) goto done;
    const char *prompt = "a (red:1.3) fox, [blurry] ((snow))";
    run_scheduler = NULL;
    capture c = {.embeds_only = true};
    CHECK_OK(run(p, prompt, NULL, SD_PROMPT_A1111, 2, &c));
    run_scheduler = "EulerDiscreteScheduler";
    const int L = A1111_CHUNK_LEN, dim = c.dim;
    double *row = calloc((size_t)L * dim, sizeof *row);
    float *want = malloc((size_t)L * dim * sizeof *want);
    a1111_chunks ch = {0};
    CHECK_OK(a1111_chunk(tok[0], prompt, NULL, 0, &ch));
    int off = 0;
    for (int k = 0; k < 2 && ch.n_chunks == 1; k++) {
        const clip_text_config *tc = clip_text_get_config(te[k]);
        int32_t ids[A1111_CHUNK_LEN];
        bool after_eos = false;
        for (int i = 0; i < L; i++) {
            ids[i] = after_eos ? clip_tokenizer_pad_id(tok[k]) : ch.ids[i];
            after_eos |= ch.ids[i] == clip_tokenizer_eos_id(tok[k]);
        }
        float *z = malloc((size_t)L * tc->hidden_size * sizeof *z);
        CHECK_OK(clip_text_encode(te[k], ids, 1, L, tc->num_layers - 1, false, z, NULL));
        for (int t = 0; t < L; t++)
            for (int j = 0; j < tc->hidden_size && off + j < dim; j++)
                row[(size_t)t * dim + off + j] = z[(size_t)t * tc->hidden_size + j];
        off += tc->hidden_size;
        free(z);
    }
    double m0 = 0, m1 = 0;
    for (int i = 0; i < L * dim; i++) m0 += row[i], m1 += row[i] * ch.weights[i / dim];
    for (int i = 0; i < L * dim; i++) want[i] = (float)(row[i] * ch.weights[i / dim] * (m0 / m1));
    CHECK(ch.n_chunks == 1 && c.pos_tokens == 2 * L, "SD3: one chunk, %d tokens", c.pos_tokens);
    if (ch.n_chunks == 1 && c.pos_tokens == 2 * L)
        check_rel("SD3: joined CLIP rows vs z*w*mean(z)/mean(z*w) over the padded row (float64)",
                  c.pos, want, (size_t)L * dim, 1e-6);
    free(row), free(want);
    a1111_chunks_free(&ch);
    capture_free(&c);
done:
    for (int k = 0; k < 2; k++) clip_tokenizer_free(tok[k]), clip_text_free(te[k]);
    sd_pipeline_free(p);
}

/* Flux: the T5 rows of a weighted prompt against the formula from T5's unweighted output, each
 * piece tokenized alone (Sd3T5.tokenize_line); and a prompt without syntax as the plain syntax. */
static void test_flux(void) {
    sd_pipeline *p = NULL;
    t5_tokenizer *tok = NULL;
    t5_encoder *t5 = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("flux-tiny/pipeline"), NULL));
    CHECK_OK(t5_tokenizer_load(&tok, fixture("flux-tiny/pipeline/tokenizer_2")));
    CHECK_OK(t5_encoder_load(&t5, fixture("flux-tiny/pipeline/text_encoder_2"), NULL));
    if (!p || !tok || !t5) goto done;
    run_scheduler = NULL, run_max_sequence = 24;
    capture a = {.embeds_only = true}, b = {.embeds_only = true};
    CHECK_OK(run(p, "a photo of a cat", NULL, SD_PROMPT_A1111, 2, &a));
    CHECK_OK(run(p, "a photo of a cat", NULL, SD_PROMPT_PLAIN, 2, &b));
    CHECK(a.pos_tokens == 24 && same(a.pos, b.pos, (size_t)24 * a.dim) && b.pooled &&
              a.pooled_n == b.pooled_n && same(a.pooled, b.pooled, (size_t)b.pooled_n),
          "Flux: a prompt without syntax gives the plain syntax's T5 rows and pooled output");
    capture_free(&a);
    const char *pieces[3] = {"a photo", " of a ", "cat"};
    const double weights[3] = {1.3, 1.0, 1 / 1.1};
    capture w = {.embeds_only = true};
    CHECK_OK(run(p, "(a photo:1.3) of a [cat]", NULL, SD_PROMPT_A1111, 2, &w));
    int32_t ids[24];
    double wt[24];
    int n = 0;
    for (int k = 0; k < 3; k++) {
        int32_t *t = NULL;
        int nt = 0;
        CHECK_OK(t5_tokenize(tok, pieces[k], &t, &nt));
        for (int j = 0; j < nt - 1 && n < 24; j++) ids[n] = t[j], wt[n++] = weights[k];
        free(t);
    }
    ids[n] = t5_tokenizer_eos_id(tok), wt[n++] = 1.0;
    for (; n < 24; n++) ids[n] = t5_tokenizer_pad_id(tok), wt[n] = 1.0;
    const int d = t5_encoder_get_config(t5)->d_model;
    float *z = malloc((size_t)24 * d * sizeof *z), *want = malloc((size_t)24 * d * sizeof *want);
    CHECK_OK(t5_encoder_encode(t5, ids, 1, 24, z));
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 24 * d; i++) m0 += z[i], m1 += z[i] * wt[i / d];
    for (int i = 0; i < 24 * d; i++) want[i] = (float)(z[i] * wt[i / d] * (m0 / m1));
    CHECK(w.pos_tokens == 24 && w.dim == d, "Flux: a1111 T5 rows [%d][%d]", w.pos_tokens, w.dim);
    if (w.pos_tokens == 24 && w.dim == d)
        check_rel("Flux: weighted T5 rows vs z*w*mean(z)/mean(z*w) (float64)", w.pos, want,
                  (size_t)24 * d, 1e-6);
    CHECK(!same(w.pos, b.pos, (size_t)24 * d), "the weights change T5's rows");
    free(z), free(want);
    capture_free(&w), capture_free(&b);
    capture e = {0}; /* prompt editing through Flux's denoiser */
    CHECK_OK(run(p, "a [cat:dog:1] photo", NULL, SD_PROMPT_A1111, 3, &e));
    CHECK(e.n_steps == 3, "Flux: a run with prompt editing");
    capture_free(&e);
    run_scheduler = "EulerDiscreteScheduler", run_max_sequence = 0;
done:
    t5_encoder_free(t5);
    t5_tokenizer_free(tok);
    sd_pipeline_free(p);
}

int main(void) {
    test_emphasis("sd15-tiny");
    test_emphasis("sd2v-tiny");
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        test_plain_and_padding(p);
        test_editing(p);
    }
    sd_pipeline_free(p);
    test_sd3();
    test_sd3_emphasis();
    test_flux();
    test_device_refs();
    return test_summary();
}
