/* A1111's chunking of one prompt text (modules/sd_hijack_clip.py,
 * FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line):
 *   - each emphasis piece is tokenized on its own (no BOS/EOS), its tokens take its weight;
 *   - a chunk holds 75 tokens; when it is full and the next token is not a comma, the tokens after
 *     the chunk's last comma move to the next chunk if that comma is at most 20 tokens back
 *     (opts.comma_padding_backtrack, default 20);
 *   - a BREAK closes the chunk (an empty one too); an embedding trigger takes its vectors' count
 *     of positions (id 0 as placeholder), starting a new chunk when it would not fit;
 *   - each chunk is BOS + 75 (padded with EOS, weight 1) + EOS; the last, partly filled chunk is
 *     only added when it holds tokens or is the only one (an empty prompt is one padded chunk).
 * One deliberate difference: A1111 leaves the embedding placements of tokens the comma rule moves
 * in the old chunk (their vectors then overwrite its padding, the moved placeholders stay id 0);
 * here they move with their tokens. */
#include <stdlib.h>
#include <string.h>

#include "a1111_prompt.h"

enum { COMMA_BACKTRACK = 20 };

/* The chunk being filled (at most 75 entries) and the finished chunks. */
typedef struct {
    int32_t ids[A1111_CHUNK_TOKENS];
    double weights[A1111_CHUNK_TOKENS];
    int32_t vector[A1111_CHUNK_TOKENS];
    int n;
    int last_comma;
    a1111_chunks *out;
    int cap;
    int32_t bos, eos;
} chunker;

static sd_status next_chunk(chunker *c) {
    a1111_chunks *o = c->out;
    if (o->n_chunks == c->cap) {
        const int cap = c->cap ? 2 * c->cap : 4;
        int32_t *ids = realloc(o->ids, (size_t)cap * A1111_CHUNK_LEN * sizeof *ids);
        if (ids) o->ids = ids;
        double *w = realloc(o->weights, (size_t)cap * A1111_CHUNK_LEN * sizeof *w);
        if (w) o->weights = w;
        int32_t *v = realloc(o->vector, (size_t)cap * A1111_CHUNK_LEN * sizeof *v);
        if (v) o->vector = v;
        if (!ids || !w || !v) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
        c->cap = cap;
    }
    const size_t at = (size_t)o->n_chunks++ * A1111_CHUNK_LEN;
    for (int i = 0; i < A1111_CHUNK_LEN; i++) {
        const int k = i - 1;
        const bool tok = k >= 0 && k < c->n;
        o->ids[at + i] = tok ? c->ids[k] : i == 0 ? c->bos : c->eos;
        o->weights[at + i] = tok ? c->weights[k] : 1.0;
        o->vector[at + i] = tok ? c->vector[k] : -1;
    }
    c->n = 0;
    c->last_comma = -1;
    return SD_OK;
}

static void append(chunker *c, int32_t id, double weight, int32_t vector) {
    c->ids[c->n] = id, c->weights[c->n] = weight, c->vector[c->n] = vector;
    c->n++;
}

/* The longest trigger whose ids start at tokens[pos], or NULL. */
static const a1111_trigger *trigger_at(const a1111_trigger *t, int n_t, const int32_t *tokens,
                                       int n, int pos) {
    const a1111_trigger *best = NULL;
    for (int k = 0; k < n_t; k++) {
        if (t[k].n_ids < 1 || pos + t[k].n_ids > n || (best && t[k].n_ids <= best->n_ids)) continue;
        if (!memcmp(tokens + pos, t[k].ids, (size_t)t[k].n_ids * sizeof *tokens)) best = &t[k];
    }
    return best;
}

/* The tokens of one piece (tokenize_line's inner loop). */
static sd_status chunk_piece(chunker *c, const int32_t *tokens, int n, double weight,
                             int32_t comma, const a1111_trigger *trig, int n_trig) {
    int pos = 0;
    while (pos < n) {
        const int32_t token = tokens[pos];
        if (token == comma) {
            c->last_comma = c->n;
        } else if (c->n == A1111_CHUNK_TOKENS && c->last_comma != -1 &&
                   c->n - c->last_comma <= COMMA_BACKTRACK) {
            chunker moved = *c; /* the tokens after the comma go to the next chunk */
            const int cut = c->last_comma + 1;
            c->n = cut;
            SD_TRY(next_chunk(c));
            for (int k = cut; k < moved.n; k++)
                append(c, moved.ids[k], moved.weights[k], moved.vector[k]);
        }
        if (c->n == A1111_CHUNK_TOKENS) SD_TRY(next_chunk(c));
        const a1111_trigger *t = trigger_at(trig, n_trig, tokens, n, pos);
        if (!t) {
            append(c, token, weight, -1);
            pos++;
            continue;
        }
        if (c->n + t->n_vectors > A1111_CHUNK_TOKENS) SD_TRY(next_chunk(c));
        for (int k = 0; k < t->n_vectors && c->n < A1111_CHUNK_TOKENS; k++)
            append(c, 0, weight, t->first_vector + k);
        pos += t->n_ids;
    }
    return SD_OK;
}

sd_status a1111_chunk(const clip_tokenizer *tok, const char *text, const a1111_trigger *triggers,
                      int n_triggers, a1111_chunks *out) {
    memset(out, 0, sizeof *out);
    for (int k = 0; k < n_triggers; k++)
        if (triggers[k].n_vectors < 1 || triggers[k].n_vectors > A1111_CHUNK_TOKENS)
            return sd_set_error(SD_ERR_ARG, "prompt: an embedding of %d vectors (1 to %d fit a "
                                "chunk)", triggers[k].n_vectors, A1111_CHUNK_TOKENS);
    chunker *c = calloc(1, sizeof *c);
    if (!c) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
    c->out = out, c->last_comma = -1;
    c->bos = clip_tokenizer_bos_id(tok), c->eos = clip_tokenizer_eos_id(tok);
    a1111_piece *pieces = NULL;
    int n_pieces = 0, n_ids = 0;
    int32_t *ids = NULL, comma = -1;
    /* The comma's id: vocab[",</w>"], as the tokenizer spells a lone comma. */
    sd_status st = clip_tokenize_vocab(tok, ",", &ids, &n_ids);
    if (st == SD_OK && n_ids == 3) comma = ids[1];
    free(ids);
    if (st == SD_OK) st = a1111_parse_attention(text, &pieces, &n_pieces);
    for (int p = 0; st == SD_OK && p < n_pieces; p++) {
        if (pieces[p].is_break) {
            st = next_chunk(c);
            continue;
        }
        ids = NULL;
        st = clip_tokenize_vocab(tok, pieces[p].text, &ids, &n_ids); /* BOS ... EOS */
        if (st == SD_OK)
            st = chunk_piece(c, ids + 1, n_ids - 2, pieces[p].weight, comma, triggers, n_triggers);
        free(ids);
    }
    if (st == SD_OK && (c->n > 0 || out->n_chunks == 0)) st = next_chunk(c);
    a1111_pieces_free(pieces, n_pieces);
    free(c);
    if (st != SD_OK) a1111_chunks_free(out);
    return st;
}

void a1111_chunks_free(a1111_chunks *c) {
    free(c->ids), free(c->weights), free(c->vector);
    memset(c, 0, sizeof *c);
}
