/* One generation request as both APIs describe it, validated: JSON bodies (A1111, OpenAI) and
 * OpenAI's multipart form become an srv_request or an srv_error carrying the HTTP status and a
 * message naming the field. Pure apart from decoding the images through the library. */
#ifndef SRV_REQUEST_H
#define SRV_REQUEST_H

#include <stdbool.h>

#include <cJSON.h>

#include "../include/sd.h"
#include "config.h"

typedef struct {
    int status;       /* HTTP status: 400, 401, 404, 413, 503, ... */
    const char *code; /* OpenAI's error code, e.g. "invalid_value"; NULL: none */
    char param[48];   /* the field at fault ("" when none) */
    char message[512];
} srv_error;

/* Sets *e and returns false (for `return srv_fail(...)`). */
bool srv_fail(srv_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef struct {
    char *prompt;          /* without its <lora:...> tags once srv_request_take_loras ran */
    char *negative_prompt; /* NULL: none */
    char *model;           /* model name as asked; NULL: the current default */
    const char *scheduler; /* static scheduler name (srv_sampler_map); NULL: the model's */
    char *sampler_label;   /* the sampler as the client named it, for the parameters text */
    int width, height;     /* 0: the model's default */
    int steps;             /* 0: the model's default */
    double guidance;       /* NAN: the model's default */
    double strength;       /* NAN: the default */
    long long seed;        /* -1: random */
    int batch, n_iter;     /* images = batch * n_iter; each iteration uses seed + i */
    sd_image init, mask;   /* empty (width 0) when absent */
    bool jpeg;             /* OpenAI output_format jpeg */
    int quality;           /* JPEG quality */
    bool url;              /* OpenAI response_format url */
    sd_lora *loras;        /* from the prompt's tags */
    int n_loras;
} srv_request;

void srv_request_init(srv_request *r);
void srv_request_free(srv_request *r);

/* POST /sdapi/v1/txt2img and img2img (img2img: init_images required). */
bool srv_request_from_a1111(const cJSON *body, bool img2img, const srv_limits *lim, srv_request *r,
                            srv_error *e);
/* POST /v1/images/generations; also /v1/images/edits, whose form fields main converts to JSON
 * strings (numbers given as text are accepted there: form_text) and whose images come apart. */
bool srv_request_from_openai(const cJSON *body, bool form_text, const srv_limits *lim,
                             srv_request *r, srv_error *e);
/* Parses "WxH" (OpenAI's size) into w, h; "auto" or NULL leaves 0 (the model's default). */
bool srv_parse_size(const char *s, int *w, int *h);

/* Moves the prompt's "<lora:NAME:SCALE>" tags into r->loras, resolved in lora_dir; a LoRA file
 * whose real path lies outside lora_dir (a symbolic link out) is refused. */
bool srv_request_take_loras(srv_request *r, const char *lora_dir, srv_error *e);

/* Decodes one base64 image field (data URL prefix allowed). */
bool srv_request_image(const char *field, const char *b64, size_t len, sd_image *out, srv_error *e);

#endif
