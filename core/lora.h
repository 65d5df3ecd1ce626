/* A set of LoRA files opened for one pipeline load, merged into the weights as the layers load
 * them (weights_read_f32, through weights_policy.lora).
 *
 * Key formats read (all normalised to (component, module name with '.' written as '_'), which is
 * how kohya-ss names modules, so one lookup serves every format):
 * - kohya-ss / A1111: lora_unet_<module>, lora_te_ / lora_te1_ <module> (text_encoder), lora_te2_
 *   (text_encoder_2), each with .lora_down.weight, .lora_up.weight and optional .alpha; LoCon /
 *   LyCORIS conv layers are the same keys with a [r][cin][kh][kw] down and a [cout][r][1][1] up;
 * - diffusers / PEFT: unet.<module>, text_encoder.<module>, text_encoder_2.<module>,
 *   transformer.<module> with .lora_A.weight / .lora_B.weight (or .lora.down.weight /
 *   .lora.up.weight) and optional .alpha; old diffusers attention-processor files
 *   (<attn>.processor.to_q_lora.down.weight, to_out_lora for to_out.0).
 * - FLUX.1 in Black Forest Labs' module names: kohya-ss lora_unet_double_blocks_N_img_attn_qkv
 *   (single_blocks_N_linear1, img_in, final_layer_linear, ...) and ComfyUI / BFL
 *   diffusion_model.double_blocks.N.img_attn.qkv, with either down/up naming: mapped to the
 *   diffusers transformer's modules (core/lora_flux.c), a fused qkv / linear1 split by rows of up;
 *   XLabs' double_blocks.N.processor.qkv_lora1.down.weight / .up.weight likewise.
 * Every other key is refused, naming it (a LoRA half read would be a silently different model).
 * The merge is diffusers': W + scale * (alpha / rank) * up @ down, rank = down's first dimension,
 * alpha = rank when absent; summed in double over every LoRA of the set and rounded once to float.
 *
 * - kohya-ss SDXL files name the UNet in the original layout (lora_unet_input_blocks_*): mapped
 *   to diffusers names by lora_set_map_ldm_unet (core/lora_ldm.c) once the UNet config is known.
 * - LyCORIS LoHa (.hada_w1_a / _w1_b / _w2_a / _w2_b) and LoKr (.lokr_w1 or .lokr_w1_a / _w1_b,
 *   .lokr_w2 or .lokr_w2_a / _w2_b), under the kohya-ss prefixes, with optional .alpha: their
 *   deltas as A1111 builds them (core/lora_lycoris.c), added like a LoRA's.
 * Not read: DoRA (dora_scale) and the Tucker forms (hada_t1/t2, lokr_t1/t2): refused, naming the
 * key.
 * One difference from diffusers: a FLUX kohya file's lora_te2_ (T5) modules are merged into
 * text_encoder_2 (T5's names match), where diffusers drops them with a warning. */
#ifndef SD_LORA_H
#define SD_LORA_H

#include <stdbool.h>

#include "safetensors.h"

typedef struct lora_set lora_set;

/* Opens n files (mapped, read-only) with their scales, parses and checks their keys. Errors name
 * the file and the key. */
sd_status lora_set_open(lora_set **out, const char *const *paths, const float *scales, int n);
void lora_set_free(lora_set *s); /* NULL is fine */
/* Gives back the resident pages of the files (after the merge; later reads fault them back). */
void lora_set_release(const lora_set *s);

/* Whether any LoRA of the set changes the tensor `name` (e.g. "down_blocks.0...to_q.weight") of
 * `component` ("unet", "text_encoder", ...). */
bool lora_set_has(const lora_set *s, const char *component, const char *name);

/* Adds every delta for (component, name) to `w`, the float32 values of tensor `t` as read, with
 * the shapes checked (errors name both tensors). Marks the modules used. `model_file` is for
 * messages. Nothing to do returns SD_OK. On error `w` is unchanged. */
sd_status lora_set_apply(lora_set *s, const char *component, const char *name, const st_tensor *t,
                         const char *model_file, float *w);

/* Whether UNet modules are named in the original (LDM) layout, and their mapping to diffusers
 * names for a UNet of `layers_per_block` whose up blocks have attention where up_attn[b] (n_up
 * blocks). A name that does not map is an error naming the key. */
bool lora_set_has_ldm_unet(const lora_set *s);
sd_status lora_set_map_ldm_unet(lora_set *s, int layers_per_block, const bool *up_attn, int n_up);
/* core/lora_ldm.c: one module name (underscored, without lora_unet_); false when it is not an
 * LDM UNet name this mapping knows. */
bool lora_ldm_is_unet_key(const char *key);
bool lora_ldm_unet_key(const char *key, int layers_per_block, const bool *up_attn, int n_up,
                       char *out, size_t size);

/* core/lora_flux.c: the diffusers modules one FLUX.1 module in BFL naming (underscored, e.g.
 * "double_blocks_0_img_attn_qkv") adapts: how many (0: not a FLUX.1 module), each with the part of
 * the fused up it takes: part `part` of `n_parts` equal row blocks (n_parts 0: all of up), or with
 * has_tail, blocks of the model tensor's rows and the last part the rows left at the end
 * (linear1 = q, k, v, mlp); swap_halves: up's two row halves swapped; ignore_alpha: scale 1 as
 * diffusers' kohya conversion applies to final_layer. lora_flux_is_key: whether the name starts
 * like a FLUX.1 transformer module (double_blocks_, single_blocks_, img_in, final_layer_, ...). */
typedef struct {
    char key[128];
    int part, n_parts;
    bool has_tail, swap_halves, ignore_alpha;
} lora_flux_target;
int lora_flux_targets(const char *key, lora_flux_target out[4]);
bool lora_flux_is_key(const char *key);
/* Whether the set has a FLUX.1 LoRA in BFL naming, for the family check. */
bool lora_set_is_flux(const lora_set *s);

/* core/lora_lycoris.c, for core/lora.c: a LoHa or LoKr module's tensors (ly[LY_*], NULL where
 * absent), the name of a missing one (NULL: complete), the rank alpha divides by (0: the scale is
 * 1 whatever alpha), and its delta for a [rows][cols] weight (a convolution's taken as
 * [cout][cin*kh*kw]) one row at a time, in double, before the scale. open checks the shapes
 * (errors name the LoRA file `path`, a factor and the model's tensor `name`). */
typedef enum { LORA_KIND_LORA, LORA_KIND_LOHA, LORA_KIND_LOKR } lora_kind;
enum {
    LY_HADA_W1A, LY_HADA_W1B, LY_HADA_W2A, LY_HADA_W2B,
    LY_LOKR_W1, LY_LOKR_W1A, LY_LOKR_W1B, LY_LOKR_W2, LY_LOKR_W2A, LY_LOKR_W2B,
    LY_N
};
typedef struct lora_lycoris lora_lycoris;
const char *lora_lycoris_missing(lora_kind kind, const st_tensor *const ly[LY_N]);
int64_t lora_lycoris_dim(lora_kind kind, const st_tensor *const ly[LY_N]);
sd_status lora_lycoris_open(lora_lycoris **out, lora_kind kind, const st_tensor *const ly[LY_N],
                            int64_t rows, int64_t cols, const char *path, const char *name);
void lora_lycoris_row(const lora_lycoris *c, int64_t o, double *row);
void lora_lycoris_free(lora_lycoris *c);

/* Which components the set adapts: whether it has a module of `component`. */
bool lora_set_touches(const lora_set *s, const char *component);

/* Before loading: a LoRA adapting a component the model lacks (text_encoder_2 on SD 1.x, a
 * transformer on a UNet model) is made for another family, an error saying so; so is a FLUX.1
 * LoRA in BFL naming on a model that is not FLUX.1 (`flux_model` false). `components` lists the
 * model's components, NULL-terminated. */
sd_status lora_set_check_components(const lora_set *s, const char *const *components,
                                    bool flux_model);
/* After loading: a LoRA that matched nothing is an error naming the file and a key; a partial
 * match is logged (SD_LOG_WARN) with the counts. */
sd_status lora_set_check(const lora_set *s);

#endif
