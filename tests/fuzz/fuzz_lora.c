/* LoRA files: a safetensors file through lora_set_open (kohya / diffusers / PEFT / LyCORIS key
 * recognition), the LDM UNet key mapping of SD 1.5's layout, and the set's checks. */
#include <stdbool.h>

#include "../../core/lora.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("lora.safetensors", data, size);
    if (!path) return 0;
    lora_set *s = NULL;
    const char *paths[1] = {path};
    const float scales[1] = {0.75f};
    if (lora_set_open(&s, paths, scales, 1) != SD_OK) return 0;
    const bool up_attn[4] = {false, true, true, true};
    if (lora_set_has_ldm_unet(s)) (void)lora_set_map_ldm_unet(s, 2, up_attn, 4);
    (void)lora_set_has(s, "unet", "conv_in.weight");
    (void)lora_set_check(s);
    lora_set_free(s);
    return 0;
}
