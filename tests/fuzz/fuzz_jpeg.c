/* JPEG decoding (size limits before allocation, APP1 Exif orientation) and the EXIF reader on
 * raw TIFF bytes. */
#include "../../core/image_codec.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sd_image img = {0};
    int orientation = 1;
    if (image_jpeg_decode("fuzz.jpg", data, size, &img, &orientation) == SD_OK) {
        (void)image_apply_orientation(&img, orientation);
        image_free(&img);
    }
    (void)image_exif_orientation(data, size);
    return 0;
}
