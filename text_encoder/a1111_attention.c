/* A1111's emphasis parser (modules/prompt_parser.py, parse_prompt_attention), rule for rule. Its
 * regular expression re_attention is tried at each position in this order:
 *   \( \) \[ \] \\   an escaped character: literal text of weight 1 (then scaled like any text by
 *                    the brackets around it)
 *   \                a lone backslash: re_attention gives text[1:], the empty string (it vanishes)
 *   ( [              open a bracket (remember where its range starts)
 *   :W)              with W = \s*[+-]?[.\d]+\s*: closes the innermost "(" with weight W
 *   ) ]              close the innermost bracket of that kind: x1.1 or /1.1 (1 / 1.1 in float64)
 *   text             a run without \ ( ) [ ] : ; BREAK (a whole word, with the white space around
 *                    it) inside a run becomes the piece ["BREAK", -1] (re_break)
 *   :                alone: text
 * A closing bracket with none open is text; so is ":W)" with no "(" open. Brackets still open at the
 * end weight everything after them (first the "(", then the "["). Neighbouring pieces of equal
 * weight are merged, and a BREAK inside brackets has its -1 scaled, which makes it text "BREAK"
 * again: both exactly as A1111.
 *
 * Two differences, both where A1111 is undefined or crashes: a W that Python's float() refuses
 * ("1.2.3", ".") raises in A1111 and is not a weight here (the ":" is text); white space is ASCII's
 * and digits are ASCII's (Python's \s and \d are Unicode's). */
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "a1111_prompt.h"
#include "unicode.h"

typedef struct {
    a1111_piece *v;
    int n, cap;
} pieces;

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* re's \w for \b, with every non-ASCII byte a word character (see the file comment). */
static bool is_word(unsigned char c) {
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

static sd_status push(pieces *p, const char *s, size_t len, double weight, bool is_break) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        a1111_piece *v = realloc(p->v, (size_t)cap * sizeof *v);
        if (!v) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
        p->v = v, p->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
    memcpy(t, s, len);
    t[len] = '\0';
    p->v[p->n++] = (a1111_piece){t, weight, is_break};
    return SD_OK;
}

/* Plain text: re.split(r"\s*\bBREAK\b\s*", text), a BREAK piece between the parts. */
static sd_status add_text(pieces *p, const char *s, size_t len) {
    size_t start = 0, i = 0;
    for (;;) {
        const char *k = NULL;
        for (size_t j = i; j + 5 <= len; j++)
            if (!memcmp(s + j, "BREAK", 5)) {
                k = s + j;
                break;
            }
        if (!k) break;
        const size_t at = (size_t)(k - s);
        const bool before = at == 0 || !is_word((unsigned char)s[at - 1]);
        const bool after = at + 5 == len || !is_word((unsigned char)s[at + 5]);
        if (!before || !after) {
            i = at + 1;
            continue;
        }
        size_t a = at, b = at + 5;
        while (a > start && is_space(s[a - 1])) a--; /* the leftmost match takes the spaces */
        while (b < len && is_space(s[b])) b++;
        SD_TRY(push(p, s + start, a - start, 1.0, false));
        SD_TRY(push(p, "BREAK", 5, -1.0, true));
        start = i = b;
    }
    return push(p, s + start, len - start, 1.0, false);
}

/* ":\s*([+-]?[.\d]+)\s*\)" at s[i]: the weight and the end, or false. */
static bool weight_at(const char *s, size_t i, double *w, size_t *end) {
    size_t j = i + 1;
    while (s[j] && is_space(s[j])) j++;
    size_t k = j;
    if (s[k] == '+' || s[k] == '-') k++;
    size_t d = k, dots = 0;
    for (; s[d] == '.' || (s[d] >= '0' && s[d] <= '9'); d++) dots += s[d] == '.';
    if (d == k) return false;
    size_t e = d;
    while (s[e] && is_space(s[e])) e++;
    if (s[e] != ')') return false;
    /* float() takes at most one "." and at least one digit (see the file comment). */
    if (dots > 1 || d - k == dots) return false;
    *w = strtod(s + j, NULL);
    *end = e + 1;
    return true;
}

static void multiply(pieces *p, int from, double m) {
    for (int i = from; i < p->n; i++) p->v[i].weight *= m;
}

/* A stack of piece indexes where open brackets start. */
typedef struct {
    int *v, n, cap;
} stack;

static sd_status stack_push(stack *s, int x) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        int *v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
        s->v = v, s->cap = cap;
    }
    s->v[s->n++] = x;
    return SD_OK;
}

static sd_status parse(const char *s, pieces *p, stack *round, stack *square) {
    const double round_mult = 1.1, square_mult = 1 / 1.1;
    size_t i = 0;
    while (s[i]) {
        const char c = s[i];
        if (c == '\\') {
            const char e = s[i + 1];
            const bool escape = e == '(' || e == ')' || e == '[' || e == ']' || e == '\\';
            SD_TRY(push(p, s + i + 1, escape ? 1 : 0, 1.0, false));
            i += escape ? 2 : 1;
        } else if (c == '(') {
            SD_TRY(stack_push(round, p->n));
            i++;
        } else if (c == '[') {
            SD_TRY(stack_push(square, p->n));
            i++;
        } else if (c == ':') {
            double w;
            size_t end;
            if (!weight_at(s, i, &w, &end)) {
                SD_TRY(add_text(p, s + i, 1));
                i++;
            } else if (round->n) {
                multiply(p, round->v[--round->n], w);
                i = end;
            } else { /* the whole ":W)" is one match, taken as text */
                SD_TRY(add_text(p, s + i, end - i));
                i = end;
            }
        } else if (c == ')' && round->n) {
            multiply(p, round->v[--round->n], round_mult);
            i++;
        } else if (c == ']' && square->n) {
            multiply(p, square->v[--square->n], square_mult);
            i++;
        } else if (c == ')' || c == ']') {
            SD_TRY(add_text(p, s + i, 1));
            i++;
        } else {
            size_t j = i;
            while (s[j] && !strchr("\\()[]:", s[j])) j++;
            SD_TRY(add_text(p, s + i, j - i));
            i = j;
        }
    }
    for (int k = 0; k < round->n; k++) multiply(p, round->v[k], round_mult);
    for (int k = 0; k < square->n; k++) multiply(p, square->v[k], square_mult);
    return SD_OK;
}

/* Merges runs of equal weight (A1111 compares the float64 weights with ==). */
static sd_status merge(pieces *p) {
    int i = 0;
    while (i + 1 < p->n) {
        a1111_piece *a = &p->v[i], *b = &p->v[i + 1];
        if (a->weight != b->weight) {
            i++;
            continue;
        }
        char *t = sd_strfmt("%s%s", a->text, b->text);
        if (!t) return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory");
        free(a->text), free(b->text);
        a->text = t;
        a->is_break = a->weight == -1.0 && !strcmp(t, "BREAK");
        memmove(b, b + 1, (size_t)(p->n - i - 2) * sizeof *b);
        p->n--;
    }
    /* A piece is a BREAK when it reads ["BREAK", -1] (tokenize_line's test), whatever made it. */
    for (int k = 0; k < p->n; k++)
        p->v[k].is_break = p->v[k].weight == -1.0 && !strcmp(p->v[k].text, "BREAK");
    return SD_OK;
}

sd_status a1111_parse_attention(const char *text, a1111_piece **out, int *n) {
    *out = NULL, *n = 0;
    SD_TRY(unicode_check_prompt_length(text, "prompt"));
    pieces p = {0};
    stack round = {0}, square = {0};
    sd_status st = parse(text, &p, &round, &square);
    free(round.v), free(square.v);
    if (st == SD_OK && p.n == 0) st = push(&p, "", 0, 1.0, false);
    if (st == SD_OK) st = merge(&p);
    if (st != SD_OK) {
        a1111_pieces_free(p.v, p.n);
        return st;
    }
    *out = p.v, *n = p.n;
    return SD_OK;
}

void a1111_pieces_free(a1111_piece *p, int n) {
    for (int i = 0; p && i < n; i++) free(p[i].text);
    free(p);
}

char *a1111_plain_text(const a1111_piece *p, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += p[i].is_break ? 1 : strlen(p[i].text);
    char *s = malloc(len), *w = s;
    if (!s) return NULL;
    for (int i = 0; i < n; i++) {
        const char *t = p[i].is_break ? " " : p[i].text;
        const size_t l = strlen(t);
        memcpy(w, t, l);
        w += l;
    }
    *w = '\0';
    return s;
}
