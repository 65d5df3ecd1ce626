/* Textual-inversion embeddings: a safetensors file through sd_pipeline_add_embedding on the tiny
 * SD 1.5 pipeline (one [vectors][16] tensor) or SDXL one (clip_l + clip_g), picked by the first
 * byte. A file that loads adds tokens to the pipeline, so that pipeline is reloaded afterwards:
 * every input meets a fresh one. */
#include <stdio.h>
#include <stdlib.h>

#include "../../include/sd.h"
#include "fuzz.h"

static sd_pipeline *g_pipe[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int k = data[0] & 1;
    if (!g_pipe[k]) {
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/tests/fixtures/%s/pipeline", fuzz_root(),
                 k ? "sdxl-tiny" : "sd15-tiny");
        if (sd_pipeline_load(&g_pipe[k], dir, NULL) != SD_OK) abort();
    }
    const char *path = fuzz_file("trigger.safetensors", data + 1, size - 1);
    if (path && sd_pipeline_add_embedding(g_pipe[k], path, NULL) == SD_OK) {
        sd_pipeline_free(g_pipe[k]);
        g_pipe[k] = NULL;
    }
    return 0;
}
