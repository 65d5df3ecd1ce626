/* A1111's prompt editing (modules/prompt_parser.py, get_learned_conditioning_prompt_schedules).
 * A1111 parses with this lark grammar:
 *
 *   start: (prompt | /[][():]/+)*
 *   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
 *   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"      (kept verbatim)
 *   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
 *   alternate: "[" prompt ("|" [prompt])+ "]"
 *   plain: /([^\\\[\]():|]|\\.)+/          NUMBER: SIGNED_NUMBER (1, -2, .5, 1e1)
 *
 * and so does this file, by recursive descent: a bracket that closes no construct is text at the
 * top level and makes the enclosing construct fail anywhere else; a prompt the grammar refuses
 * (a "|" outside brackets, a trailing backslash) has no schedule, as A1111's LarkError fallback.
 *
 * The steps (A1111 1.6+, no hires pass): `when` with a "." is a fraction of the steps, otherwise a
 * step; int() truncates; min(steps, when). Every `when` >= 1 and the last step end an entry, every
 * step does when the prompt alternates. The text of the entry ending at step t takes `from` where
 * t <= when, else `to`; alternation takes option (t - 1) % count. */
#include <stdlib.h>
#include <string.h>

#include "a1111_prompt.h"
#include "unicode.h"

typedef enum { N_TEXT, N_EMPH, N_SCHED, N_ALT } node_kind;

/* A parse tree node. N_TEXT: s[a, b). N_EMPH: open/close bracket around kids[0] (and kids[1] after
 * a ":"). N_SCHED: kids[0] (from; NULL when absent), kids[1] (to), num s[a, b). N_ALT: kids. */
typedef struct node {
    node_kind kind;
    size_t a, b;
    char open, close;
    struct node **kids; /* each a list (N_TEXT nodes and constructs), NULL-able for N_SCHED from */
    int n_kids;
    struct node *next; /* the next node of the same list */
} node;

typedef struct {
    const char *s;
    size_t len;
    bool oom;
} parser;

static void free_list(node *n) {
    while (n) {
        node *next = n->next;
        for (int k = 0; k < n->n_kids; k++) free_list(n->kids[k]);
        free(n->kids);
        free(n);
        n = next;
    }
}

static node *new_node(parser *P, node_kind kind) {
    node *n = calloc(1, sizeof *n);
    if (!n) P->oom = true;
    if (n) n->kind = kind;
    return n;
}

static bool add_kid(parser *P, node *n, node *kid) {
    node **k = realloc(n->kids, (size_t)(n->n_kids + 1) * sizeof *k);
    if (!k) {
        P->oom = true;
        return false;
    }
    n->kids = k;
    n->kids[n->n_kids++] = kid;
    return true;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* lark's SIGNED_NUMBER at i: its end, or 0 when none. */
static size_t number_end(const char *s, size_t i) {
    size_t j = i;
    if (s[j] == '+' || s[j] == '-') j++;
    const size_t d0 = j;
    while (is_digit(s[j])) j++;
    const size_t ndig = j - d0;
    if (s[j] == '.') {
        size_t k = j + 1;
        while (is_digit(s[k])) k++;
        if (ndig == 0 && k == j + 1) return 0;
        j = k;
    } else if (ndig == 0) {
        return 0;
    }
    if (s[j] == 'e' || s[j] == 'E') {
        size_t k = j + 1;
        if (s[k] == '+' || s[k] == '-') k++;
        const size_t k0 = k;
        while (is_digit(s[k])) k++;
        if (k > k0) j = k;
    }
    return j;
}

/* [WHITESPACE] NUMBER [WHITESPACE] "]" at i: sets the number's span and returns the end past "]",
 * or 0. */
static size_t number_then_close(const char *s, size_t i, size_t *na, size_t *nb) {
    size_t j = i;
    while (is_space(s[j])) j++;
    size_t e = number_end(s, j);
    if (!e) return 0;
    *na = j, *nb = e;
    while (is_space(s[e])) e++;
    return s[e] == ']' ? e + 1 : 0;
}

static node *parse_bracket(parser *P, size_t i, size_t *end, bool *fail);

/* prompt at i: a list; *end where it stops (at ) ] : | or the end). *fail on a lone trailing
 * backslash or a bracket that closes nothing. */
static node *parse_prompt(parser *P, size_t i, size_t *end, bool *fail) {
    node *head = NULL, **tail = &head;
    const char *s = P->s;
    while (i < P->len && !*fail && !P->oom) {
        const char c = s[i];
        node *n = NULL;
        if (c == '(' || c == '[') {
            n = parse_bracket(P, i, &i, fail);
        } else if (strchr(")]:|", c)) {
            break;
        } else {
            size_t j = i;
            while (j < P->len && !strchr("[]():|", s[j])) {
                if (s[j] == '\\') {
                    if (j + 1 >= P->len || s[j + 1] == '\n') { /* plain's \\. needs a character */
                        *fail = true;
                        break;
                    }
                    j += 2;
                } else {
                    j++;
                }
            }
            if (*fail) break;
            if ((n = new_node(P, N_TEXT))) n->a = i, n->b = j;
            i = j;
        }
        if (n) *tail = n, tail = &n->next;
    }
    *end = i;
    return head;
}

/* The construct opening at s[i] ("(" or "["): emphasized, scheduled or alternate. */
static node *parse_bracket(parser *P, size_t i, size_t *end, bool *fail) {
    const char *s = P->s;
    const char open = s[i];
    size_t j, k;
    node *a = parse_prompt(P, i + 1, &j, fail), *b = NULL, *n = NULL;
    if (*fail || P->oom) goto failed;
    if (open == '(') {
        const bool colon = s[j] == ':';
        if (colon) {
            b = parse_prompt(P, j + 1, &k, fail);
            if (*fail || s[k] != ')') goto failed;
            j = k;
        } else if (s[j] != ')') {
            goto failed;
        }
        if (!(n = new_node(P, N_EMPH)) || !add_kid(P, n, a)) goto failed;
        a = NULL;
        if (colon && !add_kid(P, n, b)) goto failed; /* "(a:)": an empty second prompt */
        b = NULL;
        n->open = '(', n->close = ')';
        *end = j + 1;
        return n;
    }
    if (s[j] == ']') {
        if (!(n = new_node(P, N_EMPH)) || !add_kid(P, n, a)) goto failed;
        n->open = '[', n->close = ']';
        *end = j + 1;
        return n;
    }
    if (s[j] == '|') {
        if (!(n = new_node(P, N_ALT)) || !add_kid(P, n, a)) goto failed;
        a = NULL;
        while (s[j] == '|') {
            node *o = parse_prompt(P, j + 1, &j, fail);
            if (!add_kid(P, n, o)) {
                free_list(o);
                goto failed;
            }
            if (*fail || P->oom) goto failed;
        }
        if (s[j] != ']') goto failed;
        *end = j + 1;
        return n;
    }
    if (s[j] == ':') {
        size_t na = 0, nb = 0, ma = 0, mb = 0;
        const size_t one_end = number_then_close(s, j + 1, &na, &nb); /* [to:when] */
        b = parse_prompt(P, j + 1, &k, fail);
        size_t two_end = 0;
        if (!*fail && s[k] == ':') two_end = number_then_close(s, k + 1, &ma, &mb);
        *fail = false; /* the second prompt may fail where [to:when] still parses */
        if (!(n = new_node(P, N_SCHED))) goto failed;
        if (two_end) { /* [from:to:when] */
            if (!add_kid(P, n, a)) goto failed;
            a = NULL;
            if (!add_kid(P, n, b)) goto failed;
            b = NULL;
            n->a = ma, n->b = mb;
            *end = two_end;
            return n;
        }
        if (one_end) {
            free_list(b);
            b = NULL;
            if (!add_kid(P, n, NULL)) goto failed;
            if (!add_kid(P, n, a)) goto failed;
            a = NULL;
            n->a = na, n->b = nb;
            *end = one_end;
            return n;
        }
    }
failed:
    *fail = true;
    free_list(a), free_list(b), free_list(n);
    return NULL;
}

/* start: constructs, prompts, and stray brackets and colons as text. NULL with *refused when the
 * grammar refuses the prompt. */
static node *parse_start(parser *P, bool *refused) {
    node *head = NULL, **tail = &head;
    const char *s = P->s;
    size_t i = 0;
    while (i < P->len && !P->oom) {
        const char c = s[i];
        node *n = NULL;
        if (c == '|') {
            *refused = true;
            break;
        }
        if (c == '(' || c == '[') {
            bool fail = false;
            size_t e;
            n = parse_bracket(P, i, &e, &fail);
            if (n) i = e;
        }
        if (!n && strchr("()[]:", c)) { /* a stray: one character of text */
            if ((n = new_node(P, N_TEXT))) n->a = i, n->b = i + 1;
            i++;
        } else if (!n) { /* plain text up to the next bracket, colon or bar */
            size_t j = i;
            while (j < P->len && !strchr("[]():|", s[j])) {
                if (s[j] == '\\' && (j + 1 >= P->len || s[j + 1] == '\n')) {
                    *refused = true; /* plain's \\. needs a character */
                    break;
                }
                j += s[j] == '\\' ? 2 : 1;
            }
            if (*refused) break;
            if ((n = new_node(P, N_TEXT))) n->a = i, n->b = j;
            i = j;
        }
        if (!n) continue;
        *tail = n;
        tail = &n->next;
    }
    if (*refused || P->oom) {
        free_list(head);
        return NULL;
    }
    return head;
}

/* `when` as an int step: a "." makes it a fraction of the steps (A1111 1.6+). */
static int when_step(const parser *P, const node *n, int steps) {
    char buf[64];
    const size_t len = n->b - n->a < sizeof buf - 1 ? n->b - n->a : sizeof buf - 1;
    memcpy(buf, P->s + n->a, len);
    buf[len] = '\0';
    double v = strtod(buf, NULL);
    if (memchr(buf, '.', len)) v *= steps;
    const double w = v < steps ? v : steps;
    return (int)w; /* int() truncates toward zero */
}

static void collect(const parser *P, const node *n, int steps, bool *ends) {
    for (; n; n = n->next) {
        if (n->kind == N_SCHED) {
            const int w = when_step(P, n, steps);
            if (w >= 1) ends[w] = true;
        } else if (n->kind == N_ALT) {
            for (int t = 1; t <= steps; t++) ends[t] = true;
        }
        for (int k = 0; k < n->n_kids; k++) collect(P, n->kids[k], steps, ends);
    }
}

/* Appends the text of list n at step t to buf (grown as needed); false when out of memory. */
typedef struct {
    char *s;
    size_t n, cap;
} buf;

static bool put(buf *b, const char *s, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return false;
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
    return true;
}

static bool text_at(const parser *P, const node *n, int steps, int t, buf *b) {
    bool ok = true;
    for (; n && ok; n = n->next) {
        switch (n->kind) {
        case N_TEXT: ok = put(b, P->s + n->a, n->b - n->a); break;
        case N_SCHED: ok = text_at(P, n->kids[t <= when_step(P, n, steps) ? 0 : 1], steps, t, b); break;
        case N_ALT: ok = text_at(P, n->kids[(t - 1) % n->n_kids], steps, t, b); break;
        case N_EMPH:
            ok = put(b, &n->open, 1) && text_at(P, n->kids[0], steps, t, b);
            if (ok && n->n_kids > 1) ok = put(b, ":", 1) && text_at(P, n->kids[1], steps, t, b);
            if (ok) ok = put(b, &n->close, 1);
            break;
        }
    }
    return ok;
}

sd_status a1111_schedule(const char *prompt, int steps, a1111_sched_entry **out, int *n_out) {
    *out = NULL, *n_out = 0;
    SD_TRY(unicode_check_prompt_length(prompt, "prompt"));
    if (steps < 1) steps = 1;
    parser P = {prompt, strlen(prompt), false};
    bool refused = false;
    node *tree = parse_start(&P, &refused);
    bool *ends = calloc((size_t)steps + 1, sizeof *ends);
    a1111_sched_entry *e = calloc((size_t)steps + 1, sizeof *e);
    int n = 0;
    bool ok = !P.oom && ends && e;
    if (ok && (refused || !tree)) { /* no schedule: the prompt itself */
        e[0] = (a1111_sched_entry){steps, strdup(prompt)};
        ok = e[0].text != NULL;
        n = 1;
    } else if (ok) {
        ends[steps] = true;
        collect(&P, tree, steps, ends);
        for (int t = 1; t <= steps && ok; t++) {
            if (!ends[t]) continue;
            buf b = {0};
            ok = put(&b, "", 0) && text_at(&P, tree, steps, t, &b);
            e[n++] = (a1111_sched_entry){t, b.s};
        }
    }
    free_list(tree);
    free(ends);
    if (!ok) {
        a1111_schedule_free(e, n);
        return sd_set_error(SD_ERR_NOMEM, "prompt: out of memory for its schedule");
    }
    *out = e, *n_out = n;
    return SD_OK;
}

void a1111_schedule_free(a1111_sched_entry *e, int n) {
    for (int i = 0; e && i < n; i++) free(e[i].text);
    free(e);
}

int a1111_schedule_pick(const a1111_sched_entry *e, int n, int step) {
    for (int i = 0; i < n; i++)
        if (step <= e[i].end) return i;
    return 0; /* past the last entry: reconstruct_cond_batch's target_index default */
}
