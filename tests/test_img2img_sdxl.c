/* SDXL image-to-image and inpainting against diffusers' StableDiffusionXLImg2ImgPipeline and
 * StableDiffusionXLInpaintPipeline (tools/reference/extra_refs.py's `sdxl-tiny.img2img`: Euler,
 * strength 0.6, 6 steps; `sdxl-tiny.inpaint`: Euler, the default strength 0.9999, 6 steps, no
 * negative prompt so force_zeros_for_empty_prompt applies). */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../include/sd.h"
#include "test.h"

int main(void) {
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sdxl-tiny/pipeline"), NULL));
    if (!p) return test_summary();
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fixture("extra/extra_runs.json")));
    static const char *const runs[] = {"sdxl-tiny.img2img", "sdxl-tiny.inpaint"};
    for (int i = 0; i < 2 && c.root; i++) {
        const cJSON *run = cJSON_GetObjectItem(c.root, runs[i]);
        CHECK(run != NULL, "extra_runs.json has no %s", runs[i]);
        if (!run) continue;
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s.", runs[i]);
        fixture_run fr;
        fixture_run_from_json(&fr, run);
        fixture_check_run(p, runs[i], &fr, "extra/extra_runs.safetensors", prefix);
        fixture_run_free(&fr);
    }
    cfg_close(&c);
    sd_pipeline_free(p);
    return test_summary();
}
