/* Helpers shared by the kernel tests: a fast kernel is run on many shapes and compared with its
 * plain reference; one check line per group reports the worst case instead of hundreds of lines,
 * while every failing case is still reported with its shape. */
#ifndef SD_KERNEL_CHECK_H
#define SD_KERNEL_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

typedef struct {
    const char *what;
    double tol, worst;
    char worst_case[160];
    int cases, failed;
} kc_group;

static inline void kc_begin(kc_group *g, const char *what, double tol) {
    memset(g, 0, sizeof *g);
    g->what = what;
    g->tol = tol;
}

/* One case: records the relative L2 error of got against want (n values). */
static inline __attribute__((format(printf, 5, 6))) void
kc_case(kc_group *g, const float *got, const float *want, size_t n, const char *fmt, ...) {
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    double err = rel_l2(got, want, n);
    g->cases++;
    if (!(err < g->tol)) {
        g->failed++;
        CHECK(0, "%s %s: rel err %.3g >= %.0e", g->what, name, err, g->tol);
    }
    if (!(err <= g->worst)) { /* NaN counts as the worst */
        g->worst = err;
        snprintf(g->worst_case, sizeof g->worst_case, "%s", name);
    }
}

/* A plain pass/fail case (e.g. padding left untouched). */
static inline __attribute__((format(printf, 3, 4))) void kc_expect(kc_group *g, int ok,
                                                                   const char *fmt, ...) {
    if (ok) return;
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    g->failed++;
    CHECK(0, "%s %s", g->what, name);
}

static inline void kc_end(kc_group *g) {
    printf("%s %s: %d cases, worst rel err %.3g (tol %.0e) at %s\n", g->failed ? "FAIL" : "ok  ",
           g->what, g->cases, g->worst, g->tol, g->worst_case[0] ? g->worst_case : "-");
    CHECK(g->cases > 0 && !g->failed, "%s: %d of %d cases failed", g->what, g->failed, g->cases);
}

static inline float *kc_random(size_t n, uint64_t seed) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    fill_random(x, n, seed);
    return x;
}

static inline float *kc_copy(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

#endif
