/* Configuration keys, defaults, parsing and validation. The table below is
 * the single list of keys; `firebreak serve --print-config` prints it as a
 * documented file. It never opens sockets or the store.
 * SPDX-License-Identifier: MIT */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fb.h"

typedef enum { K_INT, K_STR, K_LISTEN, K_REG, K_LOG, K_CONNINFO } kind_t;

typedef struct {
    const char *key;
    kind_t kind;
    size_t off;
    int64_t min, max;
    const char *doc;
} key_t_;

#define OFF(f) offsetof(fb_config_t, f)
static const key_t_ keys[] = {
    {"listen", K_LISTEN, 0, 0, 0, "address:port to serve WebSocket (/ws) and HTTP on"},
    {"data_dir", K_STR, OFF(data_dir), 0, sizeof(((fb_config_t *)0)->data_dir),
     "folder of the embedded store (created if missing)"},
    {"store", K_STR, OFF(store), 0, sizeof(((fb_config_t *)0)->store),
     "storage backend: sqlite (one node, a file in data_dir) | postgres (pg_conninfo; several\n"
     "# nodes, e.g. one per site, may share one database)"},
    {"pg_conninfo", K_CONNINFO, OFF(pg_conninfo), 0, sizeof(((fb_config_t *)0)->pg_conninfo),
     "postgres: libpq connection string of the write connection and the change feed. Name\n"
     "# every site and let libpq find the primary, e.g.\n"
     "# host=127.0.1.1,127.0.2.1,127.0.3.1 port=5432 dbname=firebreak user=firebreak\n"
     "#   target_session_attrs=read-write connect_timeout=2 keepalives_idle=1\n"
     "#   keepalives_interval=1 keepalives_count=3 tcp_user_timeout=5000\n"
     "# Keep the password in a passfile (~/.pgpass or passfile=...), not here; the role must\n"
     "# own the database (the node creates its tables and functions)"},
    {"pg_read_conninfo", K_CONNINFO, OFF(pg_read_conninfo), 0,
     sizeof(((fb_config_t *)0)->pg_read_conninfo),
     "postgres: connection string of the io loops' reads (sync, history, tokens): this site's\n"
     "# server, primary or standby, e.g. host=127.0.1.1 port=5432 dbname=firebreak\n"
     "# user=firebreak; empty: pg_conninfo"},
    {"io_threads", K_INT, OFF(io_threads), 0, 64, "io loops; 0 = one per core"},
    {"registration", K_REG, 0, 0, 0,
     "open: anyone may register; closed: only `firebreak admin add-user`"},
    {"max_frame_bytes", K_INT, OFF(max_frame_bytes), 1024, 16 << 20,
     "largest client frame / HTTP body; larger frames close the connection (1009)"},
    {"max_text_bytes", K_INT, OFF(max_text_bytes), 1, 1 << 20, "largest message text (UTF-8 bytes)"},
    {"max_output_bytes", K_INT, OFF(max_output_bytes), 65536, (int64_t)1 << 32,
     "output queued for one connection before it is closed as a slow consumer (4002)"},
    {"max_room_members", K_INT, OFF(max_room_members), 2, 1000000, "members in one room"},
    {"history_page_max", K_INT, OFF(history_page_max), 10, 10000,
     "largest page of history / sync events per room"},
    {"token_ttl_days", K_INT, OFF(token_ttl_days), 1, 3650, "device tokens expire after this"},
    {"handshake_timeout_ms", K_INT, OFF(handshake_timeout_ms), 100, 600000,
     "a connection must upgrade and say hello within this"},
    {"writer_batch_max", K_INT, OFF(writer_batch_max), 1, 1000000,
     "most requests committed in one transaction (group commit)"},
    {"sqlite_cache_mib", K_INT, OFF(sqlite_cache_mib), 2, 1 << 20,
     "sqlite: page cache of the writer and of each io loop's reader, MiB (used as filled)"},
    {"store_hold_ms", K_INT, OFF(store_hold_ms), 0, 600000,
     "writes wait this long for an unreachable store (a failover) before they fail as "
     "unavailable; above the failover time (Patroni ttl + a few s)"},
    {"argon2_opslimit", K_INT, OFF(argon2_opslimit), 1, 100, "argon2id passes (libsodium opslimit)"},
    {"argon2_memlimit_kib", K_INT, OFF(argon2_memlimit_kib), 8, 4 << 20,
     "argon2id memory per hash, KiB"},
    {"log_level", K_LOG, 0, 0, 0, "debug | info | warn | error"},
};

void fb_config_defaults(fb_config_t *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen_host, sizeof c->listen_host, "127.0.0.1");
    c->listen_port = 8080;
    snprintf(c->data_dir, sizeof c->data_dir, "./firebreak-data");
    snprintf(c->store, sizeof c->store, "sqlite");
    c->io_threads = 0;
    c->store_hold_ms = 20000;
    c->registration_open = true;
    c->max_frame_bytes = 65536;
    c->max_text_bytes = 8192;
    c->max_output_bytes = 4 << 20;
    c->max_room_members = 10000;
    c->history_page_max = 200;
    c->token_ttl_days = 90;
    c->handshake_timeout_ms = 10000;
    c->writer_batch_max = 4096;
    c->sqlite_cache_mib = 64;
    c->argon2_opslimit = 2;
    c->argon2_memlimit_kib = 65536;
    c->log_level = FB_LOG_INFO;
}

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return FB_EINVAL;
    *out = x;
    return 0;
}

int fb_config_set(fb_config_t *c, const char *key, const char *value, char *err, size_t errlen)
{
    for (size_t i = 0; i < FB_ARRAY_LEN(keys); i++) {
        const key_t_ *k = &keys[i];
        if (strcmp(k->key, key) != 0) continue;
        int64_t x;
        switch (k->kind) {
        case K_INT:
            if (parse_int(value, &x) != 0 || x < k->min || x > k->max) {
                snprintf(err, errlen, "%s must be an integer from %lld to %lld", key,
                         (long long)k->min, (long long)k->max);
                return FB_EINVAL;
            }
            if (k->off == OFF(io_threads))
                c->io_threads = (int)x;
            else
                *(int64_t *)((char *)c + k->off) = x;
            return 0;
        case K_STR:
            if (!*value || strlen(value) >= (size_t)k->max) {
                snprintf(err, errlen, "%s must be 1 to %lld characters", key, (long long)k->max - 1);
                return FB_EINVAL;
            }
            if (k->off == OFF(store) && strcmp(value, "sqlite") != 0 &&
                strcmp(value, "postgres") != 0) {
                snprintf(err, errlen, "store must be sqlite or postgres");
                return FB_EINVAL;
            }
            snprintf((char *)c + k->off, (size_t)k->max, "%s", value);
            return 0;
        case K_CONNINFO: {
            /* Empty is allowed (unset). libpq's own parse error could quote
             * a piece of a password, so the message is ours. */
            if (strlen(value) >= (size_t)k->max) {
                snprintf(err, errlen, "%s must be at most %lld characters", key,
                         (long long)k->max - 1);
                return FB_EINVAL;
            }
            PQconninfoOption *opts = *value ? PQconninfoParse(value, NULL) : NULL;
            if (*value && !opts) {
                snprintf(err, errlen,
                         "%s is not a libpq connection string (key=value ... or "
                         "postgresql://...)",
                         key);
                return FB_EINVAL;
            }
            PQconninfoFree(opts);
            snprintf((char *)c + k->off, (size_t)k->max, "%s", value);
            return 0;
        }
        case K_LISTEN: {
            const char *colon = strrchr(value, ':');
            if (!colon || colon == value || (size_t)(colon - value) >= sizeof c->listen_host ||
                parse_int(colon + 1, &x) != 0 || x < 0 || x > 65535) {
                snprintf(err, errlen, "listen must be host:port, e.g. 127.0.0.1:8080");
                return FB_EINVAL;
            }
            snprintf(c->listen_host, sizeof c->listen_host, "%.*s", (int)(colon - value), value);
            c->listen_port = (int)x;
            return 0;
        }
        case K_REG:
            if (strcmp(value, "open") && strcmp(value, "closed")) {
                snprintf(err, errlen, "registration must be open or closed");
                return FB_EINVAL;
            }
            c->registration_open = strcmp(value, "open") == 0;
            return 0;
        case K_LOG: {
            int level = fb_log_level_parse(value);
            if (level < 0 || level == FB_LOG_OFF) {
                snprintf(err, errlen, "log_level must be debug, info, warn or error");
                return FB_EINVAL;
            }
            c->log_level = level;
            return 0;
        }
        }
    }
    snprintf(err, errlen, "unknown configuration key '%s'", key);
    return FB_EINVAL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int fb_config_load(fb_config_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return FB_EINVAL;
    }
    char line[2048];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
            rc = FB_EINVAL;
            break;
        }
        *eq = 0;
        char msg[256];
        if (fb_config_set(c, trim(s), trim(eq + 1), msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            rc = FB_EINVAL;
            break;
        }
    }
    fclose(f);
    return rc;
}

int fb_config_check(const fb_config_t *c, char *err, size_t errlen)
{
    if (strcmp(c->store, "postgres") == 0 && !c->pg_conninfo[0]) {
        snprintf(err, errlen, "store = postgres needs pg_conninfo");
        return FB_EINVAL;
    }
    return 0;
}

/* libpq's quoting: 'value' with \ before ' and \. */
static void append_quoted(fb_buf_t *b, const char *v)
{
    fb_buf_append(b, "'", 1);
    for (; *v; v++) {
        if (*v == '\'' || *v == '\\') fb_buf_append(b, "\\", 1);
        fb_buf_append(b, v, 1);
    }
    fb_buf_append(b, "'", 1);
}

void fb_config_redact_conninfo(const char *conninfo, char *out, size_t n)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    bool secret = false;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) secret = true;
    if (!opts || !secret) {
        /* unparsable: say nothing of it rather than risk a password */
        snprintf(out, n, "%s", opts ? conninfo : "(not a connection string)");
        PQconninfoFree(opts);
        return;
    }
    fb_buf_t b = {0};
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val) continue;
        if (b.len) fb_buf_append(&b, " ", 1);
        fb_buf_appendf(&b, "%s=", o->keyword);
        append_quoted(&b, strcmp(o->keyword, "password") == 0 ? "redacted" : o->val);
    }
    fb_buf_append(&b, "", 1);
    snprintf(out, n, "%s", b.data);
    fb_buf_free(&b);
    PQconninfoFree(opts);
}

void fb_config_print(const fb_config_t *c, void *file)
{
    FILE *f = file;
    fprintf(f, "# Firebreak node configuration (every key, with the value in force)\n");
    for (size_t i = 0; i < FB_ARRAY_LEN(keys); i++) {
        const key_t_ *k = &keys[i];
        fprintf(f, "\n# %s\n%s =", k->doc, k->key);
        switch (k->kind) {
        case K_INT:
            if (k->off == OFF(io_threads))
                fprintf(f, " %d\n", c->io_threads);
            else
                fprintf(f, " %lld\n", (long long)*(const int64_t *)((const char *)c + k->off));
            break;
        case K_STR: fprintf(f, " %s\n", (const char *)c + k->off); break;
        case K_CONNINFO: {
            char safe[2048];
            fb_config_redact_conninfo((const char *)c + k->off, safe, sizeof safe);
            fprintf(f, "%s%s\n", *safe ? " " : "", safe);
            break;
        }
        case K_LISTEN: fprintf(f, " %s:%d\n", c->listen_host, c->listen_port); break;
        case K_REG: fprintf(f, " %s\n", c->registration_open ? "open" : "closed"); break;
        case K_LOG:
            fprintf(f, " %s\n", (const char *[]){"debug", "info", "warn", "error", "off"}[c->log_level]);
            break;
        }
    }
}

void fb_config_db_path(const fb_config_t *c, char *out, size_t n)
{
    snprintf(out, n, "%s/firebreak.db", c->data_dir);
}
