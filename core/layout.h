/* Layout conversions between PyTorch's NCHW (how diffusers holds latents and noise, and how
 * reference files store them) and the engine's NHWC. */
#ifndef SD_LAYOUT_H
#define SD_LAYOUT_H

void layout_nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w);
void layout_nhwc_to_nchw(const float *src, float *dst, int n, int h, int w, int c);

#endif
