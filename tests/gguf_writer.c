/* Test-only GGUF writer (gguf_writer.h). The quantizers are the library's (core/gguf_quantize.c,
 * ggml's reference functions, tested against hand-computed blocks in tests/test_gguf_quantize.c);
 * the decoders are written from the block layouts, not shared with core/. */
#include "gguf_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/gguf_quantize.h"
#include "../core/safetensors.h"

static void put(FILE *f, uint64_t v, int n) {
    for (int i = 0; i < n; i++) fputc((int)(v >> (8 * i) & 0xFF), f);
}
static void put_str(FILE *f, const char *s) {
    put(f, strlen(s), 8);
    fwrite(s, 1, strlen(s), f);
}

bool gw_write(const char *path, const gw_tensor *t, int n, uint32_t alignment) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    const uint32_t align = alignment ? alignment : 32;
    fwrite("GGUF", 1, 4, f);
    put(f, 3, 4);
    put(f, (uint64_t)n, 8);
    int n_orig = 0;
    for (int i = 0; i < n; i++) n_orig += t[i].orig_ndim > 0;
    put(f, (uint64_t)(alignment ? 7 : 6) + (uint64_t)n_orig, 8);
    put_str(f, "general.architecture"), put(f, 8, 4), put_str(f, "test");
    put_str(f, "test.names"), put(f, 9, 4), put(f, 8, 4), put(f, 2, 8);
    put_str(f, "a"), put_str(f, "bc");
    put_str(f, "test.u32"), put(f, 4, 4), put(f, 123456, 4);
    put_str(f, "test.i64"), put(f, 11, 4), put(f, (uint64_t)-5, 8);
    put_str(f, "test.f32"), put(f, 6, 4), put(f, 0x3FC00000, 4); /* 1.5f */
    put_str(f, "test.flag"), put(f, 7, 4), put(f, 1, 1);
    if (alignment) put_str(f, "general.alignment"), put(f, 4, 4), put(f, alignment, 4);
    for (int i = 0; i < n; i++) {
        if (t[i].orig_ndim <= 0) continue;
        char key[300];
        snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", t[i].name);
        put_str(f, key), put(f, 9, 4), put(f, 5, 4), put(f, (uint64_t)t[i].orig_ndim, 8);
        for (int d = 0; d < t[i].orig_ndim; d++) put(f, (uint64_t)t[i].orig_shape[d], 4);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        put_str(f, t[i].name);
        put(f, (uint64_t)t[i].ndim, 4);
        for (int d = 0; d < t[i].ndim; d++) put(f, (uint64_t)t[i].ne[d], 8);
        put(f, t[i].type, 4);
        put(f, t[i].offset >= 0 ? (uint64_t)t[i].offset : off, 8);
        off = (off + t[i].nbytes + align - 1) / align * align;
    }
    long pos = ftell(f);
    while (pos % align) fputc(0, f), pos++;
    for (int i = 0; i < n; i++) {
        fwrite(t[i].data, 1, t[i].nbytes, f);
        for (size_t k = t[i].nbytes; k % align; k++) fputc(0, f);
    }
    return fclose(f) == 0;
}

static uint16_t f16(float x) { return st_f32_to_f16(x); }

/* The decoders' half -> float, from the IEEE layout (not core's st_f16_to_f32). */
static float from_f16(const uint8_t *b) {
    const int h = b[0] | b[1] << 8, e = h >> 10 & 31, m = h & 1023;
    const float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}

void gw_decode_q8_0(const uint8_t *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 32, b += 34) {
        const float d = from_f16(b);
        for (int j = 0; j < 32; j++) y[i + j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* The 6-bit scale and min of sub-block j from the 12 packed bytes. */
static void unpack_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

void gw_decode_q4_k(const uint8_t *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 256, b += 144) {
        const float d = from_f16(b), dmin = from_f16(b + 2);
        for (int k = 0; k < 256; k++) {
            const int sub = k / 32, pair = k / 64, l = k % 32;
            const uint8_t byte = b[16 + 32 * pair + l];
            const int q = sub % 2 ? byte >> 4 : byte & 15;
            int s, m;
            unpack_k4(sub, b + 4, &s, &m);
            const float ds = d * s, mm = dmin * m; /* as ggml: scale and min first */
            y[i + k] = ds * q - mm;
        }
    }
}

static bool save_ref(const char *path, st_entry *e, int n) {
    return st_write(path, e, n, NULL, 0) == SD_OK;
}

bool gw_convert(const char *src, const char *gguf_path, const char *ref_path, int counts[4]) {
    return gw_convert_as(src, gguf_path, ref_path, true, counts);
}

static bool convert(const char *src, const char *gguf_path, const char *ref_path, bool q4_k,
                    bool reshape, int counts[4], int *reshaped);

bool gw_convert_as(const char *src, const char *gguf_path, const char *ref_path, bool q4_k,
                   int counts[4]) {
    return convert(src, gguf_path, ref_path, q4_k, false, counts, NULL);
}

bool gw_convert_reshaped(const char *src, const char *gguf_path, const char *ref_path,
                         int counts[4], int *reshaped) {
    return convert(src, gguf_path, ref_path, true, true, counts, reshaped);
}

static bool convert(const char *src, const char *gguf_path, const char *ref_path, bool q4_k,
                    bool reshape, int counts[4], int *reshaped) {
    if (reshaped) *reshaped = 0;
    st_file f;
    if (st_open(&f, src) != SD_OK) return false;
    gw_tensor *t = calloc((size_t)f.n_tensors, sizeof *t);
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    bool ok = t && e;
    if (counts) memset(counts, 0, 4 * sizeof *counts);
    int m = 0; /* tensors written: integer ones (position_ids buffers) are left out */
    for (int i = 0; ok && i < f.n_tensors; i++) {
        const st_tensor *s = &f.tensors[i];
        if (!st_is_float(s->dtype)) continue;
        const int64_t n = st_numel(s), ne0 = s->ndim ? s->shape[s->ndim - 1] : 1;
        float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        uint8_t *q = malloc((size_t)n * 4);
        const bool keep_y = ref_path != NULL; /* else y is scratch, freed below */
        if (!x || !y || !q || s->ndim > 4) {
            free(x), free(y), free(q);
            ok = false;
            break;
        }
        st_to_f32(s, x);
        t[m].name = s->name;
        t[m].ndim = s->ndim ? s->ndim : 1;
        t[m].ne[0] = 1;
        for (int d = 0; d < s->ndim; d++) t[m].ne[d] = s->shape[s->ndim - 1 - d];
        t[m].offset = -1;
        int kind;
        if (reshape && s->ndim >= 2 && n % 256 == 0 && ne0 % 256 != 0) {
            t[m].orig_ndim = s->ndim;
            memcpy(t[m].orig_shape, s->shape, sizeof(int64_t) * (size_t)s->ndim);
            t[m].ndim = 2, t[m].ne[0] = 256, t[m].ne[1] = n / 256;
            if (reshaped) ++*reshaped;
        }
        if (q4_k && s->ndim >= 2 && t[m].ne[0] % 256 == 0) {
            gguf_quantize_row(GW_Q4_K, x, q, n), gw_decode_q4_k(q, y, n);
            t[m].type = GW_Q4_K, t[m].nbytes = (size_t)n / 256 * 144, kind = 0;
        } else if (s->ndim >= 2 && t[m].ne[0] % 32 == 0) {
            gguf_quantize_row(GW_Q8_0, x, q, n), gw_decode_q8_0(q, y, n);
            t[m].type = GW_Q8_0, t[m].nbytes = (size_t)n / 32 * 34, kind = 1;
        } else if (s->ndim >= 2) {
            for (int64_t k = 0; k < n; k++) {
                const uint16_t h = f16(x[k]);
                q[2 * k] = (uint8_t)h, q[2 * k + 1] = (uint8_t)(h >> 8);
                y[k] = from_f16(q + 2 * k);
            }
            t[m].type = GW_F16, t[m].nbytes = (size_t)n * 2, kind = 2;
        } else {
            memcpy(q, x, (size_t)n * 4), memcpy(y, x, (size_t)n * 4);
            t[m].type = GW_F32, t[m].nbytes = (size_t)n * 4, kind = 3;
        }
        if (counts) counts[kind]++;
        t[m].data = q;
        e[m] = (st_entry){s->name, ST_F32, s->ndim, {0}, keep_y ? y : NULL};
        memcpy(e[m].shape, s->shape, sizeof e[m].shape);
        m++;
        free(x);
        if (!keep_y) free(y);
    }
    if (ok) ok = gw_write(gguf_path, t, m, 0) && (!ref_path || save_ref(ref_path, e, m));
    for (int i = 0; t && e && i < m; i++) {
        free((void *)t[i].data);
        free((void *)e[i].data);
    }
    free(t);
    free(e);
    st_close(&f);
    return ok;
}
