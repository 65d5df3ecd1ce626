/* Textual-inversion embeddings (sd_pipeline_add_embedding): vectors a trigger word stands for.
 *
 * Files (safetensors only; nothing is ever unpickled):
 *   - A1111: one tensor [n][width] or [width] (commonly `emb_params`, or `string_to_param.*`),
 *     the trigger being the file name without extension (A1111's EmbeddingDatabase);
 *   - SDXL (A1111 and others): `clip_l` [n][768] for text_encoder and `clip_g` [n][1280] for
 *     text_encoder_2;
 *   - diffusers' learned_embeds.safetensors: one tensor named by its token ("<cat-toy>"), which is
 *     the trigger when the file is called learned_embeds*.
 *
 * Each embedding serves both prompt syntaxes:
 *   - plain, as diffusers' load_textual_inversion: the trigger and trigger_1 ... trigger_{n-1} are
 *     added to the tokenizer (matched anywhere in the lower-cased text), their rows appended to the
 *     text encoder's token table, and a prompt's trigger is spelled out as "trigger trigger_1 ..."
 *     (maybe_convert_prompt, a plain text replacement);
 *   - a1111: the trigger's BPE tokens are looked for in each prompt piece (a1111_chunks.c) and the
 *     vectors put at their positions (pl_embeddings_triggers). */
#include "embeddings.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/fileutil.h"
#include "../core/log.h"
#include "../core/safetensors.h"
#include "embed_cache.h"

static bool ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

/* The file name without folder and extension. */
static char *file_stem(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    const size_t n = dot && dot > base ? (size_t)(dot - base) : strlen(base);
    return strndup(base, n);
}

/* Tensor t as [n][width] float32 rows; the width must be `want` (0: not used by the model). */
static sd_status read_vectors(const char *path, const st_tensor *t, int want, const char *what,
                              float **out, int *n) {
    if (t->ndim < 1 || t->ndim > 2 || !st_is_float(t->dtype))
        return sd_set_error(SD_ERR_FORMAT, "%s: tensor '%s' is not a [vectors][width] float tensor",
                            path, t->name);
    const int64_t width = t->shape[t->ndim - 1], rows = t->ndim == 2 ? t->shape[0] : 1;
    if (width != want)
        return sd_set_error(SD_ERR_ARG, "%s: embedding vectors are %lld wide; %s takes %d (an "
                            "embedding made for another model?)", path, (long long)width, what,
                            want);
    if (rows < 1 || rows > 75)
        return sd_set_error(SD_ERR_FORMAT, "%s: %lld vectors (1 to 75 fit a prompt)", path,
                            (long long)rows);
    *out = malloc((size_t)st_numel(t) * sizeof **out);
    if (!*out) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    st_to_f32(t, *out);
    *n = (int)rows;
    return SD_OK;
}

/* The vectors of an opened file for p's encoders into e (e->name set by the caller or here). */
static sd_status read_file(const sd_pipeline *p, const st_file *f, pl_embedding *e) {
    const char *path = f->path;
    const st_tensor *l = st_find(f, "clip_l"), *g = st_find(f, "clip_g");
    const int w0 = clip_text_get_config(p->text_encoder ? p->text_encoder : p->text_encoder_2)
                       ->hidden_size;
    if (p->text_encoder_2) { /* SDXL: both encoders, or text_encoder_2 alone (refiners) */
        if (!g)
            return sd_set_error(SD_ERR_ARG, "%s: no 'clip_g' tensor: SDXL takes embeddings made "
                                "for SDXL (clip_l and clip_g)", path);
        int n_l = 0, n_g = 0;
        const int wg = clip_text_get_config(p->text_encoder_2)->hidden_size;
        SD_TRY(read_vectors(path, g, wg, "text_encoder_2", &e->vec[1], &n_g));
        if (p->text_encoder) {
            if (!l) return sd_set_error(SD_ERR_ARG, "%s: no 'clip_l' tensor for text_encoder", path);
            SD_TRY(read_vectors(path, l, w0, "text_encoder", &e->vec[0], &n_l));
            if (n_l != n_g)
                return sd_set_error(SD_ERR_FORMAT, "%s: clip_l has %d vectors, clip_g %d", path,
                                    n_l, n_g);
        }
        e->n_vectors = n_g;
        return SD_OK;
    }
    if (f->n_tensors != 1)
        return sd_set_error(SD_ERR_ARG, "%s: %d tensors; an embedding for this model has one "
                            "([vectors][%d])%s", path, f->n_tensors, w0,
                            g ? " (this one is made for SDXL)" : "");
    const st_tensor *t = &f->tensors[0];
    SD_TRY(read_vectors(path, t, w0, "the text encoder", &e->vec[0], &e->n_vectors));
    /* diffusers' learned_embeds.safetensors is keyed by its token. */
    if (!e->name) {
        char *stem = file_stem(path);
        if (stem && !strncmp(stem, "learned_embeds", 14) && strcmp(t->name, "emb_params"))
            e->name = strdup(t->name);
        free(stem);
    }
    return SD_OK;
}

void pl_embeddings_free(sd_pipeline *p) {
    for (int i = 0; i < p->n_embeddings; i++) {
        free(p->embeddings[i].name);
        free(p->embeddings[i].vec[0]), free(p->embeddings[i].vec[1]);
    }
    free(p->embeddings);
    p->embeddings = NULL, p->n_embeddings = 0;
}

/* "name" for one vector; "name", "name_1", ... for more (load_textual_inversion's tokens). */
static char *vector_token(const char *name, int k) {
    return k ? sd_strfmt("%s_%d", name, k) : strdup(name);
}

/* A1111 would replace every occurrence of a trigger that is one vocabulary word; diffusers adds
 * a token that shadows the word: warn either way. */
static void warn_collision(const clip_tokenizer *tok, const char *name) {
    int32_t *ids = NULL;
    int n = 0;
    if (clip_tokenize_vocab(tok, name, &ids, &n) == SD_OK && n == 3)
        sd_log(SD_LOG_WARN, "embedding trigger \"%s\" is also the vocabulary token \"%s\": every "
               "\"%s\" in a prompt now means the embedding", name,
               clip_tokenizer_token(tok, ids[1]), name);
    free(ids);
}

/* Plain syntax: tokens in the tokenizer, rows in the text encoder (load_textual_inversion). A
 * token the tokenizer already has makes diffusers refuse the file; here the embedding then serves
 * A1111's syntax only, with a warning. */
static sd_status register_tokens(sd_pipeline *p, const pl_embedding *e) {
    clip_tokenizer *toks[2] = {p->tokenizer, p->tokenizer_2};
    clip_text *tes[2] = {p->text_encoder, p->text_encoder_2};
    for (int k = 0; k < 2; k++) {
        clip_tokenizer *tok = toks[k] ? toks[k] : toks[1 - k]; /* a refiner's one tokenizer */
        if (!tes[k] || !e->vec[k]) continue;
        for (int v = 0; v < e->n_vectors; v++) {
            char *name = vector_token(e->name, v);
            const int32_t have = name ? clip_tokenizer_lookup(tok, name) : -1;
            if (have >= 0)
                sd_log(SD_LOG_WARN, "embedding \"%s\": the tokenizer already has the token \"%s\" "
                       "(id %d), so the plain prompt syntax cannot add it (diffusers refuses "
                       "such a file); it works with --prompt-syntax a1111", e->name, name, have);
            free(name);
            if (have >= 0) return SD_OK;
        }
    }
    for (int k = 0; k < 2; k++) {
        clip_tokenizer *tok = toks[k] ? toks[k] : toks[1 - k];
        if (!tes[k] || !e->vec[k]) continue;
        for (int v = 0; v < e->n_vectors; v++) {
            char *name = vector_token(e->name, v);
            if (!name) return sd_set_error(SD_ERR_NOMEM, "out of memory");
            int32_t id = -1;
            sd_status st = clip_tokenizer_add_token(tok, name, &id);
            if (st == SD_OK && id != clip_text_vocab_size(tes[k]))
                st = sd_set_error(SD_ERR_CONFIG, "embedding \"%s\": the tokenizer gives it id %d, "
                                  "the text encoder's table has %d rows", name, id,
                                  clip_text_vocab_size(tes[k]));
            const int h = clip_text_get_config(tes[k])->hidden_size;
            if (st == SD_OK) st = clip_text_add_rows(tes[k], e->vec[k] + (size_t)v * h, 1);
            free(name);
            SD_TRY(st);
        }
    }
    return SD_OK;
}

sd_status pl_embedding_add(sd_pipeline *p, const char *path, const char *trigger) {
    if (!path) return sd_set_error(SD_ERR_ARG, "embedding: no file given");
    if (ends_with(path, ".pt") || ends_with(path, ".bin") || ends_with(path, ".ckpt") ||
        ends_with(path, ".pth"))
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: a pickled (PyTorch) embedding; nothing is "
                            "unpickled here. Convert it to .safetensors where torch is installed: "
                            "python -c \"import sys, torch, safetensors.torch as s; "
                            "d = torch.load(sys.argv[1], weights_only=True); "
                            "v = d['string_to_param']['*'] if 'string_to_param' in d else d; "
                            "s.save_file({'emb_params': v} if torch.is_tensor(v) else v, "
                            "sys.argv[2])\" IN.pt OUT.safetensors", path);
    if (!p->unet) /* SD3 and FLUX.1: not yet */
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s: textual-inversion embeddings work with "
                            "SD 1.x/2.x and SDXL pipelines", path);
    st_file f;
    SD_TRY(st_open(&f, path));
    pl_embedding e = {0};
    if (trigger) e.name = strdup(trigger);
    sd_status st = read_file(p, &f, &e);
    st_close(&f);
    if (st == SD_OK && !e.name) e.name = file_stem(path);
    if (st == SD_OK && (!e.name || !*e.name))
        st = sd_set_error(SD_ERR_ARG, "%s: no trigger word", path);
    for (int i = 0; st == SD_OK && i < p->n_embeddings; i++)
        if (!strcmp(p->embeddings[i].name, e.name))
            st = sd_set_error(SD_ERR_ARG, "%s: an embedding named \"%s\" is already loaded", path,
                              e.name);
    pl_embedding *list = st == SD_OK ? realloc(p->embeddings, (size_t)(p->n_embeddings + 1) *
                                                                 sizeof *list)
                                     : NULL;
    if (st == SD_OK && !list) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) {
        p->embeddings = list;
        warn_collision(p->tokenizer ? p->tokenizer : p->tokenizer_2, e.name);
        st = register_tokens(p, &e);
    }
    if (st != SD_OK) {
        free(e.name), free(e.vec[0]), free(e.vec[1]);
        return st;
    }
    p->embeddings[p->n_embeddings++] = e;
    pl_cache_clear(p); /* encodings of texts with this word change */
    sd_log(SD_LOG_INFO, "embedding \"%s\": %d vector%s from %s", e.name, e.n_vectors,
           e.n_vectors == 1 ? "" : "s", path);
    return SD_OK;
}

sd_status pl_embeddings_add_dir(sd_pipeline *p, const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return sd_set_error(SD_ERR_IO, "%s: embeddings folder not found", dir ? dir : "(null)");
    sd_status st = SD_OK;
    int n = 0;
    for (struct dirent *de; st == SD_OK && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        const bool pickled = ends_with(de->d_name, ".pt") || ends_with(de->d_name, ".bin");
        if (!ends_with(de->d_name, ".safetensors") && !pickled) continue;
        char *path = sd_path_join(dir, de->d_name);
        if (!path) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        else if (pickled) /* A1111 loads them; here they are named and skipped */
            sd_log(SD_LOG_WARN, "%s: pickled embedding skipped (convert it to .safetensors)", path);
        else if ((st = pl_embedding_add(p, path, NULL)) == SD_OK)
            n++;
        free(path);
    }
    closedir(d);
    if (st == SD_OK && n == 0) sd_log(SD_LOG_WARN, "%s: no .safetensors embeddings", dir);
    return st;
}

char *pl_embeddings_expand(const sd_pipeline *p, const char *text) {
    char *s = strdup(text ? text : "");
    for (int i = 0; s && i < p->n_embeddings; i++) {
        const pl_embedding *e = &p->embeddings[i];
        if (e->n_vectors < 2 || !strstr(s, e->name)) continue;
        char *rep = strdup(e->name); /* "name name_1 ... name_{n-1}" */
        for (int v = 1; rep && v < e->n_vectors; v++) {
            char *r = sd_strfmt("%s %s_%d", rep, e->name, v);
            free(rep);
            rep = r;
        }
        const size_t nl = strlen(e->name), rl = rep ? strlen(rep) : 0;
        size_t count = 0;
        for (const char *q = s; (q = strstr(q, e->name)); q += nl) count++;
        char *out = rep ? malloc(strlen(s) + count * (rl - nl) + 1) : NULL;
        if (out) { /* str.replace: every occurrence, left to right */
            char *w = out;
            const char *q = s, *hit;
            while ((hit = strstr(q, e->name))) {
                memcpy(w, q, (size_t)(hit - q)), w += hit - q;
                memcpy(w, rep, rl), w += rl;
                q = hit + nl;
            }
            strcpy(w, q);
        }
        free(rep), free(s);
        s = out;
    }
    return s;
}

sd_status pl_embeddings_expand_run(pl_run *r) {
    if (!r->p->n_embeddings) return SD_OK;
    const char **texts[4] = {&r->g.prompt, &r->g.negative_prompt, &r->g.prompt_2,
                             &r->g.negative_prompt_2};
    char *spelled[4] = {NULL, NULL, NULL, NULL};
    size_t total = 0;
    sd_status st = SD_OK;
    for (int k = 0; k < 4 && st == SD_OK; k++) {
        if (!*texts[k]) continue;
        if (!(spelled[k] = pl_embeddings_expand(r->p, *texts[k])))
            st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        else
            total += strlen(spelled[k]) + 1;
    }
    char *block = st == SD_OK ? pl_run_alloc(r, total) : NULL; /* one block: the run owns it */
    if (st == SD_OK && !block) st = SD_ERR_NOMEM;
    for (int k = 0; k < 4 && st == SD_OK; k++) {
        if (!spelled[k]) continue;
        strcpy(block, spelled[k]);
        *texts[k] = block;
        block += strlen(spelled[k]) + 1;
    }
    for (int k = 0; k < 4; k++) free(spelled[k]);
    return st;
}

sd_status pl_embeddings_triggers(const sd_pipeline *p, const clip_tokenizer *tok, int encoder,
                                 a1111_trigger **out, const float ***rows, int *n_rows) {
    *out = NULL, *rows = NULL, *n_rows = 0;
    if (p->n_embeddings <= 0) return SD_OK;
    const clip_text *te = encoder ? p->text_encoder_2 : p->text_encoder;
    const int h = clip_text_get_config(te)->hidden_size;
    const int ne = p->n_embeddings;
    unsigned total = 0;
    for (int i = 0; i < ne; i++) total += (unsigned)p->embeddings[i].n_vectors;
    a1111_trigger *t = calloc((unsigned)ne, sizeof *t);
    const float **r = calloc(total, sizeof *r);
    if (!t || !r) {
        free(t), free(r);
        return sd_set_error(SD_ERR_NOMEM, "out of memory");
    }
    int first = 0;
    for (int i = 0; i < p->n_embeddings; i++) {
        const pl_embedding *e = &p->embeddings[i];
        int32_t *ids = NULL;
        int n = 0;
        sd_status st = clip_tokenize_vocab(tok, e->name, &ids, &n);
        if (st != SD_OK) {
            pl_triggers_free(t, i, r);
            return st;
        }
        if (n > 2) memmove(ids, ids + 1, (size_t)(n - 2) * sizeof *ids); /* without BOS / EOS */
        t[i] = (a1111_trigger){ids, n - 2, e->n_vectors, first};
        for (int v = 0; v < e->n_vectors; v++) r[first + v] = e->vec[encoder] + (size_t)v * h;
        first += e->n_vectors;
    }
    *out = t, *rows = r, *n_rows = p->n_embeddings;
    return SD_OK;
}

void pl_triggers_free(a1111_trigger *t, int n, const float **rows) {
    for (int i = 0; t && i < n; i++) free((void *)t[i].ids);
    free(t);
    free(rows);
}

sd_status sd_pipeline_add_embedding(sd_pipeline *p, const char *path, const char *trigger) {
    return pl_embedding_add(p, path, trigger);
}

sd_status sd_pipeline_add_embeddings_dir(sd_pipeline *p, const char *dir) {
    return pl_embeddings_add_dir(p, dir);
}
