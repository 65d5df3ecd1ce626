/* Extended grapheme cluster boundaries: the UAX #29 rules applied pairwise, with the look-behind
 * that GB9c (Indic conjuncts), GB11 (emoji ZWJ sequences) and GB12/13 (flag pairs) need. */
#include "grapheme.h"

#include <stdbool.h>

#include "grapheme_tables.h"

enum {
    GCB_OTHER,
    GCB_CR,
    GCB_LF,
    GCB_CONTROL,
    GCB_EXTEND,
    GCB_ZWJ,
    GCB_RI,
    GCB_PREPEND,
    GCB_SPACING_MARK,
    GCB_L,
    GCB_V,
    GCB_T,
    GCB_LV,
    GCB_LVT
};
enum { INCB_NONE, INCB_LINKER, INCB_CONSONANT, INCB_EXTEND };

const char *grapheme_unicode_version_string(void) {
    return grapheme_unicode_version;
}

static uint8_t props(uint32_t cp) {
    int lo = 0, hi = grapheme_n_ranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < grapheme_ranges[mid].first)
            hi = mid - 1;
        else if (cp > grapheme_ranges[mid].last)
            lo = mid + 1;
        else
            return grapheme_ranges[mid].props;
    }
    return 0;
}

static int gcb(uint8_t p) {
    return p & 15;
}
static bool ext_pict(uint8_t p) {
    return (p >> 4) & 1;
}
static int incb(uint8_t p) {
    return (p >> 5) & 3;
}

/* The look-behind state of the rules with context, updated one character at a time. Within one
 * cluster it is exact: the contexts those rules look at (Extend, ZWJ, Linker, RI runs) never
 * follow a boundary except after a control, which resets them anyway. */
typedef struct {
    int ri_run;    /* regional indicators ending at the previous character */
    bool pict_ext; /* the text so far ends with Extended_Pictographic Extend* */
    bool pict_zwj; /* ... ends with Extended_Pictographic Extend* ZWJ */
    int conjunct;  /* ends with InCB Consonant [Extend|Linker]*: 1 without, 2 with a Linker */
} gb_state;

static void advance(gb_state *st, uint8_t p) {
    const int g = gcb(p), v = incb(p);
    st->ri_run = g == GCB_RI ? st->ri_run + 1 : 0;
    st->pict_zwj = g == GCB_ZWJ && st->pict_ext;
    st->pict_ext = ext_pict(p) || (g == GCB_EXTEND && st->pict_ext);
    if (v == INCB_CONSONANT)
        st->conjunct = 1;
    else if (v == INCB_LINKER && st->conjunct)
        st->conjunct = 2;
    else if (v != INCB_EXTEND)
        st->conjunct = 0;
}

/* Is there a boundary between a character of properties pa (with state st after it) and one of
 * properties pb? */
static bool is_break(const gb_state *st, uint8_t pa, uint8_t pb) {
    const int a = gcb(pa), b = gcb(pb);
    if (a == GCB_CR && b == GCB_LF) return false;                                /* GB3 */
    if (a == GCB_CR || a == GCB_LF || a == GCB_CONTROL) return true;             /* GB4 */
    if (b == GCB_CR || b == GCB_LF || b == GCB_CONTROL) return true;             /* GB5 */
    if (a == GCB_L && (b == GCB_L || b == GCB_V || b == GCB_LV || b == GCB_LVT)) /* GB6 */
        return false;
    if ((a == GCB_LV || a == GCB_V) && (b == GCB_V || b == GCB_T)) return false; /* GB7 */
    if ((a == GCB_LVT || a == GCB_T) && b == GCB_T) return false;                /* GB8 */
    if (b == GCB_EXTEND || b == GCB_ZWJ) return false;                           /* GB9 */
    if (b == GCB_SPACING_MARK) return false;                                     /* GB9a */
    if (a == GCB_PREPEND) return false;                                          /* GB9b */
    if (incb(pb) == INCB_CONSONANT && st->conjunct == 2) return false;           /* GB9c */
    if (st->pict_zwj && ext_pict(pb)) return false;                              /* GB11 */
    if (a == GCB_RI && b == GCB_RI) return st->ri_run % 2 == 0;                  /* GB12/13 */
    return true;                                                                 /* GB999 */
}

size_t grapheme_next(const uint32_t *s, size_t n) {
    if (n == 0) return 0;
    gb_state st = {0};
    uint8_t pa = props(s[0]);
    advance(&st, pa);
    for (size_t i = 1; i < n; i++) {
        uint8_t pb = props(s[i]);
        if (is_break(&st, pa, pb)) return i;
        advance(&st, pb);
        pa = pb;
    }
    return n;
}
