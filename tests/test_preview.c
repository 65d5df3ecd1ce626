/* sd_latents_preview: step latents to a small RGB image through the family's linear
 * latent-to-RGB factors. The expected pixels are computed here from ComfyUI's published numbers
 * (comfy/latent_formats.py: SD15 latent_rgb_factors; SD3 latent_rgb_factors and
 * latent_rgb_factors_bias), copied below, not by calling the code under test: rgb = bias + x *
 * factors, then ((v + 1) / 2) clamped to [0, 1] times 255, truncated. Also the size (one pixel per
 * latent pixel), the first batch item only, clamping, and the channel check. */
#include <string.h>

#include "test.h"

/* ComfyUI's SD15 rows (R, G, B per latent channel). */
static const float sd15_rows[4][3] = {
    {0.3512f, 0.2297f, 0.3227f},
    {0.3250f, 0.4974f, 0.2350f},
    {-0.2829f, 0.1762f, 0.2721f},
    {-0.2120f, -0.2616f, -0.7177f},
};
/* ComfyUI's SD3 row of channel 15 and its bias. */
static const float sd3_row15[3] = {-0.1448f, -0.1463f, -0.1189f};
static const float sd3_bias[3] = {0.2394f, 0.2135f, 0.1925f};

static uint8_t by_hand(double v) {
    double u = (v + 1.0) / 2.0;
    if (u < 0) u = 0;
    if (u > 1) u = 1;
    return (uint8_t)(u * 255.0);
}

static void test_sd15(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (!p) return;
    /* batch 2, 2 x 3 latent pixels, 4 channels ([b][h][w][c]); item 1 is all 7s (it would clamp to
     * white if it were used). */
    enum { B = 2, H = 2, W = 3, C = 4 };
    float x[B * H * W * C];
    for (int i = 0; i < B * H * W * C; i++)
        x[i] = i < H * W * C ? 0.01f * (float)(i % 9) - 0.03f : 7.0f;
    const float px0[C] = {0.5f, -0.25f, 1.0f, 0.125f}; /* pixel (0, 0) */
    const float big[C] = {10, 10, 10, 10};            /* pixel (1, 1): clamps to 255 */
    const float neg[C] = {-10, -10, -10, -10};        /* pixel (1, 2): clamps to 0 */
    memcpy(x, px0, sizeof px0);
    memcpy(x + (1 * W + 1) * C, big, sizeof big);
    memcpy(x + (1 * W + 2) * C, neg, sizeof neg);
    const sd_tensor t = {x, B, H, W, C};
    sd_image img = {0};
    CHECK_OK(sd_latents_preview(p, &t, &img));
    CHECK(img.width == W && img.height == H, "preview size %dx%d, want the latent's %dx%d",
          img.width, img.height, W, H);
    if (img.rgb && img.width == W && img.height == H) {
        for (int k = 0; k < 3; k++) {
            double v = 0;
            for (int c = 0; c < C; c++) v += (double)px0[c] * sd15_rows[c][k];
            CHECK(img.rgb[k] == by_hand(v), "SD pixel (0,0) channel %d: %d, by hand %d (v %.5f)", k,
                  img.rgb[k], by_hand(v), v);
            CHECK(img.rgb[(1 * W + 1) * 3 + k] == 255, "large latents clamp to 255");
            CHECK(img.rgb[(1 * W + 2) * 3 + k] == 0, "negative latents clamp to 0");
        }
        /* A second hand-computed pixel, (0, 1), from the generated ramp. */
        const float *q = x + 1 * C;
        for (int k = 0; k < 3; k++) {
            double v = 0;
            for (int c = 0; c < C; c++) v += (double)q[c] * sd15_rows[c][k];
            CHECK(img.rgb[3 + k] == by_hand(v), "SD pixel (0,1) channel %d: %d, by hand %d", k,
                  img.rgb[3 + k], by_hand(v));
        }
        printf("ok   SD preview pixel (0,0) = %d %d %d\n", img.rgb[0], img.rgb[1], img.rgb[2]);
    }
    sd_image_free(&img);
    const sd_tensor wrong = {x, 1, 1, 1, 16};
    const sd_status st = sd_latents_preview(p, &wrong, &img);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "16 channels"), "16 channels on an SD "
          "pipeline: %s %s", sd_status_string(st), sd_last_error());
    CHECK(img.rgb == NULL, "no image after an error");
    sd_pipeline_free(p);
}

static void test_sd3(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3-tiny/pipeline"), NULL));
    if (!p) return;
    float x[16] = {0};
    x[15] = 1.0f;
    const sd_tensor t = {x, 1, 1, 1, 16};
    sd_image img = {0};
    CHECK_OK(sd_latents_preview(p, &t, &img));
    for (int k = 0; k < 3 && img.rgb; k++) {
        const double v = (double)sd3_bias[k] + (double)sd3_row15[k];
        CHECK(img.rgb[k] == by_hand(v), "SD3 channel %d: %d, by hand %d", k, img.rgb[k],
              by_hand(v));
    }
    if (img.rgb)
        printf("ok   SD3 preview (bias + channel 15) = %d %d %d\n", img.rgb[0], img.rgb[1],
               img.rgb[2]);
    sd_image_free(&img);
    const sd_tensor four = {x, 1, 2, 2, 4};
    CHECK(sd_latents_preview(p, &four, &img) == SD_ERR_ARG, "4 channels on an SD3 pipeline");
    sd_pipeline_free(p);
}

int main(void) {
    test_sd15();
    test_sd3();
    return test_summary();
}
