/* model_index.json and component configs: the same bytes as a pipeline's model_index.json and as
 * a UNet's and a FLUX transformer's config.json, read by the real readers. */
#include "../../dit/flux_internal.h"
#include "../../pipeline/model_index.h"
#include "../../unet/unet.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_file("model_index.json", data, size) || !fuzz_file("config.json", data, size)) return 0;
    model_index mi;
    if (model_index_load(&mi, fuzz_dir()) == SD_OK) model_index_free(&mi);
    unet_config uc;
    (void)unet_config_read(&uc, fuzz_dir());
    flux_config fc;
    (void)flux_read_config(fuzz_dir(), &fc);
    return 0;
}
