/* The AUTOMATIC1111 web UI API (/sdapi/v1/...), as its clients (Open WebUI, Krita and GIMP
 * plug-ins, scripts) call it: the same field names, the same reply shapes, `info` as a JSON
 * string. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "api.h"
#include "base64.h"
#include "images.h"
#include "samplers.h"

bool srv_prepare_request(srv_http_req *req, srv_request *r, srv_error *e) {
    if (r->model) {
        char *path;
        if (!srv_models_resolve(req->app->models, r->model, &path, e)) return false;
        free(path);
    }
    return srv_request_take_loras(r, req->app->cfg->lora_dir, e);
}

static cJSON *info_json(const srv_job *j, const cJSON *body) {
    const srv_request *r = &j->req;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", r->prompt);
    cJSON_AddStringToObject(o, "negative_prompt", r->negative_prompt ? r->negative_prompt : "");
    cJSON_AddNumberToObject(o, "seed", (double)j->seed);
    cJSON *seeds = cJSON_AddArrayToObject(o, "all_seeds"),
          *texts = cJSON_AddArrayToObject(o, "infotexts");
    cJSON *prompts = cJSON_AddArrayToObject(o, "all_prompts");
    for (int i = 0; i < j->n_images; i++) {
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)j->seeds[i]));
        cJSON_AddItemToArray(texts, cJSON_CreateString(j->infotexts[i] ? j->infotexts[i] : ""));
        cJSON_AddItemToArray(prompts, cJSON_CreateString(r->prompt));
    }
    cJSON_AddNumberToObject(o, "width", j->width);
    cJSON_AddNumberToObject(o, "height", j->height);
    cJSON_AddNumberToObject(o, "steps", j->steps);
    cJSON_AddNumberToObject(o, "cfg_scale", j->guidance);
    cJSON_AddNumberToObject(o, "batch_size", r->batch);
    cJSON_AddNumberToObject(o, "n_iter", r->n_iter);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(body, "sampler_name");
    cJSON_AddStringToObject(
        o, "sampler_name", cJSON_IsString(s) ? s->valuestring : (r->scheduler ? r->scheduler : ""));
    cJSON_AddStringToObject(o, "sd_model_name", j->model ? j->model : "");
    if (!isnan(r->strength)) cJSON_AddNumberToObject(o, "denoising_strength", r->strength);
    cJSON_AddBoolToObject(o, "interrupted", j->interrupted);
    return o;
}

static void generate(srv_http_req *req, srv_reply *rep, bool img2img) {
    srv_error e = {0};
    cJSON *body = srv_body_json(req, &e);
    srv_job *j = srv_job_new();
    if (!j) srv_fail(&e, 500, "", "out of memory");
    if (body && j && srv_request_from_a1111(body, img2img, &req->app->cfg->limits, &j->req, &e) &&
        srv_prepare_request(req, &j->req, &e) && srv_run_job(req, rep, j, &e)) {
        if (!j->ok && !j->interrupted) e = j->error;
    }
    if (!e.status) { /* interrupted: what was finished (A1111 answers 200 too) */
        double t0 = srv_now();
        cJSON *o = cJSON_CreateObject(), *images = cJSON_AddArrayToObject(o, "images");
        for (int i = 0; i < j->n_images && !e.status; i++) {
            uint8_t *png;
            size_t len;
            if (srv_image_encode(&j->images[i], false, 90, j->infotexts[i], &png, &len) != SD_OK) {
                srv_fail(&e, 500, "", "encoding the image: %s", sd_last_error());
                break;
            }
            char *b64 = srv_base64_encode(png, len);
            free(png);
            cJSON_AddItemToArray(images, b64 ? cJSON_CreateString(b64) : cJSON_CreateNull());
            free(b64);
        }
        cJSON *params = cJSON_Duplicate(body, true);
        if (cJSON_HasObjectItem(params, "init_images"))
            cJSON_ReplaceItemInObject(params, "init_images", cJSON_CreateNull());
        if (cJSON_HasObjectItem(params, "mask"))
            cJSON_ReplaceItemInObject(params, "mask", cJSON_CreateNull());
        cJSON_AddItemToObject(o, "parameters", params);
        cJSON *info = info_json(j, body);
        char *info_text = cJSON_PrintUnformatted(info);
        cJSON_Delete(info);
        cJSON_AddStringToObject(o, "info", info_text ? info_text : "{}");
        free(info_text);
        if (e.status)
            cJSON_Delete(o);
        else
            srv_reply_json(rep, 200, o);
        size_t used = strlen(rep->timing);
        snprintf(rep->timing + used, sizeof rep->timing - used, ", encode;dur=%.1f",
                 (srv_now() - t0) * 1e3);
    }
    if (e.status) srv_reply_a1111_error(rep, &e);
    cJSON_Delete(body);
    srv_job_free(j);
}

void srv_a1111_txt2img(srv_http_req *req, srv_reply *rep) {
    generate(req, rep, false);
}
void srv_a1111_img2img(srv_http_req *req, srv_reply *rep) {
    generate(req, rep, true);
}

void srv_a1111_progress(srv_http_req *req, srv_reply *rep) {
    const char *skip =
        MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "skip_current_image");
    srv_progress p;
    srv_jobs_progress(req->app->jobs, &p, !(skip && !strcmp(skip, "true")));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "progress", p.progress);
    cJSON_AddNumberToObject(o, "eta_relative", p.eta);
    cJSON *s = cJSON_AddObjectToObject(o, "state");
    cJSON_AddBoolToObject(s, "skipped", false);
    cJSON_AddBoolToObject(s, "interrupted", p.interrupted);
    cJSON_AddStringToObject(s, "job", p.job);
    cJSON_AddNumberToObject(s, "job_count", p.busy ? p.job_count : 0);
    cJSON_AddNumberToObject(s, "job_no", p.job_no);
    cJSON_AddNumberToObject(s, "sampling_step", p.step);
    cJSON_AddNumberToObject(s, "sampling_steps", p.steps);
    cJSON_AddNumberToObject(s, "queued", p.queued);
    char *b64 = NULL;
    if (p.preview.width && !(skip && !strcmp(skip, "true"))) {
        uint8_t *png;
        size_t len;
        if (srv_image_encode(&p.preview, false, 90, NULL, &png, &len) == SD_OK) {
            b64 = srv_base64_encode(png, len);
            free(png);
        }
    }
    if (b64)
        cJSON_AddStringToObject(o, "current_image", b64);
    else
        cJSON_AddNullToObject(o, "current_image");
    cJSON_AddNullToObject(o, "textinfo");
    free(b64);
    sd_image_free(&p.preview);
    srv_reply_json(rep, 200, o);
}

void srv_a1111_interrupt(srv_http_req *req, srv_reply *rep) {
    srv_jobs_interrupt(req->app->jobs);
    srv_reply_json(rep, 200, cJSON_CreateObject());
}

void srv_a1111_sd_models(srv_http_req *req, srv_reply *rep) {
    char **names;
    int n = srv_models_list(req->app->models, &names);
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "title", names[i]);
        cJSON_AddStringToObject(m, "model_name", names[i]);
        cJSON_AddNullToObject(m, "hash");
        cJSON_AddNullToObject(m, "sha256");
        cJSON_AddStringToObject(m, "filename", names[i]);
        cJSON_AddNullToObject(m, "config");
        cJSON_AddItemToArray(a, m);
    }
    srv_models_list_free(names, n);
    srv_reply_json(rep, 200, a);
}

void srv_a1111_samplers(srv_http_req *req, srv_reply *rep) {
    (void)req;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < srv_sampler_count(); i++) {
        const srv_sampler *s = srv_sampler_get(i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", s->name);
        cJSON *al = cJSON_AddArrayToObject(o, "aliases");
        cJSON_AddItemToArray(al, cJSON_CreateString(s->alias));
        cJSON *opt = cJSON_AddObjectToObject(o, "options");
        if (s->karras) cJSON_AddStringToObject(opt, "scheduler", "karras");
        cJSON_AddItemToArray(a, o);
    }
    srv_reply_json(rep, 200, a);
}

void srv_a1111_schedulers(srv_http_req *req, srv_reply *rep) {
    (void)req;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < srv_schedule_count(); i++) {
        const char *label, *name = srv_schedule_get(i, &label);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "label", label);
        cJSON_AddNullToObject(o, "aliases");
        cJSON_AddNumberToObject(o, "default_rho", -1);
        cJSON_AddBoolToObject(o, "need_inner_model", false);
        cJSON_AddItemToArray(a, o);
    }
    srv_reply_json(rep, 200, a);
}

void srv_a1111_options_get(srv_http_req *req, srv_reply *rep) {
    char *cur = srv_models_current(req->app->models);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sd_model_checkpoint", cur ? cur : "");
    cJSON_AddStringToObject(o, "samples_format", "png");
    free(cur);
    srv_reply_json(rep, 200, o);
}

void srv_a1111_options_post(srv_http_req *req, srv_reply *rep) {
    srv_error e = {0};
    cJSON *body = srv_body_json(req, &e);
    if (body) {
        const cJSON *ck = cJSON_GetObjectItemCaseSensitive(body, "sd_model_checkpoint");
        if (ck && !cJSON_IsString(ck)) {
            srv_fail(&e, 400, "sd_model_checkpoint", "'sd_model_checkpoint' must be a string");
        } else if (ck) {
            srv_request tmp;
            srv_request_init(&tmp);
            /* the title may carry " [hash]": the request parser strips it */
            cJSON *wrap = cJSON_CreateObject(),
                  *ov = cJSON_AddObjectToObject(wrap, "override_settings");
            cJSON_AddStringToObject(wrap, "prompt", "");
            cJSON_AddStringToObject(ov, "sd_model_checkpoint", ck->valuestring);
            if (srv_request_from_a1111(wrap, false, &req->app->cfg->limits, &tmp, &e))
                srv_models_set_current(req->app->models, tmp.model ? tmp.model : "", &e);
            cJSON_Delete(wrap);
            srv_request_free(&tmp);
        }
    }
    cJSON_Delete(body);
    if (e.status)
        srv_reply_a1111_error(rep, &e);
    else
        srv_reply_json(rep, 200, cJSON_CreateNull());
}

/* "Steps: 20, Sampler: Euler a, ..." after the prompt lines, as A1111's parse_generation_parameters
 * splits it. */
static cJSON *parse_parameters(const char *text) {
    cJSON *o = cJSON_CreateObject();
    const char *last = strrchr(text, '\n');
    const char *settings = last ? last + 1 : text;
    if (!strstr(settings, "Steps: ")) settings = text + strlen(text);
    size_t head = (size_t)(settings - text);
    char *lines = strndup(text, head);
    char *neg = lines ? strstr(lines, "Negative prompt: ") : NULL;
    if (neg) {
        char *n = neg + 17;
        size_t k = strlen(n);
        while (k && n[k - 1] == '\n') n[--k] = 0;
        cJSON_AddStringToObject(o, "Negative prompt", n);
        *neg = 0;
    }
    if (lines) {
        size_t k = strlen(lines);
        while (k && lines[k - 1] == '\n') lines[--k] = 0;
        cJSON_AddStringToObject(o, "Prompt", lines);
    }
    free(lines);
    char *rest = strdup(settings), *save = NULL;
    for (char *kv = rest ? strtok_r(rest, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        while (*kv == ' ') kv++;
        char *colon = strstr(kv, ": ");
        if (!colon) continue;
        *colon = 0;
        cJSON_AddStringToObject(o, kv, colon + 2);
    }
    free(rest);
    return o;
}

void srv_a1111_png_info(srv_http_req *req, srv_reply *rep) {
    srv_error e = {0};
    cJSON *body = srv_body_json(req, &e);
    const cJSON *img = body ? cJSON_GetObjectItemCaseSensitive(body, "image") : NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (body && !cJSON_IsString(img))
        srv_fail(&e, 400, "image", "'image' must be a base64 PNG");
    else if (body && !srv_base64_decode(img->valuestring, strlen(img->valuestring), &bytes, &len))
        srv_fail(&e, 400, "image", "'image' is not valid base64");
    if (!e.status) {
        char *text = srv_png_text(bytes, len, "parameters");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "info", text ? text : "");
        cJSON *items = cJSON_AddObjectToObject(o, "items");
        if (text) cJSON_AddStringToObject(items, "parameters", text);
        cJSON_AddItemToObject(o, "parameters",
                              text ? parse_parameters(text) : cJSON_CreateObject());
        free(text);
        srv_reply_json(rep, 200, o);
    }
    free(bytes);
    cJSON_Delete(body);
    if (e.status) srv_reply_a1111_error(rep, &e);
}
