/* A1111's prompt syntax in a generation, after AUTOMATIC1111's stable-diffusion-webui:
 *   - each side (prompt, negative prompt) has a schedule of texts (prompt editing, alternation;
 *     modules/prompt_parser.py), each text its 75-token chunks (a1111_chunks.c);
 *   - each chunk goes through each CLIP encoder on its own (77 tokens), the embedding vectors put at
 *     their positions (sd_hijack.EmbeddingsWithFixes), the output weighted per token with the mean
 *     restored ("Original" emphasis), the chunks concatenated along the sequence
 *     (FrozenCLIPEmbedderWithCustomWordsBase.forward); SDXL's two encoders side by side, the pooled
 *     output from the first chunk (zs[0].pooled);
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
    a1111_chunks *chunks; /* [n][n_enc]: each encoder's tokenizer chunks (their pad ids differ) */
    float **hidden;       /* [n] -> [tokens][dim], shared between equal texts */
    float **pooled;       /* [n] -> [pooled_dim] */
    int n_enc;
    pl_clip_use enc[2];
    int current; /* the entry in r->context now */
} side;

struct pl_a1111 {
    side s[2]; /* 0: prompt, 1: negative prompt */
    int sides, order, first;
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

sd_status pl_a1111_encode_chunk(const pl_clip_use *e, const int32_t *ids, const double *weights,
                                const int32_t *vector, const float *const *rows, float *z,
                                float *pooled) {
    int32_t in[LEN];
    const float *given[LEN];
    const int eos = clip_tokenizer_eos_id(e->tok), pad = clip_tokenizer_pad_id(e->tok);
    bool after_eos = false;
    for (int i = 0; i < LEN; i++) {
        in[i] = after_eos ? pad : ids[i];
        after_eos |= ids[i] == eos;
        given[i] = vector && vector[i] >= 0 ? rows[vector[i]] : NULL;
    }
    SD_TRY(clip_text_encode_rows(e->te, in, given, 1, LEN, e->layer, e->final_norm, z, pooled));
    pl_a1111_emphasis(z, weights, LEN, clip_text_get_config(e->te)->hidden_size);
    return SD_OK;
}

static const char *side_text(const pl_run *r, int s) {
    const char *t = s ? r->g.negative_prompt : r->g.prompt;
    return t ? t : "";
}

sd_status pl_a1111_prepare(pl_run *r) {
    const pl_generator *gen = r->gen;
    if (!gen->a1111_encoders)
        return sd_set_error(SD_ERR_UNSUPPORTED, "prompt syntax a1111: %s pipelines take the plain "
                            "syntax only (A1111's syntax is for SD 1.x/2.x and SDXL)", gen->name);
    if (r->g.prompt_2 || r->g.negative_prompt_2)
        return sd_set_error(SD_ERR_ARG, "prompt syntax a1111: prompt_2 / negative_prompt_2 are not "
                            "taken (both encoders read the prompt, as in A1111)");
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
    int most = 1;
    for (int s = 0; s < a->sides; s++) {
        side *d = &a->s[s];
        d->n_enc = gen->a1111_encoders(r, s == 1, d->enc);
        SD_TRY(a1111_schedule(side_text(r, s), r->g.steps, &d->sched, &d->n));
        d->chunks = calloc((size_t)d->n * 2, sizeof *d->chunks);
        d->hidden = calloc((size_t)d->n, sizeof *d->hidden);
        d->pooled = calloc((size_t)d->n, sizeof *d->pooled);
        if (!d->chunks || !d->hidden || !d->pooled) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        for (int i = 0; i < d->n; i++)
            for (int k = 0; k < d->n_enc; k++) {
                const pl_clip_use *e = &d->enc[k];
                a1111_chunks *c = &d->chunks[i * 2 + k];
                SD_TRY(a1111_chunk(e->tok, d->sched[i].text, a->trig[e->index], a->n_trig[e->index], c));
                if (c->n_chunks > most) most = c->n_chunks;
            }
    }
    /* The longest prompt sets the length; a UNet takes any number of context tokens. */
    r->tokens = most * LEN;
    return SD_OK;
}

/* The empty prompt's chunk through each encoder of a side, into pad [LEN][dim]. */
static sd_status empty_chunk(const side *d, int dim, float *pad) {
    a1111_chunks c;
    int off = 0;
    for (int k = 0; k < d->n_enc; k++) {
        const int h = clip_text_get_config(d->enc[k].te)->hidden_size;
        float *z = malloc((size_t)LEN * h * sizeof *z);
        sd_status st = z ? a1111_chunk(d->enc[k].tok, "", NULL, 0, &c) : SD_ERR_NOMEM;
        if (st == SD_OK) {
            st = pl_a1111_encode_chunk(&d->enc[k], c.ids, c.weights, NULL, NULL, z, NULL);
            a1111_chunks_free(&c);
        }
        for (int t = 0; st == SD_OK && t < LEN; t++)
            memcpy(pad + (size_t)t * dim + off, z + (size_t)t * h, (size_t)h * sizeof *z);
        free(z);
        if (st == SD_ERR_NOMEM) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        SD_TRY(st);
        off += h;
    }
    return SD_OK;
}

/* Entry i's encoding into hidden [tokens][dim] and pooled, from the cache when it is there. */
static sd_status encode_entry(pl_run *r, const side *d, int i, const float *pad, float *hidden,
                              float *pooled) {
    const struct pl_a1111 *a = r->a1111;
    const int dim = r->dim, n_chunks = d->chunks[i * 2].n_chunks;
    const size_t n = (size_t)n_chunks * LEN * dim, pd = (size_t)r->pooled_dim;
    char *key = sd_strfmt("a1111|%s|%d,%d,%d,%d|emb=%d|%s", r->gen->name, d->enc[0].layer,
                          d->enc[0].final_norm, d->n_enc > 1 ? d->enc[1].layer : -1, d->n_enc,
                          r->p->n_embeddings, d->sched[i].text);
    float *all = malloc((n + pd) * sizeof *all);
    sd_status st = key && all ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK && !pl_cache_copy(r->p, key, all, n + pd)) {
        int off = 0;
        for (int k = 0; k < d->n_enc && st == SD_OK; k++) {
            const pl_clip_use *e = &d->enc[k];
            const a1111_chunks *c = &d->chunks[i * 2 + k];
            const int h = clip_text_get_config(e->te)->hidden_size;
            float *z = malloc((size_t)LEN * h * sizeof *z);
            if (!z) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            for (int ch = 0; ch < c->n_chunks && st == SD_OK; ch++) {
                const size_t at = (size_t)ch * LEN;
                st = pl_a1111_encode_chunk(e, c->ids + at, c->weights + at, c->vector + at,
                                           a->rows[e->index], z,
                                           e->pooled && ch == 0 && pd ? all + n : NULL);
                for (int t = 0; t < LEN && st == SD_OK; t++)
                    memcpy(all + (at + t) * dim + off, z + (size_t)t * h, (size_t)h * sizeof *z);
            }
            free(z);
            off += h;
        }
        if (st == SD_OK) pl_cache_put(r->p, key, all, n + pd);
    }
    if (st == SD_OK) {
        memcpy(hidden, all, n * sizeof *all);
        for (int ch = n_chunks; ch < r->tokens / LEN; ch++)
            memcpy(hidden + (size_t)ch * LEN * dim, pad, (size_t)LEN * dim * sizeof *pad);
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
    float *pad = malloc((size_t)LEN * r->dim * sizeof *pad);
    sd_status st = pad ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    for (int s = 0; s < a->sides && st == SD_OK; s++) {
        side *d = &a->s[s];
        if (d->n_enc) st = empty_chunk(d, r->dim, pad);
        for (int i = 0; i < d->n && st == SD_OK; i++) {
            for (int j = 0; j < i && !d->hidden[i]; j++) /* a text seen before: shared */
                if (!strcmp(d->sched[j].text, d->sched[i].text))
                    d->hidden[i] = d->hidden[j], d->pooled[i] = d->pooled[j];
            if (d->hidden[i]) continue;
            d->hidden[i] = calloc(emb, sizeof(float));
            d->pooled[i] = calloc(pd ? pd : 1, sizeof(float));
            if (!d->hidden[i] || !d->pooled[i]) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            else if (d->n_enc) st = encode_entry(r, d, i, pad, d->hidden[i], d->pooled[i]);
            /* n_enc 0: zeros (SDXL's force_zeros_for_empty_prompt) */
        }
    }
    free(pad);
    SD_TRY(st);
    for (int s = 0; s < a->sides; s++) { /* the callback sees each side's first conditioning */
        const sd_event_kind kind = s ? SD_EVENT_NEGATIVE_EMBEDS : SD_EVENT_PROMPT_EMBEDS;
        const bool second = pd && r->gen->pooled_event == PL_POOLED_AS_INDEX_1; /* SDXL */
        SD_TRY(pl_emit(&r->g, kind, 0, second ? 2 : 1, 0, a->s[s].hidden[0], 1, r->tokens, 1,
                       r->dim));
        if (second) SD_TRY(pl_emit(&r->g, kind, 1, 2, 0, a->s[s].pooled[0], 1, 1, 1, r->pooled_dim));
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
