#include "arena.h"

#include "bigalloc.h"

#include <stdlib.h>
#include <string.h>

/* Blocks form a list from the oldest (the consolidated one) to the newest; `cur` is the block
 * allocations come from. Everything in blocks after `cur` is free: allocation is stack-like, and
 * a release moves `cur` back to the block of its mark, so a later allocation that does not fit
 * there walks forward through those emptied blocks before it adds a new one. */
struct sd_arena_block {
    sd_arena_block *next; /* newer block */
    size_t size, used;
    unsigned char *data;
};

enum { ARENA_ALIGN = 64 };

/* See sd_arena_set_min_spill: only tests change it. */
static size_t min_spill = SD_ARENA_MIN_SPILL;

size_t sd_arena_set_min_spill(size_t bytes) {
    const size_t old = min_spill;
    min_spill = bytes;
    return old;
}

static size_t round_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

static sd_arena_block *block_new(size_t size) {
    sd_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = sd_big_alloc(round_up(size ? size : ARENA_ALIGN));
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->size = size;
    b->used = 0;
    b->next = NULL;
    return b;
}

void sd_arena_init(sd_arena *a) { memset(a, 0, sizeof *a); }

void *sd_arena_alloc(sd_arena *a, size_t bytes) {
    bytes = round_up(bytes ? bytes : 1);
    sd_arena_block *b = a->cur;
    while (b && b->size - b->used < bytes && b->next) { /* emptied newer blocks first */
        b = b->next;
        b->used = 0;
    }
    if (!b || b->size - b->used < bytes) {
        /* Spill: a new block big enough for this and some more (min_spill), so small allocations
         * that follow do not each spill again (but not as big as the previous block: that may be
         * huge). */
        sd_arena_block *nb = block_new(bytes > min_spill ? bytes : min_spill);
        if (!nb) return NULL;
        if (b) {
            nb->next = b->next; /* keep any too-small emptied blocks after it, for reuse */
            b->next = nb;
        } else {
            a->blocks = nb;
        }
        b = nb;
        a->spill_count++;
    }
    a->cur = b;
    void *p = b->data + b->used;
    b->used += bytes;
    a->used_total += bytes;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

float *sd_arena_floats(sd_arena *a, size_t n) { return sd_arena_alloc(a, n * sizeof(float)); }

sd_arena_mark sd_arena_get_mark(const sd_arena *a) {
    sd_arena_mark m = {a->cur, a->cur ? a->cur->used : 0, a->used_total};
    return m;
}

void sd_arena_release(sd_arena *a, sd_arena_mark m) {
    if (m.block) {
        a->cur = m.block;
        m.block->used = m.block_used;
    } else if (a->blocks) { /* marked before anything was allocated */
        a->cur = a->blocks;
        a->cur->used = 0;
    }
    a->used_total = m.used_total;
}

void sd_arena_reset(sd_arena *a) {
    /* One block of the high-water size serves every later pass of the same shape without a
     * single allocation: a stack never needs more than its deepest point. */
    if (a->blocks && (a->blocks->next || a->blocks->size < a->high_water)) {
        size_t size = a->high_water;
        sd_arena_free(a);
        a->blocks = block_new(size);
        a->high_water = size;
    }
    if (a->blocks) a->blocks->used = 0;
    a->cur = a->blocks;
    a->used_total = 0;
    a->spill_count = 0;
}

void sd_arena_free(sd_arena *a) {
    for (sd_arena_block *b = a->blocks, *next; b; b = next) {
        next = b->next;
        free(b->data);
        free(b);
    }
    memset(a, 0, sizeof *a);
}
