#include "safetensors.h"
#include "gguf.h"
#include "gguf_quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileutil.h"

/* A header larger than this is certainly not a real model (the biggest real ones are a few MB). */
enum { ST_MAX_HEADER = 100 * 1024 * 1024 };

static const struct {
    const char *name;
    st_dtype dtype;
    size_t size;
} dtype_table[] = {
    {"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8},
    {"I64", ST_I64, 8}, {"I32", ST_I32, 4}, {"I16", ST_I16, 2},   {"I8", ST_I8, 1},
    {"U8", ST_U8, 1},   {"BOOL", ST_BOOL, 1},
};
enum { N_DTYPES = sizeof dtype_table / sizeof dtype_table[0] };

const char *st_dtype_name(st_dtype dtype) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == dtype) return dtype_table[i].name;
    if (st_is_quantized(dtype)) return gguf_type_name(gguf_type_of_st(dtype));
    return "?";
}

size_t st_dtype_size(st_dtype dtype) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == dtype) return dtype_table[i].size;
    return 0;
}

bool st_is_quantized(st_dtype d) { return d >= ST_Q4_0 && d <= ST_Q6_K; }

int st_dtype_block(st_dtype d) {
    int elems = 1, bytes;
    if (st_is_quantized(d)) gguf_type_block(gguf_type_of_st(d), &elems, &bytes);
    return elems;
}

size_t st_dtype_bytes(st_dtype d, int64_t n) {
    int elems, bytes;
    if (st_is_quantized(d) && gguf_type_block(gguf_type_of_st(d), &elems, &bytes))
        return (size_t)(n / elems) * (size_t)bytes;
    return (size_t)n * st_dtype_size(d);
}

int st_is_float(st_dtype d) {
    return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F64 || st_is_quantized(d);
}

bool st_rows_whole_blocks(const st_tensor *t) {
    const int64_t row = t->ndim ? t->shape[t->ndim - 1] : 1;
    return row % st_dtype_block(t->dtype) == 0;
}

int64_t st_numel(const st_tensor *t) {
    /* The readers check that a tensor's values fit its bytes, but a shape with a 0 anywhere holds
     * no values whatever its other dimensions, whose product may not fit in 64 bits. */
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Parses one header entry into t; data_base is the start of the data section of data_size bytes. */
static sd_status parse_entry(const char *path, const cJSON *item, st_tensor *t,
                             const uint8_t *data_base, uint64_t data_size) {
    const char *name = item->string;
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsObject(item) || !cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo) ||
        cJSON_GetArraySize(jo) != 2)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': header entry needs dtype, shape and "
                            "two data_offsets", path, name);
    int found = 0;
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(jd->valuestring, dtype_table[i].name)) {
            t->dtype = dtype_table[i].dtype;
            found = 1;
        }
    if (!found)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                            jd->valuestring);
    t->ndim = cJSON_GetArraySize(js);
    if (t->ndim > ST_MAX_DIMS)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path,
                            name, t->ndim, ST_MAX_DIMS);
    /* numel * size must not overflow: each dim is bounded by the file size, checked as we go. */
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        const cJSON *d = cJSON_GetArrayItem(js, i);
        /* The range first: converting 1e400 (inf) or 1e19 to int64 is undefined behaviour
         * (found by fuzzing). */
        if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0) || d->valuedouble > (double)data_size + 1 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': bad shape entry %d", path, name, i);
        t->shape[i] = (int64_t)d->valuedouble;
        if (t->shape[i] != 0 && numel > data_size) numel = data_size + 1; /* saturate, mismatch below */
        else numel *= (uint64_t)t->shape[i];
    }
    double b = cJSON_GetArrayItem(jo, 0)->valuedouble, e = cJSON_GetArrayItem(jo, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(jo, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(jo, 1)) ||
        b < 0 || e < b || e > (double)data_size)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': data_offsets [%.0f, %.0f] outside the "
                            "%llu bytes of data (file truncated?)", path, name, b, e,
                            (unsigned long long)data_size);
    uint64_t begin = (uint64_t)b, end = (uint64_t)e;
    size_t esize = st_dtype_size(t->dtype);
    if (numel > data_size || numel * esize != end - begin)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': shape needs %llu bytes of %s but "
                            "data_offsets span %llu", path, name,
                            (unsigned long long)(numel * esize), jd->valuestring,
                            (unsigned long long)(end - begin));
    t->data = data_base + begin;
    t->nbytes = end - begin;
    t->name = strdup(name);
    return t->name ? SD_OK : sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
}

static sd_status parse_header(st_file *f, const char *json, size_t len, const uint8_t *data_base,
                              uint64_t data_size) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sd_set_error(SD_ERR_FORMAT, "%s: safetensors header is not a JSON object", f->path);
    }
    int n = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__")) n++;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        cJSON_Delete(root);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", f->path);
    }
    sd_status st = SD_OK;
    for (const cJSON *it = root->child; it && st == SD_OK; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) continue;
        st = parse_entry(f->path, it, &f->tensors[f->n_tensors], data_base, data_size);
        if (st == SD_OK) f->n_tensors++;
    }
    cJSON_Delete(root);
    if (st != SD_OK) return st;

    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name))
            return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path,
                                f->tensors[i].name);
    /* Overlapping data would mean two tensors alias each other: reject, as a writer never does it. */
    const st_tensor **by_off = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *by_off);
    if (!by_off) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++) by_off[i] = &f->tensors[i];
    qsort(by_off, f->n_tensors, sizeof *by_off, cmp_by_offset);
    for (int i = 1; i < f->n_tensors && st == SD_OK; i++) {
        const st_tensor *a = by_off[i - 1], *b = by_off[i];
        if ((const uint8_t *)a->data + a->nbytes > (const uint8_t *)b->data)
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", f->path, a->name,
                              b->name);
    }
    free(by_off);
    return st;
}

sd_status st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    sd_status st = sd_map_file(path, 8, "safetensors", &f->map, &f->map_size);
    if (st == SD_OK && gguf_is_gguf(f->map, f->map_size)) {
        /* A GGUF file: read by its own reader, its tensors as stored (gguf.h). */
        st_close(f);
        return gguf_open_st(f, path);
    }
    if (st == SD_OK) {
        const uint8_t *p = f->map;
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
        if (hlen > ST_MAX_HEADER || hlen > f->map_size - 8)
            st = sd_set_error(SD_ERR_FORMAT, "%s: header length %llu does not fit in the %zu-byte "
                              "file (truncated or not safetensors)", path,
                              (unsigned long long)hlen, f->map_size);
        else
            st = parse_header(f, (const char *)p + 8, hlen, p + 8 + hlen, f->map_size - 8 - hlen);
    }
    if (st != SD_OK) st_close(f);
    return st;
}

void st_close(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    st_tensor key = {.name = (char *)name};
    return f->n_tensors ? bsearch(&key, f->tensors, f->n_tensors, sizeof key, cmp_tensor_name) : NULL;
}

void st_release_pages(const void *data, size_t nbytes) {
    /* Asked each time (glibc answers from memory): a cached static would be a global written from
     * every pipeline's threads. */
    const long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !data) return;
    const uintptr_t begin = ((uintptr_t)data + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    const uintptr_t end = ((uintptr_t)data + nbytes) / (uintptr_t)page * (uintptr_t)page;
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    /* inf / nan; a NaN comes out quiet, as the F16C and AVX-512 conversions make it, so every
     * instruction set widens the same bits */
    if (exp == 0x1f) bits = sign | 0x7f800000 | (man << 13) | (man ? 0x400000u : 0);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else { /* subnormal: normalise */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t st_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

uint16_t st_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return (uint16_t)(sign | 0x7e00);
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (ax < 0x38800000) { /* subnormal or zero in half: scale by 2^24 and round to integer */
        float a;
        memcpy(&a, &ax, 4);
        float r = a * 16777216.0f;          /* exact */
        uint32_t m = (uint32_t)r, frac_bits; /* r < 1024 */
        float rem = r - (float)m;
        frac_bits = m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) frac_bits++;
        return (uint16_t)(sign | frac_bits);
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1); /* round mantissa to 10 bits, nearest even */
    return (uint16_t)(sign | (((r >> 13) - (112 << 10)) & 0x7fff));
}

void st_to_f32(const st_tensor *t, float *out) {
    int64_t n = st_numel(t);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32: memcpy(out, p, (size_t)n * 4); break;
    case ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    case ST_F16:
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        break;
    default:
        if (st_is_quantized(t->dtype)) gguf_dequantize(gguf_type_of_st(t->dtype), p, out, n);
        else memset(out, 0, (size_t)n * sizeof *out); /* callers check st_is_float first */
        break;
    }
}

static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

sd_status st_check_shape(const st_tensor *t, const char *file, int ndim, const int64_t *shape) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return SD_OK;
    char want[128], got[128];
    format_shape(want, sizeof want, ndim, shape);
    format_shape(got, sizeof got, t->ndim, t->shape);
    return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has shape %s, expected %s", file, t->name,
                        got, want);
}

sd_status st_read_f32(const st_file *f, const char *name, int ndim, const int64_t *shape,
                      float **out) {
    *out = NULL;
    const st_tensor *t = st_find(f, name);
    if (!t) return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' not found", f->path, name);
    if (!st_is_float(t->dtype))
        return sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has dtype %s, expected a float type",
                            f->path, name, st_dtype_name(t->dtype));
    if (ndim >= 0) SD_TRY(st_check_shape(t, f->path, ndim, shape));
    int64_t n = st_numel(t);
    *out = malloc((size_t)(n ? n : 1) * sizeof **out);
    if (!*out) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory for tensor '%s'", f->path, name);
    st_to_f32(t, *out);
    return SD_OK;
}

/* ---- writing ---- */

sd_status st_write(const char *path, const st_entry *entries, int n, const char *const *metadata,
                   int n_meta) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < n_meta; i++) cJSON_AddStringToObject(meta, metadata[2 * i], metadata[2 * i + 1]);
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        cJSON *item = cJSON_AddObjectToObject(root, e->name);
        cJSON_AddStringToObject(item, "dtype", st_dtype_name(e->dtype));
        cJSON *shape = cJSON_AddArrayToObject(item, "shape");
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
            numel *= (uint64_t)e->shape[d];
        }
        uint64_t bytes = numel * st_dtype_size(e->dtype);
        cJSON *offs = cJSON_AddArrayToObject(item, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7; /* keep data 8-byte aligned */

    sd_file_writer w;
    sd_status st = sd_writer_open(&w, path);
    if (st == SD_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        sd_writer_put(&w, len8, 8);
        sd_writer_put(&w, json, jlen);
        for (size_t i = jlen; i < padded; i++) sd_writer_put(&w, " ", 1);
        for (int i = 0; i < n; i++) {
            uint64_t numel = 1;
            for (int d = 0; d < entries[i].ndim; d++) numel *= (uint64_t)entries[i].shape[d];
            sd_writer_put(&w, entries[i].data, numel * st_dtype_size(entries[i].dtype));
        }
        st = sd_writer_commit(&w);
    }
    free(json);
    return st;
}

bool st_has_prefix(const st_file *f, const char *prefix) {
    /* Tensors are sorted by name: the first one at or after `prefix` tells. */
    int lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (strcmp(f->tensors[mid].name, prefix) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < f->n_tensors && !strncmp(f->tensors[lo].name, prefix, strlen(prefix));
}
