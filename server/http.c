/* libmicrohttpd glue: the daemon, routing, the body (limit, JSON; multipart is split by the
 * handler, multipart.c), the API key, CORS, replies, and waiting for a job while watching the
 * client.
 *
 * Thread per connection: a handler may wait minutes for its job, and doing so on its own thread
 * keeps the code straight-line; --max-connections bounds the threads. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../core/config.h"
#include "api.h"

typedef struct {
    const char *method, *path;
    srv_handler fn;
    bool openai; /* errors in OpenAI's shape */
    bool prefix; /* path is a prefix */
} route;

static const route routes[] = {
    {"GET", "/", srv_web_page, false, false},
    {"POST", "/sdapi/v1/txt2img", srv_a1111_txt2img, false, false},
    {"POST", "/sdapi/v1/img2img", srv_a1111_img2img, false, false},
    {"GET", "/sdapi/v1/progress", srv_a1111_progress, false, false},
    {"POST", "/sdapi/v1/interrupt", srv_a1111_interrupt, false, false},
    {"GET", "/sdapi/v1/sd-models", srv_a1111_sd_models, false, false},
    {"GET", "/sdapi/v1/samplers", srv_a1111_samplers, false, false},
    {"GET", "/sdapi/v1/schedulers", srv_a1111_schedulers, false, false},
    {"GET", "/sdapi/v1/options", srv_a1111_options_get, false, false},
    {"POST", "/sdapi/v1/options", srv_a1111_options_post, false, false},
    {"POST", "/sdapi/v1/png-info", srv_a1111_png_info, false, false},
    {"POST", "/v1/images/generations", srv_openai_generations, true, false},
    {"POST", "/v1/images/edits", srv_openai_edits, true, false},
    {"GET", "/v1/models", srv_openai_models, true, false},
    {"GET", "/v1/files/", srv_openai_file, true, true},
};
#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))

/* Per request state, kept across the access handler's calls. */
typedef struct {
    srv_http_req req;
    char *buf;
    size_t len, cap;
    bool too_large;
    double t0;
} conn_state;

/* ---- replies --------------------------------------------------------------------------------- */

void srv_reply_json(srv_reply *rep, int status, cJSON *json) {
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    rep->status = text ? status : 500;
    rep->type = "application/json";
    rep->body = (uint8_t *)(text ? text : strdup("{\"error\":\"out of memory\"}"));
    rep->len = rep->body ? strlen((char *)rep->body) : 0;
}

static const char *reason(int status) {
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 499:
        return "Client Closed Request";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

void srv_reply_a1111_error(srv_reply *rep, const srv_error *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", reason(e->status));
    cJSON_AddStringToObject(o, "detail", e->message);
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    srv_reply_json(rep, e->status, o);
}

void srv_reply_openai_error(srv_reply *rep, const srv_error *e) {
    cJSON *o = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    const char *type = e->status == 401   ? "authentication_error"
                       : e->status >= 500 ? "server_error"
                                          : "invalid_request_error";
    cJSON_AddStringToObject(err, "type", type);
    if (e->param[0])
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code)
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    srv_reply_json(rep, e->status, o);
}

cJSON *srv_body_json(const srv_http_req *req, srv_error *e) {
    if (!req->body_len)
        return srv_fail(e, 400, "", "the request has no body (a JSON object expected)"), NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(req->body, req->body_len, &end, false);
    if (!j) {
        size_t at = end ? (size_t)(end - req->body) : 0;
        if (sd_json_nested_too_deep(req->body, req->body_len))
            srv_fail(e, 400, "", "JSON body nested deeper than %d levels; refused",
                     CJSON_NESTING_LIMIT);
        else
            srv_fail(e, 400, "", "malformed JSON body near byte %zu of %zu", at, req->body_len);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        srv_fail(e, 400, "", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- the client and its job ------------------------------------------------------------------ */

bool srv_http_client_gone(const srv_http_req *req) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

bool srv_run_job(srv_http_req *req, srv_reply *rep, srv_job *j, srv_error *e) {
    int retry = 0;
    int rc = srv_jobs_submit(req->app->jobs, j, &retry);
    if (rc == -1) {
        rep->retry_after = retry;
        return srv_fail(e, 503, "", "the queue is full (%d waiting); retry after %d s",
                        req->app->cfg->queue, retry);
    }
    if (rc == -2) return srv_fail(e, 503, "", "the server is shutting down");
    while (!srv_jobs_wait(req->app->jobs, j, 100))
        if (srv_http_client_gone(req)) srv_jobs_cancel(req->app->jobs, j);
    snprintf(rep->timing, sizeof rep->timing, "queue;dur=%.1f, load;dur=%.1f, gen;dur=%.1f",
             (j->t_start > 0 ? j->t_start - j->t_submit : 0) * 1e3, j->load_s * 1e3,
             j->gen_s * 1e3);
    return true;
}

/* ---- the request cycle ----------------------------------------------------------------------- */

static enum MHD_Result send_reply(struct MHD_Connection *conn, const srv_config *cfg,
                                  srv_reply *rep) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        rep->len, rep->body, rep->is_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
    if (!r) {
        if (!rep->is_static) free(rep->body);
        return MHD_NO;
    }
    if (rep->type) MHD_add_response_header(r, "Content-Type", rep->type);
    if (rep->retry_after > 0) {
        char s[16];
        snprintf(s, sizeof s, "%d", rep->retry_after);
        MHD_add_response_header(r, "Retry-After", s);
    }
    if (rep->timing[0]) MHD_add_response_header(r, "Server-Timing", rep->timing);
    if (rep->status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (cfg->cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", cfg->cors);
        MHD_add_response_header(r, "Vary", "Origin");
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "Retry-After, Server-Timing");
    }
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)(rep->status ? rep->status : 500), r);
    MHD_destroy_response(r);
    return ok;
}

static const route *find_route(const char *method, const char *url, bool *wrong_method) {
    *wrong_method = false;
    for (int i = 0; i < N_ROUTES; i++) {
        const route *rt = &routes[i];
        bool match =
            rt->prefix ? !strncmp(url, rt->path, strlen(rt->path)) : !strcmp(url, rt->path);
        if (!match) continue;
        if (!strcmp(method, rt->method) || (!strcmp(method, "HEAD") && !strcmp(rt->method, "GET")))
            return rt;
        *wrong_method = true;
    }
    return NULL;
}

/* Constant-time comparison: the time a wrong key takes says nothing about the right one. */
static bool key_ok(struct MHD_Connection *conn, const char *key) {
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    size_t a = strlen(h), b = strlen(key);
    unsigned diff = (unsigned)(a != b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned)(unsigned char)(h[i < a ? i : 0] ^ key[i]);
    return diff == 0 && a > 0;
}

static enum MHD_Result fail_now(conn_state *st, const srv_config *cfg, bool openai, int status,
                                const char *fmt, const char *arg) {
    srv_error e = {0};
    srv_fail(&e, status, "", fmt, arg);
    if (status == 401) e.code = "invalid_api_key";
    srv_reply rep = {0};
    if (openai)
        srv_reply_openai_error(&rep, &e);
    else
        srv_reply_a1111_error(&rep, &e);
    return send_reply(st->req.conn, cfg, &rep);
}

static bool append(conn_state *st, const char *data, size_t n, size_t max) {
    if (st->len + n > max) return false;
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + n + 1) cap *= 2;
        char *b = realloc(st->buf, cap);
        if (!b) return false;
        st->buf = b, st->cap = cap;
    }
    memcpy(st->buf + st->len, data, n);
    st->len += n;
    st->buf[st->len] = 0;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    srv_app *app = cls;
    const srv_config *cfg = app->cfg;
    conn_state *st = *con_cls;
    bool wrong_method;
    const route *rt = find_route(method, url, &wrong_method);
    bool openai = rt ? rt->openai : !strncmp(url, "/v1/", 4);
    if (!st) { /* first call: headers only */
        if (!(st = calloc(1, sizeof *st))) return MHD_NO;
        *con_cls = st;
        atomic_fetch_add(&app->active, 1); /* until on_completed */
        st->req.app = app, st->req.conn = conn, st->req.method = method, st->req.url = url;
        st->t0 = srv_now();
        if (!strcmp(method, "OPTIONS")) { /* CORS preflight */
            srv_reply rep = {.status = 204};
            struct MHD_Response *r =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (cfg->cors) {
                MHD_add_response_header(r, "Access-Control-Allow-Origin", cfg->cors);
                MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
                MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                        "Authorization, Content-Type");
                MHD_add_response_header(r, "Access-Control-Max-Age", "600");
                MHD_add_response_header(r, "Vary", "Origin");
            }
            enum MHD_Result ok = MHD_queue_response(conn, (unsigned)rep.status, r);
            MHD_destroy_response(r);
            return ok;
        }
        /* The page itself is public (it holds no data), and so are the url images: their 128-bit
         * ids are the capability, as OpenAI's signed URLs are, so an <img src> or a client that
         * fetches the url without headers works. Every other route needs the key. */
        bool open = rt && (rt->fn == srv_web_page || rt->fn == srv_openai_file);
        if (cfg->api_key && !open && !key_ok(conn, cfg->api_key))
            return fail_now(st, cfg, openai, 401, "%s",
                            "missing or wrong API key (Authorization: Bearer KEY)");
        const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        /* Too large: read and drop the body, then answer 413 (a reply sent before the body is
         * read makes MHD close the socket under a client still writing, which then sees a reset
         * instead of the 413). Beyond 16x the limit, not worth reading: answer and close now. */
        unsigned long long declared = clen ? strtoull(clen, NULL, 10) : 0;
        if (declared > cfg->max_body) st->too_large = true;
        if (declared / 16 > cfg->max_body) {
            char mb[24];
            snprintf(mb, sizeof mb, "%zu", cfg->max_body >> 20);
            return fail_now(st, cfg, openai, 413,
                            "the body is larger than the server's limit of %s MB (--max-body-mb)",
                            mb);
        }
        /* MHD keeps the header's value for the connection's lifetime. */
        st->req.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        if (!st->too_large && !append(st, upload, *upload_size, cfg->max_body)) {
            st->too_large = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    srv_reply rep = {0};
    srv_error e = {0};
    if (st->too_large) {
        char mb[24];
        snprintf(mb, sizeof mb, "%zu", cfg->max_body >> 20);
        srv_fail(&e, 413, "", "the body is larger than the server's limit of %s MB (--max-body-mb)",
                 mb);
    } else if (!rt) {
        srv_fail(&e, wrong_method ? 405 : 404, "", "%s %s: %s", method, url,
                 wrong_method ? "method not allowed" : "no such endpoint");
    } else {
        st->req.body = st->buf ? st->buf : "", st->req.body_len = st->buf ? st->len : 0;
        rt->fn(&st->req, &rep);
    }
    if (e.status) {
        if (openai)
            srv_reply_openai_error(&rep, &e);
        else
            srv_reply_a1111_error(&rep, &e);
    }
    double ms = (srv_now() - st->t0) * 1e3;
    if (rep.timing[0]) { /* the whole request as the server saw it, body upload included */
        size_t used = strlen(rep.timing);
        snprintf(rep.timing + used, sizeof rep.timing - used, ", total;dur=%.1f", ms);
    }
    if (!cfg->quiet) fprintf(stderr, "%s %s %d %.1f ms\n", method, url, rep.status, ms);
    return send_reply(conn, cfg, &rep);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn, (void)toe;
    srv_app *app = cls;
    conn_state *st = *con_cls;
    if (!st) return;
    atomic_fetch_sub(&app->active, 1);
    free(st->buf);
    free(st);
    *con_cls = NULL;
}

bool srv_http_start(srv_app *app, char *err, size_t err_size) {
    const srv_config *cfg = app->cfg;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->listen, port, &hints, &ai);
    if (gai) {
        snprintf(err, err_size, "--listen %s: %s", cfg->listen, gai_strerror(gai));
        return false;
    }
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
        MHD_USE_ITC; /* MHD_quiesce_daemon at shutdown */
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    app->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, app, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        120u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, app, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!app->daemon) {
        snprintf(err, err_size,
                 "cannot listen on %s port %d (in use, or not an address of this machine)",
                 cfg->listen, cfg->port);
        return false;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(app->daemon, MHD_DAEMON_INFO_BIND_PORT);
    app->port = di ? di->port : cfg->port;
    return true;
}

void srv_http_stop(srv_app *app) {
    if (!app->daemon) return;
    /* Stop accepting, then let the requests in flight send their answers (the stopped job's 503)
     * before the connections are closed: MHD_stop_daemon shuts every socket at once. Bounded, so
     * a client stalling mid-body cannot hold the exit. */
    const MHD_socket listen_fd = MHD_quiesce_daemon(app->daemon);
    for (int i = 0; i < 300 && atomic_load(&app->active) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(app->daemon);
    /* The listening socket is ours after quiescing; MHD's threads may use it until they stop. */
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    app->daemon = NULL;
}
