/* Single-file checkpoints: an LDM / SD3 safetensors header through the family detection and key
 * mapping (ldm_checkpoint_open), then every component's source opened. */
#include "../../convert/ldm_source.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("model.safetensors", data, size);
    if (!path) return 0;
    ldm_checkpoint c;
    if (ldm_checkpoint_open(&c, path) != SD_OK) return 0;
    static const char *const parts[] = {"unet", "vae", "text_encoder", "text_encoder_2",
                                        "text_encoder_3", "transformer"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        (void)ldm_checkpoint_source(&c, parts[i]);
    ldm_checkpoint_close(&c);
    return 0;
}
