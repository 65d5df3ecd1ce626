#include "lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* PART_LY + LY_*: a LyCORIS LoHa / LoKr tensor (lora.h) */
enum { PART_DOWN, PART_UP, PART_ALPHA, PART_LY };

/* One adapted module of one file: the tensors that make its delta. */
typedef struct {
    const char *component; /* a literal from the prefix tables */
    char *key;             /* module name, '.' written as '_' */
    int file;
    const st_tensor *down, *up, *alpha;
    lora_kind kind;             /* LoRA: down and up; LoHa / LoKr: ly */
    const st_tensor *ly[LY_N];
    bool used;
    /* FLUX.1 in BFL naming (core/lora_flux.c): the key is BFL's until expand_flux, then the
     * diffusers module with the rows of up it takes (lora_flux_target's fields). */
    bool flux;
    int part, n_parts;
    bool has_tail, swap_halves, ignore_alpha;
} lora_module;

struct lora_set {
    int n_files;
    st_file *files;
    float *scales;
    int n_modules;
    lora_module *modules; /* sorted by component, key, file */
};

typedef struct {
    const char *prefix, *component;
} prefix_map;

/* kohya-ss names modules with '_' for '.'; te1/te2 are SDXL's two encoders. */
static const prefix_map kohya_prefixes[] = {
    {"lora_unet_", "unet"},         {"lora_te1_", "text_encoder"},
    {"lora_te2_", "text_encoder_2"}, {"lora_te_", "text_encoder"},
};
static const prefix_map peft_prefixes[] = {
    {"unet.", "unet"},
    {"text_encoder.", "text_encoder"},
    {"text_encoder_2.", "text_encoder_2"},
    {"transformer.", "transformer"},
    /* ComfyUI / BFL FLUX.1 names (diffusion_model.double_blocks.0.img_attn.qkv) */
    {"diffusion_model.", "transformer"},
};
static const struct {
    const char *suffix;
    int part;
} suffixes[] = {
    {".lora_down.weight", PART_DOWN}, {".lora_up.weight", PART_UP},
    {".lora_A.weight", PART_DOWN},    {".lora_B.weight", PART_UP},
    {".lora.down.weight", PART_DOWN}, {".lora.up.weight", PART_UP},
    {".alpha", PART_ALPHA},
    /* diffusers' attention-processor LoRAs (before PEFT): <attn>.processor.to_q_lora.down.weight */
    {"_lora.down.weight", PART_DOWN}, {"_lora.up.weight", PART_UP},
    /* LyCORIS */
    {".hada_w1_a", PART_LY + LY_HADA_W1A}, {".hada_w1_b", PART_LY + LY_HADA_W1B},
    {".hada_w2_a", PART_LY + LY_HADA_W2A}, {".hada_w2_b", PART_LY + LY_HADA_W2B},
    {".lokr_w1", PART_LY + LY_LOKR_W1},    {".lokr_w1_a", PART_LY + LY_LOKR_W1A},
    {".lokr_w1_b", PART_LY + LY_LOKR_W1B}, {".lokr_w2", PART_LY + LY_LOKR_W2},
    {".lokr_w2_a", PART_LY + LY_LOKR_W2A}, {".lokr_w2_b", PART_LY + LY_LOKR_W2B},
};

static bool starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static char *underscored(const char *s, size_t len) {
    char *k = malloc(len + 1);
    if (!k) return NULL;
    for (size_t i = 0; i < len; i++) k[i] = s[i] == '.' ? '_' : s[i];
    k[len] = '\0';
    return k;
}

/* Splits one tensor name into its module and part; errors name the file and the key. */
/* XLabs FLUX.1 LoRAs: BFL block names with attention-processor factors, e.g.
 * double_blocks.0.processor.qkv_lora1.down.weight (optionally under diffusion_model.): the module
 * is BFL's name up to the factor, mapped by core/lora_flux.c. False: not such a key. */
static bool parse_xlabs(const char *name, lora_module *m, int *part) {
    const char *bare = starts_with(name, "diffusion_model.") ? name + strlen("diffusion_model.")
                                                             : name;
    if ((!starts_with(bare, "double_blocks.") && !starts_with(bare, "single_blocks.")) ||
        !strstr(bare, ".processor."))
        return false;
    static const char *const ends[2] = {".down.weight", ".up.weight"};
    const size_t len = strlen(bare);
    for (int i = 0; i < 2; i++) {
        const size_t slen = strlen(ends[i]);
        if (len <= slen || strcmp(bare + len - slen, ends[i])) continue;
        m->component = "transformer";
        m->flux = true;
        m->key = underscored(bare, len - slen);
        *part = i ? PART_UP : PART_DOWN;
        return true;
    }
    return false;
}

static sd_status parse_key(const char *path, const char *name, lora_module *m, int *part) {
    if (parse_xlabs(name, m, part))
        return m->key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    const prefix_map *pm = NULL;
    for (size_t i = 0; i < sizeof kohya_prefixes / sizeof *kohya_prefixes && !pm; i++)
        if (starts_with(name, kohya_prefixes[i].prefix)) pm = &kohya_prefixes[i];
    for (size_t i = 0; i < sizeof peft_prefixes / sizeof *peft_prefixes && !pm; i++)
        if (starts_with(name, peft_prefixes[i].prefix)) pm = &peft_prefixes[i];
    if (!pm)
        return sd_set_error(SD_ERR_FORMAT, "LoRA %s: key '%s' is neither kohya-ss (lora_unet_*, "
                            "lora_te_*), diffusers/PEFT (unet.*, text_encoder.*, "
                            "transformer.*) nor FLUX.1 BFL (diffusion_model.*) or XLabs "
                            "(double_blocks.N.processor.*) naming", path, name);
    const size_t len = strlen(name), plen = strlen(pm->prefix);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        const size_t slen = strlen(suffixes[i].suffix);
        if (len <= plen + slen || strcmp(name + len - slen, suffixes[i].suffix)) continue;
        m->component = pm->component;
        m->key = underscored(name + plen, len - plen - slen);
        /* kohya-ss FLUX files share lora_unet_ with SD UNets: the module names tell them apart */
        m->flux = m->key && (!strcmp(pm->prefix, "diffusion_model.") ||
                             (!strcmp(pm->prefix, "lora_unet_") && lora_flux_is_key(m->key)));
        if (m->flux) m->component = "transformer";
        if (m->key && suffixes[i].suffix[0] == '_') { /* attn.processor.to_out -> attn.to_out.0 */
            char *proc = strstr(m->key, "_processor_");
            if (proc) memmove(proc, proc + strlen("_processor"), strlen(proc + strlen("_processor")) + 1);
            const size_t klen = strlen(m->key);
            char *grown = klen >= 6 && !strcmp(m->key + klen - 6, "to_out")
                              ? realloc(m->key, klen + 3) : NULL;
            if (grown) strcpy(grown + klen, "_0"), m->key = grown;
        }
        *part = suffixes[i].part;
        return m->key ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    return sd_set_error(SD_ERR_UNSUPPORTED, "LoRA %s: tensor '%s' is not a LoRA down/up/alpha, "
                        "LoHa (hada_w*) or LoKr (lokr_w*) tensor (DoRA's dora_scale and the "
                        "Tucker forms hada_t1/t2, lokr_t1/t2 are not supported)", path, name);
}

static int cmp_module(const void *a, const void *b) {
    const lora_module *x = a, *y = b;
    int c = strcmp(x->component, y->component);
    if (!c) c = strcmp(x->key, y->key);
    return c ? c : x->file - y->file;
}

static const char *module_name(const lora_module *m) {
    if (m->down || m->up) return m->down ? m->down->name : m->up->name;
    for (int i = 0; i < LY_N; i++)
        if (m->ly[i]) return m->ly[i]->name;
    return m->alpha->name;
}

/* A module's kind from the tensors it has; false when it mixes kinds. */
static bool settle_kind(lora_module *m) {
    bool hada = false, lokr = false;
    for (int i = 0; i < LY_N; i++)
        if (m->ly[i]) hada |= i <= LY_HADA_W2B, lokr |= i >= LY_LOKR_W1;
    m->kind = hada ? LORA_KIND_LOHA : lokr ? LORA_KIND_LOKR : LORA_KIND_LORA;
    return !(hada && lokr) && !((hada || lokr) && (m->down || m->up));
}

/* Replaces each FLUX.1 module of modules [first, s->n_modules) in BFL naming by the diffusers
 * modules it adapts (a fused one by several sharing its tensors). A name that maps to nothing is
 * an error naming the key. */
static sd_status expand_flux(lora_set *s, int first) {
    int extra = 0;
    for (int k = first; k < s->n_modules; k++) extra += s->modules[k].flux ? 3 : 0;
    if (!extra) return SD_OK;
    lora_module *grown = realloc(s->modules, (size_t)(s->n_modules + extra) * sizeof *grown);
    if (!grown) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    s->modules = grown;
    for (int k = first, end = s->n_modules; k < end; k++) {
        lora_module *m = &s->modules[k];
        if (!m->flux) continue;
        lora_flux_target t[4];
        const int n = lora_flux_targets(m->key, t);
        if (!n)
            return sd_set_error(SD_ERR_UNSUPPORTED, "LoRA %s: '%s' names no FLUX.1 transformer "
                                "module this program knows (BFL naming: double_blocks.N.img_attn."
                                "qkv, single_blocks.N.linear1, img_in, final_layer.linear, ...)",
                                s->files[m->file].path, module_name(m));
        for (int i = 0; i < n; i++) {
            char *key = strdup(t[i].key);
            if (!key) return sd_set_error(SD_ERR_NOMEM, "out of memory");
            lora_module *to = i ? &s->modules[s->n_modules++] : m;
            if (i) *to = *m;
            else free(m->key);
            to->key = key;
            to->part = t[i].part, to->n_parts = t[i].n_parts, to->has_tail = t[i].has_tail;
            to->swap_halves = t[i].swap_halves, to->ignore_alpha = t[i].ignore_alpha;
        }
    }
    return SD_OK;
}

static sd_status add_file(lora_set *s, int f) {
    const st_file *file = &s->files[f];
    lora_module *grown =
        realloc(s->modules, (size_t)(s->n_modules + file->n_tensors + 1) * sizeof *grown);
    if (!grown) return sd_set_error(SD_ERR_NOMEM, "out of memory reading LoRA %s", file->path);
    s->modules = grown;
    const int first = s->n_modules;
    for (int i = 0; i < file->n_tensors; i++) {
        const st_tensor *t = &file->tensors[i];
        lora_module m = {.file = f};
        int part = PART_DOWN;
        SD_TRY(parse_key(file->path, t->name, &m, &part));
        if (!st_is_float(t->dtype) || (part == PART_ALPHA && st_numel(t) != 1)) {
            free(m.key);
            return sd_set_error(SD_ERR_TENSOR, "LoRA %s: tensor '%s' is %s of %lld values; "
                                "expected a float %s", file->path, t->name,
                                st_dtype_name(t->dtype), (long long)st_numel(t),
                                part == PART_ALPHA ? "scalar" : "matrix");
        }
        /* The file's tensors are sorted by name, but the parts of one module need not be
         * adjacent (".alpha" < ".lora_A"), so look back over this file's modules. */
        lora_module *same = NULL;
        for (int k = s->n_modules - 1; k >= first && !same; k--)
            if (s->modules[k].component == m.component && !strcmp(s->modules[k].key, m.key))
                same = &s->modules[k];
        if (same) free(m.key);
        else same = &s->modules[s->n_modules++], *same = m;
        const st_tensor **slot = part == PART_DOWN ? &same->down
                                 : part == PART_UP ? &same->up
                                 : part == PART_ALPHA ? &same->alpha
                                                      : &same->ly[part - PART_LY];
        if (*slot) /* two namings of one module in one file: which one is meant is unclear */
            return sd_set_error(SD_ERR_FORMAT, "LoRA %s: '%s' and '%s' adapt the same module",
                                file->path, (*slot)->name, t->name);
        *slot = t;
    }
    for (int k = first; k < s->n_modules; k++) {
        lora_module *m = &s->modules[k];
        if (!settle_kind(m))
            return sd_set_error(SD_ERR_FORMAT, "LoRA %s: '%s' mixes LoRA, LoHa and LoKr tensors "
                                "in one module", file->path, module_name(m));
        if (m->kind != LORA_KIND_LORA) {
            const char *missing = lora_lycoris_missing(m->kind, m->ly);
            if (missing)
                return sd_set_error(SD_ERR_TENSOR, "LoRA %s: '%s' has no matching %s tensor",
                                    file->path, module_name(m), missing);
            continue;
        }
        if (!m->down || !m->up)
            return sd_set_error(SD_ERR_TENSOR, "LoRA %s: '%s' has no matching %s tensor",
                                file->path, module_name(m), m->down ? "up" : "down");
        const st_tensor *d = m->down, *u = m->up;
        bool up_tail_ones = true; /* up's dims past the second all 1 (a 1x1 conv's); compared,
                                   * not multiplied: a 0 among huge dims would overflow a product */
        for (int j = 2; j < u->ndim; j++) up_tail_ones = up_tail_ones && u->shape[j] == 1;
        if (d->ndim < 2 || u->ndim < 2 || u->shape[1] != d->shape[0] || !up_tail_ones)
            return sd_set_error(SD_ERR_TENSOR, "LoRA %s: '%s' ([%lld x ...]) and '%s' ([%lld x "
                                "%lld ...]) do not make a rank-r product", file->path, d->name,
                                (long long)d->shape[0], u->name, (long long)u->shape[0],
                                (long long)(u->ndim > 1 ? u->shape[1] : 0));
    }
    if (s->n_modules == first)
        return sd_set_error(SD_ERR_FORMAT, "LoRA %s: no LoRA tensors in the file", file->path);
    return expand_flux(s, first);
}

sd_status lora_set_open(lora_set **out, const char *const *paths, const float *scales, int n) {
    *out = NULL;
    lora_set *s = calloc(1, sizeof *s);
    if (!s || !(s->files = calloc((size_t)n + 1, sizeof *s->files)) ||
        !(s->scales = calloc((size_t)n + 1, sizeof *s->scales))) {
        lora_set_free(s);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    sd_status st = SD_OK;
    for (int i = 0; i < n && st == SD_OK; i++) {
        st = st_open(&s->files[i], paths[i]);
        if (st != SD_OK) break;
        s->n_files++;
        s->scales[i] = scales[i];
        st = add_file(s, i);
    }
    if (st != SD_OK) {
        lora_set_free(s);
        return st;
    }
    if (s->n_modules) qsort(s->modules, (size_t)s->n_modules, sizeof *s->modules, cmp_module);
    /* Two namings in one file reaching one module (PEFT to_q beside a fused qkv): unclear. */
    for (int k = 1; k < s->n_modules && st == SD_OK; k++) {
        const lora_module *a = &s->modules[k - 1], *b = &s->modules[k];
        if (a->file == b->file && !strcmp(a->component, b->component) && !strcmp(a->key, b->key))
            st = sd_set_error(SD_ERR_FORMAT, "LoRA %s: '%s' and '%s' adapt the same module",
                              s->files[a->file].path, module_name(a), module_name(b));
    }
    if (st != SD_OK) {
        lora_set_free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

void lora_set_free(lora_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_modules; i++) free(s->modules[i].key);
    for (int i = 0; i < s->n_files; i++) st_close(&s->files[i]);
    free(s->modules);
    free(s->files);
    free(s->scales);
    free(s);
}

bool lora_set_has_ldm_unet(const lora_set *s) {
    for (int k = 0; s && k < s->n_modules; k++)
        if (!strcmp(s->modules[k].component, "unet") && lora_ldm_is_unet_key(s->modules[k].key))
            return true;
    return false;
}

sd_status lora_set_map_ldm_unet(lora_set *s, int layers_per_block, const bool *up_attn, int n_up) {
    for (int k = 0; k < s->n_modules; k++) {
        lora_module *m = &s->modules[k];
        if (strcmp(m->component, "unet") || !lora_ldm_is_unet_key(m->key)) continue;
        char mapped[512];
        if (!lora_ldm_unet_key(m->key, layers_per_block, up_attn, n_up, mapped, sizeof mapped))
            return sd_set_error(SD_ERR_UNSUPPORTED, "LoRA %s: '%s' names a UNet module in the "
                                "original layout that has no diffusers counterpart in this UNet "
                                "(%d layers per block)", s->files[m->file].path, module_name(m),
                                layers_per_block);
        char *key = strdup(mapped);
        if (!key) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        free(m->key);
        m->key = key;
    }
    qsort(s->modules, (size_t)s->n_modules, sizeof *s->modules, cmp_module);
    return SD_OK;
}

void lora_set_release(const lora_set *s) {
    for (int i = 0; s && i < s->n_files; i++) st_release_pages(s->files[i].map, s->files[i].map_size);
}

/* The first module of (component, key of `name`), or -1; `name` must end in ".weight". */
static int find_first(const lora_set *s, const char *component, const char *name) {
    if (!s || !s->n_modules) return -1;
    const size_t len = strlen(name), slen = strlen(".weight");
    if (len <= slen || strcmp(name + len - slen, ".weight")) return -1;
    char key[512];
    if (len - slen >= sizeof key) return -1;
    for (size_t i = 0; i < len - slen; i++) key[i] = name[i] == '.' ? '_' : name[i];
    key[len - slen] = '\0';
    int lo = 0, hi = s->n_modules; /* the first module not less than (component, key) */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        const lora_module *m = &s->modules[mid];
        int c = strcmp(m->component, component);
        if (!c) c = strcmp(m->key, key);
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo == s->n_modules || strcmp(s->modules[lo].component, component) ||
        strcmp(s->modules[lo].key, key))
        return -1;
    return lo;
}

bool lora_set_has(const lora_set *s, const char *component, const char *name) {
    return component && find_first(s, component, name) >= 0;
}

static void shape_text(const st_tensor *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? " x " : "",
                                 (long long)t->shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* The first row of up that row 0 of a model tensor of `rows` rows takes: 0 for a plain module,
 * a block of a fused up otherwise (lora_flux_target); false when up's rows do not fit. */
static bool up_offset(const lora_module *m, int64_t rows, int64_t *off) {
    const int64_t up_rows = m->up->shape[0];
    *off = 0;
    if (m->swap_halves && rows % 2) return false;
    if (!m->n_parts) return up_rows == rows;
    if (m->has_tail && m->part == m->n_parts - 1) { /* the rows left after the equal blocks */
        *off = up_rows - rows;
        return *off > 0 && *off % (m->n_parts - 1) == 0;
    }
    *off = m->part * rows;
    return m->has_tail ? (m->n_parts - 1) * rows < up_rows : m->n_parts * rows == up_rows;
}

static sd_status check_shapes(const lora_set *s, const lora_module *m, const st_tensor *t,
                              const char *name, const char *model_file) {
    const int64_t rank = m->down->shape[0];
    const int64_t rows = t->ndim ? t->shape[0] : 1, cols = rows ? st_numel(t) / rows : 0;
    int64_t off;
    if (up_offset(m, rows, &off) && st_numel(m->down) == rank * cols) return SD_OK;
    char ws[96], ds[96], us[96];
    shape_text(t, ws, sizeof ws);
    shape_text(m->down, ds, sizeof ds);
    shape_text(m->up, us, sizeof us);
    return sd_set_error(SD_ERR_TENSOR, "LoRA %s: '%s' %s and '%s' %s do not fit the model's '%s' "
                        "%s (%s): a LoRA made for another model?", s->files[m->file].path,
                        m->down->name, ds, m->up->name, us, name, ws, model_file);
}

static double scalar(const st_tensor *t) {
    float v;
    st_to_f32(t, &v);
    return v;
}

static bool same_module(const lora_module *a, const lora_module *b) {
    return !strcmp(a->component, b->component) && !strcmp(a->key, b->key);
}

/* The factor a module's delta is scaled by: scale * alpha / rank as diffusers (and A1111) apply
 * it; a LoHa / LoKr without alpha, or a LoKr of two whole factors, takes the scale alone. */
static double module_factor(const lora_set *s, const lora_module *m) {
    const double scale = s->scales[m->file];
    if (m->kind == LORA_KIND_LORA) {
        const int64_t rank = m->down->shape[0];
        const double alpha = m->alpha && !m->ignore_alpha ? scalar(m->alpha) : (double)rank;
        return scale * alpha / (double)rank;
    }
    const int64_t dim = lora_lycoris_dim(m->kind, m->ly);
    return m->alpha && dim ? scale * scalar(m->alpha) / (double)dim : scale;
}

static void free_lycoris(lora_lycoris **ly, int n) {
    for (int k = 0; ly && k < n; k++) lora_lycoris_free(ly[k]);
    free(ly);
}

sd_status lora_set_apply(lora_set *s, const char *component, const char *name, const st_tensor *t,
                         const char *model_file, float *w) {
    const int first = component ? find_first(s, component, name) : -1;
    if (first < 0) return SD_OK;
    int end = first + 1;
    while (end < s->n_modules && same_module(&s->modules[first], &s->modules[end])) end++;
    const int64_t rows = t->ndim ? t->shape[0] : 1, cols = st_numel(t) / rows;
    const int n = end - first;
    lora_lycoris **ly = calloc((size_t)n, sizeof *ly);
    if (!ly) return sd_set_error(SD_ERR_NOMEM, "out of memory merging LoRA into '%s'", name);
    for (int k = 0; k < n; k++) {
        const lora_module *m = &s->modules[first + k];
        const sd_status st = m->kind == LORA_KIND_LORA
                                 ? check_shapes(s, m, t, name, model_file)
                                 : lora_lycoris_open(&ly[k], m->kind, m->ly, rows, cols,
                                                     s->files[m->file].path, name);
        if (st != SD_OK) {
            free_lycoris(ly, n);
            return st;
        }
    }
    /* Every LoRA module's down and up widened once (exact for f16/bf16/f32), then one row of
     * double sums per output row: W + sum over modules of factor * (up @ down), rounded once. */
    size_t floats = 0;
    for (int k = first; k < end; k++)
        if (s->modules[k].kind == LORA_KIND_LORA)
            floats += (size_t)(st_numel(s->modules[k].down) + st_numel(s->modules[k].up));
    double *acc = malloc((size_t)cols * sizeof *acc), *sum = malloc((size_t)cols * sizeof *sum);
    float *buf = malloc((floats + 1) * sizeof *buf);
    const float **down = calloc((size_t)n, sizeof *down), **up = calloc((size_t)n, sizeof *up);
    if (!acc || !sum || !buf || !down || !up) {
        free(acc), free(sum), free(buf), free(down), free(up), free_lycoris(ly, n);
        return sd_set_error(SD_ERR_NOMEM, "out of memory merging LoRA into '%s'", name);
    }
    float *at = buf;
    for (int k = 0; k < n; k++) {
        const lora_module *m = &s->modules[first + k];
        if (m->kind != LORA_KIND_LORA) continue;
        st_to_f32(m->down, at);
        down[k] = at, at += st_numel(m->down);
        st_to_f32(m->up, at);
        up[k] = at, at += st_numel(m->up);
    }
    for (int64_t o = 0; o < rows; o++) {
        for (int64_t i = 0; i < cols; i++) acc[i] = w[o * cols + i];
        for (int k = 0; k < n; k++) {
            const lora_module *m = &s->modules[first + k];
            const double factor = module_factor(s, m);
            if (ly[k]) {
                lora_lycoris_row(ly[k], o, sum);
            } else {
                const int64_t rank = m->down->shape[0];
                int64_t off;
                up_offset(m, rows, &off); /* checked above */
                const int64_t u_row = off + (m->swap_halves ? (o + rows / 2) % rows : o);
                for (int64_t i = 0; i < cols; i++) sum[i] = 0;
                for (int64_t r = 0; r < rank; r++) {
                    const double u = up[k][u_row * rank + r];
                    const float *d = down[k] + r * cols;
                    for (int64_t i = 0; i < cols; i++) sum[i] += u * d[i];
                }
            }
            for (int64_t i = 0; i < cols; i++) acc[i] += factor * sum[i];
        }
        for (int64_t i = 0; i < cols; i++) w[o * cols + i] = (float)acc[i];
    }
    for (int k = first; k < end; k++) s->modules[k].used = true;
    free(acc), free(sum), free(buf), free(down), free(up), free_lycoris(ly, n);
    return SD_OK;
}

static bool has_component(const char *const *components, const char *c) {
    for (int i = 0; components[i]; i++)
        if (!strcmp(components[i], c)) return true;
    return false;
}

bool lora_set_is_flux(const lora_set *s) {
    for (int k = 0; s && k < s->n_modules; k++)
        if (s->modules[k].flux) return true;
    return false;
}

bool lora_set_touches(const lora_set *s, const char *component) {
    for (int k = 0; s && k < s->n_modules; k++)
        if (!strcmp(s->modules[k].component, component)) return true;
    return false;
}

sd_status lora_set_check_components(const lora_set *s, const char *const *components,
                                    bool flux_model) {
    for (int k = 0; s && k < s->n_modules; k++) {
        const lora_module *m = &s->modules[k];
        if (m->flux && !flux_model)
            return sd_set_error(SD_ERR_UNSUPPORTED, "LoRA %s: '%s' adapts FLUX.1's transformer "
                                "(BFL module names): the LoRA is for FLUX.1, not this model",
                                s->files[m->file].path, module_name(m));
        if (has_component(components, m->component)) continue;
        return sd_set_error(SD_ERR_UNSUPPORTED, "LoRA %s: '%s' adapts a %s, which this model does "
                            "not have: the LoRA is made for another family%s",
                            s->files[m->file].path, module_name(m), m->component,
                            !strcmp(m->component, "text_encoder_2") ? " (SDXL has two text "
                            "encoders)" : "");
    }
    return SD_OK;
}

sd_status lora_set_check(const lora_set *s) {
    if (!s) return SD_OK;
    for (int f = 0; f < s->n_files; f++) {
        int total = 0, used = 0;
        const lora_module *unmatched = NULL;
        for (int k = 0; k < s->n_modules; k++) {
            const lora_module *m = &s->modules[k];
            if (m->file != f) continue;
            total++;
            used += m->used;
            if (!m->used && !unmatched) unmatched = m;
        }
        const char *path = s->files[f].path;
        if (!used)
            return sd_set_error(SD_ERR_TENSOR, "LoRA %s: no key matches the model (e.g. '%s', "
                                "module %s/%s)", path, module_name(unmatched),
                                unmatched->component, unmatched->key);
        if (used < total)
            sd_log(SD_LOG_WARN, "LoRA %s: %d of %d modules matched the model (first unmatched: "
                   "'%s')", path, used, total, module_name(unmatched));
        else
            sd_log(SD_LOG_INFO, "LoRA %s: %d modules merged, scale %g", path, used,
                   (double)s->scales[f]);
    }
    return SD_OK;
}
