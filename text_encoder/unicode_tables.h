/* Types of the generated Unicode tables (text_encoder/unicode_tables.c, written by
 * tools/gen_unicode_tables.py). Only text_encoder/unicode.c reads them. */
#ifndef SD_UNICODE_TABLES_H
#define SD_UNICODE_TABLES_H

#include <stdint.h>

typedef struct {
    uint32_t first, last; /* inclusive, sorted, disjoint */
    uint32_t value;       /* class (1 letter, 2 number) or canonical combining class */
} unicode_range;

/* first, first + stride, ..., last map to cp + delta; the code points between map to themselves. */
typedef struct {
    uint32_t first, last, stride;
    int32_t delta;
} unicode_lower_run;

typedef struct {
    uint32_t cp;
    int n;
    uint32_t to[3];
} unicode_lower_multi;

/* One level of canonical decomposition: cp -> a b (b == 0 for a singleton). Sorted by cp. */
typedef struct {
    uint32_t cp, a, b;
} unicode_decomp;

extern const char unicode_tables_version[];
extern const unicode_range unicode_class_ranges[];
extern const int unicode_class_ranges_count;
extern const unicode_lower_run unicode_lower_runs[];
extern const int unicode_lower_runs_count;
extern const unicode_lower_multi unicode_lower_multis[];
extern const int unicode_lower_multis_count;
extern const unicode_range unicode_ccc_ranges[];
extern const int unicode_ccc_ranges_count;
extern const unicode_decomp unicode_decomps[];
extern const int unicode_decomps_count;
/* Indices into unicode_decomps of the primary composites, sorted by (a, b). */
extern const uint16_t unicode_compositions[];
extern const int unicode_compositions_count;

#endif
