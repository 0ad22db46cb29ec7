/* The plain HTTP endpoints beside /ws: /health, /login, /register and
 * /metrics. One request per connection at a time; answers carry
 * Content-Length and honour keep-alive.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <stdio.h>
#include <string.h>

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 503: return "Service Unavailable";
    }
    return "Internal Server Error";
}

int fb_http_status_of(int err)
{
    switch (err) {
    case FB_EBADCRED:
    case FB_EBADTOKEN:
    case FB_EEXPIRED:
    case FB_EUNAUTH: return 401;
    case FB_ECLOSED:
    case FB_EFORBIDDEN: return 403;
    case FB_ENAMETAKEN: return 409;
    case FB_ETOOBIG: return 413;
    case FB_EUNAVAIL:
    case FB_EBUSY:
    case FB_EIO: return 503;
    case FB_EINTERNAL:
    case FB_ENOMEM: return 500;
    }
    return 400;
}

void fb_http_respond(fb_conn_t *c, int status, const char *ctype, const char *body, size_t n)
{
    char head[256];
    bool keep = !c->closing_after_write && http_should_keep_alive(&c->hp);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n\r\n",
                     status, reason(status), ctype, n, keep ? "keep-alive" : "close");
    fb_conn_write_raw(c, head, (size_t)h);
    fb_conn_write_raw(c, body, n);
    fb_conn_http_resume(c);
}

void fb_http_respond_json(fb_conn_t *c, int status, json_t *obj)
{
    json_object_del(obj, "id");
    json_object_del(obj, "ok");
    fb_buf_t b = {0};
    fb_proto_dump(obj, &b);
    fb_buf_append(&b, "\n", 1);
    json_decref(obj);
    fb_http_respond(c, status, "application/json", b.data, b.len);
    fb_buf_free(&b);
}

static bool path_is(fb_conn_t *c, const char *path)
{
    size_t n = strlen(path);
    return c->url.len >= n && memcmp(c->url.data, path, n) == 0 &&
           (c->url.len == n || c->url.data[n] == '?');
}

static void account(fb_conn_t *c, bool is_register)
{
    if (c->body_too_big) {
        fb_http_respond_json(c, 413, fb_proto_error(NULL, FB_ETOOBIG, "body too large"));
        return;
    }
    fb_req_t req;
    memset(&req, 0, sizeof req);
    json_error_t jerr;
    req.obj = json_loadb(c->body.data ? c->body.data : "", c->body.len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = FB_EBADREQ;
    if (!req.obj) {
        bool utf8 = json_error_code(&jerr) == json_error_invalid_utf8;
        rc = utf8 ? FB_EUTF8 : FB_EBADREQ;
        snprintf(req.msg, sizeof req.msg, "%s", utf8 ? "body is not valid UTF-8" : jerr.text);
    } else if (!json_is_object(req.obj)) {
        snprintf(req.msg, sizeof req.msg, "the body must be a JSON object");
    } else {
        rc = is_register ? fb_ops_register(c, &req, true) : fb_ops_login(c, &req, true);
    }
    if (rc) fb_http_respond_json(c, fb_http_status_of(rc), fb_proto_error(NULL, rc, req.msg));
    fb_req_free(&req);
}

void fb_http_handle(fb_conn_t *c)
{
    fb_server_t *s = c->loop->srv;
    int m = c->hp.method;
    if (path_is(c, "/health")) {
        if (m != HTTP_GET) goto not_allowed;
        /* 200 while writes are held too: reads go on, and held writes
         * complete once a primary is back (a balancer keeps the node) */
        bool held = atomic_load(&fb_writer_stats(s->writer)->store_down);
        fb_http_respond_json(c, 200, json_pack("{s:s,s:s,s:s,s:s,s:i,s:I}", "status", "ok",
                                               "writes", held ? "held" : "ok", "version",
                                               FB_VERSION, "store", s->cfg.store, "protocol",
                                               FB_PROTOCOL_VERSION, "uptime_ms",
                                               (json_int_t)(fb_now_ms() - s->started_ms)));
    } else if (path_is(c, "/metrics")) {
        if (m != HTTP_GET) goto not_allowed;
        fb_buf_t b = {0};
        fb_metrics_render(s, &b);
        fb_http_respond(c, 200, "text/plain; version=0.0.4", b.data, b.len);
        fb_buf_free(&b);
    } else if (path_is(c, "/login") || path_is(c, "/register")) {
        if (m != HTTP_POST) goto not_allowed;
        account(c, path_is(c, "/register"));
    } else if (path_is(c, "/ws")) {
        fb_http_respond(c, 400, "text/plain", "websocket upgrade required\n", 27);
    } else {
        fb_http_respond(c, 404, "text/plain", "not found\n", 10);
    }
    return;
not_allowed:
    fb_http_respond(c, 405, "text/plain", "method not allowed\n", 19);
}
