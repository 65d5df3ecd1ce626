/* Generation with A1111's prompt syntax (sd_gen_params.prompt_syntax = SD_PROMPT_A1111): the
 * conditioning of every scheduled text, encoded chunk by chunk with emphasis, and the switch
 * between them during the denoising loop (pipeline/prompt_a1111.c). */
#ifndef SD_PROMPT_A1111_H
#define SD_PROMPT_A1111_H

#include "generate.h"

/* After the family's check: parses and chunks both prompts, sets r->tokens to 77 x the most
 * chunks any scheduled text of either side needs (the others are padded with the empty prompt's
 * chunk, as A1111 pads cond and uncond), plus the family's T5 rows. Refuses families without
 * pl_generator.a1111_plan. */
sd_status pl_a1111_prepare(pl_run *r);
/* encode_prompts' work: each distinct text encoded once, r->context / r->pooled set for step 0. */
sd_status pl_a1111_encode(pl_run *r);
/* Before model call i: the conditioning of the sampler step that call belongs to
 * (A1111's reconstruct_cond_batch); a pl_loop.before_call hook (ctx: the pl_run). */
void pl_a1111_before_call(void *run, int i);
void pl_a1111_free(pl_run *r);

/* A1111's "Original" emphasis (modules/sd_emphasis.py, EmphasisOriginal.after_transformers) on
 * one chunk's encoder output z [len][h], in float32 as torch computes it: m = mean(z); z *= w per
 * token; z *= m / mean(z). */
void pl_a1111_emphasis(float *z, const double *weights, int len, int h);

/* One chunk through one encoder: ids as chunked (EOS padding; replaced by the tokenizer's pad
 * token after the first EOS where they differ, as process_tokens does for SD 2.x / OpenCLIP),
 * vector[] >= 0 marking embedding rows from `rows`; z [77][hidden] with emphasis; pooled (may be
 * NULL) the encoder's pooled output (no emphasis). */
sd_status pl_a1111_encode_chunk(const pl_clip_use *e, const int32_t *ids, const double *weights,
                                const int32_t *vector, const float *const *rows, float *z,
                                float *pooled);

#endif
