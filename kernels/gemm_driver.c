/* Blocking, packing and threading for the GEMM engine (see gemm_internal.h). */
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"
#include "target.h"

const gemm_kernel *gemm_kernel_for(kern_isa isa) {
    switch (isa) {
#if KERN_X86
    case KERN_ISA_AVX512: return gemm_kernel_avx512();
    case KERN_ISA_AVX2: return gemm_kernel_avx2();
    default: return kern_fma_supported() ? gemm_kernel_generic_fma() : gemm_kernel_generic();
#elif KERN_ARM64
    case KERN_ISA_NEON: return gemm_kernel_neon();
    default: return gemm_kernel_generic();
#else
    default: return gemm_kernel_generic();
#endif
    }
}

/* One packed block of B per calling thread (the team shares its caller's), for the block-by-block
 * path: static storage, which cannot fail. */
static _Thread_local float b_block[GEMM_KC * GEMM_NC] __attribute__((aligned(64)));

size_t gemm_packed_floats(int n, int k) {
    return (size_t)((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR * (size_t)(k > 0 ? k : 0);
}

/* C = bias (+ C) for an empty k. */
static void init_only(const gemm_problem *p) {
    for (int i = 0; i < p->m; i++) {
        float *row = p->c + i * p->ldc;
        for (int j = 0; j < p->n; j++)
            row[j] = (p->accumulate ? row[j] : 0.0f) + (p->bias ? p->bias[j] : 0.0f);
    }
}

/* Problems below this many multiply-adds run on the calling thread: waking a team costs more. */
enum { PARALLEL_MIN_WORK = 1 << 20 };

/* What every block of a product needs. */
typedef struct {
    const gemm_problem *p;
    const gemm_kernel *kern;
    int nkb;   /* k blocks */
    int tiles; /* row tiles of kern->mr rows */
} plan;

/* k block kb is [*p0, *p0 + *kc): near-equal blocks that depend on k only, which keeps the order
 * of every sum fixed. */
static inline void k_block(const plan *pl, int kb, int *p0, int *kc) {
    const long k = pl->p->k;
    *p0 = (int)(k * kb / pl->nkb);
    *kc = (int)(k * (kb + 1) / pl->nkb) - *p0;
}

/* Row tiles [t0, t1) times panels j0 + [q0, q1) over k block kb. Panel j0 + q of B is at
 * bbase + q * bstride (kc rows of GEMM_NR). */
static void multiply(const plan *pl, int t0, int t1, int j0, int q0, int q1, int kb,
                     const float *bbase, long bstride, float *abuf) {
    const gemm_problem *p = pl->p;
    const int mr = pl->kern->mr;
    int p0, kc;
    k_block(pl, kb, &p0, &kc);
    for (int t = t0; t < t1; t++) {
        const int r0 = t * mr, rows = p->m - r0 < mr ? p->m - r0 : mr;
        p->load_a(p->a_ctx, r0, rows, p0, kc, abuf);
        for (int q = q0; q < q1; q++) {
            const int col = (j0 + q) * GEMM_NR, cols = p->n - col < GEMM_NR ? p->n - col : GEMM_NR;
            pl->kern->kernel(kc, abuf, bbase + q * bstride, p->c + r0 * p->ldc + col, p->ldc, rows,
                             cols, kb == 0 && p->bias ? p->bias + col : NULL,
                             kb == 0 ? p->accumulate : 1);
        }
    }
}

static int threads_for(const gemm_problem *p) {
    if (omp_in_parallel() || (double)p->m * p->n * p->k < PARALLEL_MIN_WORK) return 1;
    return omp_get_max_threads();
}

gemm_split gemm_split_items(int tiles, int panels, int mr, int nr, int threads) {
    /* At most 16 panels (512 fp32 columns) per item, split evenly, and about 64K floats of C. */
    int pgroups = (panels + 15) / 16, per_pg = (panels + pgroups - 1) / pgroups;
    int per_rg = 65536 / (mr * per_pg * nr);
    if (per_rg < 1) per_rg = 1;
    if (per_rg > tiles) per_rg = tiles;
    /* Enough items for the threads to balance. Narrower items make each row of A be gathered
     * once more, shorter ones each panel of B be streamed once more: split the side whose part
     * of an item is larger (weights when there are few rows, rows when there are many). */
    const long want = threads > 1 ? 4L * threads : 1;
    for (;;) {
        const long items = (long)((tiles + per_rg - 1) / per_rg) * pgroups;
        if (items >= want || (per_rg == 1 && per_pg == 1)) break;
        const long a_part = (long)per_rg * mr, b_part = (long)per_pg * nr;
        if ((b_part >= a_part && per_pg > 1) || per_rg == 1) {
            per_pg--; /* every step makes progress, so the loop ends */
            pgroups = (panels + per_pg - 1) / per_pg;
            per_pg = (panels + pgroups - 1) / pgroups; /* even again */
        } else {
            per_rg = (per_rg + 1) / 2;
        }
    }
    return (gemm_split){per_rg, per_pg, (tiles + per_rg - 1) / per_rg, pgroups};
}

/* B packed for the whole k, panels [j0, j0 + panels) at `packed` (panel j0 + q at
 * packed + q * k * GEMM_NR); with `pack`, the team packs them there first. Each work item is a
 * block of C (row tiles x panels) carried through all of k, so that block, its rows of A and the
 * panels' current k block stay in cache, and threads never wait for each other. */
static void run_packed(const plan *pl, float *packed, int j0, int panels, int pack) {
    const gemm_problem *p = pl->p;
    const int mr = pl->kern->mr, threads = threads_for(p);
    const gemm_split sp = gemm_split_items(pl->tiles, panels, mr, GEMM_NR, threads);
    const int per_rg = sp.per_rg, per_pg = sp.per_pg, rgroups = sp.rgroups, pgroups = sp.pgroups;
    const long bstride = (long)p->k * GEMM_NR;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float abuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        if (pack) {
#pragma omp for schedule(static)
            for (int q = 0; q < panels; q++) p->pack_b(p->b_ctx, (j0 + q) * GEMM_NR, 0, p->k, packed + q * bstride);
        }
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rgroups * pgroups; item++) {
            const int rg = item / pgroups, pg = item % pgroups;
            const int t0 = rg * per_rg, t1 = t0 + per_rg < pl->tiles ? t0 + per_rg : pl->tiles;
            const int q0 = pg * per_pg, q1 = q0 + per_pg < panels ? q0 + per_pg : panels;
            for (int kb = 0; kb < pl->nkb; kb++) {
                int p0, kc;
                k_block(pl, kb, &p0, &kc);
                multiply(pl, t0, t1, j0, q0, q1, kb, packed + (long)p0 * GEMM_NR, bstride, abuf);
            }
        }
    }
}

/* The calling thread's buffer for packing B whole: grown on first need and kept, so later
 * products of the same size allocate nothing; freed when the thread ends. */
typedef struct {
    float *data;
    size_t cap;
} pack_buffer;

static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;
static pthread_key_t buffer_key;
static size_t pack_limit = GEMM_PACK_LIMIT;

static void buffer_free(void *ptr) {
    pack_buffer *b = ptr;
    free(b->data);
    free(b);
}

static void buffer_key_init(void) {
    if (pthread_key_create(&buffer_key, buffer_free)) buffer_key = 0;
}

static float *pack_buffer_get(size_t floats) {
    pthread_once(&buffer_once, buffer_key_init);
    pack_buffer *b = pthread_getspecific(buffer_key);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b || pthread_setspecific(buffer_key, b)) {
            free(b);
            return NULL;
        }
    }
    if (b->cap < floats) {
        free(b->data);
        b->data = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        b->cap = b->data ? floats : 0;
    }
    return b->data;
}

void gemm_set_pack_limit(size_t floats) { pack_limit = floats; }

/* B packed block by block (GEMM_NC columns x one k block) into the caller's static buffer, which
 * the team fills together and then shares; a barrier separates packing from use. */
static void run_blocked(const plan *pl) {
    const gemm_problem *p = pl->p;
    const int panels = (p->n + GEMM_NR - 1) / GEMM_NR, max_block_panels = GEMM_NC / GEMM_NR;
    const int njb = (panels + max_block_panels - 1) / max_block_panels;
    const int block_panels = (panels + njb - 1) / njb, threads = threads_for(p);
    float *shared = b_block;
    /* Few row tiles: split the panels of a block into groups too, so every thread has work. */
    int groups = 1;
    if (threads > 1 && pl->tiles < 4 * threads) {
        groups = (4 * threads + pl->tiles - 1) / pl->tiles;
        if (groups > block_panels) groups = block_panels;
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float abuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        for (int jb = 0; jb < njb; jb++) {
            const int j0 = jb * block_panels;
            const int np = panels - j0 < block_panels ? panels - j0 : block_panels;
            const int per_group = (np + groups - 1) / groups;
            for (int kb = 0; kb < pl->nkb; kb++) {
                int p0, kc;
                k_block(pl, kb, &p0, &kc);
#pragma omp for schedule(static)
                for (int q = 0; q < np; q++)
                    p->pack_b(p->b_ctx, (j0 + q) * GEMM_NR, p0, kc, shared + (long)q * kc * GEMM_NR);
                const long bstride = (long)kc * GEMM_NR;
#pragma omp for schedule(dynamic, 1)
                for (int item = 0; item < pl->tiles * groups; item++) {
                    const int t = item / groups, g = item % groups;
                    const int q0 = g * per_group, q1 = q0 + per_group < np ? q0 + per_group : np;
                    if (q0 < q1) multiply(pl, t, t + 1, j0, q0, q1, kb, shared, bstride, abuf);
                }
            }
        }
    }
}

void gemm_run(const gemm_problem *p) {
    if (p->m <= 0 || p->n <= 0) return;
    if (p->k <= 0) {
        init_only(p);
        return;
    }
    plan pl = {p, gemm_kernel_for(kern_isa_active()), (p->k + GEMM_KC - 1) / GEMM_KC, 0};
    pl.tiles = (p->m + pl.kern->mr - 1) / pl.kern->mr;
    const int panels = (p->n + GEMM_NR - 1) / GEMM_NR;
    if (p->packed) {
        run_packed(&pl, (float *)p->packed, 0, panels, 0);
        return;
    }
    /* Pack B whole, a range of columns at a time when it is large, then run as pre-packed. */
    const long panel_floats = (long)p->k * GEMM_NR;
    int per_range = (int)(pack_limit / (size_t)panel_floats);
    if (per_range > panels) per_range = panels;
    float *buf = per_range > 0 ? pack_buffer_get((size_t)per_range * panel_floats) : NULL;
    if (!buf) { /* no room: pack and multiply block by block with the static buffer */
        run_blocked(&pl);
        return;
    }
    const int ranges = (panels + per_range - 1) / per_range;
    per_range = (panels + ranges - 1) / ranges;
    for (int j0 = 0; j0 < panels; j0 += per_range)
        run_packed(&pl, buf, j0, panels - j0 < per_range ? panels - j0 : per_range, 1);
}

void gemm_run_item_packed(const gemm_problem *p) {
    if (p->m <= 0 || p->n <= 0) return;
    if (p->k <= 0) {
        init_only(p);
        return;
    }
    plan pl = {p, gemm_kernel_for(kern_isa_active()), (p->k + GEMM_KC - 1) / GEMM_KC, 0};
    pl.tiles = (p->m + pl.kern->mr - 1) / pl.kern->mr;
    const int panels = (p->n + GEMM_NR - 1) / GEMM_NR, max_pg = GEMM_NC / GEMM_NR;
    const int threads = threads_for(p);
    const int pgroups = (panels + max_pg - 1) / max_pg, per_pg = (panels + pgroups - 1) / pgroups;
    /* Every row in one item unless the threads need more items: each row group packs again. */
    int per_rg = pl.tiles;
    const long want = threads > 1 ? 4L * threads : 1;
    while (per_rg > 1 && (long)((pl.tiles + per_rg - 1) / per_rg) * pgroups < want)
        per_rg = (per_rg + 1) / 2;
    const int rgroups = (pl.tiles + per_rg - 1) / per_rg;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float abuf[GEMM_MR_MAX * GEMM_APITCH] __attribute__((aligned(64)));
        float *bbuf = b_block; /* this thread's own: per_pg panels of one k block fit */
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < rgroups * pgroups; item++) {
            const int rg = item / pgroups, pg = item % pgroups;
            const int t0 = rg * per_rg, t1 = t0 + per_rg < pl.tiles ? t0 + per_rg : pl.tiles;
            const int q0 = pg * per_pg, q1 = q0 + per_pg < panels ? q0 + per_pg : panels;
            for (int kb = 0; kb < pl.nkb; kb++) {
                int p0, kc;
                k_block(&pl, kb, &p0, &kc);
                for (int q = q0; q < q1; q++)
                    p->pack_b(p->b_ctx, q * GEMM_NR, p0, kc, bbuf + (long)(q - q0) * kc * GEMM_NR);
                multiply(&pl, t0, t1, q0, 0, q1 - q0, kb, bbuf, (long)kc * GEMM_NR, abuf);
            }
        }
    }
}

/* B stored [n][k] (a Linear weight): panel columns are rows of b. */
void gemm_pack_nt_panel(const float *b, long ldb, int n, int j0, int p0, int kc, float *dst) {
    const gemm_kernel *kern = gemm_kernel_for(kern_isa_active());
    if (kern->pack_nt) {
        kern->pack_nt(b, ldb, n, j0, p0, kc, dst);
        return;
    }
    const int cols = n - j0 < GEMM_NR ? n - j0 : GEMM_NR;
    for (int jj = 0; jj < cols; jj++) {
        const float *src = b + (j0 + jj) * ldb + p0;
        for (int q = 0; q < kc; q++) dst[q * GEMM_NR + jj] = src[q];
    }
    for (int jj = cols; jj < GEMM_NR; jj++)
        for (int q = 0; q < kc; q++) dst[q * GEMM_NR + jj] = 0.0f;
}

void gemm_pack_nt(int n, int k, const float *b, int ldb, float *packed) {
    const int panels = (n + GEMM_NR - 1) / GEMM_NR;
#pragma omp parallel for schedule(static) if ((long)n * k > (1 << 16))
    for (int q = 0; q < panels; q++) gemm_pack_nt_panel(b, ldb, n, q * GEMM_NR, 0, k, packed + (long)q * k * GEMM_NR);
}
