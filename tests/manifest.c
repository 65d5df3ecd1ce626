/* Tensor manifests: see manifest.h. */
#include "manifest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "test.h"

/* CRC-32 (IEEE, reflected, as zlib.crc32): the manifests' checksum of each tensor's bytes. */
static uint32_t crc32_bytes(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* torch's names, as the manifests spell them. */
static const char *dtype_name(st_dtype d) {
    switch (d) {
    case ST_F32: return "float32";
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F64: return "float64";
    case ST_I64: return "int64";
    case ST_I32: return "int32";
    default: return "?";
    }
}

cJSON *manifest_read_json(const char *rel) {
    char *text = NULL;
    size_t n = 0;
    if (sd_read_file(fixture(rel), &text, &n) != SD_OK) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* Field `key` (object entries) or element `index` (array entries) of a manifest entry. */
static const cJSON *field(const cJSON *e, const char *key, int index) {
    return cJSON_IsArray(e) ? cJSON_GetArrayItem(e, index) : cJSON_GetObjectItem(e, key);
}

void manifest_check(const char *label, const cJSON *want, const char *path) {
    CHECK(cJSON_IsArray(want) && cJSON_GetArraySize(want) > 0, "%s: a manifest is recorded", label);
    if (!cJSON_IsArray(want)) return;
    st_file f;
    const sd_status opened = st_open(&f, path);
    CHECK_OK(opened);
    if (opened != SD_OK) return;
    const int n_want = cJSON_GetArraySize(want);
    int mismatched = 0;
    CHECK(f.n_tensors == n_want, "%s: %d tensors written, the recorded file has %d", label, f.n_tensors,
          n_want);
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        const cJSON *name = field(e, "name", 0), *dtype = field(e, "dtype", 1),
                    *shape = field(e, "shape", 2), *crc = field(e, "crc32", 3);
        if (!cJSON_IsString(name) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsNumber(crc)) {
            CHECK(0, "%s: malformed manifest entry", label);
            break;
        }
        const st_tensor *t = st_find(&f, name->valuestring);
        if (!t) {
            if (mismatched++ < 5) printf("     %s: recorded tensor '%s' not written\n", label, name->valuestring);
            continue;
        }
        bool same = !strcmp(dtype_name(t->dtype), dtype->valuestring) && t->ndim == cJSON_GetArraySize(shape);
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
        same = same && crc32_bytes(t->data, t->nbytes) == (uint32_t)crc->valuedouble;
        if (!same && mismatched++ < 5)
            printf("     %s: tensor '%s' differs from the recorded file (dtype, shape or bytes)\n", label,
                   name->valuestring);
    }
    CHECK(mismatched == 0, "%s: %d tensors differ from the recorded file", label, mismatched);
    st_close(&f);
}

void manifest_check_dit_file(const char *name, const char *path) {
    cJSON *refs = manifest_read_json("extra/dit_file_refs.json");
    CHECK(refs != NULL, "extra/dit_file_refs.json readable");
    const cJSON *entry = cJSON_GetObjectItem(refs, name);
    CHECK(entry != NULL, "extra/dit_file_refs.json records %s", name);
    if (entry) {
        manifest_check(name, cJSON_GetObjectItem(entry, "tensors"), path);
        const cJSON *c, *components = cJSON_GetObjectItem(entry, "components");
        CHECK(cJSON_GetArraySize(components) > 0, "%s: components recorded", name);
        cJSON_ArrayForEach(c, components) {
            const cJSON *cls = cJSON_GetObjectItem(c, "cls"), *params = cJSON_GetObjectItem(c, "params");
            CHECK(cJSON_IsTrue(cJSON_GetObjectItem(c, "equal")) && cJSON_IsNumber(params) &&
                      params->valueint > 0,
                  "%s: diffusers' from_single_file builds %s equal to the fixture folder's",
                  name, cJSON_IsString(cls) ? cls->valuestring : "?");
        }
    }
    cJSON_Delete(refs);
}
