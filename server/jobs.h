/* The job queue: one worker thread generates one request at a time (the pipelines use every core
 * already), jobs wait in a bounded FIFO (--queue N; full: the caller answers 503 + Retry-After),
 * and the running job reports its progress and a latent preview for GET /sdapi/v1/progress.
 *
 * Ownership: the HTTP thread that submits a job owns it and frees it after srv_jobs_wait says it is
 * done. A job it gives up on (the client went away) is cancelled: removed from the queue at once,
 * or stopped at the next step if running; the owner still waits for done before freeing. */
#ifndef SRV_JOBS_H
#define SRV_JOBS_H

#include <stdatomic.h>
#include <stdbool.h>

#include "../include/sd.h"
#include "config.h"
#include "models.h"
#include "request.h"

typedef struct srv_job {
    srv_request req;
    /* Filled by the worker. */
    char *model;      /* the model used */
    sd_image *images; /* batch * n_iter images (fewer when interrupted) */
    long long *seeds; /* each image's seed */
    char **infotexts; /* each image's A1111 parameters text (malloc'd) */
    int n_images;
    long long seed; /* the first seed (a random one resolved) */
    int steps, width, height;
    double guidance;
    bool interrupted; /* POST /sdapi/v1/interrupt stopped it */
    bool ok;
    srv_error error;
    double t_submit, t_start, t_end, load_s, gen_s; /* seconds (monotonic clock) */
    /* Queue state (under the queue lock). */
    bool done;
    atomic_bool cancel;
    struct srv_job *next;
} srv_job;

typedef struct {
    bool busy;
    const char *job;              /* "txt2img" or "img2img" (static); "" when idle */
    int job_count, job_no; /* iterations of the running request, the current one */
    int step, steps;       /* sampling_step, sampling_steps */
    double progress, eta;  /* 0..1; seconds left */
    bool interrupted;
    int queued;       /* jobs waiting */
    sd_image preview; /* latest step's latent preview (empty when none); caller frees */
} srv_progress;

typedef struct srv_jobs srv_jobs;

bool srv_jobs_start(srv_jobs **out, const srv_config *cfg, srv_models *models);
/* Cancels the running job, fails the waiting ones (503), joins the worker; later submissions
 * are refused. The HTTP threads may still wait on their jobs until srv_jobs_free. */
void srv_jobs_stop(srv_jobs *q);
void srv_jobs_free(srv_jobs *q);

srv_job *srv_job_new(void);
void srv_job_free(srv_job *j);

/* Queues j: 0, or -1 when the queue is full (*retry_after: seconds worth waiting), -2 when the
 * server is stopping. */
int srv_jobs_submit(srv_jobs *q, srv_job *j, int *retry_after);
/* Waits up to timeout_ms for j; true once done. */
bool srv_jobs_wait(srv_jobs *q, srv_job *j, int timeout_ms);
/* The client is gone: drop j from the queue or stop it at the next step. */
void srv_jobs_cancel(srv_jobs *q, srv_job *j);
/* Stops the running job at its next step (A1111 interrupt). */
void srv_jobs_interrupt(srv_jobs *q);
/* with_image: copy the preview too (and, with --vae-tiny, ask the worker for a fresh one). */
void srv_jobs_progress(srv_jobs *q, srv_progress *out, bool with_image);

double srv_now(void);

#endif
