/* CLIPTextModel and CLIPTextModelWithProjection (transformers), from a text_encoder folder:
 * config.json + model.safetensors, with or without the `text_model.` key prefix. */
#ifndef SD_CLIP_TEXT_H
#define SD_CLIP_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/error.h"
#include "../core/weights.h"

typedef struct {
    int vocab_size, hidden_size, intermediate_size, num_layers, num_heads;
    int max_position_embeddings, projection_dim;
    int eos_token_id;
    float layer_norm_eps;
    bool with_projection; /* CLIPTextModelWithProjection: text_projection [projection_dim][hidden] */
    char hidden_act[32];  /* "quick_gelu" or "gelu" (also accepts "gelu_new"/"gelu_pytorch_tanh") */
} clip_text_config;

typedef struct clip_text clip_text;

/* The class is config.json's architectures[0]; without it, a `text_projection.weight` tensor makes
 * the model a CLIPTextModelWithProjection. Weights held as `policy` says (NULL: the default;
 * core/weights.h). */
sd_status clip_text_load(clip_text **out, const char *dir, const weights_policy *policy);
/* Same, with the class given by the pipeline's model_index.json ("CLIPTextModel" or
 * "CLIPTextModelWithProjection"), which is what diffusers instantiates whatever config.json says;
 * NULL decides as clip_text_load does. Any other name is an SD_ERR_UNSUPPORTED. */
sd_status clip_text_load_class(clip_text **out, const char *dir, const char *class_name,
                              const weights_policy *policy);
void clip_text_free(clip_text *m);
/* Low-memory mode between uses: frees the scratch memory and gives back the mapped weight pages
 * (weights held as stored fault back in on the next encode; results are unchanged). */
void clip_text_release(clip_text *m);
const clip_text_config *clip_text_get_config(const clip_text *m);

/* Runs `batch` sequences of `len` ids (len <= max_position_embeddings).
 *
 * hidden_out [batch][len][hidden]: hidden_states[layer] in transformers' numbering (0 = the
 * embeddings, k = output of encoder layer k, num_layers = the last layer's output), passed through
 * the final layer norm when `final_norm` is set. So:
 *   SD 1.x/2.x, no clip skip:  layer = num_layers,            final_norm = true (last_hidden_state)
 *   SD 1.x/2.x, clip_skip k:   layer = num_layers - k,        final_norm = true
 *   SDXL / SD3 (penultimate):  layer = num_layers - 1 - k,    final_norm = false
 * pooled_out (may be NULL) [batch][projection_dim or hidden]: the final-norm hidden state at the
 * first EOS token (transformers' rule, including its legacy argmax when eos_token_id == 2), times
 * text_projection for the WithProjection model. hidden_out may be NULL when only pooled is needed.
 * Ids must lie in [0, vocab_size). A model runs one encode at a time (it owns its scratch). */
sd_status clip_text_encode(clip_text *m, const int32_t *ids, int batch, int len, int layer,
                           bool final_norm, float *hidden_out, float *pooled_out);

/* The same, with token embeddings given for some positions (textual inversion): rows[b * len + i],
 * when rows and it are not NULL, is the [hidden] vector used instead of token_embedding[ids[...]];
 * there the id may lie outside the vocabulary (an added token), and it still decides the pooling
 * position as the id of that token (A1111 passes 0 there, diffusers the added token's id). */
sd_status clip_text_encode_rows(clip_text *m, const int32_t *ids, const float *const *rows,
                                int batch, int len, int layer, bool final_norm, float *hidden_out,
                                float *pooled_out);

/* Appends n token embeddings [n][hidden] for the ids vocab_size + (those added before) ...: the
 * token table grown as diffusers' load_textual_inversion grows it (resize_token_embeddings). */
sd_status clip_text_add_rows(clip_text *m, const float *rows, int n);
/* The token table's size: config vocab_size plus the rows added. */
int clip_text_vocab_size(const clip_text *m);

/* How many clip_text_encode calls completed since loading (what sd_pipeline_stats reports). */
long clip_text_encode_calls(const clip_text *m);

#endif
