/* Encoding with a loaded T5 tokenizer (t5_tokenizer_load.c reads it): added-token split,
 * normalization, white space split + Metaspace, unigram, EOS. */
#include <stdlib.h>
#include <string.h>

#include "t5_tokenizer_impl.h"
#include "unicode.h"

/* ---- added tokens ---- */

/* Rust regex \w: letters, marks, decimal digits, connector punctuation. Marks are approximated by
 * a nonzero combining class and connector punctuation by '_' (only single_word tokens use this,
 * and no T5 release has one). */
static bool is_word_char(uint32_t cp) {
    return unicode_is_letter(cp) || unicode_is_number(cp) || cp == '_' ||
           unicode_combining_class(cp) != 0;
}

/* The leftmost-longest match at or after `from` among the added tokens matched in the raw text
 * (normalized == false) or in the normalized text, widened over white space by lstrip / rstrip
 * (never back past `from`), skipping single_word tokens glued to a word. Returns the token's
 * index, or -1 when none occurs. */
static int find_added(const t5_tokenizer *t, const uint32_t *s, size_t n, size_t from,
                      bool normalized, size_t *start, size_t *end) {
    for (size_t pos = from; pos < n; pos++) {
        int best = -1;
        for (int k = 0; k < t->n_added; k++) {
            const t5_added_token *a = &t->added[k];
            if (a->normalized != normalized || a->n == 0 || a->n > n - pos) continue;
            if (s[pos] != a->cps[0]) continue; /* cheap reject before the full compare */
            if (best >= 0 && a->n <= t->added[best].n) continue;
            if (memcmp(s + pos, a->cps, a->n * sizeof *s)) continue;
            if (a->single_word && ((pos > 0 && is_word_char(s[pos - 1])) ||
                                   (pos + a->n < n && is_word_char(s[pos + a->n]))))
                continue;
            best = k;
        }
        if (best < 0) continue;
        size_t a = pos, b = pos + t->added[best].n;
        if (t->added[best].lstrip)
            while (a > from && unicode_is_space(s[a - 1])) a--;
        if (t->added[best].rstrip)
            while (b < n && unicode_is_space(s[b])) b++;
        *start = a, *end = b;
        return best;
    }
    return -1;
}

/* ---- pre-tokenization and model ---- */

/* Unigram ids of one Metaspace piece s[0..n). */
static sd_status encode_piece(const t5_tokenizer *t, const uint32_t *s, size_t n, char **buf,
                              size_t *cap, unigram_ids *ids) {
    if (*cap < 4 * n) {
        char *b = realloc(*buf, 4 * n);
        if (!b) return sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory");
        *buf = b, *cap = 4 * n;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += (size_t)unicode_utf8_encode(s[i], *buf + len);
    return unigram_encode(&t->model, *buf, len, ids);
}

/* WhitespaceSplit then Metaspace (replacement U+2581, prepend "always", split) over a normalized
 * piece of text, then the model on every resulting piece. */
static sd_status encode_words(const t5_tokenizer *t, const uint32_t *s, size_t n,
                              unigram_ids *ids) {
    char *buf = NULL;
    size_t cap = 0;
    uint32_t *word = NULL;
    sd_status st = SD_OK;
    for (size_t i = 0; i < n && st == SD_OK;) {
        if (unicode_is_space(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !unicode_is_space(s[j])) j++;
        /* The word with its prepended mark (a word has no ' ' left to replace). */
        free(word);
        word = malloc((j - i + 1) * sizeof *word);
        if (!word) {
            st = sd_set_error(SD_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        size_t m = 0;
        if (s[i] != T5_METASPACE) word[m++] = T5_METASPACE;
        memcpy(word + m, s + i, (j - i) * sizeof *s);
        m += j - i;
        /* Split before every mark: each piece is one mark and what follows it. */
        for (size_t a = 0; a < m && st == SD_OK;) {
            size_t b = a + 1;
            while (b < m && word[b] != T5_METASPACE) b++;
            st = encode_piece(t, word + a, b - a, &buf, &cap, ids);
            a = b;
        }
        i = j;
    }
    free(word);
    free(buf);
    return st;
}

/* Normalizes a piece between raw-text added tokens, cuts out the normalized added tokens, and
 * encodes the rest. */
static sd_status encode_plain(const t5_tokenizer *t, const uint32_t *raw, size_t n,
                              unigram_ids *ids) {
    uint32_t *s;
    size_t m;
    SD_TRY(tok_normalizer_apply(t->normalizer, raw, n, &s, &m));
    sd_status st = SD_OK;
    for (size_t pos = 0; st == SD_OK && pos < m;) {
        size_t a, b;
        int k = find_added(t, s, m, pos, true, &a, &b);
        if (k < 0) {
            st = encode_words(t, s + pos, m - pos, ids);
            break;
        }
        st = encode_words(t, s + pos, a - pos, ids);
        if (st == SD_OK) st = unigram_ids_push(ids, t->added[k].id);
        pos = b;
    }
    free(s);
    return st;
}

/* The ids of `text` without EOS. */
static sd_status encode(const t5_tokenizer *t, const char *text, unigram_ids *ids) {
    uint32_t *cps;
    long n;
    SD_TRY(unicode_decode_prompt(text, "T5 tokenizer", &cps, &n));
    sd_status st = SD_OK;
    for (size_t pos = 0; st == SD_OK && pos < (size_t)n;) {
        size_t a, b;
        int k = find_added(t, cps, (size_t)n, pos, false, &a, &b);
        if (k < 0) {
            st = encode_plain(t, cps + pos, (size_t)n - pos, ids);
            break;
        }
        if (a > pos) st = encode_plain(t, cps + pos, a - pos, ids);
        if (st == SD_OK) st = unigram_ids_push(ids, t->added[k].id);
        pos = b;
    }
    free(cps);
    return st;
}

sd_status t5_tokenize(const t5_tokenizer *t, const char *text, int32_t **ids, int *n_ids) {
    *ids = NULL, *n_ids = 0;
    unigram_ids l = {0};
    sd_status st = encode(t, text, &l);
    if (st == SD_OK) st = unigram_ids_push(&l, t->eos_id);
    if (st == SD_OK && l.n > (size_t)INT32_MAX)
        st = sd_set_error(SD_ERR_ARG, "T5 tokenizer: prompt gives too many tokens");
    if (st != SD_OK) {
        free(l.v);
        return st;
    }
    *ids = l.v, *n_ids = (int)l.n;
    return SD_OK;
}

sd_status t5_tokenize_padded(const t5_tokenizer *t, const char *text, int32_t *ids, int max_length,
                             int *n_real) {
    if (max_length < 1)
        return sd_set_error(SD_ERR_ARG, "T5 tokenizer: max_length %d leaves no room for EOS",
                            max_length);
    unigram_ids l = {0};
    sd_status st = encode(t, text, &l);
    if (st != SD_OK) {
        free(l.v);
        return st;
    }
    /* Truncation happens before the post-processor, to max_length minus the EOS it adds. */
    size_t keep = l.n < (size_t)max_length - 1 ? l.n : (size_t)max_length - 1;
    if (keep) memcpy(ids, l.v, keep * sizeof *ids);
    ids[keep] = t->eos_id;
    for (size_t i = keep + 1; i < (size_t)max_length; i++) ids[i] = t->pad_id;
    if (n_real) *n_real = (int)keep + 1;
    free(l.v);
    return SD_OK;
}

int t5_tokenizer_max_length(const t5_tokenizer *t) {
    return t->max_length;
}
int t5_tokenizer_pad_id(const t5_tokenizer *t) {
    return t->pad_id;
}
int t5_tokenizer_eos_id(const t5_tokenizer *t) {
    return t->eos_id;
}
int t5_tokenizer_unk_id(const t5_tokenizer *t) {
    return t->unk_id;
}

int t5_tokenizer_vocab_size(const t5_tokenizer *t) {
    int n = t->model.n_pieces;
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].id >= n) n = t->added[k].id + 1;
    return n;
}

const char *t5_tokenizer_token(const t5_tokenizer *t, int id) {
    for (int k = 0; k < t->n_added; k++) /* added tokens shadow the vocabulary */
        if (t->added[k].id == id) return t->added[k].content;
    if (id < 0 || id >= t->model.n_pieces) return NULL;
    return t->model.pieces[id];
}
