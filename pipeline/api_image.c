/* Public image entry points: thin wrappers over core/image (PNG/JPEG through libpng and
 * libjpeg-turbo, written through a temporary file and a rename). */
#include "../core/image.h"

sd_status sd_image_read(const char *path, sd_image *out) { return image_read(path, out); }

sd_status sd_image_write(const char *path, const sd_image *img, const char *const *text,
                         int n_text, int quality) {
    return image_write(path, img, text, n_text, quality);
}

sd_status sd_image_alloc(sd_image *img, int width, int height) {
    return image_alloc(img, width, height);
}

void sd_image_free(sd_image *img) { image_free(img); }
