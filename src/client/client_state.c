/* The client's memory: cursors, members, read markers, outbox, identity and the
 * state file that carries them across restarts, plus address-list parsing.
 * Pure data and files: nothing here may touch a socket or a libuv loop.
 * SPDX-License-Identifier: MIT */
#include "client/client_state.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_VERSION 1

void fb_cstate_init(fb_cstate_t *st)
{
    memset(st, 0, sizeof *st);
}

void fb_cstate_set_str(char **field, const char *v)
{
    if (*field && v && strcmp(*field, v) == 0) return;
    if (*field) {
        /* the token lives here: wipe before handing the memory back */
        memset(*field, 0, strlen(*field));
    }
    fb_free(*field);
    *field = v ? fb_strdup(v) : NULL;
}

static void members_clear(fb_croom_t *cr)
{
    for (size_t i = 0; i < cr->r.n_members; i++)
        fb_free((char *)cr->r.members[i].name);
    cr->r.n_members = 0;
}

static void room_free(fb_croom_t *cr)
{
    members_clear(cr);
    fb_free((fb_client_member_t *)cr->r.members);
    fb_free((char *)cr->r.kind);
    fb_free((char *)cr->r.name);
}

static void cout_free(fb_cout_t *o)
{
    fb_free(o->cmid);
    fb_free(o->text);
    fb_free(o);
}

void fb_cstate_free(fb_cstate_t *st)
{
    fb_cstate_set_str(&st->user, NULL);
    fb_cstate_set_str(&st->token, NULL);
    fb_cstate_set_str(&st->device, NULL);
    for (size_t i = 0; i < st->n_rooms; i++)
        room_free(&st->rooms[i]);
    fb_free(st->rooms);
    fb_cout_t *o = st->out_head;
    while (o) {
        fb_cout_t *next = o->next;
        cout_free(o);
        o = next;
    }
    memset(st, 0, sizeof *st);
}

/* ---- rooms ---- */

static size_t room_lower_bound(const fb_cstate_t *st, int64_t id)
{
    size_t lo = 0, hi = st->n_rooms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->rooms[mid].r.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const fb_croom_t *fb_cstate_room_c(const fb_cstate_t *st, int64_t id)
{
    size_t i = room_lower_bound(st, id);
    return i < st->n_rooms && st->rooms[i].r.id == id ? &st->rooms[i] : NULL;
}

fb_croom_t *fb_cstate_room(fb_cstate_t *st, int64_t id, bool create)
{
    size_t i = room_lower_bound(st, id);
    if (i < st->n_rooms && st->rooms[i].r.id == id) return &st->rooms[i];
    if (!create || id <= 0) return NULL;
    if (st->n_rooms == st->cap_rooms) {
        st->cap_rooms = st->cap_rooms ? st->cap_rooms * 2 : 8;
        st->rooms = fb_realloc(st->rooms, st->cap_rooms * sizeof *st->rooms);
    }
    memmove(&st->rooms[i + 1], &st->rooms[i], (st->n_rooms - i) * sizeof *st->rooms);
    st->n_rooms++;
    fb_croom_t *cr = &st->rooms[i];
    memset(cr, 0, sizeof *cr);
    cr->r.id = id;
    cr->r.kind = fb_strdup("");
    cr->r.name = fb_strdup("");
    return cr;
}

int64_t fb_cstate_cursor(const fb_cstate_t *st, int64_t room)
{
    const fb_croom_t *cr = fb_cstate_room_c(st, room);
    return cr ? cr->r.cursor : 0;
}

static void room_set_str(const char **field, const char *v)
{
    if (!v || strcmp(*field, v) == 0) return;
    fb_free((char *)*field);
    *field = fb_strdup(v);
}

/* ---- members ---- */

static fb_client_member_t *member_find(fb_croom_t *cr, int64_t id)
{
    for (size_t i = 0; i < cr->r.n_members; i++)
        if (cr->r.members[i].id == id) return (fb_client_member_t *)&cr->r.members[i];
    return NULL;
}

static fb_client_member_t *member_add(fb_croom_t *cr, int64_t id, const char *name)
{
    fb_client_member_t *m = member_find(cr, id);
    if (m) {
        if (name && strcmp(m->name, name) != 0) {
            fb_free((char *)m->name);
            m->name = fb_strdup(name);
        }
        return m;
    }
    if (cr->r.n_members == cr->cap_members) {
        cr->cap_members = cr->cap_members ? cr->cap_members * 2 : 4;
        cr->r.members = fb_realloc((fb_client_member_t *)cr->r.members,
                                   cr->cap_members * sizeof *cr->r.members);
    }
    m = (fb_client_member_t *)&cr->r.members[cr->r.n_members++];
    memset(m, 0, sizeof *m);
    m->id = id;
    m->name = fb_strdup(name ? name : "");
    m->role = "member";
    return m;
}

static void member_remove(fb_croom_t *cr, int64_t id)
{
    fb_client_member_t *ms = (fb_client_member_t *)cr->r.members;
    for (size_t i = 0; i < cr->r.n_members; i++) {
        if (ms[i].id != id) continue;
        fb_free((char *)ms[i].name);
        memmove(&ms[i], &ms[i + 1], (cr->r.n_members - i - 1) * sizeof *ms);
        cr->r.n_members--;
        return;
    }
}

/* protocol.md: when the owner leaves, the member who joined earliest owns it. */
static void owner_fix(fb_croom_t *cr)
{
    if (cr->r.owner && member_find(cr, cr->r.owner)) return;
    fb_client_member_t *best = NULL;
    for (size_t i = 0; i < cr->r.n_members; i++) {
        fb_client_member_t *m = (fb_client_member_t *)&cr->r.members[i];
        if (!best || m->joined_seq < best->joined_seq) best = m;
    }
    cr->r.owner = best ? best->id : 0;
    for (size_t i = 0; i < cr->r.n_members; i++) {
        fb_client_member_t *m = (fb_client_member_t *)&cr->r.members[i];
        m->role = m->id == cr->r.owner ? "owner" : "member";
    }
}

static int64_t jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

int64_t fb_client_json_user_id(const json_t *v)
{
    if (json_is_integer(v)) return (int64_t)json_integer_value(v);
    return jint(v, "id");
}

static int64_t juser_id(const json_t *ev, const char *key)
{
    return fb_client_json_user_id(json_object_get(ev, key));
}

void fb_cstate_set_members(fb_cstate_t *st, int64_t room, const json_t *members)
{
    fb_croom_t *cr = fb_cstate_room(st, room, true);
    if (!cr || !json_is_array(members)) return;
    fb_croom_t old = *cr;
    cr->r.members = NULL;
    cr->r.n_members = 0;
    cr->cap_members = 0;
    cr->r.owner = 0;
    size_t i;
    json_t *jm;
    json_array_foreach(members, i, jm)
    {
        int64_t id = jint(jm, "id");
        if (id <= 0) continue;
        fb_client_member_t *m = member_add(cr, id, jstr(jm, "name"));
        m->joined_seq = jint(jm, "joined_seq");
        m->read_seq = jint(jm, "read_seq");
        const char *role = jstr(jm, "role");
        if (role && strcmp(role, "owner") == 0) {
            m->role = "owner";
            cr->r.owner = id;
        }
        for (size_t k = 0; k < old.r.n_members; k++)
            if (old.r.members[k].id == id)
                m->read_seq = FB_MAX(m->read_seq, old.r.members[k].read_seq);
    }
    members_clear(&old);
    fb_free((fb_client_member_t *)old.r.members);
}

static fb_client_room_status_t status_parse(const char *s)
{
    if (!s) return FB_ROOM_UNKNOWN;
    if (strcmp(s, "member") == 0) return FB_ROOM_MEMBER;
    if (strcmp(s, "left") == 0) return FB_ROOM_LEFT;
    if (strcmp(s, "not_member") == 0) return FB_ROOM_NOT_MEMBER;
    return FB_ROOM_UNKNOWN;
}

void fb_cstate_apply_room_meta(fb_cstate_t *st, const json_t *entry)
{
    fb_croom_t *cr = fb_cstate_room(st, jint(entry, "room"), true);
    if (!cr) return;
    fb_client_room_status_t s = status_parse(jstr(entry, "status"));
    if (s != FB_ROOM_UNKNOWN) cr->r.status = s;
    room_set_str(&cr->r.kind, jstr(entry, "kind"));
    room_set_str(&cr->r.name, jstr(entry, "name"));
    if (json_is_integer(json_object_get(entry, "last_seq")))
        cr->r.last_seq = FB_MAX(cr->r.last_seq, jint(entry, "last_seq"));
    json_t *members = json_object_get(entry, "members");
    if (json_is_array(members)) fb_cstate_set_members(st, cr->r.id, members);
    cr = fb_cstate_room(st, jint(entry, "room"), false);
    if (json_is_integer(json_object_get(entry, "owner"))) cr->r.owner = jint(entry, "owner");
}

void fb_cstate_apply_summary(fb_cstate_t *st, const json_t *summary)
{
    fb_croom_t *cr = fb_cstate_room(st, jint(summary, "room"), true);
    if (!cr) return;
    if (cr->r.status == FB_ROOM_UNKNOWN || cr->r.status == FB_ROOM_NOT_MEMBER)
        cr->r.status = FB_ROOM_MEMBER;
    room_set_str(&cr->r.kind, jstr(summary, "kind"));
    room_set_str(&cr->r.name, jstr(summary, "name"));
    if (json_is_integer(json_object_get(summary, "owner"))) cr->r.owner = jint(summary, "owner");
    cr->r.last_seq = FB_MAX(cr->r.last_seq, jint(summary, "last_seq"));
}

/* ---- cursors ---- */

int fb_cstate_push_verdict(const fb_cstate_t *st, int64_t room, int64_t seq)
{
    int64_t cur = fb_cstate_cursor(st, room);
    if (seq <= cur) return FB_CSTATE_DUP;
    if (seq == cur + 1) return FB_CSTATE_APPLY;
    return FB_CSTATE_GAP;
}

static void apply_membership(fb_cstate_t *st, fb_croom_t *cr, const json_t *ev, int64_t seq)
{
    const char *type = jstr(ev, "type");
    if (!type) return;
    const json_t *from = json_object_get(ev, "from");
    const json_t *target = json_object_get(ev, "target");
    if (strcmp(type, "create") == 0) {
        room_set_str(&cr->r.name, jstr(ev, "name"));
        int64_t id = jint(from, "id");
        if (id <= 0) return;
        if (id == st->user_id) cr->r.status = FB_ROOM_MEMBER;
        /* a member list from a newer snapshot already knows the creator's fate */
        if (cr->r.n_members) return;
        fb_client_member_t *m = member_add(cr, id, jstr(from, "name"));
        m->joined_seq = seq;
        m->read_seq = FB_MAX(m->read_seq, seq);
        m->role = "owner";
        cr->r.owner = id;
    } else if (strcmp(type, "join") == 0) {
        int64_t id = jint(target, "id");
        if (id <= 0) return;
        fb_client_member_t *m = member_find(cr, id);
        /* a member list from a newer snapshot already holds this join */
        if (m && m->joined_seq >= seq) return;
        m = member_add(cr, id, jstr(target, "name"));
        m->joined_seq = seq;
        m->read_seq = 0;
        if (id == st->user_id) cr->r.status = FB_ROOM_MEMBER;
        owner_fix(cr);
    } else if (strcmp(type, "leave") == 0 || strcmp(type, "kick") == 0) {
        int64_t id = juser_id(ev, strcmp(type, "leave") == 0 ? "from" : "target");
        fb_client_member_t *m = member_find(cr, id);
        if (m && m->joined_seq < seq) member_remove(cr, id);
        if (id == st->user_id) cr->r.status = FB_ROOM_LEFT;
        owner_fix(cr);
    } else if (strcmp(type, "rename") == 0) {
        room_set_str(&cr->r.name, jstr(ev, "name"));
    } else if (strcmp(type, "text") == 0) {
        /* the sender has read up to its own message (protocol.md, unread) */
        fb_client_member_t *m = member_find(cr, jint(from, "id"));
        if (m) m->read_seq = FB_MAX(m->read_seq, seq);
    }
}

bool fb_cstate_apply_event(fb_cstate_t *st, const json_t *ev)
{
    int64_t seq = jint(ev, "seq");
    fb_croom_t *cr = fb_cstate_room(st, jint(ev, "room"), true);
    if (!cr || seq <= cr->r.cursor) return false;
    cr->r.cursor = seq;
    cr->r.last_seq = FB_MAX(cr->r.last_seq, seq);
    if (cr->r.status == FB_ROOM_UNKNOWN || cr->r.status == FB_ROOM_NOT_MEMBER)
        cr->r.status = FB_ROOM_MEMBER;
    apply_membership(st, cr, ev, seq);
    return true;
}

void fb_cstate_apply_read(fb_cstate_t *st, int64_t room, int64_t user, int64_t seq)
{
    fb_croom_t *cr = fb_cstate_room(st, room, false);
    if (!cr) return;
    fb_client_member_t *m = member_find(cr, user);
    if (m) m->read_seq = FB_MAX(m->read_seq, seq);
}

int fb_cstate_unread_for(const fb_cstate_t *st, int64_t room, int64_t seq, int64_t sender)
{
    const fb_croom_t *cr = fb_cstate_room_c(st, room);
    if (!cr) return 0;
    int n = 0;
    for (size_t i = 0; i < cr->r.n_members; i++) {
        const fb_client_member_t *m = &cr->r.members[i];
        if (m->id != sender && m->joined_seq <= seq && m->read_seq < seq) n++;
    }
    return n;
}

json_t *fb_cstate_cursors(const fb_cstate_t *st)
{
    json_t *o = json_object();
    for (size_t i = 0; i < st->n_rooms; i++) {
        const fb_client_room_t *r = &st->rooms[i].r;
        if (r->status == FB_ROOM_NOT_MEMBER) continue;
        char key[24];
        snprintf(key, sizeof key, "%lld", (long long)r->id);
        json_object_set_new(o, key, json_integer(r->cursor));
    }
    return o;
}

/* ---- outbox ---- */

fb_cout_t *fb_cstate_outbox_add(fb_cstate_t *st, int64_t room, const char *cmid, const char *text)
{
    fb_cout_t *o = fb_calloc(1, sizeof *o);
    o->room = room;
    o->cmid = fb_strdup(cmid);
    o->text = fb_strdup(text);
    o->prev = st->out_tail;
    if (st->out_tail)
        st->out_tail->next = o;
    else
        st->out_head = o;
    st->out_tail = o;
    st->n_out++;
    return o;
}

fb_cout_t *fb_cstate_outbox_find(const fb_cstate_t *st, const char *cmid)
{
    for (fb_cout_t *o = st->out_head; o; o = o->next)
        if (strcmp(o->cmid, cmid) == 0) return o;
    return NULL;
}

void fb_cstate_outbox_remove(fb_cstate_t *st, fb_cout_t *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        st->out_head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        st->out_tail = o->prev;
    st->n_out--;
    cout_free(o);
}

/* ---- state file ---- */

json_t *fb_cstate_to_json(const fb_cstate_t *st)
{
    json_t *j = json_object();
    json_object_set_new(j, "version", json_integer(STATE_VERSION));
    if (st->user) json_object_set_new(j, "user", json_string(st->user));
    if (st->user_id) json_object_set_new(j, "user_id", json_integer(st->user_id));
    if (st->device) json_object_set_new(j, "device", json_string(st->device));
    if (st->device_id) json_object_set_new(j, "device_id", json_integer(st->device_id));
    if (st->token) json_object_set_new(j, "token", json_string(st->token));
    json_object_set_new(j, "cursors", fb_cstate_cursors(st));
    json_t *out = json_array();
    for (const fb_cout_t *o = st->out_head; o; o = o->next)
        json_array_append_new(out, json_pack("{s:I,s:s,s:s}", "room", (json_int_t)o->room, "cmid",
                                             o->cmid, "text", o->text));
    json_object_set_new(j, "outbox", out);
    return j;
}

int fb_cstate_from_json(fb_cstate_t *st, const json_t *j)
{
    if (!json_is_object(j) || jint(j, "version") != STATE_VERSION) return FB_EBADREQ;
    json_t *cursors = json_object_get(j, "cursors");
    json_t *out = json_object_get(j, "outbox");
    if ((cursors && !json_is_object(cursors)) || (out && !json_is_array(out))) return FB_EBADREQ;
    fb_cstate_set_str(&st->user, jstr(j, "user"));
    fb_cstate_set_str(&st->device, jstr(j, "device"));
    fb_cstate_set_str(&st->token, jstr(j, "token"));
    st->user_id = jint(j, "user_id");
    st->device_id = jint(j, "device_id");
    const char *key;
    json_t *v;
    json_object_foreach(cursors, key, v)
    {
        char *end;
        long long id = strtoll(key, &end, 10);
        if (*end || id <= 0 || !json_is_integer(v)) return FB_EBADREQ;
        fb_croom_t *cr = fb_cstate_room(st, id, true);
        cr->r.cursor = json_integer_value(v);
        cr->r.last_seq = FB_MAX(cr->r.last_seq, cr->r.cursor);
    }
    size_t i;
    json_array_foreach(out, i, v)
    {
        const char *cmid = jstr(v, "cmid"), *text = jstr(v, "text");
        int64_t room = jint(v, "room");
        if (!cmid || !text || room <= 0 || !fb_client_cmid_valid(cmid)) return FB_EBADREQ;
        if (!fb_cstate_outbox_find(st, cmid)) fb_cstate_outbox_add(st, room, cmid, text);
    }
    return 0;
}

int fb_cstate_load(fb_cstate_t *st, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? FB_ENOTFOUND : FB_EIO;
    json_error_t jerr;
    json_t *j = json_loadf(f, 0, &jerr);
    fclose(f);
    if (!j) {
        FB_WARN("client", "state file %s: %s (line %d)", path, jerr.text, jerr.line);
        return FB_EBADREQ;
    }
    int err = fb_cstate_from_json(st, j);
    json_decref(j);
    return err;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return FB_EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

int fb_cstate_save(const fb_cstate_t *st, const char *path)
{
    int err = FB_EIO, fd = -1;
    char tmp[PATH_MAX];
    json_t *j = fb_cstate_to_json(st);
    size_t len = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *text = fb_malloc(len + 1);
    json_dumpb(j, text, len, JSON_COMPACT);
    text[len] = 0;
    json_decref(j);
    /* per process, so two processes on one file never rename each other's */
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) goto fail;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) goto fail;
    if (write_all(fd, text, len) || write_all(fd, "\n", 1)) goto fail;
    if (fsync(fd) != 0) goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) goto fail;
    fsync_dir_of(path);
    err = 0;
fail:
    if (err) {
        FB_WARN("client", "cannot write state file %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        unlink(tmp);
    }
    /* the text holds the token */
    memset(text, 0, len);
    fb_free(text);
    return err;
}

/* ---- forms ---- */

bool fb_client_cmid_valid(const char *cmid)
{
    size_t n = strlen(cmid);
    if (n < 1 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)cmid[i];
        if (!isalnum(ch) && !strchr("._:-", ch)) return false;
    }
    return true;
}

/* ---- addresses ---- */

int fb_client_addr_split(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *p = addr, *hend, *colon;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend) return FB_EINVAL;
        p++;
        colon = hend[1] == ':' ? hend + 1 : NULL;
        if (hend[1] && !colon) return FB_EINVAL;
    } else {
        colon = strrchr(p, ':');
        if (colon && strchr(p, ':') != colon) return FB_EINVAL; /* bare IPv6 */
        hend = colon ? colon : p + strlen(p);
    }
    size_t hl = (size_t)(hend - p);
    if (hl == 0 || hl >= hostlen) return FB_EINVAL;
    for (size_t i = 0; i < hl; i++)
        if (!isalnum((unsigned char)p[i]) && !strchr(".-_:%", p[i])) return FB_EINVAL;
    memcpy(host, p, hl);
    host[hl] = 0;
    *port = 8080;
    if (colon) {
        char *end;
        errno = 0;
        long v = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || errno || v < 1 || v > 65535) return FB_EINVAL;
        *port = (int)v;
    }
    return 0;
}

void fb_client_addrs_free(char **addrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fb_free(addrs[i]);
    fb_free(addrs);
}

int fb_client_addrs_parse(const char *csv, char ***out, size_t *n)
{
    char **list = NULL;
    size_t count = 0;
    const char *p = csv;
    *out = NULL;
    *n = 0;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        char item[300], host[256];
        int port;
        if (len == 0 || len >= sizeof item) goto fail;
        memcpy(item, p, len);
        item[len] = 0;
        if (fb_client_addr_split(item, host, sizeof host, &port)) goto fail;
        char norm[300];
        snprintf(norm, sizeof norm, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        list = fb_realloc(list, (count + 1) * sizeof *list);
        list[count++] = fb_strdup(norm);
        if (!end) break;
        p = end + 1;
        if (!*p) goto fail; /* trailing comma */
    }
    if (!count) goto fail;
    *out = list;
    *n = count;
    return 0;
fail:
    fb_client_addrs_free(list, count);
    return FB_EINVAL;
}
