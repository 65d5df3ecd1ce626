/* Validation is strict where a wrong value would silently give another image (types, ranges,
 * sampler names) and lenient where clients differ harmlessly (unknown fields are ignored: A1111
 * clients send dozens of settings this engine has no use for). */
#include "request.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "images.h"
#include "samplers.h"

bool srv_fail(srv_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    e->code = status == 400 ? "invalid_value" : NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

void srv_request_init(srv_request *r) {
    memset(r, 0, sizeof *r);
    r->guidance = NAN, r->strength = NAN;
    r->seed = -1;
    r->batch = 1, r->n_iter = 1;
    r->quality = 90;
}

void srv_request_free(srv_request *r) {
    free(r->prompt), free(r->negative_prompt), free(r->model), free(r->sampler_label);
    sd_image_free(&r->init), sd_image_free(&r->mask);
    sd_loras_free(r->loras, r->n_loras);
    srv_request_init(r);
}

/* ---- typed field access: a present field of the wrong type is an error naming it ----------- */

/* The field's string (NULL when absent or JSON null). */
static bool get_string(const cJSON *o, const char *key, const char **out, srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsString(v)) return srv_fail(e, 400, key, "'%s' must be a string", key);
    *out = v->valuestring;
    return true;
}

static bool dup_string(const cJSON *o, const char *key, char **out, srv_error *e) {
    const char *s;
    if (!get_string(o, key, &s, e)) return false;
    if (s && !(*out = strdup(s))) return srv_fail(e, 500, key, "out of memory");
    return true;
}

/* A prompt longer than the tokenizers take is refused here, before the request waits in the
 * queue only for its job to fail. */
static bool prompt_fits(const char *key, const char *s, srv_error *e) {
    size_t n = s ? strlen(s) : 0;
    if (n <= SD_PROMPT_MAX_BYTES) return true;
    return srv_fail(e, 400, key, "'%s' is %zu bytes, over the limit of %d (SD_PROMPT_MAX_BYTES)",
                    key, n, SD_PROMPT_MAX_BYTES);
}

/* A number, or (form_text) a string holding one. *present false when absent. */
static bool get_number(const cJSON *o, const char *key, bool form_text, double *out, bool *present,
                       srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *present = false;
    if (!v || cJSON_IsNull(v)) return true;
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
    } else if (form_text && cJSON_IsString(v) && *v->valuestring) {
        char *end;
        *out = strtod(v->valuestring, &end);
        if (*end)
            return srv_fail(e, 400, key, "'%s' must be a number, not '%.40s'", key, v->valuestring);
    } else {
        return srv_fail(e, 400, key, "'%s' must be a number", key);
    }
    if (!isfinite(*out)) return srv_fail(e, 400, key, "'%s' must be finite", key);
    *present = true;
    return true;
}

static bool get_int(const cJSON *o, const char *key, bool form_text, long long lo, long long hi,
                    long long *out, srv_error *e) {
    double d;
    bool present;
    if (!get_number(o, key, form_text, &d, &present, e)) return false;
    if (!present) return true;
    if (d != floor(d)) return srv_fail(e, 400, key, "'%s' must be a whole number, not %g", key, d);
    if (d < (double)lo || d > (double)hi)
        return srv_fail(e, 400, key, "'%s' %.0f is out of range %lld..%lld", key, d, lo, hi);
    *out = (long long)d;
    return true;
}

static bool get_int32(const cJSON *o, const char *key, bool form_text, int lo, int hi, int *out,
                      srv_error *e) {
    long long v = *out;
    if (!get_int(o, key, form_text, lo, hi, &v, e)) return false;
    *out = (int)v;
    return true;
}

static bool get_double(const cJSON *o, const char *key, bool form_text, double lo, double hi,
                       double *out, srv_error *e) {
    double d;
    bool present;
    if (!get_number(o, key, form_text, &d, &present, e)) return false;
    if (!present) return true;
    if (d < lo || d > hi)
        return srv_fail(e, 400, key, "'%s' %g is out of range %g..%g", key, d, lo, hi);
    *out = d;
    return true;
}

bool srv_request_image(const char *field, const char *b64, size_t len, sd_image *out,
                       srv_error *e) {
    uint8_t *bytes;
    size_t n;
    if (!srv_base64_decode(b64, len, &bytes, &n))
        return srv_fail(e, 400, field, "'%s' is not valid base64", field);
    sd_status st = srv_image_decode(bytes, n, out);
    free(bytes);
    if (st != SD_OK)
        return srv_fail(e, 400, field, "'%s' is not a PNG or JPEG image the server can read: %s",
                        field, sd_last_error());
    return true;
}

static bool sampler(srv_request *r, const char *name, const char *schedule, const char *param,
                    srv_error *e) {
    char err[200];
    if (!srv_sampler_map(name, schedule, &r->scheduler, err, sizeof err))
        return srv_fail(e, 400, param, "%s", err);
    if (name && *name && !(r->sampler_label = strdup(name)))
        return srv_fail(e, 500, param, "out of memory");
    return true;
}

static bool check_count(const srv_request *r, const srv_limits *lim, const char *param,
                        srv_error *e) {
    if ((long long)r->batch * r->n_iter > lim->max_n)
        return srv_fail(e, 400, param, "%d images asked, at most %d per request (--max-n)",
                        r->batch * r->n_iter, lim->max_n);
    return true;
}

/* The model a request names: A1111 titles carry " [hash]" after the name. */
static bool take_model(srv_request *r, const char *name, const char *param, srv_error *e) {
    if (!name || !*name) return true;
    size_t n = strlen(name);
    const char *bracket = strstr(name, " [");
    if (bracket && name[n - 1] == ']') n = (size_t)(bracket - name);
    if (!(r->model = strndup(name, n))) return srv_fail(e, 500, param, "out of memory");
    return true;
}

static bool common_a1111(const cJSON *b, const srv_limits *lim, srv_request *r, srv_error *e) {
    const char *prompt;
    if (!get_string(b, "prompt", &prompt, e)) return false;
    if (!prompt) return srv_fail(e, 400, "prompt", "'prompt' is missing");
    if (!prompt_fits("prompt", prompt, e)) return false;
    if (!(r->prompt = strdup(prompt))) return srv_fail(e, 500, "prompt", "out of memory");
    if (!dup_string(b, "negative_prompt", &r->negative_prompt, e)) return false;
    if (!prompt_fits("negative_prompt", r->negative_prompt, e)) return false;
    if (r->negative_prompt && !*r->negative_prompt)
        free(r->negative_prompt), r->negative_prompt = NULL;
    if (!get_int(b, "seed", false, -1, 0xffffffffffffLL, &r->seed, e)) return false;
    if (!get_int32(b, "steps", false, 1, lim->max_steps, &r->steps, e)) return false;
    if (!get_int32(b, "width", false, 8, lim->max_width, &r->width, e)) return false;
    if (!get_int32(b, "height", false, 8, lim->max_height, &r->height, e)) return false;
    if (!get_int32(b, "batch_size", false, 1, lim->max_n, &r->batch, e)) return false;
    if (!get_int32(b, "n_iter", false, 1, lim->max_n, &r->n_iter, e)) return false;
    if (!check_count(r, lim, "batch_size", e)) return false;
    if (!get_double(b, "cfg_scale", false, 0, 100, &r->guidance, e)) return false;
    const char *name, *schedule;
    if (!get_string(b, "sampler_name", &name, e)) return false;
    if (!name && !get_string(b, "sampler_index", &name, e)) return false; /* older clients */
    if (!get_string(b, "scheduler", &schedule, e)) return false;
    if (!sampler(r, name, schedule, name ? "sampler_name" : "scheduler", e)) return false;
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(b, "override_settings");
    if (ov && !cJSON_IsNull(ov)) {
        if (!cJSON_IsObject(ov))
            return srv_fail(e, 400, "override_settings", "'override_settings' must be an object");
        const char *ckpt;
        if (!get_string(ov, "sd_model_checkpoint", &ckpt, e)) return false;
        if (!take_model(r, ckpt, "sd_model_checkpoint", e)) return false;
    }
    return true;
}

bool srv_request_from_a1111(const cJSON *b, bool img2img, const srv_limits *lim, srv_request *r,
                            srv_error *e) {
    if (!cJSON_IsObject(b)) return srv_fail(e, 400, "", "the body must be a JSON object");
    if (!common_a1111(b, lim, r, e)) return false;
    r->syntax = SD_PROMPT_A1111;
    if (!img2img) return true;
    if (!get_double(b, "denoising_strength", false, 0, 1, &r->strength, e)) return false;
    if (r->strength == 0)
        return srv_fail(e, 400, "denoising_strength", "'denoising_strength' must be above 0");
    const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(b, "init_images");
    if (!cJSON_IsArray(imgs) || cJSON_GetArraySize(imgs) < 1 || !cJSON_IsString(imgs->child))
        return srv_fail(e, 400, "init_images", "'init_images' must be an array of base64 images");
    const char *s = imgs->child->valuestring;
    if (!srv_request_image("init_images", s, strlen(s), &r->init, e)) return false;
    const char *mask;
    if (!get_string(b, "mask", &mask, e)) return false;
    if (mask && *mask && !srv_request_image("mask", mask, strlen(mask), &r->mask, e)) return false;
    return true;
}

bool srv_parse_size(const char *s, int *w, int *h) {
    *w = *h = 0;
    if (!s || !strcmp(s, "auto")) return true;
    char *end;
    long a = strtol(s, &end, 10);
    if (end == s || *end != 'x') return false;
    const char *t = end + 1;
    long b = strtol(t, &end, 10);
    if (end == t || *end || a < 0 || b < 0 || a > INT_MAX || b > INT_MAX) return false;
    *w = (int)a, *h = (int)b;
    return true;
}

bool srv_request_from_openai(const cJSON *b, bool form_text, const srv_limits *lim, srv_request *r,
                             srv_error *e) {
    if (!cJSON_IsObject(b)) return srv_fail(e, 400, "", "the body must be a JSON object");
    const char *prompt, *model, *size, *fmt, *out_fmt, *sched;
    if (!get_string(b, "prompt", &prompt, e)) return false;
    if (!prompt || !*prompt) return srv_fail(e, 400, "prompt", "'prompt' is missing");
    if (!prompt_fits("prompt", prompt, e)) return false;
    if (!(r->prompt = strdup(prompt))) return srv_fail(e, 500, "prompt", "out of memory");
    if (!get_string(b, "model", &model, e) || !take_model(r, model, "model", e)) return false;
    if (!get_int32(b, "n", form_text, 1, lim->max_n, &r->batch, e)) return false;
    if (!get_string(b, "size", &size, e)) return false;
    if (!srv_parse_size(size, &r->width, &r->height))
        return srv_fail(e, 400, "size",
                        "'size' must be WIDTHxHEIGHT (e.g. 512x512) or auto, not '%.40s'", size);
    if (size && strcmp(size, "auto") &&
        (r->width < 8 || r->width > lim->max_width || r->height < 8 || r->height > lim->max_height))
        return srv_fail(e, 400, "size", "size %s is out of range 8x8..%dx%d", size, lim->max_width,
                        lim->max_height);
    if (!get_string(b, "response_format", &fmt, e)) return false;
    if (fmt && strcmp(fmt, "b64_json") && strcmp(fmt, "url"))
        return srv_fail(e, 400, "response_format",
                        "'response_format' must be b64_json or url, not '%.40s'", fmt);
    r->url = fmt && !strcmp(fmt, "url");
    if (!get_string(b, "output_format", &out_fmt, e)) return false;
    if (out_fmt && strcmp(out_fmt, "png") && strcmp(out_fmt, "jpeg") && strcmp(out_fmt, "jpg"))
        return srv_fail(e, 400, "output_format", "'output_format' must be png or jpeg, not '%.40s'",
                        out_fmt);
    r->jpeg = out_fmt && strcmp(out_fmt, "png");
    if (!get_int32(b, "output_compression", form_text, 1, 100, &r->quality, e)) return false;
    /* Extensions for what the OpenAI API lacks. */
    if (!dup_string(b, "negative_prompt", &r->negative_prompt, e)) return false;
    if (!prompt_fits("negative_prompt", r->negative_prompt, e)) return false;
    if (!get_int(b, "seed", form_text, -1, 0xffffffffffffLL, &r->seed, e)) return false;
    if (!get_int32(b, "steps", form_text, 1, lim->max_steps, &r->steps, e)) return false;
    if (!get_double(b, "guidance_scale", form_text, 0, 100, &r->guidance, e)) return false;
    if (!get_double(b, "strength", form_text, 0, 1, &r->strength, e)) return false;
    if (r->strength == 0) return srv_fail(e, 400, "strength", "'strength' must be above 0");
    if (!get_string(b, "scheduler", &sched, e)) return false;
    return sampler(r, sched, NULL, "scheduler", e);
}

/* Whether path's real location lies inside dir's (symbolic links resolved on both sides). */
static bool inside(const char *dir, const char *path) {
    char *rd = realpath(dir, NULL), *rp = realpath(path, NULL);
    size_t n = rd ? strlen(rd) : 0;
    bool ok = rd && rp && !strncmp(rd, rp, n) && rp[n] == '/';
    free(rd), free(rp);
    return ok;
}

bool srv_request_take_loras(srv_request *r, const char *lora_dir, srv_error *e) {
    if (!strstr(r->prompt, "<lora:")) return true;
    char *text;
    sd_lora *loras;
    int n;
    if (sd_prompt_extract_loras(r->prompt, lora_dir, &text, &loras, &n) != SD_OK)
        return srv_fail(e, 400, "prompt", "%s%s", sd_last_error(),
                        lora_dir ? "" : " (start the server with --lora-dir DIR)");
    for (int i = 0; i < n; i++)
        if (!inside(lora_dir, loras[i].path)) {
            srv_fail(e, 400, "prompt", "LoRA %s lies outside --lora-dir", loras[i].path);
            free(text), sd_loras_free(loras, n);
            return false;
        }
    free(r->prompt);
    r->prompt = text, r->loras = loras, r->n_loras = n;
    return true;
}
