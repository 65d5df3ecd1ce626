/* Scratch memory for a model's forward pass.
 *
 * A bump allocator with marks: a layer takes what it needs, and gives it back by releasing to a
 * mark taken before. The first pass at a new size may spill into extra blocks; arena_reset (called
 * at the end of a pass) then replaces them with one block of the high-water size, so every later
 * pass at that size allocates nothing. Pointers are 64-byte aligned (AVX-512 loads, cache lines). */
#ifndef SD_ARENA_H
#define SD_ARENA_H

#include <stddef.h>

typedef struct sd_arena_block sd_arena_block;

typedef struct {
    sd_arena_block *blocks; /* oldest first */
    sd_arena_block *cur;    /* where allocation continues */
    size_t used_total;      /* bytes handed out, counted across blocks */
    size_t high_water;
    size_t spill_count;     /* blocks added since the last reset (for tests and stats) */
} sd_arena;

typedef struct {
    sd_arena_block *block;
    size_t block_used;
    size_t used_total;
} sd_arena_mark;

void sd_arena_init(sd_arena *a);
/* Returns 64-byte aligned memory, or NULL when out of memory. */
void *sd_arena_alloc(sd_arena *a, size_t bytes);
/* Same, counted in floats. */
float *sd_arena_floats(sd_arena *a, size_t n);
sd_arena_mark sd_arena_get_mark(const sd_arena *a);
void sd_arena_release(sd_arena *a, sd_arena_mark m);
/* Everything is free again; consolidates spilled blocks into one of the high-water size. */
void sd_arena_reset(sd_arena *a);
void sd_arena_free(sd_arena *a);

/* For tests only: the smallest block a spill adds (default SD_ARENA_MIN_SPILL, bytes; 1 makes
 * every spilled block exactly the size of the allocation that needed it, so a pass that outgrows
 * its block is spread over many blocks by construction rather than by how much scratch each
 * kernel happens to take). Process-wide; set it only while no arena is allocating. Returns the
 * previous value. */
#define SD_ARENA_MIN_SPILL ((size_t)1 << 20)
size_t sd_arena_set_min_spill(size_t bytes);

#endif
