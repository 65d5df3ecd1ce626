/* The request handlers, one per endpoint; http.c routes to them. Each fills *rep. */
#ifndef SRV_API_H
#define SRV_API_H

#include "app.h"

typedef void (*srv_handler)(srv_http_req *req, srv_reply *rep);

/* web_page.c */
void srv_web_page(srv_http_req *req, srv_reply *rep);

/* api_a1111.c */
void srv_a1111_txt2img(srv_http_req *req, srv_reply *rep);
void srv_a1111_img2img(srv_http_req *req, srv_reply *rep);
void srv_a1111_progress(srv_http_req *req, srv_reply *rep);
void srv_a1111_interrupt(srv_http_req *req, srv_reply *rep);
void srv_a1111_sd_models(srv_http_req *req, srv_reply *rep);
void srv_a1111_samplers(srv_http_req *req, srv_reply *rep);
void srv_a1111_schedulers(srv_http_req *req, srv_reply *rep);
void srv_a1111_options_get(srv_http_req *req, srv_reply *rep);
void srv_a1111_options_post(srv_http_req *req, srv_reply *rep);
void srv_a1111_png_info(srv_http_req *req, srv_reply *rep);

/* api_openai.c */
void srv_openai_generations(srv_http_req *req, srv_reply *rep);
void srv_openai_edits(srv_http_req *req, srv_reply *rep);
void srv_openai_models(srv_http_req *req, srv_reply *rep);
void srv_openai_file(srv_http_req *req, srv_reply *rep);

/* http.c: starts the daemon on cfg's address (app->port receives the bound port). */
bool srv_http_start(srv_app *app, char *err, size_t err_size);
void srv_http_stop(srv_app *app);

#endif
