/* Account ops: hello, register, login, auth, logout, devices, ping. Password
 * hashing runs on libuv's thread pool, never on an io loop; passwords and
 * tokens are wiped after use and never logged.
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <sodium.h>
#include <string.h>

#include "chat/auth.h"

/* ---- token auth (synchronous: one indexed read) ---- */

static int auth_token(fb_conn_t *c, const char *token, json_t **fields)
{
    uint8_t hash[32];
    fb_device_t d = {0};
    fb_user_t u = {0};
    int rc = fb_auth_token_hash(token, hash);
    if (rc) return rc;
    rc = fb_store_device_by_token(c->loop->reader, hash, &d);
    if (rc == FB_ENOTFOUND || (!rc && d.revoked)) rc = FB_EBADTOKEN;
    if (!rc && d.expires_ms < fb_now_ms()) rc = FB_EEXPIRED;
    if (!rc) rc = fb_store_user_by_id(c->loop->reader, d.user_id, &u);
    if (rc == FB_ENOTFOUND) rc = FB_EBADTOKEN;
    if (!rc) {
        fb_conn_set_user(c, u.id, d.id, u.name);
        *fields = json_pack("{s:o,s:{s:I,s:s}}", "user", fb_proto_user(u.id, u.name), "device",
                            "id", (json_int_t)d.id, "name", d.name ? d.name : "");
    }
    fb_device_clear(&d);
    fb_user_clear(&u);
    return rc;
}

int fb_op_hello(fb_conn_t *c, fb_req_t *req)
{
    int64_t version;
    const char *token = NULL;
    if (c->hello) {
        snprintf(req->msg, sizeof req->msg, "hello was already said");
        return FB_ESTATE;
    }
    int rc = fb_req_int(req, "protocol", true, 0, INT32_MAX, &version);
    if (!rc) rc = fb_req_str(req, "token", false, 0, SIZE_MAX, &token, NULL);
    if (rc) return rc;
    if (version != FB_PROTOCOL_VERSION) {
        fb_conn_reply_error(c, fb_req_id(req), FB_EVERSION, "this server speaks protocol 1");
        fb_conn_ws_close(c, 4003, "unsupported protocol version");
        return 0;
    }
    fb_conn_handshake_done(c);
    json_t *fields = NULL;
    if (token && (rc = auth_token(c, token, &fields))) return rc;
    if (!fields) fields = json_object();
    json_object_set_new(fields, "protocol", json_integer(FB_PROTOCOL_VERSION));
    fb_conn_reply(c, fb_req_id(req), fields);
    return 0;
}

int fb_op_auth(fb_conn_t *c, fb_req_t *req)
{
    const char *token;
    json_t *fields;
    int rc = fb_req_str(req, "token", true, 0, SIZE_MAX, &token, NULL);
    if (!rc) rc = auth_token(c, token, &fields);
    if (!rc) fb_conn_reply(c, fb_req_id(req), fields);
    return rc;
}

int fb_op_ping(fb_conn_t *c, fb_req_t *req)
{
    fb_conn_reply(c, fb_req_id(req), json_pack("{s:I}", "ts", (json_int_t)fb_now_ms()));
    return 0;
}

/* ---- login and register: thread pool, then the writer ---- */

typedef struct {
    uv_work_t work;
    fb_conn_t *conn;
    fb_reqid_t id;
    bool http;
    bool is_register;
    char *password;
    size_t pwlen;
    char *pwhash; /* login: stored hash (NULL: no such user); register: new hash */
    int64_t user_id;
    char name[40];
    char *dev_name;
    uint64_t opslimit;
    size_t memlimit;
    int result;
} pw_job_t;

static void job_free(pw_job_t *j)
{
    sodium_memzero(j->password, j->pwlen);
    fb_free(j->password);
    if (j->pwhash) sodium_memzero(j->pwhash, strlen(j->pwhash));
    fb_free(j->pwhash);
    fb_free(j->dev_name);
    fb_reqid_release(&j->id);
    fb_free(j);
}

static void job_run(uv_work_t *w)
{
    pw_job_t *j = w->data;
    if (j->is_register) {
        char hash[FB_PWHASH_MAX];
        j->result = fb_auth_hash_password(j->password, j->pwlen, j->opslimit, j->memlimit, hash);
        if (!j->result) j->pwhash = fb_strdup(hash);
        sodium_memzero(hash, sizeof hash);
    } else {
        bool ok = fb_auth_verify_password(j->pwhash, j->password, j->pwlen, j->opslimit,
                                          j->memlimit);
        j->result = ok ? 0 : FB_EBADCRED;
    }
}

static void reply_fields(fb_conn_t *c, fb_pending_t *p, json_t *fields)
{
    if (p->http)
        fb_http_respond_json(c, 200, fields);
    else
        fb_conn_reply(c, fb_reqid_json(&p->id), fields);
}

static void done_logged_in(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (fb_ops_failed(c, p, r)) {
        sodium_memzero(p->token, sizeof p->token);
        return;
    }
    int64_t uid = r->op == FB_W_REGISTER ? r->r_user : r->user_id;
    const char *name = r->op == FB_W_REGISTER ? r->name : r->user_name;
    if (!p->http) fb_conn_set_user(c, uid, r->r_device, name);
    atomic_fetch_add(&c->loop->stats.logins, 1);
    reply_fields(c, p,
                 json_pack("{s:o,s:{s:I,s:s},s:s}", "user", fb_proto_user(uid, name), "device",
                           "id", (json_int_t)r->r_device, "name", r->dev_name, "token",
                           p->token));
    sodium_memzero(p->token, sizeof p->token);
}

static void job_after(uv_work_t *w, int status)
{
    pw_job_t *j = w->data;
    fb_conn_t *c = j->conn;
    fb_server_t *srv = c->loop->srv;
    c->pending--;
    if (c->state == CONN_CLOSED) goto cleanup;
    int rc = status ? FB_EINTERNAL : j->result;
    if (rc) {
        if (rc == FB_EBADCRED) atomic_fetch_add(&c->loop->stats.login_failures, 1);
        if (j->http)
            fb_http_respond_json(c, fb_http_status_of(rc), fb_proto_error(NULL, rc, NULL));
        else
            fb_conn_reply_error(c, fb_reqid_json(&j->id), rc, NULL);
        goto cleanup;
    }
    fb_wreq_t *r = fb_wreq_new(j->is_register ? FB_W_REGISTER : FB_W_LOGIN);
    char token[FB_TOKEN_HEX + 1];
    fb_auth_new_token(token, r->token_hash);
    r->dev_name = j->dev_name;
    j->dev_name = NULL;
    r->expires_ms = fb_now_ms() + srv->cfg.token_ttl_days * 86400000LL;
    if (j->is_register) {
        r->name = fb_strdup(j->name);
        r->pwhash = j->pwhash;
        j->pwhash = NULL;
    } else {
        r->user_id = j->user_id;
        snprintf(r->user_name, sizeof r->user_name, "%s", j->name);
    }
    fb_pending_t *p = fb_ops_submit(c, j->id, r, done_logged_in, j->http);
    j->id = (fb_reqid_t){NULL, -1}; /* the pending reply has it now */
    if (p) snprintf(p->token, sizeof p->token, "%s", token);
    sodium_memzero(token, sizeof token);
cleanup:
    job_free(j);
    fb_conn_unref(c);
}

static int start_job(fb_conn_t *c, fb_req_t *req, bool http, bool is_register)
{
    const char *user, *password, *device = "device";
    size_t pwlen;
    fb_server_t *srv = c->loop->srv;
    if (!http && c->user_id > 0) {
        snprintf(req->msg, sizeof req->msg, "this connection is already logged in");
        return FB_ESTATE;
    }
    if (is_register && !srv->cfg.registration_open) return FB_ECLOSED;
    int rc = fb_req_str(req, "user", true, 1, FB_NAME_MAX, &user, NULL);
    if (!rc && !fb_valid_user_name(user)) {
        snprintf(req->msg, sizeof req->msg,
                 "\"user\" must be 1 to 32 of a-z 0-9 . _ - starting with a letter or digit");
        rc = FB_EINVAL;
    }
    if (!rc) rc = fb_req_str(req, "password", true, FB_PASSWORD_MIN, FB_PASSWORD_MAX, &password, &pwlen);
    if (!rc) rc = fb_req_str(req, "device", false, 0, FB_DEVICE_NAME_MAX, &device, NULL);
    if (!rc && !fb_valid_label(device, FB_DEVICE_NAME_MAX)) {
        snprintf(req->msg, sizeof req->msg, "\"device\" must not contain control characters");
        rc = FB_EINVAL;
    }
    if (rc) return rc;
    pw_job_t *j = fb_calloc(1, sizeof *j);
    j->work.data = j;
    j->conn = c;
    j->id = fb_req_hold_id(req);
    j->http = http;
    j->is_register = is_register;
    j->password = fb_strndup(password, pwlen);
    j->pwlen = pwlen;
    j->dev_name = fb_strdup(device);
    j->opslimit = (uint64_t)srv->cfg.argon2_opslimit;
    j->memlimit = (size_t)srv->cfg.argon2_memlimit_kib * 1024;
    snprintf(j->name, sizeof j->name, "%s", user);
    if (!is_register) {
        fb_user_t u = {0};
        rc = fb_store_user_by_name(c->loop->reader, user, &u);
        if (rc && rc != FB_ENOTFOUND) {
            job_free(j);
            return rc;
        }
        if (!rc) { /* an unknown user burns the same time, then fails */
            j->user_id = u.id;
            j->pwhash = fb_strdup(u.pwhash);
        }
        fb_user_clear(&u);
    }
    c->refs++;
    c->pending++;
    if (uv_queue_work(&c->loop->loop, &j->work, job_run, job_after) != 0) {
        c->refs--;
        c->pending--;
        job_free(j);
        return FB_EINTERNAL;
    }
    return 0;
}

int fb_ops_login(fb_conn_t *c, fb_req_t *req, bool http)
{
    return start_job(c, req, http, false);
}

int fb_ops_register(fb_conn_t *c, fb_req_t *req, bool http)
{
    return start_job(c, req, http, true);
}

/* ---- devices ---- */

static void done_logout(fb_conn_t *c, fb_pending_t *p, fb_wreq_t *r)
{
    if (!fb_ops_failed(c, p, r)) fb_conn_reply(c, fb_reqid_json(&p->id), NULL);
}

int fb_op_logout(fb_conn_t *c, fb_req_t *req)
{
    int64_t device = c->device_id;
    int rc = fb_req_id_field(req, "device", false, &device);
    if (rc) return rc;
    fb_wreq_t *r = fb_wreq_new(FB_W_LOGOUT);
    r->arg_device = device;
    fb_ops_submit(c, fb_req_hold_id(req), r, done_logout, false);
    return 0;
}

int fb_op_devices(fb_conn_t *c, fb_req_t *req)
{
    fb_device_t *ds;
    size_t n;
    int rc = fb_store_devices_list(c->loop->reader, c->user_id, &ds, &n);
    if (rc) return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (!ds[i].revoked)
            json_array_append_new(arr, json_pack("{s:I,s:s,s:I,s:I,s:b}", "id", (json_int_t)ds[i].id,
                                             "name", ds[i].name ? ds[i].name : "", "created",
                                             (json_int_t)ds[i].created_ms, "expires",
                                             (json_int_t)ds[i].expires_ms, "current",
                                             ds[i].id == c->device_id));
    fb_devices_free(ds, n);
    fb_conn_reply(c, fb_req_id(req), json_pack("{s:o}", "devices", arr));
    return 0;
}
