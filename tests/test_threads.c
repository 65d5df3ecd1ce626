/* The library's thread-safety promises (sd.h, "Threads"), on the tiny fixtures:
 *
 * - two pipelines loaded and generating on two threads at once give the same bytes (images and
 *   latents) as the same generations run one after the other;
 * - a second sd_generate on a pipeline that is generating returns SD_ERR_BUSY at once, and the
 *   first still succeeds. Deterministic: the first call's event callback holds it inside
 *   sd_generate until the second call has returned;
 * - the thread count given at load is the one every parallel region of sd_generate gets, on
 *   whatever thread sd_generate runs (seen from the event callback, which runs on that thread), and
 *   the calling thread's own setting is back afterwards. */
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "test.h"

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void small_params(sd_gen_params *g, uint64_t seed) {
    sd_gen_params_init(g);
    g->prompt = "a red cube on a table";
    g->width = g->height = 64;
    g->steps = 3;
    g->seed = seed;
}

static bool same_result(const sd_result *a, const sd_result *b) {
    if (a->n_images != b->n_images || a->n_images < 1) return false;
    for (int i = 0; i < a->n_images; i++) {
        const sd_image *x = &a->images[i], *y = &b->images[i];
        if (x->width != y->width || x->height != y->height ||
            memcmp(x->rgb, y->rgb, (size_t)x->width * x->height * 3))
            return false;
    }
    const size_t n = (size_t)a->latent_shape[0] * a->latent_shape[1] * a->latent_shape[2] *
                     a->latent_shape[3];
    return !memcmp(a->latent_shape, b->latent_shape, sizeof a->latent_shape) &&
           !memcmp(a->latents, b->latents, n * sizeof *a->latents);
}

typedef struct {
    const char *model;
    sd_pipeline *p;
    sd_gen_params g;
    sd_result r;
    sd_status st;
    char err[256]; /* the thread's sd_last_error() after a failure (it is per thread) */
} job;

static void *load_job(void *arg) {
    job *j = arg;
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.threads = 1; /* two jobs on a 2-core machine */
    j->st = sd_pipeline_load(&j->p, j->model, &lp);
    if (j->st != SD_OK) snprintf(j->err, sizeof j->err, "%s", sd_last_error());
    return NULL;
}

static void *generate_job(void *arg) {
    job *j = arg;
    j->st = sd_generate(j->p, &j->g, &j->r);
    if (j->st != SD_OK) snprintf(j->err, sizeof j->err, "%s", sd_last_error());
    return NULL;
}

/* Two models (SD 1.5 and SD3 tiny), loaded in parallel, generating in parallel. */
static void test_two_pipelines(void) {
    char models[2][512];
    snprintf(models[0], sizeof models[0], "%s", fixture("sd15-tiny/pipeline"));
    snprintf(models[1], sizeof models[1], "%s", fixture("sd3-tiny/pipeline"));
    job jobs[2] = {{.model = models[0]}, {.model = models[1]}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, load_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) CHECK(jobs[i].st == SD_OK, "parallel load %d: %s", i, jobs[i].err);
    if (jobs[0].st != SD_OK || jobs[1].st != SD_OK) {
        for (int i = 0; i < 2; i++) sd_pipeline_free(jobs[i].p);
        return;
    }
    /* One after the other first: the references. */
    sd_result seq[2];
    for (int i = 0; i < 2; i++) {
        small_params(&jobs[i].g, 11 + i);
        CHECK_OK(sd_generate(jobs[i].p, &jobs[i].g, &seq[i]));
    }
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, generate_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(jobs[i].st == SD_OK, "parallel generate %d: %s", i, jobs[i].err);
        const bool same = jobs[i].st == SD_OK && same_result(&jobs[i].r, &seq[i]);
        printf("%s %s: parallel generation equals the sequential one\n", same ? "ok  " : "FAIL",
               jobs[i].model);
        CHECK(same, "%s: two pipelines at once give other bytes than one after the other",
              jobs[i].model);
        sd_result_free(&jobs[i].r), sd_result_free(&seq[i]);
        sd_pipeline_free(jobs[i].p);
    }
}

/* One pipeline, two callers: the first is held in its first event until the second returned. */
typedef struct {
    atomic_int inside;      /* the first call reached its callback */
    atomic_int second_done; /* the second call returned */
    atomic_int timed_out;
} busy_state;

static int hold_until_second(void *user, const sd_event *ev) {
    (void)ev;
    busy_state *s = user;
    atomic_store(&s->inside, 1);
    /* Bounded, so a broken BUSY check fails the test instead of hanging it. */
    for (int i = 0; i < 60000 && !atomic_load(&s->second_done); i++) sleep_ms(1);
    if (!atomic_load(&s->second_done)) atomic_store(&s->timed_out, 1);
    return 0;
}

static void test_busy(sd_pipeline *p) {
    busy_state s = {0};
    job first = {.p = p};
    small_params(&first.g, 5);
    first.g.on_event = hold_until_second;
    first.g.user = &s;
    pthread_t th;
    pthread_create(&th, NULL, generate_job, &first);
    while (!atomic_load(&s.inside)) sleep_ms(1);
    sd_gen_params g;
    small_params(&g, 6);
    sd_result r;
    memset(&r, 0x5a, sizeof r);
    const double t0 = now_s();
    const sd_status st = sd_generate(p, &g, &r);
    const double took = now_s() - t0;
    const char *msg = sd_last_error();
    CHECK(st == SD_ERR_BUSY && strstr(msg, "another sd_generate"), "second call on a busy "
          "pipeline: %s (%s)", sd_status_string(st), msg);
    CHECK(r.n_images == 0 && r.images == NULL && r.latents == NULL, "a BUSY result is empty");
    CHECK(took < 1.0, "BUSY comes at once, not after waiting (%.3f s)", took);
    atomic_store(&s.second_done, 1);
    pthread_join(th, NULL);
    CHECK(!atomic_load(&s.timed_out), "the first call's callback saw the second return");
    CHECK(first.st == SD_OK && first.r.n_images == 1, "the first call still generates: %s",
          first.err);
    printf("%s busy: second call %s in %.4f s, first call %s\n",
           st == SD_ERR_BUSY && first.st == SD_OK ? "ok  " : "FAIL", sd_status_string(st), took,
           sd_status_string(first.st));
    sd_result_free(&first.r);
    /* The flag is released: the next call runs. */
    CHECK_OK(sd_generate(p, &g, &r));
    sd_result_free(&r);
}

/* The load's thread count inside sd_generate on another thread, whose own setting differs. */
typedef struct {
    atomic_int min_seen, max_seen;
} threads_seen;

static int record_threads(void *user, const sd_event *ev) {
    (void)ev;
    threads_seen *t = user;
    const int n = omp_get_max_threads();
    if (n < atomic_load(&t->min_seen)) atomic_store(&t->min_seen, n);
    if (n > atomic_load(&t->max_seen)) atomic_store(&t->max_seen, n);
    return 0;
}

typedef struct {
    sd_pipeline *p;
    threads_seen seen;
    int after; /* the thread's own setting after sd_generate */
    sd_status st;
} threads_job;

static void *generate_with_own_setting(void *arg) {
    threads_job *j = arg;
    omp_set_num_threads(1);
    sd_gen_params g;
    small_params(&g, 7);
    g.on_event = record_threads;
    g.user = &j->seen;
    sd_result r;
    j->st = sd_generate(j->p, &g, &r);
    j->after = omp_get_max_threads();
    if (j->st == SD_OK) sd_result_free(&r);
    return NULL;
}

static void test_load_threads(void) {
    enum { LOAD_THREADS = 3 }; /* neither 1 (the generating thread's own) nor the core count */
    omp_set_num_threads(1);
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.threads = LOAD_THREADS;
    threads_job j = {0};
    atomic_init(&j.seen.min_seen, 1 << 20);
    atomic_init(&j.seen.max_seen, 0);
    CHECK_OK(sd_pipeline_load(&j.p, fixture("sd15-tiny/pipeline"), &lp));
    CHECK(omp_get_max_threads() == 1, "sd_pipeline_load leaves the caller's thread setting (1), "
          "not %d", omp_get_max_threads());
    if (!j.p) return;
    pthread_t th;
    pthread_create(&th, NULL, generate_with_own_setting, &j);
    pthread_join(th, NULL);
    const int lo = atomic_load(&j.seen.min_seen), hi = atomic_load(&j.seen.max_seen);
    printf("%s threads at load %d: the callback on another thread saw %d..%d, that thread's own "
           "setting after the call %d\n", lo == LOAD_THREADS && hi == LOAD_THREADS && j.after == 1
           ? "ok  " : "FAIL", LOAD_THREADS, lo, hi, j.after);
    CHECK(j.st == SD_OK, "generate on another thread: %s", sd_status_string(j.st));
    CHECK(lo == LOAD_THREADS && hi == LOAD_THREADS, "threads during sd_generate %d..%d, want %d",
          lo, hi, LOAD_THREADS);
    CHECK(j.after == 1, "sd_generate restores the calling thread's setting (1), not %d", j.after);
    test_busy(j.p);
    sd_pipeline_free(j.p);
}

int main(void) {
    test_two_pipelines();
    test_load_threads();
    return test_summary();
}
