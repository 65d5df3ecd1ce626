/* sd-server's request handlers without sockets: the input's first byte picks an endpoint, then
 * the Content-Type header (for GET /v1/files/, the file id), a NUL, and the body. The handlers run
 * as http.c calls them, against a models folder holding one (empty) model and a job queue that is
 * already stopped, so a request that passes every check gets the 503 of a server shutting down
 * instead of a generation. Every reply must carry a status and a body. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../server/api.h"
#include "fuzz.h"

typedef struct {
    const char *url;
    srv_handler fn;
} endpoint;

static const endpoint endpoints[] = {
    {"/sdapi/v1/txt2img", srv_a1111_txt2img},
    {"/sdapi/v1/img2img", srv_a1111_img2img},
    {"/sdapi/v1/options", srv_a1111_options_post},
    {"/sdapi/v1/png-info", srv_a1111_png_info},
    {"/v1/images/generations", srv_openai_generations},
    {"/v1/images/edits", srv_openai_edits},
    {"/v1/files/", srv_openai_file},
};
#define N_ENDPOINTS ((int)(sizeof endpoints / sizeof endpoints[0]))

static srv_config g_cfg;
static srv_app g_app;

static void app_free(void) {
    srv_jobs_free(g_app.jobs);
    srv_files_free(g_app.files);
    srv_models_close(g_app.models);
}

static void app_init(void) {
    static char models[300], loras[300];
    snprintf(models, sizeof models, "%s/models", fuzz_dir());
    snprintf(loras, sizeof loras, "%s/loras", fuzz_dir());
    if ((mkdir(models, 0700) && errno != EEXIST) || (mkdir(loras, 0700) && errno != EEXIST))
        abort();
    char m[320];
    snprintf(m, sizeof m, "%s/m.safetensors", models);
    FILE *f = fopen(m, "wb");
    if (!f) abort();
    fclose(f);
    g_cfg = (srv_config){.listen = "127.0.0.1",
                         .max_body = 64u << 20,
                         .queue = 1,
                         .max_connections = 4,
                         .models_dir = models,
                         .max_models = 1,
                         .lora_dir = loras,
                         .max_files = 4,
                         .quiet = true,
                         .limits = {2048, 2048, 150, 8}};
    char err[600];
    g_app.cfg = &g_cfg;
    if (!srv_models_open(&g_app.models, &g_cfg, err, sizeof err) ||
        !(g_app.files = srv_files_new(g_cfg.max_files)) ||
        !srv_jobs_start(&g_app.jobs, &g_cfg, g_app.models)) {
        fprintf(stderr, "fuzz_handlers: %s\n", err);
        abort();
    }
    srv_jobs_stop(g_app.jobs); /* every submission is now refused with 503 */
    atexit(app_free);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_app.cfg) {
        fuzz_server_init();
        app_init();
    }
    if (size < 1) return 0;
    const endpoint *ep = &endpoints[data[0] % N_ENDPOINTS];
    const uint8_t *part[2];
    size_t len[2];
    fuzz_split(data + 1, size - 1, 2, part, len);
    /* http.c hands the handlers a NUL-terminated body, as here. */
    char *head = fuzz_cstr(part[0], len[0]), *body = fuzz_cstr(part[1], len[1]);
    char url[256];
    snprintf(url, sizeof url, "%s%s", ep->url, ep->fn == srv_openai_file ? head : "");
    srv_http_req req = {.app = &g_app,
                        .method = "POST",
                        .url = url,
                        .content_type = head,
                        .body = body,
                        .body_len = len[1]};
    srv_reply rep = {0};
    ep->fn(&req, &rep);
    if (rep.status < 200 || rep.status > 599 || !rep.body) {
        fprintf(stderr, "%s: no reply (status %d)\n", ep->url, rep.status);
        abort();
    }
    if (!rep.is_static) free(rep.body);
    free(head), free(body);
    return 0;
}
