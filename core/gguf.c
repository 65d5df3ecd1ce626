/* GGUF reader (gguf.h): the header, metadata and tensor infos parsed from the mapping with a
 * bounds-checked cursor; every count, length, dim, type and offset checked before it is used. */
#include "gguf.h"
#include "fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "gguf_quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const uint8_t *p;
    size_t pos, size;
} cursor;

static uint64_t le(const uint8_t *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* n bytes at the cursor, or NULL when the file ends first. */
static const uint8_t *take(cursor *c, uint64_t n) {
    if (n > c->size - c->pos) return NULL;
    const uint8_t *b = c->p + c->pos;
    c->pos += (size_t)n;
    return b;
}

static bool take_u(cursor *c, int n, uint64_t *v) {
    const uint8_t *b = take(c, (uint64_t)n);
    if (b) *v = le(b, n);
    return b != NULL;
}

/* A string (uint64 length + bytes) as a malloc'd NUL-terminated copy; errors name `what`. */
static sd_status take_string(cursor *c, const char *path, const char *what, char **out) {
    uint64_t n;
    const uint8_t *b = NULL;
    if (take_u(c, 8, &n)) b = take(c, n);
    if (!b)
        return sd_set_error(SD_ERR_FORMAT, "%s: %s at byte %zu runs past the end of the %zu-byte "
                            "file (truncated?)", path, what, c->pos, c->size);
    char *s = malloc((size_t)n + 1);
    if (!s) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    memcpy(s, b, (size_t)n);
    s[n] = 0;
    *out = s;
    return SD_OK;
}

static int scalar_size(uint32_t t) {
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof size / sizeof *size ? size[t] : 0;
}

/* Steps over `n` values of type `t` (strings walked one by one); false when they do not fit. */
static bool skip_values(cursor *c, uint32_t t, uint64_t n) {
    if (t == GGUF_VAL_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if (!take_u(c, 8, &len) || !take(c, len)) return false;
        }
        return true;
    }
    const int s = scalar_size(t);
    return n <= (c->size - c->pos) / (uint64_t)s && take(c, n * (uint64_t)s);
}

static sd_status read_kv(cursor *c, const char *path, gguf_kv *kv) {
    SD_TRY(take_string(c, path, "a metadata key", &kv->key));
    uint64_t t;
    if (!take_u(c, 4, &t))
        return sd_set_error(SD_ERR_FORMAT, "%s: metadata '%s': the file ends in its type "
                            "(truncated?)", path, kv->key);
    const bool array = t == GGUF_VAL_ARRAY;
    uint64_t et = t, n = 1;
    if (array && !(take_u(c, 4, &et) && take_u(c, 8, &n)))
        return sd_set_error(SD_ERR_FORMAT, "%s: metadata '%s': the file ends in its array header "
                            "(truncated?)", path, kv->key);
    if (et == GGUF_VAL_ARRAY)
        return sd_set_error(SD_ERR_FORMAT, "%s: metadata '%s': nested arrays are not supported",
                            path, kv->key);
    if (et != GGUF_VAL_STRING && !scalar_size((uint32_t)et))
        return sd_set_error(SD_ERR_FORMAT, "%s: metadata '%s': unknown value type %llu", path,
                            kv->key, (unsigned long long)et);
    kv->type = (gguf_value_type)t;
    kv->elem_type = (gguf_value_type)et;
    kv->n = n;
    kv->value = c->p + c->pos;
    if (!skip_values(c, (uint32_t)et, n))
        return sd_set_error(SD_ERR_FORMAT, "%s: metadata '%s': its value runs past the end of the "
                            "%zu-byte file (truncated?)", path, kv->key, c->size);
    return SD_OK;
}

static sd_status info_truncated(const char *path, const char *name) {
    return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': the file ends in its info (truncated?)",
                        path, name);
}

static sd_status read_tensor_info(cursor *c, const char *path, gguf_tensor *t) {
    SD_TRY(take_string(c, path, "a tensor name", &t->name));
    uint64_t nd, type, offset;
    if (!take_u(c, 4, &nd))
        return info_truncated(path, t->name);
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': %llu dimensions (1 to %d allowed)",
                            path, t->name, (unsigned long long)nd, GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t ne;
        if (!take_u(c, 8, &ne))
            return info_truncated(path, t->name);
        if (ne > (uint64_t)INT64_MAX)
            return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': dimension %d is %llu", path,
                                t->name, i, (unsigned long long)ne);
        t->ne[i] = (int64_t)ne;
    }
    if (!take_u(c, 4, &type) || !take_u(c, 8, &offset))
        return info_truncated(path, t->name);
    t->type = (uint32_t)type;
    int elems, bytes;
    if (type > UINT32_MAX || !gguf_type_block(t->type, &elems, &bytes)) {
        const char *name = type <= UINT32_MAX ? gguf_type_name(t->type) : NULL;
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: tensor '%s': %s type id %llu%s%s%s (read: "
                            "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)", path,
                            t->name, name ? "unsupported" : "unknown", (unsigned long long)type,
                            name ? " (" : "", name ? name : "", name ? ")" : "");
    }
    if (t->ne[0] % elems)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': row length ne[0] = %lld is not a "
                            "multiple of the %s block size %d", path, t->name,
                            (long long)t->ne[0], gguf_type_name(t->type), elems);
    /* Size in bytes, every product checked: rows of blocks, then the other dims. */
    const uint64_t row_blocks = (uint64_t)(t->ne[0] / elems);
    uint64_t size = row_blocks * (uint64_t)bytes;
    if (row_blocks && size / row_blocks != (uint64_t)bytes) size = UINT64_MAX;
    for (int i = 1; i < t->ndim && size != UINT64_MAX; i++) {
        const uint64_t ne = (uint64_t)t->ne[i];
        size = ne && size > UINT64_MAX / ne ? UINT64_MAX : size * ne;
    }
    if (size == UINT64_MAX || size > SIZE_MAX)
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': its shape overflows", path, t->name);
    t->nbytes = (size_t)size;
    t->data = (const void *)(uintptr_t)offset; /* relative for now; made a pointer in place() */
    return SD_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}
static int cmp_offset(const void *a, const void *b) {
    const uintptr_t x = (uintptr_t)(*(const gguf_tensor *const *)a)->data;
    const uintptr_t y = (uintptr_t)(*(const gguf_tensor *const *)b)->data;
    return x < y ? -1 : x > y;
}

/* Duplicate names, then each tensor's offset (aligned, inside the file, not overlapping the
 * next) made a pointer into the data section at `data`. */
static sd_status place(gguf_file *f, size_t data) {
    const int n = f->n_tensors;
    if (!n) return SD_OK;
    gguf_tensor **by = malloc((size_t)n * sizeof *by);
    if (!by) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < n; i++) by[i] = &f->tensors[i];
    sd_status st = SD_OK;
    qsort(by, (size_t)n, sizeof *by, cmp_name);
    for (int i = 1; i < n && st == SD_OK; i++)
        if (!strcmp(by[i]->name, by[i - 1]->name))
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path, by[i]->name);
    qsort(by, (size_t)n, sizeof *by, cmp_offset);
    const size_t avail = data <= f->map_size ? f->map_size - data : 0;
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (int i = 0; i < n && st == SD_OK; i++) {
        gguf_tensor *t = by[i];
        const uint64_t off = (uint64_t)(uintptr_t)t->data;
        if (off % f->alignment)
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': offset %llu is not a multiple of "
                              "the alignment %zu", f->path, t->name, (unsigned long long)off,
                              f->alignment);
        else if (off > avail || t->nbytes > avail - off)
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s': its %zu bytes at data offset %llu "
                              "run past the end of the file (%zu data bytes; truncated?)", f->path,
                              t->name, t->nbytes, (unsigned long long)off, avail);
        else if (prev && off < prev_end)
            st = sd_set_error(SD_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", f->path, prev,
                              t->name);
        else {
            prev_end = off + t->nbytes;
            prev = t->name;
        }
    }
    free(by);
    if (st == SD_OK)
        for (int i = 0; i < n; i++)
            f->tensors[i].data = (const uint8_t *)f->map + data + (uintptr_t)f->tensors[i].data;
    return st;
}

static int cmp_key(const void *a, const void *b) {
    return strcmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

/* By sorting (a file may hold millions of entries; pairwise comparison would not end). */
static sd_status refuse_duplicate_keys(const gguf_file *f) {
    if (f->n_kv < 2) return SD_OK;
    const gguf_kv **by = malloc((size_t)f->n_kv * sizeof *by);
    if (!by) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_kv; i++) by[i] = &f->kv[i];
    qsort(by, (size_t)f->n_kv, sizeof *by, cmp_key);
    sd_status st = SD_OK;
    for (int i = 1; i < f->n_kv && st == SD_OK; i++)
        if (!strcmp(by[i]->key, by[i - 1]->key))
            st = sd_set_error(SD_ERR_FORMAT, "%s: metadata key '%s' appears twice", f->path,
                              by[i]->key);
    free(by);
    return st;
}

static sd_status parse(gguf_file *f) {
    cursor c = {f->map, 0, f->map_size};
    const uint8_t *magic = take(&c, 4);
    uint64_t version, n_tensors, n_kv;
    if (!magic || !gguf_is_gguf(magic, 4)) {
        if (magic && !memcmp(magic, "FUGG", 4))
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a big-endian GGUF file; only "
                                "little-endian GGUF files are read", f->path);
        return sd_set_error(SD_ERR_FORMAT, "%s: not a GGUF file (no GGUF magic)", f->path);
    }
    if (!take_u(&c, 4, &version))
        return sd_set_error(SD_ERR_FORMAT, "%s: truncated GGUF header", f->path);
    /* A big-endian file (gguf-py's --bigendian) keeps the magic bytes but not the version's. */
    if (!(version & 0xFFFF) && version >> 24 >= 1 && version >> 24 <= 3)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a big-endian GGUF file (version %llu); only "
                            "little-endian GGUF files are read", f->path,
                            (unsigned long long)(version >> 24));
    if (version != 2 && version != 3)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: GGUF version %llu (versions 2 and 3 are read)",
                            f->path, (unsigned long long)version);
    f->version = (uint32_t)version;
    if (!take_u(&c, 8, &n_tensors) || !take_u(&c, 8, &n_kv))
        return sd_set_error(SD_ERR_FORMAT, "%s: truncated GGUF header", f->path);
    /* Each entry takes at least 13 (metadata) or 24 (tensor info) bytes: larger counts lie. */
    if (n_kv > f->map_size / 13 || n_tensors > f->map_size / 24)
        return sd_set_error(SD_ERR_FORMAT, "%s: %llu tensors and %llu metadata entries do not fit "
                            "in the %zu-byte file (truncated?)", f->path,
                            (unsigned long long)n_tensors, (unsigned long long)n_kv, f->map_size);
    f->kv = calloc((size_t)n_kv + 1, sizeof *f->kv);
    f->tensors = calloc((size_t)n_tensors + 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        f->n_kv++;
        SD_TRY(read_kv(&c, f->path, &f->kv[i]));
    }
    SD_TRY(refuse_duplicate_keys(f));
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_VAL_UINT32)
            return sd_set_error(SD_ERR_FORMAT, "%s: general.alignment is not a uint32", f->path);
        const uint64_t a = le(al->value, 4);
        if (!a || (a & (a - 1)))
            return sd_set_error(SD_ERR_FORMAT, "%s: general.alignment %llu is not a power of two",
                                f->path, (unsigned long long)a);
        f->alignment = (size_t)a;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors++;
        SD_TRY(read_tensor_info(&c, f->path, &f->tensors[i]));
    }
    const size_t data = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    return place(f, data);
}

bool gguf_is_gguf(const void *head, size_t n) { return n >= 4 && !memcmp(head, "GGUF", 4); }

sd_status gguf_open(gguf_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    sd_status st = sd_map_file(path, 24, "GGUF", &f->map, &f->map_size);
    if (st == SD_OK) st = parse(f);
    if (st != SD_OK) gguf_close(f);
    return st;
}

void gguf_close(gguf_file *f) {
    for (int i = 0; i < f->n_kv; i++) free(f->kv[i].key);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    for (int i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && !strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

bool gguf_kv_int(const gguf_kv *kv, int64_t *out) {
    switch (kv->type) {
    case GGUF_VAL_UINT8: case GGUF_VAL_BOOL: *out = kv->value[0]; return true;
    case GGUF_VAL_INT8: *out = (int8_t)kv->value[0]; return true;
    case GGUF_VAL_UINT16: *out = (int64_t)le(kv->value, 2); return true;
    case GGUF_VAL_INT16: *out = (int16_t)le(kv->value, 2); return true;
    case GGUF_VAL_UINT32: *out = (int64_t)le(kv->value, 4); return true;
    case GGUF_VAL_INT32: *out = (int32_t)le(kv->value, 4); return true;
    case GGUF_VAL_UINT64: case GGUF_VAL_INT64: *out = (int64_t)le(kv->value, 8); return true;
    default: return false;
    }
}

bool gguf_kv_int_at(const gguf_kv *kv, uint64_t i, int64_t *out) {
    if (kv->type != GGUF_VAL_ARRAY || i >= kv->n) return false;
    static const int sizes[] = {[GGUF_VAL_UINT8] = 1, [GGUF_VAL_INT8] = 1, [GGUF_VAL_UINT16] = 2,
                                [GGUF_VAL_INT16] = 2, [GGUF_VAL_UINT32] = 4, [GGUF_VAL_INT32] = 4,
                                [GGUF_VAL_BOOL] = 1, [GGUF_VAL_UINT64] = 8, [GGUF_VAL_INT64] = 8};
    const gguf_value_type t = kv->elem_type;
    if ((unsigned)t >= sizeof sizes / sizeof *sizes || !sizes[t]) return false;
    const gguf_kv scalar = {.type = t, .n = 1, .value = kv->value + i * (uint64_t)sizes[t]};
    return gguf_kv_int(&scalar, out);
}

bool gguf_kv_string(const gguf_kv *kv, char *buf, size_t cap) {
    if (kv->type != GGUF_VAL_STRING || !cap) return false;
    const uint64_t n = le(kv->value, 8);
    const size_t k = n < cap - 1 ? (size_t)n : cap - 1;
    memcpy(buf, kv->value + 8, k);
    buf[k] = 0;
    return true;
}
