/* The worker thread and its queue. The event callback runs on the worker during sd_generate: it
 * records the step, makes the preview and answers the cancel and interrupt flags. The latent
 * preview (a few thousand multiply-adds, cheap next to a denoiser step) is made every step; with
 * --vae-tiny the preview is a full decode (taesd: 141 GFLOP at 512x512, about 1 CPU-second; 4x
 * that at 1024x1024), so it is made only at a step after a progress request asked for an image:
 * a run nobody watches pays nothing, a watched one a decode per poll at most (the image a poll
 * gets is the one the previous poll asked for). */
#include "jobs.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../cli/common/options.h"

struct srv_jobs {
    const srv_config *cfg;
    srv_models *models;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    srv_job *head, *tail; /* waiting jobs */
    int queued;
    srv_job *running;
    bool stopping;
    atomic_bool interrupt;
    /* Progress of the running job (under lock). */
    int job_count, job_no, step, steps;
    double job_start, last_job_s; /* the last job's seconds, for Retry-After */
    sd_image preview;
    sd_pipeline *pipe;
    atomic_bool preview_wanted; /* a progress request asked for the image (--vae-tiny) */
};

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

srv_job *srv_job_new(void) {
    srv_job *j = calloc(1, sizeof *j);
    if (j) srv_request_init(&j->req);
    return j;
}

void srv_job_free(srv_job *j) {
    if (!j) return;
    srv_request_free(&j->req);
    for (int i = 0; i < j->n_images; i++) {
        sd_image_free(&j->images[i]);
        free(j->infotexts[i]);
    }
    free(j->images), free(j->infotexts), free(j->seeds), free(j->model);
    free(j);
}

static int on_event(void *user, const sd_event *ev) {
    srv_jobs *q = user;
    srv_job *j = q->running;
    if (ev->kind == SD_EVENT_STEP) {
        sd_image pv = {0};
        const bool make = !q->cfg->vae_tiny || atomic_exchange(&q->preview_wanted, false);
        if (make) sd_preview_image(q->pipe, &ev->tensor, &pv); /* a failure only leaves none */
        pthread_mutex_lock(&q->lock);
        q->step = ev->index + 1, q->steps = ev->total;
        if (make) {
            sd_image_free(&q->preview);
            q->preview = pv;
        }
        pthread_mutex_unlock(&q->lock);
    }
    return atomic_load(&j->cancel) || atomic_load(&q->interrupt);
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    FILE *fp = fopen("/dev/urandom", "rb");
    if (!fp || fread(&s, sizeof s, 1, fp) != 1) s = (uint64_t)time(NULL) * 2654435761u;
    if (fp) fclose(fp);
    return s & 0xffffffffu; /* 32 bits, as A1111 draws them: easy to retype */
}

static bool grow_results(srv_job *j, int n) {
    sd_image *im = realloc(j->images, (size_t)n * sizeof *im);
    if (im) j->images = im;
    char **tx = realloc(j->infotexts, (size_t)n * sizeof *tx);
    if (tx) j->infotexts = tx;
    long long *sd = realloc(j->seeds, (size_t)n * sizeof *sd);
    if (sd) j->seeds = sd;
    return im && tx && sd;
}

/* One request: n_iter generations of `batch` images, iteration i with seed + i (A1111's way). */
static void run_job(srv_jobs *q, srv_job *j) {
    srv_request *r = &j->req;
    if (!r->model) r->model = srv_models_current(q->models);
    j->model = strdup(r->model);
    sd_pipeline *p =
        srv_models_acquire(q->models, r->model, r->loras, r->n_loras, &j->load_s, &j->error);
    if (!p) return;
    pthread_mutex_lock(&q->lock);
    q->pipe = p;
    pthread_mutex_unlock(&q->lock);
    j->seed = r->seed >= 0 ? r->seed : (long long)random_seed();
    const char *sched = r->scheduler;
    /* "Euler" on a flow-matching model (SD3, FLUX) is its flow Euler. */
    const char *model_sched = sd_pipeline_scheduler_class(p);
    if (sched && !strcmp(sched, "euler") && model_sched && strstr(model_sched, "FlowMatch"))
        sched = "flow_euler";
    double t0 = srv_now();
    for (int it = 0; it < r->n_iter; it++) {
        pthread_mutex_lock(&q->lock);
        q->job_no = it, q->step = 0;
        pthread_mutex_unlock(&q->lock);
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = r->prompt, g.negative_prompt = r->negative_prompt;
        g.prompt_syntax = r->syntax;
        g.width = r->width, g.height = r->height, g.steps = r->steps, g.guidance = r->guidance;
        g.seed = (uint64_t)(j->seed + it);
        g.batch = r->batch;
        g.scheduler = sched;
        g.strength = r->strength;
        g.vae_tile_limit_mb = q->cfg->vae_tile_limit_mb;
        if (r->init.width) g.init_image = &r->init;
        if (r->mask.width) g.mask_image = &r->mask;
        g.on_event = on_event, g.user = q;
        sd_result res;
        sd_status st = sd_generate(p, &g, &res);
        if (st == SD_ERR_CANCELLED) {
            pthread_mutex_lock(&q->lock);
            bool stopping = q->stopping;
            pthread_mutex_unlock(&q->lock);
            j->interrupted = atomic_load(&q->interrupt) && !atomic_load(&j->cancel);
            if (stopping)
                srv_fail(&j->error, 503, "", "the server is shutting down");
            else if (!j->interrupted)
                srv_fail(&j->error, 499, "", "cancelled: the client disconnected");
            break;
        }
        if (st != SD_OK) {
            /* Settings the model refuses (a size, a scheduler): the client's to fix. */
            srv_fail(&j->error,
                     st == SD_ERR_ARG || st == SD_ERR_UNSUPPORTED || st == SD_ERR_CONFIG ? 400
                                                                                         : 500,
                     "", "%s", sd_last_error());
            return;
        }
        if (!grow_results(j, j->n_images + res.n_images)) {
            sd_result_free(&res);
            srv_fail(&j->error, 500, "", "out of memory");
            return;
        }
        j->steps = res.used.steps, j->guidance = res.used.guidance;
        j->width = res.images[0].width, j->height = res.images[0].height;
        char *text = cli_parameters_text(&res.used,
                                         r->sampler_label ? r->sampler_label : res.scheduler_class,
                                         j->width, j->height, r->model);
        for (int i = 0; i < res.n_images; i++) {
            j->images[j->n_images] = res.images[i];
            res.images[i] = (sd_image){0};
            j->seeds[j->n_images] = j->seed + it;
            j->infotexts[j->n_images++] = text ? strdup(text) : NULL;
        }
        free(text);
        sd_result_free(&res);
    }
    j->gen_s = srv_now() - t0;
    j->ok = j->error.status == 0;
}

static void *worker(void *arg) {
    srv_jobs *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stopping) pthread_cond_wait(&q->wake, &q->lock);
        if (q->stopping) break;
        srv_job *j = q->head;
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        q->queued--;
        q->running = j;
        q->job_count = j->req.n_iter, q->job_no = 0, q->step = 0, q->steps = j->req.steps;
        q->job_start = srv_now();
        atomic_store(&q->interrupt, false);
        pthread_mutex_unlock(&q->lock);
        j->t_start = srv_now();
        run_job(q, j);
        j->t_end = srv_now();
        pthread_mutex_lock(&q->lock);
        q->last_job_s = j->t_end - j->t_start;
        q->running = NULL, q->pipe = NULL;
        sd_image_free(&q->preview);
        j->done = true;
        pthread_cond_broadcast(&q->done);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

bool srv_jobs_start(srv_jobs **out, const srv_config *cfg, srv_models *models) {
    srv_jobs *q = calloc(1, sizeof *q);
    if (!q) return false;
    q->cfg = cfg, q->models = models;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    pthread_cond_init(&q->done, NULL);
    if (pthread_create(&q->thread, NULL, worker, q)) {
        free(q);
        return false;
    }
    *out = q;
    return true;
}

void srv_jobs_stop(srv_jobs *q) {
    if (!q) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    if (q->running) atomic_store(&q->running->cancel, true);
    for (srv_job *j = q->head; j; j = j->next) {
        srv_fail(&j->error, 503, "", "the server is shutting down");
        j->done = true;
    }
    q->head = q->tail = NULL, q->queued = 0;
    pthread_cond_broadcast(&q->wake);
    pthread_cond_broadcast(&q->done);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
}

void srv_jobs_free(srv_jobs *q) {
    if (!q) return;
    sd_image_free(&q->preview);
    pthread_cond_destroy(&q->wake), pthread_cond_destroy(&q->done);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

int srv_jobs_submit(srv_jobs *q, srv_job *j, int *retry_after) {
    pthread_mutex_lock(&q->lock);
    int rc = 0;
    if (q->stopping) {
        rc = -2;
    } else if (q->queued >= q->cfg->queue) {
        /* Worth retrying once the jobs ahead are likely through: the last job's time per job. */
        double per = q->last_job_s > 0 ? q->last_job_s : 1;
        *retry_after = (int)ceil(per * (q->queued + 1));
        if (*retry_after < 1) *retry_after = 1;
        rc = -1;
    } else {
        j->t_submit = srv_now();
        j->next = NULL;
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->queued++;
        pthread_cond_signal(&q->wake);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

bool srv_jobs_wait(srv_jobs *q, srv_job *j, int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    until.tv_sec += timeout_ms / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&q->lock);
    while (!j->done && pthread_cond_timedwait(&q->done, &q->lock, &until) == 0) {
    }
    bool done = j->done;
    pthread_mutex_unlock(&q->lock);
    return done;
}

void srv_jobs_cancel(srv_jobs *q, srv_job *j) {
    pthread_mutex_lock(&q->lock);
    atomic_store(&j->cancel, true);
    if (!j->done && q->running != j) { /* still waiting: unlink it */
        srv_job **pp = &q->head, *prev = NULL;
        while (*pp && *pp != j) prev = *pp, pp = &(*pp)->next;
        if (*pp) {
            *pp = j->next;
            if (q->tail == j) q->tail = prev;
            q->queued--;
            srv_fail(&j->error, 499, "", "cancelled: the client disconnected");
            j->done = true;
        }
    }
    pthread_mutex_unlock(&q->lock);
}

void srv_jobs_interrupt(srv_jobs *q) {
    pthread_mutex_lock(&q->lock);
    if (q->running) atomic_store(&q->interrupt, true);
    pthread_mutex_unlock(&q->lock);
}

void srv_jobs_progress(srv_jobs *q, srv_progress *out, bool with_image) {
    memset(out, 0, sizeof *out);
    if (with_image) atomic_store(&q->preview_wanted, true);
    pthread_mutex_lock(&q->lock);
    out->busy = q->running != NULL;
    out->job = !out->busy ? "" : q->running->req.init.width ? "img2img" : "txt2img";
    out->queued = q->queued;
    if (out->busy) {
        out->job_count = q->job_count, out->job_no = q->job_no;
        out->step = q->step, out->steps = q->steps;
        out->interrupted = atomic_load(&q->interrupt);
        if (q->steps > 0 && q->job_count > 0)
            out->progress = (q->job_no + (double)q->step / q->steps) / q->job_count;
        double elapsed = srv_now() - q->job_start;
        if (out->progress > 0) out->eta = elapsed / out->progress - elapsed;
        if (with_image && q->preview.width &&
            sd_image_alloc(&out->preview, q->preview.width, q->preview.height) == SD_OK)
            memcpy(out->preview.rgb, q->preview.rgb,
                   (size_t)q->preview.width * q->preview.height * 3);
    }
    pthread_mutex_unlock(&q->lock);
}
