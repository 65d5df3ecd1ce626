/* LyCORIS LoHa and LoKr modules (lora.h), as A1111's network_hada.py / network_lokr.py build
 * their deltas (diffusers' load_lora_weights does not read them):
 * - LoHa: (w1_a @ w1_b) * (w2_a @ w2_b), elementwise, reshaped to the weight; scaled by
 *   alpha / rank (rank: w1_b's rows), or 1 without alpha;
 * - LoKr: kron(w1, w2) reshaped to the weight, each factor whole (lokr_w1) or a product
 *   (lokr_w1_a @ lokr_w1_b); alpha / rank applies only when a factor is a product (rank: w2_b's
 *   rows, else w1_b's), scale 1 otherwise.
 * A convolution's [cout][cin][kh][kw] weight is taken as [cout][cin*kh*kw]: kron with a 4-D w2 and
 * kron with w2 flattened to 2-D then reshaped give the same layout, so both read the same here.
 * Products are summed in double over the rank in order, as the rest of the merge (core/lora.c). */
#include <stdlib.h>
#include <string.h>

#include "lora.h"

struct lora_lycoris {
    lora_kind kind;
    int64_t cols;
    /* LoHa: the four factors widened to float32; LoKr: w1 [n1][m1] and w2 [n2][c2] in double */
    float *f[4];
    int64_t r1, r2;
    double *w1, *w2;
    int64_t n1, m1, n2, c2;
};

const char *lora_lycoris_missing(lora_kind kind, const st_tensor *const ly[LY_N]) {
    if (kind == LORA_KIND_LOHA) {
        static const char *const names[] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
        for (int i = 0; i < 4; i++)
            if (!ly[LY_HADA_W1A + i]) return names[i];
        return NULL;
    }
    if (!ly[LY_LOKR_W1] && !(ly[LY_LOKR_W1A] && ly[LY_LOKR_W1B])) return "lokr_w1 (or lokr_w1_a and _b)";
    if (!ly[LY_LOKR_W2] && !(ly[LY_LOKR_W2A] && ly[LY_LOKR_W2B])) return "lokr_w2 (or lokr_w2_a and _b)";
    return NULL;
}

int64_t lora_lycoris_dim(lora_kind kind, const st_tensor *const ly[LY_N]) {
    if (kind == LORA_KIND_LOHA) return ly[LY_HADA_W1B]->shape[0];
    if (!ly[LY_LOKR_W2] && ly[LY_LOKR_W2B]) return ly[LY_LOKR_W2B]->shape[0];
    if (!ly[LY_LOKR_W1] && ly[LY_LOKR_W1B]) return ly[LY_LOKR_W1B]->shape[0];
    return 0;
}

static int64_t cols_of(const st_tensor *t) { return t->ndim ? st_numel(t) / t->shape[0] : 0; }

static float *widen(const st_tensor *t) {
    float *v = malloc((size_t)st_numel(t) * sizeof *v + sizeof *v);
    if (v) st_to_f32(t, v);
    return v;
}

/* One Kronecker factor as a [*rows][*cols] double matrix: the tensor itself, or a @ b. */
static double *kron_factor(const st_tensor *whole, const st_tensor *a, const st_tensor *b,
                           int64_t *rows, int64_t *cols, bool *ok) {
    if (whole) {
        *rows = whole->shape[0], *cols = cols_of(whole);
        float *v = widen(whole);
        double *d = v ? malloc((size_t)(*rows * *cols) * sizeof *d) : NULL;
        for (int64_t i = 0; d && i < *rows * *cols; i++) d[i] = v[i];
        free(v);
        return d;
    }
    const int64_t r = b->shape[0];
    *rows = a->shape[0], *cols = cols_of(b);
    if (cols_of(a) != r) {
        *ok = false;
        return NULL;
    }
    float *av = widen(a), *bv = widen(b);
    double *d = av && bv ? calloc((size_t)(*rows * *cols) + 1, sizeof *d) : NULL;
    for (int64_t i = 0; d && i < *rows; i++)
        for (int64_t k = 0; k < r; k++) {
            const double u = av[i * r + k];
            for (int64_t j = 0; j < *cols; j++) d[i * *cols + j] += u * bv[k * *cols + j];
        }
    free(av), free(bv);
    return d;
}

sd_status lora_lycoris_open(lora_lycoris **out, lora_kind kind, const st_tensor *const ly[LY_N],
                            int64_t rows, int64_t cols, const char *path, const char *name) {
    *out = NULL;
    lora_lycoris *c = calloc(1, sizeof *c);
    if (!c) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    c->kind = kind, c->cols = cols;
    bool ok = true, mem = true;
    const st_tensor *shown = NULL;
    if (kind == LORA_KIND_LOHA) {
        const st_tensor *w1a = ly[LY_HADA_W1A], *w1b = ly[LY_HADA_W1B];
        const st_tensor *w2a = ly[LY_HADA_W2A], *w2b = ly[LY_HADA_W2B];
        c->r1 = w1b->shape[0], c->r2 = w2b->shape[0];
        ok = w1a->shape[0] == rows && cols_of(w1a) == c->r1 && cols_of(w1b) == cols &&
             w2a->shape[0] == rows && cols_of(w2a) == c->r2 && cols_of(w2b) == cols;
        shown = w1a;
        for (int i = 0; i < 4 && ok; i++) mem &= (c->f[i] = widen(ly[LY_HADA_W1A + i])) != NULL;
    } else {
        c->w1 = kron_factor(ly[LY_LOKR_W1], ly[LY_LOKR_W1A], ly[LY_LOKR_W1B], &c->n1, &c->m1, &ok);
        c->w2 = kron_factor(ly[LY_LOKR_W2], ly[LY_LOKR_W2A], ly[LY_LOKR_W2B], &c->n2, &c->c2, &ok);
        ok = ok && c->n1 * c->n2 == rows && c->m1 * c->c2 == cols;
        mem = !ok || (c->w1 && c->w2);
        shown = ly[LY_LOKR_W1] ? ly[LY_LOKR_W1] : ly[LY_LOKR_W1A];
    }
    sd_status st = SD_OK;
    if (!ok)
        st = sd_set_error(SD_ERR_TENSOR, "LoRA %s: the %s factors of '%s' do not make the model's "
                          "'%s' [%lld x %lld] (a LoRA made for another model?)", path,
                          kind == LORA_KIND_LOHA ? "LoHa" : "LoKr", shown->name, name,
                          (long long)rows, (long long)cols);
    else if (!mem)
        st = sd_set_error(SD_ERR_NOMEM, "out of memory merging LoRA into '%s'", name);
    if (st != SD_OK) {
        lora_lycoris_free(c);
        return st;
    }
    *out = c;
    return SD_OK;
}

void lora_lycoris_row(const lora_lycoris *c, int64_t o, double *row) {
    const int64_t cols = c->cols;
    if (c->kind == LORA_KIND_LOHA) {
        for (int64_t i = 0; i < cols; i++) {
            double p1 = 0, p2 = 0;
            for (int64_t r = 0; r < c->r1; r++)
                p1 += (double)c->f[0][o * c->r1 + r] * c->f[1][r * cols + i];
            for (int64_t r = 0; r < c->r2; r++)
                p2 += (double)c->f[2][o * c->r2 + r] * c->f[3][r * cols + i];
            row[i] = p1 * p2;
        }
        return;
    }
    const double *a = c->w1 + (o / c->n2) * c->m1, *b = c->w2 + (o % c->n2) * c->c2;
    for (int64_t j1 = 0; j1 < c->m1; j1++)
        for (int64_t j2 = 0; j2 < c->c2; j2++) row[j1 * c->c2 + j2] = a[j1] * b[j2];
}

void lora_lycoris_free(lora_lycoris *c) {
    if (!c) return;
    for (int i = 0; i < 4; i++) free(c->f[i]);
    free(c->w1), free(c->w2);
    free(c);
}
