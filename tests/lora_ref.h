/* The LoRA ground truth of tests/test_lora.c, written without the library: its own safetensors
 * reader (cJSON for the header) and writer, a deterministic random LoRA generator that writes
 * kohya-ss, LoCon, LoHa, LoKr and diffusers/PEFT files, and a float64 merge into a copy of a
 * model folder:
 *     W' = W + sum_i scale_i * (alpha_i / rank_i) * (up_i @ down_i)
 * summed in double (products of floats are exact in double; the rank sum runs in order r = 0..),
 * rounded once to float32 and stored as F32 (every tensor of a changed component is stored F32:
 * widening F16 is exact, so the copy holds the numbers the library computes with).
 * LyCORIS modules add their own deltas instead of up @ down (ref_lycoris_delta, from LyCORIS' and
 * A1111's definitions): LoHa (w1_a @ w1_b) * (w2_a @ w2_b), LoKr kron(w1, w2), scaled as A1111 does.
 * The merge works from the generator's own list of (component, tensor) pairs, never from the
 * file's key names, so the name conversions under test are not reused here. */
#ifndef SD_TEST_LORA_REF_H
#define SD_TEST_LORA_REF_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[256];
    char dtype[8];
    int ndim;
    int64_t shape[4];
    size_t nbytes;
    unsigned char *data; /* malloc'd copy */
} ref_tensor;

typedef struct {
    int n;
    ref_tensor *t;
} ref_file;

static int64_t ref_numel(const ref_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static double ref_half(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023, s = h >> 15;
    double v = e ? (1024 + m) * ldexp(1.0, e - 25) : m * ldexp(1.0, -24);
    if (e == 31) v = m ? NAN : INFINITY;
    return s ? -v : v;
}

static double ref_get(const ref_tensor *t, int64_t i) {
    if (!strcmp(t->dtype, "F32")) {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    if (!strcmp(t->dtype, "F16")) return ref_half(h);
    uint32_t b = (uint32_t)h << 16; /* BF16 */
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static bool ref_is_float(const ref_tensor *t) {
    return !strcmp(t->dtype, "F32") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16");
}

static bool ref_read(const char *path, ref_file *out) {
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    uint64_t hlen = 0;
    bool ok = fread(&hlen, 8, 1, fp) == 1 && hlen < (1u << 26);
    char *hdr = ok ? calloc(hlen + 1, 1) : NULL;
    ok = hdr && fread(hdr, 1, hlen, fp) == hlen;
    cJSON *root = ok ? cJSON_Parse(hdr) : NULL;
    free(hdr);
    const long base = 8 + (long)hlen;
    for (cJSON *it = root ? root->child : NULL; it && ok; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) continue;
        out->t = realloc(out->t, (size_t)(out->n + 1) * sizeof *out->t);
        ref_tensor *t = &out->t[out->n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", it->string);
        snprintf(t->dtype, sizeof t->dtype, "%s",
                 cJSON_GetObjectItem(it, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(it, "shape"), *off = cJSON_GetObjectItem(it, "data_offsets");
        t->ndim = cJSON_GetArraySize(shape);
        for (int i = 0; i < t->ndim && i < 4; i++)
            t->shape[i] = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
        const long b = (long)cJSON_GetArrayItem(off, 0)->valuedouble;
        t->nbytes = (size_t)(cJSON_GetArrayItem(off, 1)->valuedouble - b);
        t->data = malloc(t->nbytes + 1);
        ok = t->data && fseek(fp, base + b, SEEK_SET) == 0 &&
             fread(t->data, 1, t->nbytes, fp) == t->nbytes;
    }
    cJSON_Delete(root);
    fclose(fp);
    return ok && root;
}

static void ref_free(ref_file *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    free(f->t);
    memset(f, 0, sizeof *f);
}


/* Writes tensors in the order given (names must be unique). */
static bool ref_write(const char *path, const ref_file *f) {
    char *hdr = malloc(256 + (size_t)f->n * 400);
    size_t used = (size_t)sprintf(hdr, "{");
    size_t off = 0;
    for (int i = 0; i < f->n; i++) {
        const ref_tensor *t = &f->t[i];
        used += (size_t)sprintf(hdr + used, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            used += (size_t)sprintf(hdr + used, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        used += (size_t)sprintf(hdr + used, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    used += (size_t)sprintf(hdr + used, "}");
    while (used % 8) hdr[used++] = ' ';
    FILE *fp = fopen(path, "wb");
    uint64_t hlen = used;
    bool ok = fp && fwrite(&hlen, 8, 1, fp) == 1 && fwrite(hdr, 1, used, fp) == used;
    for (int i = 0; i < f->n && ok; i++) ok = fwrite(f->t[i].data, 1, f->t[i].nbytes, fp) == f->t[i].nbytes;
    if (fp) ok = fclose(fp) == 0 && ok;
    free(hdr);
    return ok;
}

static ref_tensor ref_f32(const char *name, int ndim, const int64_t *shape, const float *v) {
    ref_tensor t = {.ndim = ndim};
    snprintf(t.name, sizeof t.name, "%s", name);
    strcpy(t.dtype, "F32");
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    t.nbytes = (size_t)ref_numel(&t) * 4;
    t.data = malloc(t.nbytes + 4);
    memcpy(t.data, v, t.nbytes);
    return t;
}

static void ref_add(ref_file *f, ref_tensor t) {
    f->t = realloc(f->t, (size_t)(f->n + 1) * sizeof *f->t);
    f->t[f->n++] = t;
}

/* One adapted module, as generated: the model tensor it changes and its factors. */
typedef struct {
    char component[32];
    char tensor[256]; /* "<module>.weight" as the model names it */
    int rank, kh, kw;
    int64_t out, in; /* in: the weight's input channels */
    float alpha;
    bool has_alpha;
    float *down; /* [rank][in][kh][kw] */
    float *up;   /* [out][rank] */
    /* LyCORIS (ref_lycoris_make): kind 1 LoHa, f = w1_a [out][rank], w1_b [rank][in*kh*kw],
     * w2_a, w2_b likewise; kind 2 LoKr, f = w1 [n1][m1] or w1_a [n1][rank] and w1_b [rank][m1],
     * w2 [n2][c2] or w2_a [n2][rank] and w2_b [rank][c2] (c2 = in*kh*kw / m1). */
    int kind;
    float *f[4];
    int64_t n1, m1, n2, c2;
    bool w1_factored, w2_factored;
} ref_module;

typedef struct {
    int n;
    ref_module m[512];
} ref_lora;

static uint64_t ref_rng = 1;
static float ref_rand(void) { /* deterministic, in [-1, 1) */
    ref_rng = ref_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(ref_rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* Picks the weights of `component` of model `dir` whose name contains one of `pats`
 * (NULL-terminated): 2-D weights and, with `convs`, 3x3 convolutions (LoCon). */
__attribute__((unused)) /* test_lora_flux.c makes its own modules */
static void ref_lora_pick(ref_lora *l, const char *dir, const char *component, const char *file,
                          const char *const *pats, bool convs, int rank, float alpha,
                          bool has_alpha, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", dir, component, file);
    ref_file f;
    if (!ref_read(path, &f)) return;
    ref_rng = seed;
    for (int i = 0; i < f.n && l->n < 512; i++) {
        const ref_tensor *t = &f.t[i];
        const size_t len = strlen(t->name);
        if (len < 8 || strcmp(t->name + len - 7, ".weight") || !ref_is_float(t)) continue;
        bool hit = false;
        for (int k = 0; pats[k] && !hit; k++) hit = strstr(t->name, pats[k]) != NULL;
        const bool conv = t->ndim == 4 && t->shape[2] == 3;
        if (!hit || !(t->ndim == 2 || (convs && conv))) continue;
        ref_module *m = &l->m[l->n++];
        memset(m, 0, sizeof *m);
        snprintf(m->component, sizeof m->component, "%s", component);
        snprintf(m->tensor, sizeof m->tensor, "%s", t->name);
        m->rank = rank, m->alpha = alpha, m->has_alpha = has_alpha;
        m->out = t->shape[0], m->in = t->shape[1];
        m->kh = conv ? 3 : 1, m->kw = conv ? 3 : 1;
        const int64_t nd = rank * m->in * m->kh * m->kw, nu = m->out * rank;
        m->down = malloc((size_t)nd * sizeof *m->down);
        m->up = malloc((size_t)nu * sizeof *m->up);
        for (int64_t j = 0; j < nd; j++) m->down[j] = 0.5f * ref_rand();
        for (int64_t j = 0; j < nu; j++) m->up[j] = 0.5f * ref_rand();
    }
    ref_free(&f);
}

static void ref_lora_free(ref_lora *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->m[i].down), free(l->m[i].up);
        for (int k = 0; k < 4; k++) free(l->m[i].f[k]);
    }
    l->n = 0;
}

static float *ref_random(int64_t n) {
    float *v = malloc((size_t)n * sizeof *v + sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = 0.5f * ref_rand();
    return v;
}

/* Turns the modules picked by ref_lora_pick into LyCORIS ones of `kind` (1 LoHa, 2 LoKr with
 * n1 = 2, m1 = 2 and the factors whole or products as asked), new random factors. */
__attribute__((unused))
static void ref_lycoris_make(ref_lora *l, int kind, bool w1_factored, bool w2_factored,
                             uint64_t seed) {
    ref_rng = seed;
    for (int i = 0; i < l->n; i++) {
        ref_module *m = &l->m[i];
        const int64_t cols = m->in * m->kh * m->kw, r = m->rank;
        m->kind = kind;
        if (kind == 1) {
            m->f[0] = ref_random(m->out * r), m->f[1] = ref_random(r * cols);
            m->f[2] = ref_random(m->out * r), m->f[3] = ref_random(r * cols);
            continue;
        }
        m->n1 = 2, m->m1 = 2, m->n2 = m->out / 2, m->c2 = cols / 2;
        m->w1_factored = w1_factored, m->w2_factored = w2_factored;
        if (w1_factored) m->f[0] = ref_random(m->n1 * r), m->f[1] = ref_random(r * m->m1);
        else m->f[0] = ref_random(m->n1 * m->m1);
        if (w2_factored) m->f[2] = ref_random(m->n2 * r), m->f[3] = ref_random(r * m->c2);
        else m->f[2] = ref_random(m->n2 * m->c2);
    }
}

/* LoKr's factor k (0: w1, 1: w2) at (i, j), in double: whole, or the product summed over the rank
 * in order. */
static double ref_kron_factor(const ref_module *m, int k, int64_t i, int64_t j) {
    const bool factored = k ? m->w2_factored : m->w1_factored;
    const float *a = m->f[2 * k], *b = m->f[2 * k + 1];
    const int64_t cols = k ? m->c2 : m->m1;
    if (!factored) return a[i * cols + j];
    double v = 0;
    for (int r = 0; r < m->rank; r++) v += (double)a[i * m->rank + r] * b[r * cols + j];
    return v;
}

/* A LyCORIS module's delta at (o, j) before its factor, and the factor itself. */
static double ref_lycoris_delta(const ref_module *m, int64_t o, int64_t j) {
    if (m->kind == 1) {
        const int64_t cols = m->in * m->kh * m->kw;
        double p1 = 0, p2 = 0;
        for (int r = 0; r < m->rank; r++) p1 += (double)m->f[0][o * m->rank + r] * m->f[1][r * cols + j];
        for (int r = 0; r < m->rank; r++) p2 += (double)m->f[2][o * m->rank + r] * m->f[3][r * cols + j];
        return p1 * p2;
    }
    /* kron(w1, w2)[i1 * n2 + i2][j1 * c2 + j2] = w1[i1][j1] * w2[i2][j2] */
    return ref_kron_factor(m, 0, o / m->n2, j / m->c2) * ref_kron_factor(m, 1, o % m->n2, j % m->c2);
}

static double ref_lycoris_factor(const ref_module *m, double scale) {
    /* A1111: alpha / rank where a rank exists (LoHa; LoKr with a factored side), else 1 */
    const bool has_rank = m->kind == 1 || m->w1_factored || m->w2_factored;
    return m->has_alpha && has_rank ? scale * m->alpha / (double)m->rank : scale;
}

typedef enum { REF_KOHYA, REF_PEFT, REF_OLD_DIFFUSERS, REF_KOHYA_LDM } ref_format;

/* The original (LDM / SGM) name of an SDXL UNet module (2 layers per block, up blocks 0 and 1
 * with attention, as sdxl-tiny and SDXL base), from diffusers' unet_2d_condition layout and
 * convert_diffusers_to_original_sdxl.py's table. */
static bool ref_ldm_name(const char *d, char *out, size_t size) {
    static const char *const res[][2] = {{"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},
                                         {"time_emb_proj", "emb_layers.1"},
                                         {"norm2", "out_layers.0"}, {"conv2", "out_layers.3"},
                                         {"conv_shortcut", "skip_connection"}};
    int b, r, n = 0;
    char rest[256] = "";
    const char *rp = NULL;
    if (sscanf(d, "down_blocks.%d.attentions.%d.%255s", &b, &r, rest) == 3)
        return snprintf(out, size, "input_blocks.%d.1.%s", 1 + b * 3 + r, rest) > 0;
    if (sscanf(d, "up_blocks.%d.attentions.%d.%255s", &b, &r, rest) == 3)
        return snprintf(out, size, "output_blocks.%d.1.%s", b * 3 + r, rest) > 0;
    if (sscanf(d, "mid_block.attentions.0.%255s", rest) == 1)
        return snprintf(out, size, "middle_block.1.%s", rest) > 0;
    if (sscanf(d, "down_blocks.%d.downsamplers.0.conv%n", &b, &n) == 1 && n && !d[n])
        return snprintf(out, size, "input_blocks.%d.0.op", (b + 1) * 3) > 0;
    if (sscanf(d, "up_blocks.%d.upsamplers.0.conv%n", &b, &n) == 1 && n && !d[n])
        return snprintf(out, size, "output_blocks.%d.%d.conv", b * 3 + 2, b < 2 ? 2 : 1) > 0;
    int kind = 0;
    if (sscanf(d, "down_blocks.%d.resnets.%d.%255s", &b, &r, rest) == 3) kind = 1;
    else if (sscanf(d, "up_blocks.%d.resnets.%d.%255s", &b, &r, rest) == 3) kind = 2;
    else if (sscanf(d, "mid_block.resnets.%d.%255s", &r, rest) == 2) kind = 3;
    for (size_t i = 0; kind && i < sizeof res / sizeof *res; i++)
        if (!strcmp(rest, res[i][0])) rp = res[i][1];
    if (!rp) return false;
    if (kind == 1) return snprintf(out, size, "input_blocks.%d.0.%s", 1 + b * 3 + r, rp) > 0;
    if (kind == 2) return snprintf(out, size, "output_blocks.%d.0.%s", b * 3 + r, rp) > 0;
    return snprintf(out, size, "middle_block.%d.%s", r * 2, rp) > 0;
}

/* kohya: lora_unet_ / lora_te_ (lora_te1_ / lora_te2_ when `sdxl`) + module with '_';
 * PEFT: <component>.<module>.lora_A/lora_B.weight. Convolutions keep their 4-D shapes. */
__attribute__((unused))
static bool ref_lora_write(const ref_lora *l, const char *path, ref_format fmt, bool sdxl) {
    ref_file f = {0};
    for (int i = 0; i < l->n; i++) {
        const ref_module *m = &l->m[i];
        char module[256], name[320];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(m->tensor) - 7), m->tensor);
        if (fmt == REF_KOHYA_LDM && !strcmp(m->component, "unet")) {
            char ldm[256];
            if (!ref_ldm_name(module, ldm, sizeof ldm)) {
                fprintf(stderr, "no LDM name for %s\n", module);
                ref_free(&f);
                return false;
            }
            snprintf(module, sizeof module, "%s", ldm);
        }
        if (fmt == REF_KOHYA || fmt == REF_KOHYA_LDM) {
            for (char *c = module; *c; c++)
                if (*c == '.') *c = '_';
            const char *prefix = !strcmp(m->component, "unet") ? "lora_unet_"
                                 : !strcmp(m->component, "text_encoder_2") ? "lora_te2_"
                                 : sdxl ? "lora_te1_" : "lora_te_";
            char base[300];
            snprintf(base, sizeof base, "%s%s", prefix, module);
            const bool conv = m->kh > 1;
            const int64_t ds[4] = {m->rank, m->in, m->kh, m->kw}, us[4] = {m->out, m->rank, 1, 1};
            const int64_t r = m->rank, cols = m->in * m->kh * m->kw;
            if (m->kind == 1) { /* LyCORIS stores w*_b flattened */
                static const char *const sfx[] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
                for (int k = 0; k < 4; k++) {
                    const int64_t sh[2] = {k % 2 ? r : m->out, k % 2 ? cols : r};
                    snprintf(name, sizeof name, "%s.%s", base, sfx[k]);
                    ref_add(&f, ref_f32(name, 2, sh, m->f[k]));
                }
            } else if (m->kind == 2) { /* a whole conv w2 keeps its kernel: [n2][m2][kh][kw] */
                const int64_t w1[2] = {m->n1, m->m1}, w1a[2] = {m->n1, r}, w1b[2] = {r, m->m1};
                const int64_t w2[4] = {m->n2, m->in / m->m1, m->kh, m->kw};
                const int64_t w2a[2] = {m->n2, r}, w2b[2] = {r, m->c2};
                if (m->w1_factored) {
                    snprintf(name, sizeof name, "%s.lokr_w1_a", base);
                    ref_add(&f, ref_f32(name, 2, w1a, m->f[0]));
                    snprintf(name, sizeof name, "%s.lokr_w1_b", base);
                    ref_add(&f, ref_f32(name, 2, w1b, m->f[1]));
                } else {
                    snprintf(name, sizeof name, "%s.lokr_w1", base);
                    ref_add(&f, ref_f32(name, 2, w1, m->f[0]));
                }
                if (m->w2_factored) {
                    snprintf(name, sizeof name, "%s.lokr_w2_a", base);
                    ref_add(&f, ref_f32(name, 2, w2a, m->f[2]));
                    snprintf(name, sizeof name, "%s.lokr_w2_b", base);
                    ref_add(&f, ref_f32(name, 2, w2b, m->f[3]));
                } else {
                    snprintf(name, sizeof name, "%s.lokr_w2", base);
                    ref_add(&f, ref_f32(name, conv ? 4 : 2, w2, m->f[2]));
                }
            } else {
                snprintf(name, sizeof name, "%s.lora_down.weight", base);
                ref_add(&f, ref_f32(name, conv ? 4 : 2, ds, m->down));
                snprintf(name, sizeof name, "%s.lora_up.weight", base);
                ref_add(&f, ref_f32(name, conv ? 4 : 2, us, m->up));
            }
            if (m->has_alpha) {
                snprintf(name, sizeof name, "%s.alpha", base);
                ref_add(&f, ref_f32(name, 0, NULL, &m->alpha));
            }
        } else if (fmt == REF_OLD_DIFFUSERS) {
            /* <attn>.processor.<proj>_lora.down.weight, to_out.0 written to_out (attention
             * projections only). */
            char *proj = strstr(module, ".to_");
            if (!proj) continue;
            *proj = '\0';
            char *zero = strstr(proj + 1, ".0");
            if (zero) *zero = '\0';
            const int64_t ds[2] = {m->rank, m->in}, us[2] = {m->out, m->rank};
            snprintf(name, sizeof name, "%s.%s.processor.%s_lora.down.weight", m->component,
                     module, proj + 1);
            ref_add(&f, ref_f32(name, 2, ds, m->down));
            snprintf(name, sizeof name, "%s.%s.processor.%s_lora.up.weight", m->component,
                     module, proj + 1);
            ref_add(&f, ref_f32(name, 2, us, m->up));
        } else {
            const int64_t ds[2] = {m->rank, m->in * m->kh * m->kw}, us[2] = {m->out, m->rank};
            snprintf(name, sizeof name, "%s.%s.lora_A.weight", m->component, module);
            ref_add(&f, ref_f32(name, 2, ds, m->down));
            snprintf(name, sizeof name, "%s.%s.lora_B.weight", m->component, module);
            ref_add(&f, ref_f32(name, 2, us, m->up));
            if (m->has_alpha) {
                snprintf(name, sizeof name, "%s.%s.alpha", m->component, module);
                ref_add(&f, ref_f32(name, 0, NULL, &m->alpha));
            }
        }
    }
    const bool ok = ref_write(path, &f);
    ref_free(&f);
    return ok;
}

/* Merges n LoRAs (with scales) into component `component` (weights file `file`) of model `src`,
 * writing dst/<component>/<file> as F32; the caller links the rest of the folder. */
__attribute__((unused)) /* not every test merges */
static bool ref_merge_component(const char *src, const char *dst, const char *component,
                                const char *file, const ref_lora *const *loras,
                                const float *scales, int n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", src, component, file);
    ref_file f;
    if (!ref_read(path, &f)) return false;
    ref_file out = {0};
    for (int i = 0; i < f.n; i++) {
        ref_tensor *t = &f.t[i];
        if (!ref_is_float(t)) { /* position ids: as they are */
            ref_add(&out, *t);
            t->data = NULL;
            continue;
        }
        const int64_t numel = ref_numel(t), rows = t->ndim ? t->shape[0] : 1, cols = numel / rows;
        float *v = malloc((size_t)numel * sizeof *v + 4);
        for (int64_t o = 0; o < rows; o++) {
            double *acc = malloc((size_t)cols * sizeof *acc), *sum = malloc((size_t)cols * sizeof *sum);
            for (int64_t j = 0; j < cols; j++) acc[j] = ref_get(t, o * cols + j);
            for (int k = 0; k < n; k++)
                for (int q = 0; q < loras[k]->n; q++) {
                    const ref_module *m = &loras[k]->m[q];
                    if (strcmp(m->component, component) || strcmp(m->tensor, t->name)) continue;
                    if (m->kind) {
                        const double factor = ref_lycoris_factor(m, scales[k]);
                        for (int64_t j = 0; j < cols; j++) acc[j] += factor * ref_lycoris_delta(m, o, j);
                        continue;
                    }
                    const double alpha = m->has_alpha ? m->alpha : m->rank;
                    const double factor = (double)scales[k] * alpha / (double)m->rank;
                    for (int64_t j = 0; j < cols; j++) sum[j] = 0;
                    for (int r = 0; r < m->rank; r++)
                        for (int64_t j = 0; j < cols; j++)
                            sum[j] += (double)m->up[o * m->rank + r] * m->down[r * cols + j];
                    for (int64_t j = 0; j < cols; j++) acc[j] += factor * sum[j];
                }
            for (int64_t j = 0; j < cols; j++) v[o * cols + j] = (float)acc[j];
            free(acc), free(sum);
        }
        ref_add(&out, ref_f32(t->name, t->ndim, t->shape, v));
        free(v);
    }
    snprintf(path, sizeof path, "%s/%s/%s", dst, component, file);
    const bool ok = ref_write(path, &out);
    ref_free(&out);
    ref_free(&f);
    return ok;
}

#endif
