/* Test-only: writes an SD3 / SD3.5 diffusers folder as one single file in Stability's original
 * layout (model.diffusion_model.joint_blocks.N..., first_stage_model.*,
 * text_encoders.{clip_l,clip_g,t5xxl}.transformer.*), the inverse of what diffusers'
 * convert_sd3_transformer_checkpoint_to_diffusers reads: q/k/v concatenated into attn.qkv, the
 * final and last-context adaLN modulations stored (shift, scale). Written independently of the
 * library's convert/sd3_names.c (diffusers name -> original name here, the other way there), so a
 * shared misreading cannot pass unnoticed. */
#ifndef SD_TEST_SD3_WRITER_H
#define SD_TEST_SD3_WRITER_H

#include "../core/error.h"

/* `folder`'s transformer, vae, text_encoder and text_encoder_2 (and text_encoder_3 when
 * `with_t5`) into out_path; `extra_key` (or NULL) adds one zero tensor of that name, a key the
 * library must refuse by name. Scratch files go to `tmp_dir`. */
sd_status sd3w_write(const char *folder, const char *out_path, int with_t5, const char *extra_key,
                     const char *tmp_dir);

/* The diffusers folder diffusers' from_single_file builds from such a file, in `dir` (created):
 * `folder`'s components linked, but text_encoder (CLIP-L) with an identity text_projection, as
 * from_single_file sets it whatever the file holds. */
sd_status sd3w_reference_folder(const char *folder, const char *dir);

#endif
