/* transformers' T5EncoderModel in float32 (the text encoder of FLUX.1 and SD3: T5 v1.1 / FLAN
 * with gated-GELU feed-forward; the original ReLU T5 also works), from a text_encoder folder:
 * config.json + model.safetensors (F32/F16/BF16, sharded or not). The token table is `shared` or
 * `encoder.embed_tokens` (tied; either name). */
#ifndef SD_T5_ENCODER_H
#define SD_T5_ENCODER_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/error.h"
#include "../core/weights.h"

typedef struct {
    int vocab_size, d_model, d_kv, num_heads, d_ff, num_layers;
    int num_buckets, max_distance; /* relative_attention_num_buckets / _max_distance */
    float layer_norm_eps;
    bool gated;         /* is_gated_act: wi_0 (activated) * wi_1, else a single wi */
    char dense_act[32]; /* "gelu_new", "relu", "gelu", "gelu_pytorch_tanh", "silu" */
} t5_encoder_config;

typedef struct t5_encoder t5_encoder;

/* Weights held as `policy` says (NULL: the default; core/weights.h). */
sd_status t5_encoder_load(t5_encoder **out, const char *dir, const weights_policy *policy);
void t5_encoder_free(t5_encoder *m);
/* Low-memory mode between uses: as clip_text_release. */
void t5_encoder_release(t5_encoder *m);
const t5_encoder_config *t5_encoder_get_config(const t5_encoder *m);

/* Runs `batch` sequences of `len` ids (row-major ids[batch][len], each in [0, vocab_size)) and
 * writes last_hidden_state (after the final layer norm) to hidden_out[batch][len][d_model].
 * Every position attends to every position (no attention mask: FluxPipeline and
 * StableDiffusion3Pipeline call the encoder without one, so padding tokens take part). A model runs
 * one encode at a time (it owns its scratch). */
sd_status t5_encoder_encode(t5_encoder *m, const int32_t *ids, int batch, int len,
                            float *hidden_out);

/* How many t5_encoder_encode calls completed since loading (what sd_pipeline_stats reports). */
long t5_encoder_encode_calls(const t5_encoder *m);

/* transformers' _relative_position_bucket for a bidirectional encoder: the bucket of
 * relative_position = key position - query position. Exposed for tests. */
int t5_relative_bucket(int relative_position, int num_buckets, int max_distance);

#endif
