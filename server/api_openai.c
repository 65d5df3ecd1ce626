/* The OpenAI images API (/v1/images/..., /v1/models) with extension fields for what it lacks
 * (negative_prompt, seed, steps, guidance_scale, scheduler, strength). Model names OpenAI's
 * clients send by default ("dall-e-2", "dall-e-3", "gpt-image-1") mean the current default
 * model, so a client configured for OpenAI works unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <microhttpd.h>

#include "api.h"
#include "base64.h"
#include "images.h"
#include "multipart.h"

static void default_model_names(srv_request *r) {
    if (r->model && (!strncmp(r->model, "dall-e", 6) || !strncmp(r->model, "gpt-image", 9))) {
        free(r->model);
        r->model = NULL;
    }
}

static void answer(srv_http_req *req, srv_reply *rep, srv_job *j, srv_error *e) {
    double t0 = srv_now();
    const srv_request *r = &j->req;
    const char *ext = r->jpeg ? "jpeg" : "png";
    cJSON *o = cJSON_CreateObject(), *data;
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    data = cJSON_AddArrayToObject(o, "data");
    for (int i = 0; i < j->n_images; i++) {
        uint8_t *bytes;
        size_t len;
        if (srv_image_encode(&j->images[i], r->jpeg, r->quality, j->infotexts[i], &bytes, &len) !=
            SD_OK) {
            srv_fail(e, 500, "", "encoding the image: %s", sd_last_error());
            break;
        }
        cJSON *item = cJSON_CreateObject();
        if (r->url) {
            char id[48], url[128];
            if (!srv_files_put(req->app->files, bytes, len, ext, id)) {
                free(bytes), cJSON_Delete(item);
                srv_fail(e, 500, "", "out of memory");
                break;
            }
            snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/files/%s", req->app->port, id);
            /* The Host the client used, when it sent one: the server may be behind another name. */
            const char *host = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Host");
            if (host && strlen(host) < 64 && !strpbrk(host, "/ \"\\"))
                snprintf(url, sizeof url, "http://%s/v1/files/%s", host, id);
            cJSON_AddStringToObject(item, "url", url);
        } else {
            char *b64 = srv_base64_encode(bytes, len);
            cJSON_AddStringToObject(item, "b64_json", b64 ? b64 : "");
            free(b64);
        }
        free(bytes);
        cJSON_AddNumberToObject(item, "seed", (double)j->seeds[i]);
        cJSON_AddStringToObject(item, "revised_prompt", r->prompt);
        cJSON_AddItemToArray(data, item);
    }
    cJSON_AddStringToObject(o, "output_format", ext);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", j->width, j->height);
    cJSON_AddStringToObject(o, "size", size);
    cJSON_AddStringToObject(o, "model", j->model ? j->model : "");
    if (e->status)
        cJSON_Delete(o);
    else
        srv_reply_json(rep, 200, o);
    size_t used = strlen(rep->timing);
    snprintf(rep->timing + used, sizeof rep->timing - used, ", encode;dur=%.1f",
             (srv_now() - t0) * 1e3);
}

static void run(srv_http_req *req, srv_reply *rep, srv_job *j, srv_error *e) {
    default_model_names(&j->req);
    if (srv_prepare_request(req, &j->req, e) && srv_run_job(req, rep, j, e)) {
        if (j->interrupted)
            srv_fail(e, 409, "", "interrupted (POST /sdapi/v1/interrupt)");
        else if (!j->ok)
            *e = j->error;
        else
            answer(req, rep, j, e);
    }
}

void srv_openai_generations(srv_http_req *req, srv_reply *rep) {
    srv_error e = {0};
    cJSON *body = srv_body_json(req, &e);
    srv_job *j = srv_job_new();
    if (!j) srv_fail(&e, 500, "", "out of memory");
    if (body && j && srv_request_from_openai(body, false, &req->app->cfg->limits, &j->req, &e))
        run(req, rep, j, &e);
    if (e.status) srv_reply_openai_error(rep, &e);
    cJSON_Delete(body);
    srv_job_free(j);
}

static void edit(srv_http_req *req, srv_reply *rep, const srv_form *form, srv_job *j,
                 srv_error *e) {
    if (!form->image)
        srv_fail(e, 400, "image", "'image' is missing");
    else if (!form->fields)
        srv_fail(e, 400, "prompt", "'prompt' is missing");
    else if (!srv_request_from_openai(form->fields, true, &req->app->cfg->limits, &j->req, e))
        return;
    else if (srv_image_decode(form->image, form->image_len, &j->req.init) != SD_OK)
        srv_fail(e, 400, "image", "'image' is not a PNG or JPEG the server can read: %s",
                 sd_last_error());
    else if (form->mask && srv_image_decode(form->mask, form->mask_len, &j->req.mask) != SD_OK)
        srv_fail(e, 400, "mask", "'mask' is not a PNG or JPEG the server can read: %s",
                 sd_last_error());
    else
        run(req, rep, j, e);
}

/* multipart/form-data: image (PNG/JPEG), optional mask (white = repaint, as A1111 and gen take
 * it), and the generation fields as text (multipart.c splits the body). */
void srv_openai_edits(srv_http_req *req, srv_reply *rep) {
    srv_error e = {0};
    srv_form form = {0};
    srv_job *j = srv_job_new();
    const char *ct = req->content_type;
    if (!j)
        srv_fail(&e, 500, "", "out of memory");
    else if (!ct || strncasecmp(ct, "multipart/form-data", 19))
        srv_fail(&e, 400, "", "the body must be multipart/form-data with 'image' and 'prompt'");
    else if (srv_form_parse(ct, (const uint8_t *)req->body, req->body_len, &form, &e))
        edit(req, rep, &form, j, &e);
    if (e.status) srv_reply_openai_error(rep, &e);
    srv_form_free(&form);
    srv_job_free(j);
}

void srv_openai_models(srv_http_req *req, srv_reply *rep) {
    char **names;
    int n = srv_models_list(req->app->models, &names);
    cJSON *o = cJSON_CreateObject(), *data;
    cJSON_AddStringToObject(o, "object", "list");
    data = cJSON_AddArrayToObject(o, "data");
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", names[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "sd-server");
        cJSON_AddItemToArray(data, m);
    }
    srv_models_list_free(names, n);
    srv_reply_json(rep, 200, o);
}

void srv_openai_file(srv_http_req *req, srv_reply *rep) {
    const char *id = req->url + strlen("/v1/files/");
    uint8_t *data;
    size_t len;
    if (!srv_files_get(req->app->files, id, &data, &len)) {
        srv_error e = {0};
        srv_fail(&e, 404, "", "no file '%.60s' (images are kept for the newest --max-files only)",
                 id);
        srv_reply_openai_error(rep, &e);
        return;
    }
    rep->status = 200;
    rep->body = data, rep->len = len;
    rep->type = strstr(id, ".jpeg") ? "image/jpeg" : "image/png";
}
