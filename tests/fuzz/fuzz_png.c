/* PNG decoding (size limits before allocation, text chunks, eXIf orientation applied). */
#include <stdlib.h>

#include "../../core/image_codec.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sd_image img = {0};
    int orientation = 1;
    char *text = NULL;
    if (image_png_decode("fuzz.png", data, size, &img, &orientation, "parameters", &text) == SD_OK) {
        (void)image_apply_orientation(&img, orientation);
        image_free(&img);
    }
    free(text);
    return 0;
}
