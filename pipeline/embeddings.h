/* Textual-inversion embeddings on a pipeline (pipeline/embeddings.c): loading, diffusers'
 * added tokens for the plain syntax, and the trigger table of A1111's syntax. */
#ifndef SD_EMBEDDINGS_H
#define SD_EMBEDDINGS_H

#include "../text_encoder/a1111_prompt.h"
#include "generate.h"
#include "pipeline_internal.h"

/* One embedding: its trigger word and its vectors per CLIP encoder ([0] text_encoder, [1]
 * text_encoder_2; NULL where the pipeline has no such encoder). */
struct pl_embedding {
    char *name;
    int n_vectors;
    float *vec[2]; /* [n_vectors][that encoder's hidden_size] */
};

/* sd_pipeline_add_embedding: trigger NULL takes the file's (its name, or a diffusers file's key). */
sd_status pl_embedding_add(sd_pipeline *p, const char *path, const char *trigger);
/* Every .safetensors file of dir (A1111's embeddings folder); pickled files are skipped, named. */
sd_status pl_embeddings_add_dir(sd_pipeline *p, const char *dir);
void pl_embeddings_free(sd_pipeline *p);

/* The plain syntax's multi-vector spelling (diffusers' maybe_convert_prompt): every "name" of a
 * multi-vector embedding becomes "name name_1 ... name_{n-1}". malloc'd (NULL: out of memory). */
char *pl_embeddings_expand(const sd_pipeline *p, const char *text);

/* The same for a run's four texts (plain syntax): r->g's prompt pointers become run-owned copies
 * where an embedding spells out; the caller's are put back into sd_result.used. */
sd_status pl_embeddings_expand_run(pl_run *r);

/* A1111's syntax: one trigger per embedding as `tok` tokenizes it, and rows[first_vector + k],
 * the k-th vector for encoder 0 (text_encoder) or 1 (text_encoder_2). Free with pl_triggers_free. */
sd_status pl_embeddings_triggers(const sd_pipeline *p, const clip_tokenizer *tok, int encoder,
                                 a1111_trigger **out, const float ***rows, int *n);
void pl_triggers_free(a1111_trigger *t, int n, const float **rows);

#endif
