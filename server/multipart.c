/* multipart/form-data (RFC 7578 on RFC 2046's framing): see multipart.h.
 *
 * The body is   [preamble] "--B" part { "\r\n--B" part } "\r\n--B--" [epilogue]
 * where each part is   [padding] "\r\n" headers "\r\n\r\n"-terminated, then its content, and B the
 * boundary. Only Content-Disposition's name matters (the file fields are told by name, as OpenAI
 * does); other headers (Content-Type, a filename) are skipped. */
#include "multipart.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BOUNDARY_MAX 70 /* RFC 2046 section 5.1.1 */
#define NAME_MAX_LEN 64 /* field names of the edits form are short; longer ones are refused */

/* The boundary parameter of content_type into out (NUL-terminated); false when absent or bad. */
static bool find_boundary(const char *ct, char out[BOUNDARY_MAX + 1]) {
    static const char kind[] = "multipart/form-data";
    if (strncasecmp(ct, kind, sizeof kind - 1)) return false;
    const char *p = ct + sizeof kind - 1;
    while ((p = strchr(p, ';'))) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (strncasecmp(p, "boundary=", 9)) continue;
        p += 9;
        size_t n = 0;
        if (*p == '"') {
            const char *q = strchr(++p, '"');
            if (!q) return false;
            n = (size_t)(q - p);
        } else {
            n = strcspn(p, "; \t");
        }
        if (n == 0 || n > BOUNDARY_MAX) return false;
        memcpy(out, p, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

/* The value of parameter `param` (e.g. "name") in a Content-Disposition value [v, end): quoted or
 * a token, into out. false: absent, or longer than out holds (*too_long set). */
static bool disposition_param(const char *v, const char *end, const char *param, char *out,
                              size_t out_size, bool *too_long) {
    size_t plen = strlen(param);
    for (const char *p = v; p < end; p++) {
        if (*p != ';') continue;
        const char *q = p + 1;
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        if ((size_t)(end - q) <= plen || strncasecmp(q, param, plen) || q[plen] != '=') continue;
        q += plen + 1;
        const char *s = q, *e;
        if (q < end && *q == '"') {
            s = q + 1;
            e = memchr(s, '"', (size_t)(end - s));
            if (!e) return false;
        } else {
            e = s;
            while (e < end && *e != ';' && *e != ' ' && *e != '\t') e++;
        }
        if ((size_t)(e - s) >= out_size) return *too_long = true, false;
        memcpy(out, s, (size_t)(e - s));
        out[e - s] = '\0';
        return true;
    }
    return false;
}

/* The field name from a part's header block [h, end) (lines separated by CRLF). */
static bool part_name(const char *h, const char *end, char name[NAME_MAX_LEN + 1], srv_error *e) {
    static const char cd[] = "content-disposition:";
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - h) >= sizeof cd - 1 && !strncasecmp(h, cd, sizeof cd - 1)) {
            const char *v = h + sizeof cd - 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            if ((size_t)(eol - v) < 9 || strncasecmp(v, "form-data", 9))
                return srv_fail(e, 400, "", "a part's Content-Disposition is not form-data");
            bool too_long = false;
            if (disposition_param(v + 9, eol, "name", name, NAME_MAX_LEN + 1, &too_long))
                return true;
            if (too_long)
                return srv_fail(e, 400, "", "a field name is longer than %d bytes", NAME_MAX_LEN);
            break;
        }
        h = eol + 2;
    }
    return srv_fail(e, 400, "", "a part of the form has no Content-Disposition name");
}

/* Stores one part: file fields by view, text fields copied into form->fields. */
static bool take_part(srv_form *form, const char *name, const uint8_t *data, size_t n,
                      srv_error *e) {
    if (!strcmp(name, "image") || !strcmp(name, "image[]")) {
        if (!form->image) form->image = data, form->image_len = n; /* image[]: the first */
        return true;
    }
    if (!strcmp(name, "mask")) {
        if (!form->mask) form->mask = data, form->mask_len = n;
        return true;
    }
    if (n > SRV_FORM_TEXT_MAX)
        return srv_fail(e, 413, name, "form field '%s' is over %d bytes", name, SRV_FORM_TEXT_MAX);
    if (memchr(data, '\0', n))
        return srv_fail(e, 400, name, "form field '%s' holds a NUL byte", name);
    char *s = malloc(n + 1);
    if (!s) return srv_fail(e, 500, "", "out of memory");
    memcpy(s, data, n);
    s[n] = '\0';
    if (!form->fields) form->fields = cJSON_CreateObject();
    cJSON *v = form->fields ? cJSON_CreateString(s) : NULL;
    free(s);
    if (!v) return srv_fail(e, 500, "", "out of memory");
    if (cJSON_GetObjectItemCaseSensitive(form->fields, name))
        cJSON_ReplaceItemInObjectCaseSensitive(form->fields, name, v);
    else
        cJSON_AddItemToObject(form->fields, name, v);
    return true;
}

static bool parse(const char *ct, const uint8_t *body, size_t len, srv_form *form, srv_error *e) {
    char b[BOUNDARY_MAX + 1];
    if (!ct || !find_boundary(ct, b))
        return srv_fail(e, 400, "",
                        "Content-Type must be multipart/form-data with a boundary of 1 to %d "
                        "characters",
                        BOUNDARY_MAX);
    /* delim = "\r\n--B"; the first boundary may also start the body (no CRLF before it). */
    char delim[BOUNDARY_MAX + 5] = "\r\n--";
    strcpy(delim + 4, b);
    const size_t dlen = strlen(delim);
    const char *p = (const char *)body, *end = p + len;
    if (len >= dlen - 2 && !memcmp(p, delim + 2, dlen - 2)) {
        p += dlen - 2;
    } else {
        const char *d = len ? memmem(p, len, delim, dlen) : NULL;
        if (!d) return srv_fail(e, 400, "", "the body holds no boundary of its Content-Type");
        p = d + dlen;
    }
    for (int parts = 0;; parts++) {
        /* After a delimiter: "--" closes the body; else optional padding, then CRLF. */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return true;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return srv_fail(e, 400, "", "the form ends without its closing boundary");
        p += 2;
        if (parts == SRV_FORM_MAX_PARTS)
            return srv_fail(e, 400, "", "the form has more than %d parts", SRV_FORM_MAX_PARTS);
        /* Headers end at an empty line; a part with no headers starts with it. */
        const char *hend;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p;
        } else {
            hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (!hend) return srv_fail(e, 400, "", "a part's headers do not end");
        }
        char name[NAME_MAX_LEN + 1];
        if (!part_name(p, hend, name, e)) return false;
        const char *data = hend + (hend == p ? 2 : 4);
        const char *next = memmem(data, (size_t)(end - data), delim, dlen);
        if (!next) return srv_fail(e, 400, name, "field '%s' runs to the end of the body", name);
        if (!take_part(form, name, (const uint8_t *)data, (size_t)(next - data), e)) return false;
        p = next + dlen;
    }
}

bool srv_form_parse(const char *content_type, const uint8_t *body, size_t len, srv_form *form,
                    srv_error *e) {
    memset(form, 0, sizeof *form);
    if (parse(content_type, body, len, form, e)) return true;
    srv_form_free(form);
    return false;
}

void srv_form_free(srv_form *form) {
    cJSON_Delete(form->fields);
    memset(form, 0, sizeof *form);
}
