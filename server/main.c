/* sd-server: a local image service with the AUTOMATIC1111 and OpenAI APIs and a web page, on the
 * public library API (include/sd.h).
 *
 *   sd-server --models DIR [--model NAME] [options]
 *   sd-server --model PATH [options]
 *
 * Startup loads the default model before listening (the first request finds it resident), then
 * prints "listening on http://ADDR:PORT" on stdout. SIGTERM or SIGINT stops the running job at its
 * next step, answers the waiting ones 503, and exits 0. */
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cli/common/settings.h"
#include "api.h"
#include "images.h"

static void usage(FILE *fp) {
    fprintf(
        fp,
        "usage: sd-server --models DIR [--model NAME] [options]\n"
        "       sd-server --model PATH [options]\n\n"
        "Serves image generation over HTTP: the AUTOMATIC1111 API (/sdapi/v1/...), the OpenAI\n"
        "images API (/v1/images/...) and a web page at /.\n\n"
        "options:\n"
        "      --listen ADDR         address to listen on (default 127.0.0.1)\n"
        "      --port N              port (default 7860; 0 picks a free one, printed)\n"
        "      --api-key KEY         require 'Authorization: Bearer KEY' (default: "
        "$SD_SERVER_API_KEY);\n"
        "                            needed for any address but loopback\n"
        "      --insecure            allow a non-loopback address without --api-key\n"
        "      --cors ORIGIN         send Access-Control-Allow-Origin: ORIGIN (default: no CORS)\n"
        "      --models DIR          the models clients may pick: diffusers folders and "
        ".safetensors\n"
        "                            files in DIR\n"
        "      --model NAME|PATH     the default model (a name in --models, or a path without it)\n"
        "      --max-models N        pipelines kept loaded at once (default 1)\n"
        "      --lora-dir DIR        where <lora:NAME:SCALE> prompt tags are looked up\n"
        "      --embeddings-dir DIR  textual-inversion embeddings (.safetensors), the file name\n"
        "                            the trigger word, loaded with each model (as A1111's folder)\n"
        "      --queue N             requests waiting besides the running one (default 8; more: "
        "503)\n"
        "      --max-connections N   simultaneous connections (default 64)\n"
        "      --max-body-mb N       largest request body (default 32)\n"
        "      --max-width N, --max-height N   largest image side (default 2048)\n"
        "      --max-steps N         most steps (default 150)\n"
        "      --max-n N             most images per request (default 8)\n"
        "      --max-files N         images kept for response_format url (default 64)\n"
        "  -t, --threads N           threads of each generation (default: all cores)\n"
        "      --keep-resident       weights and scratch stay resident between requests (the\n"
        "                            default here: a server re-paging every image pays it per\n"
        "                            request)\n"
        "      --low-memory          page weights per layer, as gen does by default\n"
        "      --vae-tiny DIR        progress previews (current_image) decoded by this\n"
        "                            AutoencoderTiny folder (taesd, taesdxl, taesd3, taef1: the\n"
        "                            one for the models' family); images still by their VAE\n"
        "  -q, --quiet               no request log on stderr\n"
        "  -h, --help, --version\n");
}

enum {
    O_LISTEN = 256,
    O_VAE_TINY,
    O_PORT,
    O_KEY,
    O_INSECURE,
    O_CORS,
    O_MODELS,
    O_MODEL,
    O_MAX_MODELS,
    O_LORA,
    O_EMBEDDINGS,
    O_QUEUE,
    O_MAXCONN,
    O_BODY,
    O_MAXW,
    O_MAXH,
    O_MAXSTEPS,
    O_MAXN,
    O_FILES,
    O_LOWMEM,
    O_KEEP,
    O_VERSION
};

static const struct option long_opts[] = {{"listen", 1, 0, O_LISTEN},
                                          {"port", 1, 0, O_PORT},
                                          {"api-key", 1, 0, O_KEY},
                                          {"insecure", 0, 0, O_INSECURE},
                                          {"cors", 1, 0, O_CORS},
                                          {"models", 1, 0, O_MODELS},
                                          {"model", 1, 0, O_MODEL},
                                          {"max-models", 1, 0, O_MAX_MODELS},
                                          {"lora-dir", 1, 0, O_LORA},
                                          {"embeddings-dir", 1, 0, O_EMBEDDINGS},
                                          {"queue", 1, 0, O_QUEUE},
                                          {"max-connections", 1, 0, O_MAXCONN},
                                          {"max-body-mb", 1, 0, O_BODY},
                                          {"max-width", 1, 0, O_MAXW},
                                          {"max-height", 1, 0, O_MAXH},
                                          {"max-steps", 1, 0, O_MAXSTEPS},
                                          {"max-n", 1, 0, O_MAXN},
                                          {"max-files", 1, 0, O_FILES},
                                          {"threads", 1, 0, 't'},
                                          {"low-memory", 0, 0, O_LOWMEM},
                                          {"vae-tiny", 1, 0, O_VAE_TINY},
                                          {"keep-resident", 0, 0, O_KEEP},
                                          {"quiet", 0, 0, 'q'},
                                          {"help", 0, 0, 'h'},
                                          {"version", 0, 0, O_VERSION},
                                          {0, 0, 0, 0}};

static bool int_arg(const char *name, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sd-server: --%s %s: expected a whole number in %d..%d\n", name, s, lo, hi);
        return false;
    }
    *out = (int)v;
    return true;
}

/* 2: bad command line; 1: continue; 0: done (help, version). */
static int parse(int argc, char **argv, srv_config *c) {
    *c = (srv_config){.listen = "127.0.0.1",
                      .port = 7860,
                      .max_body = 32u << 20,
                      .queue = 8,
                      .max_connections = 64,
                      .max_models = 1,
                      .max_files = 64,
                      .limits = {2048, 2048, 150, 8}};
    c->api_key = getenv("SD_SERVER_API_KEY");
    if (c->api_key && !*c->api_key) c->api_key = NULL;
    int mb = 32;
    for (int opt; (opt = getopt_long(argc, argv, "t:qh", long_opts, NULL)) != -1;) {
        const char *name = NULL;
        for (const struct option *o = long_opts; o->name; o++)
            if (o->val == opt) name = o->name;
        bool ok = true;
        switch (opt) {
        case O_LISTEN:
            c->listen = optarg;
            break;
        case O_PORT:
            ok = int_arg(name, optarg, 0, 65535, &c->port);
            break;
        case O_KEY:
            c->api_key = *optarg ? optarg : NULL;
            break;
        case O_INSECURE:
            c->insecure = true;
            break;
        case O_CORS:
            c->cors = optarg;
            break;
        case O_MODELS:
            c->models_dir = optarg;
            break;
        case O_MODEL:
            c->model = optarg;
            break;
        case O_MAX_MODELS:
            ok = int_arg(name, optarg, 1, 64, &c->max_models);
            break;
        case O_LORA:
            c->lora_dir = optarg;
            break;
        case O_EMBEDDINGS:
            c->embeddings_dir = optarg;
            break;
        case O_QUEUE:
            ok = int_arg(name, optarg, 0, 10000, &c->queue);
            break;
        case O_MAXCONN:
            ok = int_arg(name, optarg, 2, 10000, &c->max_connections);
            break;
        case O_BODY:
            ok = int_arg(name, optarg, 1, 4096, &mb);
            c->max_body = (size_t)mb << 20;
            break;
        case O_MAXW:
            ok = int_arg(name, optarg, 8, SD_IMAGE_MAX_SIDE, &c->limits.max_width);
            break;
        case O_MAXH:
            ok = int_arg(name, optarg, 8, SD_IMAGE_MAX_SIDE, &c->limits.max_height);
            break;
        case O_MAXSTEPS:
            ok = int_arg(name, optarg, 1, 10000, &c->limits.max_steps);
            break;
        case O_MAXN:
            ok = int_arg(name, optarg, 1, 1000, &c->limits.max_n);
            break;
        case O_FILES:
            ok = int_arg(name, optarg, 1, 100000, &c->max_files);
            break;
        case 't':
            ok = int_arg("threads", optarg, 0, 4096, &c->threads);
            break;
        case O_LOWMEM:
            c->low_memory = true;
            break;
        case O_VAE_TINY:
            c->vae_tiny = optarg;
            break;
        case O_KEEP:
            c->keep_resident = true;
            break;
        case 'q':
            c->quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case O_VERSION:
            printf("sd-server %s (sd engine)\n", sd_version());
            return 0;
        default:
            fprintf(stderr, "sd-server: see --help\n");
            return 2;
        }
        if (!ok) return 2;
    }
    if (c->low_memory && c->keep_resident) {
        fprintf(stderr, "sd-server: --low-memory and --keep-resident contradict each other "
                        "(paging on and off): give one\n");
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "sd-server: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!c->models_dir && !c->model) {
        fprintf(stderr,
                "sd-server: no model: pass --models DIR and/or --model NAME|PATH (see --help)\n");
        return 2;
    }
    return 1;
}

/* Loopback only: 127.0.0.0/8, ::1, localhost. */
static bool loopback(const char *addr) {
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "localhost");
}

int main(int argc, char **argv) {
    srv_config cfg;
    int rc = parse(argc, argv, &cfg);
    if (rc != 1) return rc;
    if (!loopback(cfg.listen) && !cfg.api_key && !cfg.insecure) {
        fprintf(stderr,
                "sd-server: --listen %s is reachable from other machines: pass --api-key KEY "
                "(or --insecure to serve anyone who can connect)\n",
                cfg.listen);
        return 2;
    }
    /* The variables gen reads, read the same way: SD_CONFIGS_DIR, SD_KERNEL_ISA (make test-isa
     * runs the suite at each level), SD_VAE_TILE_LIMIT_MB. */
    const char *configs = getenv("SD_CONFIGS_DIR"), *env_err;
    if (configs && *configs) sd_set_configs_dir(configs);
    if (!cli_settings_from_env(&cfg.vae_tile_limit_mb, &env_err)) {
        fprintf(stderr, "sd-server: %s\n", env_err);
        return 2;
    }
    if (!cfg.quiet) cli_log_to_stderr("sd-server", SD_LOG_WARN);
    /* Signals are taken by sigwait below; every thread started from here inherits the mask. A
     * client closing its socket mid-reply must not kill the server (SIGPIPE). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM), sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[600];
    srv_app app = {.cfg = &cfg};
    if (!srv_images_init(err, sizeof err) || !srv_models_open(&app.models, &cfg, err, sizeof err)) {
        fprintf(stderr, "sd-server: %s\n", err);
        srv_images_cleanup();
        return 1;
    }
    char *cur = srv_models_current(app.models);
    double loaded;
    srv_error e = {0};
    if (!srv_models_acquire(app.models, cur, NULL, 0, &loaded, &e)) {
        fprintf(stderr, "sd-server: %s\n", e.message);
        free(cur);
        srv_models_close(app.models);
        srv_images_cleanup();
        return 1;
    }
    if (!cfg.quiet) fprintf(stderr, "sd-server: loaded %s in %.2f s\n", cur, loaded);
    free(cur);
    app.files = srv_files_new(cfg.max_files);
    if (!app.files || !srv_jobs_start(&app.jobs, &cfg, app.models) ||
        !srv_http_start(&app, err, sizeof err)) {
        fprintf(stderr, "sd-server: %s\n", app.files && app.jobs ? err : "out of memory");
        rc = 1;
    } else {
        bool v6 = strchr(cfg.listen, ':') != NULL;
        printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", cfg.listen, v6 ? "]" : "",
               app.port);
        fflush(stdout);
        int sig;
        sigwait(&sigs, &sig);
        if (!cfg.quiet)
            fprintf(stderr, "sd-server: %s: stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        rc = 0;
    }
    srv_jobs_stop(app.jobs); /* the running job stops at its next step, waiting ones get 503 */
    srv_http_stop(&app);     /* waits for the connections' threads to answer */
    srv_jobs_free(app.jobs);
    srv_files_free(app.files);
    srv_models_close(app.models);
    srv_images_cleanup();
    return rc;
}
