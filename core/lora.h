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
 * Every other key is refused, naming it (a LoRA half read would be a silently different model).
 * The merge is diffusers': W + scale * (alpha / rank) * up @ down, rank = down's first dimension,
 * alpha = rank when absent; summed in double over every LoRA of the set and rounded once to float.
 *
 * - kohya-ss SDXL files name the UNet in the original layout (lora_unet_input_blocks_*): mapped
 *   to diffusers names by lora_set_map_ldm_unet (core/lora_ldm.c) once the UNet config is known.
 * Not read: LyCORIS LoHa/LoKr/DoRA tensors: refused with a message naming the key. */
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

/* Before loading: a LoRA adapting a component the model lacks (text_encoder_2 on SD 1.x, a
 * transformer on a UNet model) is made for another family, an error saying so. `components`
 * lists the model's components, NULL-terminated. */
sd_status lora_set_check_components(const lora_set *s, const char *const *components);
/* After loading: a LoRA that matched nothing is an error naming the file and a key; a partial
 * match is logged (SD_LOG_WARN) with the counts. */
sd_status lora_set_check(const lora_set *s);

#endif
