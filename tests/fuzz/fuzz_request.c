/* The server's request parsing, no sockets: a JSON body through the A1111 (txt2img, img2img) and
 * OpenAI (JSON, form) readers, base64 images included, then the prompt's <lora:...> tags against
 * an empty LoRA folder. */
#include <stdlib.h>

#include "../../core/config.h"
#include "../../server/request.h"
#include "fuzz.h"

static void one(const cJSON *body, int api, bool flag) {
    const srv_limits lim = {2048, 2048, 150, 8};
    srv_request r;
    srv_error e;
    srv_request_init(&r);
    bool ok = api == 0 ? srv_request_from_a1111(body, flag, &lim, &r, &e)
                       : srv_request_from_openai(body, flag, &lim, &r, &e);
    if (ok) (void)srv_request_take_loras(&r, fuzz_dir(), &e);
    srv_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_server_init();
    char *text = fuzz_cstr(data, size);
    cJSON *body = NULL;
    if (sd_json_parse(text, "request", &body) == SD_OK) {
        for (int api = 0; api < 2; api++) {
            one(body, api, false);
            one(body, api, true);
        }
        cJSON_Delete(body);
    }
    int w, h;
    (void)srv_parse_size(text, &w, &h);
    free(text);
    return 0;
}
