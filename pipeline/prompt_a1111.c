/* A1111's prompt syntax in a generation, after AUTOMATIC1111's stable-diffusion-webui:
 *   - each side (prompt, negative prompt) has a schedule of texts (prompt editing, alternation;
 *     modules/prompt_parser.py), each text its 75-token chunks (a1111_chunks.c);
 *   - each chunk goes through each CLIP encoder on its own (77 tokens), the embedding vectors put at
 *     their positions (sd_hijack.EmbeddingsWithFixes), the output weighted per token with the mean
 *     restored ("Original" emphasis), the chunks concatenated along the sequence
 *     (FrozenCLIPEmbedderWithCustomWordsBase.forward); SDXL's two encoders side by side, the pooled
 *     output from the first chunk (zs[0].pooled); SD3's joined and padded to the T5 width first,
 *     one emphasis over that row (modules/models/sd3/sd3_cond.py, Sd3ClipLG);
 *   - T5 (SD3, Flux; pl_a1111_plan.t5_rows) reads each piece tokenized alone, weights stripped
 *     from the text (Sd3T5.tokenize_line), EOS, padded with the pad token; its output is weighted
 *     per token as CLIP's (A1111 computes those weights but does not apply them);
 *   - every text is padded to the same number of chunks with the empty prompt's encoding (what
 *     A1111 does between cond and uncond, pad_cond; it pads the texts of one schedule with the
 *     empty chunk, which encodes the same);
 *   - sampler step s (0-based; img2img counts from its first step) takes the first scheduled text
 *     whose end is >= s (prompt_parser.reconstruct_cond_batch); a model call belongs to step
 *     (call - first) / order (Heun's two calls are one step).
 * One difference: A1111 takes the emphasis mean over the batch of one prompt's scheduled texts
 * together; here over each text alone (the same for a prompt without editing), so that each
 * distinct text is encoded once and cached. */
#include "prompt_a1111.h"

#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "embed_cache.h"
#include "embeddings.h"

enum { LEN = A1111_CHUNK_LEN };

typedef struct {
    a1111_sched_entry *sched;
    int n;
    a1111_chunks *chunks; /* [n][2]: each encoder's tokenizer chunks (their pad ids differ) */
    float **hidden;       /* [n] -> [tokens][dim], shared between equal texts */
    float **pooled;       /* [n] -> [pooled_dim] */
    pl_a1111_plan plan;
    int current; /* the entry in r->context now */
} side;

struct pl_a1111 {
    side s[2]; /* 0: prompt, 1: negative prompt */
    int sides, order, first;
    int chunks;    /* the most chunks of any text: CLIP rows are 77 x this */
    int clip_rows, t5_rows;
    a1111_trigger *trig[2]; /* per encoder index (text_encoder, text_encoder_2) */
    const float **rows[2];
    int n_trig[2];
};

void pl_a1111_emphasis(float *z, const double *weights, int len, int h) {
    const size_t n = (size_t)len * h;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += z[i];
    const float before = (float)(sum / (double)n);
    sum = 0;
    for (int t = 0; t < len; t++) {
        const float w = (float)weights[t]; /* torch.asarray(multipliers): float32 */
        for (int c = 0; c < h; c++) sum += z[(size_t)t * h + c] *= w;
    }
    const float after = (float)(sum / (double)n), scale = before / after;
    for (size_t i = 0; i < n; i++) z[i] *= scale;
}

/* One chunk through one encoder without emphasis (see pl_a1111_encode_chunk). */
static sd_status encode_raw(const pl_clip_use *e, const int32_t *ids, const int32_t *vector,
                            const float *const *rows, float *z, float *pooled) {
    int32_t in[LEN];
    const float *given[LEN];
    const int eos = clip_tokenizer_eos_id(e->tok), pad = clip_tokenizer_pad_id(e->tok);
    bool after_eos = false;
    for (int i = 0; i < LEN; i++) {
        in[i] = after_eos ? pad : ids[i];
        after_eos |= ids[i] == eos;
        given[i] = vector && vector[i] >= 0 ? rows[vector[i]] : NULL;
    }
    return clip_text_encode_rows(e->te, in, given, 1, LEN, e->layer, e->final_norm, z, pooled);
}

sd_status pl_a1111_encode_chunk(const pl_clip_use *e, const int32_t *ids, const double *weights,
                                const int32_t *vector, const float *const *rows, float *z,
                                float *pooled) {
    SD_TRY(encode_raw(e, ids, vector, rows, z, pooled));
    pl_a1111_emphasis(z, weights, LEN, clip_text_get_config(e->te)->hidden_size);
    return SD_OK;
}

static const char *side_text(const pl_run *r, int s) {
    const char *t = s ? r->g.negative_prompt : r->g.prompt;
    return t ? t : "";
}

sd_status pl_a1111_prepare(pl_run *r) {
    const pl_generator *gen = r->gen;
    if (!gen->a1111_plan)
        return sd_set_error(SD_ERR_UNSUPPORTED, "prompt syntax a1111: %s pipelines take the plain "
                            "syntax only", gen->name);
    if (r->g.prompt_2 || r->g.negative_prompt_2 || r->g.prompt_3 || r->g.negative_prompt_3)
        return sd_set_error(SD_ERR_ARG, "prompt syntax a1111: prompt_2 / prompt_3 (and their "
                            "negatives) are not taken: every encoder reads the prompt, as in "
                            "A1111");
    struct pl_a1111 *a = calloc(1, sizeof *a);
    if (!a) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    r->a1111 = a;
    a->sides = r->cfg ? 2 : 1;
    for (int k = 0; k < 2; k++) {
        const clip_tokenizer *tok = k ? r->p->tokenizer_2 : r->p->tokenizer;
        if (!tok) tok = k ? r->p->tokenizer : r->p->tokenizer_2;
        const clip_text *te = k ? r->p->text_encoder_2 : r->p->text_encoder;
        if (te && r->p->n_embeddings)
            SD_TRY(pl_embeddings_triggers(r->p, tok, k, &a->trig[k], &a->rows[k], &a->n_trig[k]));
    }
    a->chunks = 1;
    bool clip_context = false;
    int t5_rows = 0;
    for (int s = 0; s < a->sides; s++) {
        side *d = &a->s[s];
        gen->a1111_plan(r, s == 1, &d->plan);
        clip_context |= d->plan.clip_context, t5_rows = d->plan.t5_rows ? d->plan.t5_rows : t5_rows;
        SD_TRY(a1111_schedule(side_text(r, s), r->g.steps, &d->sched, &d->n));
        d->chunks = calloc((size_t)d->n * 2, sizeof *d->chunks);
        d->hidden = calloc((size_t)d->n, sizeof *d->hidden);
        d->pooled = calloc((size_t)d->n, sizeof *d->pooled);
        if (!d->chunks || !d->hidden || !d->pooled) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        for (int i = 0; i < d->n; i++)
            for (int k = 0; k < d->plan.n_clip; k++) {
                const pl_clip_use *e = &d->plan.clip[k];
                a1111_chunks *c = &d->chunks[i * 2 + k];
                SD_TRY(a1111_chunk(e->tok, d->sched[i].text, a->trig[e->index], a->n_trig[e->index], c));
                if (c->n_chunks > a->chunks) a->chunks = c->n_chunks;
            }
    }
    /* The longest prompt sets the length: the denoisers take any number of context tokens. */
    a->clip_rows = clip_context ? a->chunks * LEN : 0;
    a->t5_rows = t5_rows < 0 ? a->chunks * LEN : t5_rows;
    r->tokens = a->clip_rows + a->t5_rows;
    return SD_OK;
}

/* Chunk ch of entry i (or the empty prompt's chunk, c NULL) through every encoder of the side:
 * CLIP rows [LEN][dim] at `rows` (when the plan has them) and the pooled outputs (first chunk). */
static sd_status encode_clip_chunk(const pl_run *r, const side *d, int i, int ch, float *rows,
                                   float *pooled) {
    const struct pl_a1111 *a = r->a1111;
    const pl_a1111_plan *pl = &d->plan;
    int off = 0;
    sd_status st = SD_OK;
    for (int k = 0; k < pl->n_clip && st == SD_OK; k++) {
        const pl_clip_use *e = &pl->clip[k];
        const int h = clip_text_get_config(e->te)->hidden_size;
        a1111_chunks empty = {0};
        const a1111_chunks *c = i >= 0 ? &d->chunks[i * 2 + k] : &empty;
        if (i < 0) st = a1111_chunk(e->tok, "", NULL, 0, &empty);
        float *z = malloc((size_t)LEN * h * sizeof *z);
        if (st == SD_OK && !z) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        const size_t at = (size_t)ch * LEN;
        float *pool = pooled && e->pooled_at >= 0 && ch == 0 ? pooled + e->pooled_at : NULL;
        if (st == SD_OK)
            st = encode_raw(e, c->ids + at, c->vector + at, a->rows[e->index], z, pool);
        if (st == SD_OK && !pl->joint_emphasis) pl_a1111_emphasis(z, c->weights + at, LEN, h);
        const int w = off >= r->dim ? 0 : h < r->dim - off ? h : r->dim - off; /* pad / crop */
        for (int t = 0; st == SD_OK && rows && t < LEN; t++)
            memcpy(rows + (size_t)t * r->dim + off, z + (size_t)t * h, (size_t)w * sizeof *z);
        if (st == SD_OK && rows && pl->joint_emphasis && k == pl->n_clip - 1)
            pl_a1111_emphasis(rows, c->weights + at, LEN, r->dim);
        free(z);
        a1111_chunks_free(&empty);
        off += h;
    }
    return st;
}

/* T5's rows for one text: each piece tokenized on its own (A1111's Sd3T5.tokenize_line), EOS,
 * padded with the pad token or cut to `len`; encoded, then weighted as CLIP's chunks are. */
static sd_status encode_t5(const pl_run *r, const char *text, int len, float *rows) {
    sd_pipeline *p = r->p;
    if (!p->t5 || len <= 0) return SD_OK; /* zeros, as an absent text_encoder_3 */
    a1111_piece *pieces = NULL;
    int n_pieces = 0, n = 0;
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    double *w = malloc((size_t)len * sizeof *w);
    float *z = malloc((size_t)len * t5_encoder_get_config(p->t5)->d_model * sizeof *z);
    sd_status st = ids && w && z ? a1111_parse_attention(text, &pieces, &n_pieces)
                                 : sd_set_error(SD_ERR_NOMEM, "out of memory");
    for (int k = 0; st == SD_OK && k < n_pieces; k++) {
        if (pieces[k].is_break) continue;
        int32_t *t = NULL;
        int nt = 0;
        st = t5_tokenize(p->t5_tokenizer, pieces[k].text, &t, &nt); /* ends with EOS */
        for (int j = 0; st == SD_OK && j < nt - 1 && n < len; j++) ids[n] = t[j], w[n++] = pieces[k].weight;
        free(t);
    }
    if (st == SD_OK && n < len) ids[n] = t5_tokenizer_eos_id(p->t5_tokenizer), w[n++] = 1.0;
    for (; n < len; n++) ids[n] = t5_tokenizer_pad_id(p->t5_tokenizer), w[n] = 1.0;
    const int d_model = p->t5 ? t5_encoder_get_config(p->t5)->d_model : 0;
    if (st == SD_OK) st = t5_encoder_encode(p->t5, ids, 1, len, z);
    if (st == SD_OK) {
        pl_a1111_emphasis(z, w, len, d_model);
        const int cols = d_model < r->dim ? d_model : r->dim;
        for (int t = 0; t < len; t++)
            memcpy(rows + (size_t)t * r->dim, z + (size_t)t * d_model, (size_t)cols * sizeof *z);
    }
    a1111_pieces_free(pieces, n_pieces);
    free(ids), free(w), free(z);
    return st;
}

/* Entry i's conditioning: hidden [tokens][dim] (CLIP rows, the empty prompt's chunk after the
 * text's own, then T5 rows) and pooled; cached by text and shape. */
static sd_status encode_entry(pl_run *r, const side *d, int i, float *hidden, float *pooled) {
    const struct pl_a1111 *a = r->a1111;
    const pl_a1111_plan *pl = &d->plan;
    const size_t n = (size_t)r->tokens * r->dim, pd = (size_t)r->pooled_dim;
    char *key = sd_strfmt("a1111|%s|%d,%d,%d,%d,%d|rows=%d,%d|emb=%d|%s", r->gen->name,
                          pl->clip[0].layer, pl->clip[0].final_norm,
                          pl->n_clip > 1 ? pl->clip[1].layer : -1, pl->n_clip, pl->t5_rows,
                          a->clip_rows, a->t5_rows, r->p->n_embeddings, d->sched[i].text);
    float *all = calloc(n + pd, sizeof *all);
    sd_status st = key && all ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK && !pl_cache_copy(r->p, key, all, n + pd)) {
        const int own = pl->n_clip ? d->chunks[i * 2].n_chunks : 0;
        float *rows = a->clip_rows ? all : NULL;
        const int run = rows ? own : own > 0; /* pooled only (Flux): the first chunk */
        for (int ch = 0; ch < run && st == SD_OK; ch++)
            st = encode_clip_chunk(r, d, i, ch, rows ? rows + (size_t)ch * LEN * r->dim : NULL,
                                   pd ? all + n : NULL);
        if (rows && own < a->chunks && st == SD_OK) /* pad_cond: the empty prompt's chunk */
            st = encode_clip_chunk(r, d, -1, 0, rows + (size_t)own * LEN * r->dim, NULL);
        for (int ch = own + 1; rows && ch < a->chunks && st == SD_OK; ch++)
            memcpy(rows + (size_t)ch * LEN * r->dim, rows + (size_t)own * LEN * r->dim,
                   (size_t)LEN * r->dim * sizeof *rows);
        if (st == SD_OK)
            st = encode_t5(r, d->sched[i].text, a->t5_rows, all + (size_t)a->clip_rows * r->dim);
        if (st == SD_OK) pl_cache_put(r->p, key, all, n + pd);
    }
    if (st == SD_OK) {
        memcpy(hidden, all, n * sizeof *all);
        if (pd) memcpy(pooled, all + n, pd * sizeof *all);
    }
    free(all), free(key);
    return st;
}

/* Writes the entries current for each side into the model batch (r->context, r->pooled). */
static void fill_batch(pl_run *r) {
    struct pl_a1111 *a = r->a1111;
    const size_t emb = (size_t)r->tokens * r->dim, pd = (size_t)r->pooled_dim;
    const side *pos = &a->s[0], *neg = a->sides > 1 ? &a->s[1] : NULL;
    pl_batch_rows(r->context, neg ? neg->hidden[neg->current] : NULL, pos->hidden[pos->current],
                  emb, r->batch, r->cfg);
    if (pd)
        pl_batch_rows(r->pooled, neg ? neg->pooled[neg->current] : NULL, pos->pooled[pos->current],
                      pd, r->batch, r->cfg);
}

sd_status pl_a1111_encode(pl_run *r) {
    struct pl_a1111 *a = r->a1111;
    const size_t emb = (size_t)r->tokens * r->dim, pd = (size_t)r->pooled_dim;
    const int mb = a->sides * r->batch;
    r->context = pl_run_alloc(r, (size_t)mb * emb * sizeof(float));
    if (!r->context || (pd && !(r->pooled = pl_run_alloc(r, (size_t)mb * pd * sizeof(float)))))
        return SD_ERR_NOMEM;
    sd_status st = SD_OK;
    for (int s = 0; s < a->sides && st == SD_OK; s++) {
        side *d = &a->s[s];
        for (int i = 0; i < d->n && st == SD_OK; i++) {
            for (int j = 0; j < i && !d->hidden[i]; j++) /* a text seen before: shared */
                if (!strcmp(d->sched[j].text, d->sched[i].text))
                    d->hidden[i] = d->hidden[j], d->pooled[i] = d->pooled[j];
            if (d->hidden[i]) continue;
            d->hidden[i] = calloc(emb, sizeof(float));
            d->pooled[i] = calloc(pd ? pd : 1, sizeof(float));
            if (!d->hidden[i] || !d->pooled[i]) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            else if (d->plan.n_clip) st = encode_entry(r, d, i, d->hidden[i], d->pooled[i]);
            /* no encoders: zeros (SDXL's force_zeros_for_empty_prompt) */
        }
    }
    SD_TRY(st);
    for (int s = 0; s < a->sides; s++) { /* the callback sees each side's first conditioning */
        const sd_event_kind kind = s ? SD_EVENT_NEGATIVE_EMBEDS : SD_EVENT_PROMPT_EMBEDS;
        const bool second = pd && r->gen->pooled_event == PL_POOLED_AS_INDEX_1; /* SDXL */
        SD_TRY(pl_emit(&r->g, kind, 0, second ? 2 : 1, 0, a->s[s].hidden[0], 1, r->tokens, 1,
                       r->dim));
        if (second) SD_TRY(pl_emit(&r->g, kind, 1, 2, 0, a->s[s].pooled[0], 1, 1, 1, r->pooled_dim));
        if (pd && !s && r->gen->pooled_event == PL_POOLED_OWN_EVENT) /* Flux */
            SD_TRY(pl_emit(&r->g, SD_EVENT_POOLED_EMBEDS, 0, 1, 0, a->s[s].pooled[0], 1, 1, 1,
                           r->pooled_dim));
    }
    fill_batch(r);
    return SD_OK;
}

void pl_a1111_before_call(void *run, int i) {
    pl_run *r = run;
    struct pl_a1111 *a = r->a1111;
    if (!a->order) a->order = sched_order(r->sched), a->first = i;
    const int step = (i - a->first) / (a->order > 0 ? a->order : 1);
    bool changed = false;
    for (int s = 0; s < a->sides; s++) {
        const int k = a1111_schedule_pick(a->s[s].sched, a->s[s].n, step);
        changed |= k != a->s[s].current;
        a->s[s].current = k;
    }
    if (changed) fill_batch(r);
}

void pl_a1111_free(pl_run *r) {
    struct pl_a1111 *a = r->a1111;
    if (!a) return;
    for (int s = 0; s < 2; s++) {
        side *d = &a->s[s];
        for (int i = 0; i < d->n; i++) {
            bool shared = false;
            for (int j = 0; j < i; j++) shared |= d->hidden && d->hidden[j] == d->hidden[i];
            if (d->hidden && !shared) free(d->hidden[i]), free(d->pooled[i]);
            if (d->chunks) a1111_chunks_free(&d->chunks[i * 2]), a1111_chunks_free(&d->chunks[i * 2 + 1]);
        }
        free(d->hidden), free(d->pooled), free(d->chunks);
        a1111_schedule_free(d->sched, d->n);
    }
    for (int k = 0; k < 2; k++) pl_triggers_free(a->trig[k], a->n_trig[k], a->rows[k]);
    free(a);
    r->a1111 = NULL;
}
