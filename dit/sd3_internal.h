/* The SD3 model's parts, shared by sd3.c (config, embeddings, output) and sd3_blocks.c (the joint
 * transformer blocks). Not a public header. */
#ifndef SD_SD3_INTERNAL_H
#define SD_SD3_INTERNAL_H

#include "../core/arena.h"
#include "../core/weights.h"
#include "../nn/layers.h"
#include "sd3.h"

/* One attention stream's projections. q, k and v are stacked into one [3 * dim][dim] weight so a
 * single GEMM writes [q | k | v] token rows that the attention kernel reads through strides. */
typedef struct {
    nn_linear qkv;
    nn_linear out;          /* to_out.0 / to_add_out; unloaded in the last block's text stream */
    float *norm_q, *norm_k; /* [head_dim] RMSNorm weights, qk_norm only */
} sd3_attn_proj;

typedef struct {
    bool context_pre_only; /* the last block: text only gives keys and values, and is not updated */
    bool dual;             /* SD3.5: attn2, a second image self-attention */
    nn_linear norm1;       /* [6 dim][dim] AdaLayerNormZero, [9 dim][dim] SD35AdaLayerNormZeroX */
    nn_linear norm1_ctx;   /* [6 dim][dim] AdaLayerNormZero, [2 dim][dim] AdaLayerNormContinuous */
    sd3_attn_proj img;     /* attn.to_q/k/v, to_out.0, norm_q/k */
    sd3_attn_proj txt;     /* attn.add_q/k/v_proj, to_add_out, norm_added_q/k */
    sd3_attn_proj img2;    /* attn2.*, dual only */
    nn_linear ff1, ff2;    /* ff.net.0.proj [4 dim][dim], ff.net.2 [dim][4 dim] */
    nn_linear ffc1, ffc2;  /* ff_context, not in the last block */
} sd3_block;

struct sd3_model {
    sd3_config cfg;
    /* Kept open for pos_embed.pos_embed, read a crop at a time: SD3.5's 384 x 384 x 1536 table
     * would take 900 MB as float32, for the 4096 rows a 1024 x 1024 image uses. */
    sd_weights w;
    const st_tensor *pos_stored; /* [1][max^2][dim] as stored; NULL: computed like the buffer */
    nn_conv2d patch;             /* pos_embed.proj: conv p x p stride p == a Linear over patches */
    nn_linear t_lin1, t_lin2;    /* time_text_embed.timestep_embedder.linear_1/2 */
    nn_linear p_lin1, p_lin2;    /* time_text_embed.text_embedder.linear_1/2 */
    nn_linear ctx_embed; /* context_embedder [caption_projection_dim][joint_attention_dim] */
    sd3_block *blocks;   /* [num_layers] */
    nn_linear norm_out;  /* [2 dim][dim]: scale, then shift */
    nn_linear proj_out;  /* [p * p * out_channels][dim] */
    sd_arena scratch;
};

/* Sizes of one forward call, passed to the blocks. */
typedef struct {
    int batch, n_img, n_txt; /* tokens per batch item */
    int dim, heads, head_dim;
} sd3_dims;

sd_status sd3_block_load(sd3_block *blk, const sd_weights *w, const sd3_config *c, int index);
void sd3_block_free(sd3_block *blk);

/* One JointTransformerBlock: img [batch][n_img][dim] and txt [batch][n_txt][dim] are updated in
 * place (txt is left as is by the last block); silu_temb [batch][dim] is silu of the conditioning
 * embedding, shared by every modulation. Fails only when scratch memory runs out. */
sd_status sd3_block_forward(const sd3_block *blk, const sd3_dims *d, float *img, float *txt,
                            const float *silu_temb, sd_arena *scratch);

#endif
