/* sd-server's multipart/form-data bodies (POST /v1/images/edits): the input is the Content-Type
 * header, a NUL, then the body. The parts go where the edits handler sends them: the text fields
 * through the OpenAI form reader, image and mask through the PNG/JPEG decoders. */
#include <stdlib.h>

#include "../../server/images.h"
#include "../../server/multipart.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[2];
    size_t len[2];
    fuzz_server_init();
    fuzz_split(data, size, 2, part, len);
    char *ct = fuzz_cstr(part[0], len[0]);
    srv_form form;
    srv_error e;
    if (srv_form_parse(ct, part[1], len[1], &form, &e)) {
        const srv_limits lim = {2048, 2048, 150, 8};
        srv_request r;
        srv_request_init(&r);
        if (form.fields) (void)srv_request_from_openai(form.fields, true, &lim, &r, &e);
        srv_request_free(&r);
        sd_image img = {0};
        if (form.image && srv_image_decode(form.image, form.image_len, &img) == SD_OK)
            sd_image_free(&img);
        if (form.mask && srv_image_decode(form.mask, form.mask_len, &img) == SD_OK)
            sd_image_free(&img);
        srv_form_free(&form);
    }
    free(ct);
    return 0;
}
