/* The server's settings: every command-line flag, parsed by main.c and read-only afterwards. */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Request limits (flags --max-width, --max-height, --max-steps, --max-n). */
typedef struct {
    int max_width, max_height, max_steps;
    int max_n; /* images per request: batch_size * n_iter, or OpenAI's n */
} srv_limits;

typedef struct {
    const char *listen;     /* --listen ADDR (default 127.0.0.1) */
    int port;               /* --port N (default 7860; 0 picks a free one) */
    const char *api_key;    /* --api-key KEY: Bearer token, required off loopback */
    bool insecure;          /* --insecure: allow a non-loopback address without a key */
    const char *cors;       /* --cors ORIGIN; NULL: no CORS headers */
    size_t max_body;        /* --max-body-mb, in bytes */
    int queue;              /* --queue N: jobs waiting besides the running one */
    int max_connections;    /* --max-connections N */
    const char *models_dir; /* --models DIR */
    const char *model;      /* --model NAME (default model) */
    int max_models;         /* --max-models N resident */
    const char *lora_dir;   /* --lora-dir DIR */
    const char *embeddings_dir; /* --embeddings-dir DIR: added to every model loaded */
    int threads;            /* --threads N (0: all cores) */
    bool low_memory;        /* --low-memory: paging on */
    bool keep_resident;     /* --keep-resident: the default, said explicitly */
    const char *vae_tiny;   /* --vae-tiny DIR: AutoencoderTiny for progress previews only */
    int max_files;          /* --max-files N: images kept for response_format url */
    bool quiet;             /* --quiet: no request log */
    int vae_tile_limit_mb;  /* $SD_VAE_TILE_LIMIT_MB, as gen (0: the library's default) */
    srv_limits limits;
} srv_config;

#endif
