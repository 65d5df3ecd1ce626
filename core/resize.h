/* Image resizing as diffusers' image processors do it, so that a resized init image or mask holds
 * the same 8-bit values the Python pipeline sees:
 *
 * - resize_u8: Pillow's Image.resize for 8-bit images (the processors' default resample is
 *   LANCZOS). LANCZOS is Pillow's two-pass convolution: the horizontal pass first, rounded to 8 bits
 *   in between, then the vertical pass; coefficients computed in double, normalised to sum 1,
 *   then fixed-point (22 fraction bits) with rounding half up and clipping to 0..255. NEAREST is
 *   Pillow's affine scale: source index (int)((k + 0.5) * in/out), accumulated as Pillow
 *   accumulates it. Unchanged sizes copy, as Pillow does.
 * - resize_torch_nearest: torch.nn.functional.interpolate(mode="nearest") on float maps (diffusers
 *   brings the inpainting mask to the latent grid with it). */
#ifndef SD_RESIZE_H
#define SD_RESIZE_H

#include <stdint.h>

#include "error.h"
#include "image.h"

typedef enum { RESIZE_NEAREST, RESIZE_LANCZOS } resize_filter;

/* src [sh][sw][channels] -> dst [dh][dw][channels], channels 1..4 (each band filtered alone, as
 * Pillow's RGB/RGBX/L modes do). Sides 1..IMAGE_MAX_SIDE. */
sd_status resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh,
                    resize_filter filter);

/* An RGB image resized into a new one (*out allocated; image_free it). */
sd_status resize_image(const sd_image *src, int width, int height, resize_filter filter,
                       sd_image *out);

/* Pillow's convert("L"): (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16 per pixel. */
void resize_rgb_to_gray(const uint8_t *rgb, int width, int height, uint8_t *gray);

/* torch nearest interpolation of src [sh][sw][c] to dst [dh][dw][c]: source index
 * min(floor(i * (float)in / out), in - 1), with torch's shortcuts for equal and doubled sizes. */
void resize_torch_nearest(const float *src, int sh, int sw, int c, float *dst, int dh, int dw);

#endif
