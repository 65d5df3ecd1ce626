#include "arena.h"

#include <stdlib.h>
#include <string.h>

struct sd_arena_block {
    sd_arena_block *next; /* older block */
    size_t size, used;
    unsigned char *data;
};

enum { ARENA_ALIGN = 64 };

static size_t round_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

static sd_arena_block *block_new(size_t size) {
    sd_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = aligned_alloc(ARENA_ALIGN, round_up(size ? size : ARENA_ALIGN));
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
    sd_arena_block *b = a->blocks;
    if (!b || b->size - b->used < bytes) {
        /* Spill: a new block big enough for this and some more, so small allocations that follow
         * do not each spill again (but not as big as the previous block: that may be huge). */
        size_t size = bytes > (1u << 20) ? bytes : (1u << 20);
        sd_arena_block *nb = block_new(size);
        if (!nb) return NULL;
        nb->next = b;
        a->blocks = b = nb;
        a->spill_count++;
    }
    void *p = b->data + b->used;
    b->used += bytes;
    a->used_total += bytes;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

float *sd_arena_floats(sd_arena *a, size_t n) { return sd_arena_alloc(a, n * sizeof(float)); }

sd_arena_mark sd_arena_get_mark(const sd_arena *a) {
    sd_arena_mark m = {a->blocks, a->blocks ? a->blocks->used : 0, a->used_total};
    return m;
}

void sd_arena_release(sd_arena *a, sd_arena_mark m) {
    /* Blocks added after the mark stay allocated (they are freed or merged at reset) but are
     * emptied; the block current at the mark goes back to its old fill. */
    for (sd_arena_block *b = a->blocks; b && b != m.block; b = b->next) b->used = 0;
    if (m.block) m.block->used = m.block_used;
    /* Allocation continues in the newest block (emptied if it came after the mark); the tail of
     * the mark's block stays unused until reset consolidates everything into one block. */
    a->used_total = m.used_total;
}

void sd_arena_reset(sd_arena *a) {
    if (a->blocks && (a->blocks->next || a->blocks->size < a->high_water)) {
        size_t size = a->high_water;
        sd_arena_free(a);
        a->blocks = block_new(size);
        a->high_water = size;
    } else if (a->blocks) {
        a->blocks->used = 0;
    }
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
