/* FluxPipeline's latent packing and position ids. */
#include "flux_internal.h"

static sd_status check_pack_args(int batch, int h, int w, int c, const char *what) {
    if (batch < 1 || h < 2 || w < 2 || c < 1 || h % 2 || w % 2)
        return sd_set_error(SD_ERR_ARG,
                            "%s: latents of %d x %d x %d (batch %d): sides must be even and "
                            "positive",
                            what, h, w, c, batch);
    return SD_OK;
}

/* The index pairs of _pack_latents' view(b, c, h/2, 2, w/2, 2).permute(0, 2, 4, 1, 3, 5):
 * packed element (b, y*(w/2)+x, ch*4 + dy*2 + dx) is latent element (b, 2y+dy, 2x+dx, ch). */
static void pack_map(const float *src, float *dst, int batch, int h, int w, int c, int to_packed) {
    const int gh = h / 2, gw = w / 2;
    for (int b = 0; b < batch; b++)
        for (int y = 0; y < gh; y++)
            for (int x = 0; x < gw; x++)
                for (int ch = 0; ch < c; ch++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            const long pi =
                                (((long)b * gh + y) * gw + x) * c * 4 + ch * 4 + dy * 2 + dx;
                            const long li = (((long)b * h + 2 * y + dy) * w + 2 * x + dx) * c + ch;
                            if (to_packed)
                                dst[pi] = src[li];
                            else
                                dst[li] = src[pi];
                        }
}

sd_status flux_pack_latents(const float *latents, int batch, int h, int w, int c, float *packed) {
    SD_TRY(check_pack_args(batch, h, w, c, "flux_pack_latents"));
    pack_map(latents, packed, batch, h, w, c, 1);
    return SD_OK;
}

sd_status flux_unpack_latents(const float *packed, int batch, int h, int w, int c, float *latents) {
    SD_TRY(check_pack_args(batch, h, w, c, "flux_unpack_latents"));
    pack_map(packed, latents, batch, h, w, c, 0);
    return SD_OK;
}

void flux_image_ids(int gh, int gw, float *ids) {
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            float *id = ids + ((long)y * gw + x) * 3;
            id[0] = 0.0f;
            id[1] = (float)y;
            id[2] = (float)x;
        }
}
