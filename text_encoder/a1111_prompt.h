/* AUTOMATIC1111's prompt syntax (stable-diffusion-webui), as people write prompts on the web:
 *
 *   emphasis      (text) x1.1, [text] /1.1, (text:1.3), nested (multiplied), \( \) \[ \] \\
 *                 literal; unbalanced brackets are tolerated (an unclosed one weights the rest
 *                 of the prompt, a stray closing one is text); "BREAK" starts a new chunk
 *   chunks        75 tokens each between BOS and EOS, padded with EOS; a chunk that fills up
 *                 moves the words after its last comma (within 20 tokens) to the next one
 *   editing       [from:to:when], [to:when], [from::when] (when: steps, or a fraction of the
 *                 steps when written with a "."), alternation [a|b|c] (one per step)
 *
 * Three steps, one file each: a1111_schedule.c (which text applies at which step),
 * a1111_attention.c (a text's weighted pieces), a1111_chunks.c (pieces to token chunks). Where each
 * rule comes from is said beside it; tools/reference/a1111_prompts.py is an independent Python
 * version the tests compare with (tests/fixtures/extra/a1111_prompts.json). */
#ifndef SD_A1111_PROMPT_H
#define SD_A1111_PROMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/error.h"
#include "clip_tokenizer.h"

/* ---- prompt editing: modules/prompt_parser.py, get_learned_conditioning_prompt_schedules ---- */

typedef struct {
    int end;    /* the last sampler step (A1111's end_at_step) this text applies to */
    char *text; /* the prompt with every [from:to:when] and [a|b] resolved */
} a1111_sched_entry;

/* The texts of `prompt` over `steps` steps, in step order; *n >= 1 (a prompt without editing, or
 * one the grammar does not take, is one entry: itself). Free with a1111_schedule_free. */
sd_status a1111_schedule(const char *prompt, int steps, a1111_sched_entry **out, int *n);
void a1111_schedule_free(a1111_sched_entry *e, int n);
/* The entry that applies at sampler step `step` (0-based), as A1111's reconstruct_cond_batch:
 * the first whose end is >= step (so an entry ending at step 3 also serves step 3). */
int a1111_schedule_pick(const a1111_sched_entry *e, int n, int step);

/* ---- emphasis: modules/prompt_parser.py, parse_prompt_attention ---- */

typedef struct {
    char *text;
    double weight; /* float64, multiplied in A1111's order so the values are Python's */
    bool is_break; /* a BREAK (A1111: the piece ["BREAK", -1]) */
} a1111_piece;

/* The weighted pieces of `text`, neighbours of equal weight merged; never empty (an empty text is
 * one empty piece of weight 1). Free with a1111_pieces_free. */
sd_status a1111_parse_attention(const char *text, a1111_piece **out, int *n);
void a1111_pieces_free(a1111_piece *p, int n);
/* The text with emphasis removed (the pieces joined, BREAK as a space): what T5 reads. malloc'd. */
char *a1111_plain_text(const a1111_piece *p, int n);

/* ---- chunks: modules/sd_hijack_clip.py, FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line ---- */

enum { A1111_CHUNK_TOKENS = 75, A1111_CHUNK_LEN = 77 };

/* A textual-inversion trigger: its token ids (the trigger word tokenized without BOS/EOS) and how
 * many vectors it stands for; first_vector numbers its first vector in the caller's table. */
typedef struct {
    const int32_t *ids;
    int n_ids;
    int n_vectors;
    int first_vector;
} a1111_trigger;

typedef struct {
    int n_chunks;
    int32_t *ids;    /* [n_chunks][77]: BOS, tokens (0 where an embedding vector goes), EOS */
    double *weights; /* [n_chunks][77]: 1 at BOS, EOS and padding */
    int32_t *vector; /* [n_chunks][77]: the table's vector for that position, or -1 */
} a1111_chunks;

/* Chunks of one (scheduled) text. Triggers are matched on token ids within each piece, the
 * longest first (A1111's EmbeddingDatabase.find_embedding_at_position). */
sd_status a1111_chunk(const clip_tokenizer *tok, const char *text, const a1111_trigger *triggers,
                      int n_triggers, a1111_chunks *out);
void a1111_chunks_free(a1111_chunks *c);

#endif
