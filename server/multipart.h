/* multipart/form-data bodies (RFC 7578), as POST /v1/images/edits takes them: a pure function of
 * the body's bytes and its Content-Type, so the fuzzer (tests/fuzz/fuzz_multipart.c) reaches the
 * same code the server runs. The server reads the whole body first (within --max-body-mb), as it
 * does for JSON, then splits it here. */
#ifndef SRV_MULTIPART_H
#define SRV_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "request.h"

/* A text field's most bytes: a prompt is far shorter (SD_PROMPT_MAX_BYTES); more is refused with
 * 413 rather than copied. */
#define SRV_FORM_TEXT_MAX (1 << 20)
/* Parts in one body: the edits form has a dozen fields; a body of thousands of empty parts is
 * refused before it builds a JSON object of them. */
#define SRV_FORM_MAX_PARTS 256

typedef struct {
    /* The text fields as a JSON object of strings (a repeated name: the last one); NULL when the
     * form has none. */
    cJSON *fields;
    /* File fields "image" (or "image[]": the first one) and "mask": views into the body. */
    const uint8_t *image, *mask;
    size_t image_len, mask_len;
} srv_form;

/* Splits body (len bytes) by the boundary of content_type ("multipart/form-data; boundary=...").
 * false: 400 naming what is wrong (no boundary, a part without a name, no closing boundary...)
 * or 413 for a text field over SRV_FORM_TEXT_MAX; *form is then empty. Bytes before the first
 * boundary and after the closing one are ignored, as the RFC says (the openai npm client sends a
 * CRLF after it). */
bool srv_form_parse(const char *content_type, const uint8_t *body, size_t len, srv_form *form,
                    srv_error *e);
void srv_form_free(srv_form *form);

#endif
