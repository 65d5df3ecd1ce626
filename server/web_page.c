/* GET /: the web page, server/web/index.html compiled into the binary (the Makefile turns it
 * into $(BUILD)/server/web/index.html.c with tools/embed.c), served byte for byte. */
#include <stddef.h>

#include "api.h"

extern const unsigned char srv_embed_index_html[];
extern const size_t srv_embed_index_html_len;

void srv_web_page(srv_http_req *req, srv_reply *rep) {
    (void)req;
    rep->status = 200;
    rep->body = (uint8_t *)srv_embed_index_html;
    rep->len = srv_embed_index_html_len;
    rep->is_static = true;
    rep->type = "text/html; charset=utf-8";
}
