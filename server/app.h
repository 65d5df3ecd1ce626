/* What every request handler reaches: the settings, the models, the job queue, the stored
 * images, and the HTTP glue's request and reply types. */
#ifndef SRV_APP_H
#define SRV_APP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "config.h"
#include "files.h"
#include "jobs.h"
#include "models.h"
#include "request.h"

struct MHD_Daemon;
struct MHD_Connection;

typedef struct {
    const srv_config *cfg;
    srv_models *models;
    srv_jobs *jobs;
    srv_files *files;
    struct MHD_Daemon *daemon;
    int port;
    /* Requests between their first call and their completion (sent or aborted): shutdown waits
     * for them, so a job stopped by SIGTERM still gets its 503 on the wire. */
    atomic_int active;
} srv_app;

/* An HTTP request as the handlers see it: the whole body, read within --max-body-mb. */
typedef struct {
    srv_app *app;
    struct MHD_Connection *conn;
    const char *method, *url;
    const char *content_type; /* the Content-Type header; NULL when absent */
    const char *body;
    size_t body_len;
} srv_http_req;

typedef struct {
    int status;
    uint8_t *body; /* malloc'd unless is_static */
    size_t len;
    bool is_static;
    const char *type; /* Content-Type */
    int retry_after;  /* > 0: a Retry-After header */
    char timing[200]; /* Server-Timing header value ("" for none) */
} srv_reply;

/* A JSON reply (takes json). */
void srv_reply_json(srv_reply *rep, int status, cJSON *json);
/* Errors in each API's shape: A1111 {"error", "detail"}, OpenAI {"error": {message, type, param,
 * code}}. */
void srv_reply_a1111_error(srv_reply *rep, const srv_error *e);
void srv_reply_openai_error(srv_reply *rep, const srv_error *e);

/* Whether the client closed its connection (its job is then cancelled). */
bool srv_http_client_gone(const srv_http_req *req);

/* Queues j and waits for it, cancelling it when the client goes away. false: not run (queue
 * full: 503 with Retry-After; shutting down: 503; client gone) with *e and rep->retry_after set.
 * On true, j is done: j->ok, or j->error. */
bool srv_run_job(srv_http_req *req, srv_reply *rep, srv_job *j, srv_error *e);

/* Checks the model a request names and takes its LoRA tags, before it waits in the queue. */
bool srv_prepare_request(srv_http_req *req, srv_request *r, srv_error *e);

/* Parses the body as a JSON object (400 naming the problem when it is not). */
cJSON *srv_body_json(const srv_http_req *req, srv_error *e);

#endif
