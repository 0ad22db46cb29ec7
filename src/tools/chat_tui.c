/* The interactive screen of `firebreak chat`: a room list with live unread
 * badges, a room with its messages and KakaoTalk unread counts, a UTF-8 line
 * editor and slash commands, all on one libuv loop (stdin polled, never
 * blocking). It keeps only what is on screen; the client library keeps the
 * truth, and nothing here may block the loop.
 * SPDX-License-Identifier: MIT */
#define _XOPEN_SOURCE_EXTENDED 1
#include "tools/chat.h"

#include <locale.h>
#include <ncurses.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#define INPUT_MAX 4096 /* wide characters on the input line */
#define PAGE 50        /* history page */

enum { VIEW_LIST, VIEW_ROOM };

typedef struct {
    int64_t seq; /* 0 while sending */
    int64_t ts;
    int64_t from;
    char *from_name;
    char *text; /* message, or what a non-text event says */
    char *cmid;
    bool is_text;
    bool failed;
} line_t;

typedef struct {
    chat_args_t *a;
    uv_loop_t loop;
    fb_client_t *c;
    uv_poll_t in_poll;
    uv_signal_t winch, sigint;
    uv_timer_t refresh;
    bool refresh_pending, quit;
    int view;
    json_t *rooms; /* the last `rooms` reply's array */
    int sel;
    int64_t room;
    char title[160];
    line_t *lines;
    size_t n_lines, cap_lines;
    bool more_history, loading;
    int scroll; /* message lines hidden below the screen */
    int64_t read_sent;
    wchar_t input[INPUT_MAX + 1];
    size_t in_len, in_pos;
    char status[200];
    char notice[300];
} tui_t;

static void draw(tui_t *t);

/* ---- small helpers ---- */

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

static void notice(tui_t *t, const char *fmt, const char *a, const char *b)
{
    snprintf(t->notice, sizeof t->notice, fmt, a, b);
}

static void notice_err(tui_t *t, int err, const char *msg)
{
    notice(t, "error: %s: %s", fb_err_code(err), msg ? msg : fb_err_message(err));
}

/* ---- lines of the open room ---- */

static void line_free(line_t *l)
{
    fb_free(l->from_name);
    fb_free(l->text);
    fb_free(l->cmid);
}

static void lines_clear(tui_t *t)
{
    for (size_t i = 0; i < t->n_lines; i++)
        line_free(&t->lines[i]);
    t->n_lines = 0;
    t->scroll = 0;
    t->more_history = false;
    t->loading = false;
    t->read_sent = 0;
}

static line_t *line_by_cmid(tui_t *t, const char *cmid)
{
    for (size_t i = 0; cmid && i < t->n_lines; i++)
        if (t->lines[i].cmid && !strcmp(t->lines[i].cmid, cmid)) return &t->lines[i];
    return NULL;
}

/* Sorted by seq, lines still sending (seq 0) last. */
static void lines_sort(tui_t *t)
{
    for (size_t i = 1; i < t->n_lines; i++) {
        line_t l = t->lines[i];
        size_t j = i;
        while (j > 0 && l.seq && (!t->lines[j - 1].seq || t->lines[j - 1].seq > l.seq)) {
            t->lines[j] = t->lines[j - 1];
            j--;
        }
        t->lines[j] = l;
    }
}

static line_t *line_push(tui_t *t)
{
    if (t->n_lines == t->cap_lines) {
        t->cap_lines = t->cap_lines ? t->cap_lines * 2 : 64;
        t->lines = fb_realloc(t->lines, t->cap_lines * sizeof *t->lines);
    }
    line_t *l = &t->lines[t->n_lines++];
    memset(l, 0, sizeof *l);
    return l;
}

static void describe(json_t *ev, char *buf, size_t n)
{
    const char *type = jstr(ev, "type");
    const char *target = jstr(json_object_get(ev, "target"), "name");
    if (!strcmp(type, "create"))
        snprintf(buf, n, "* created \"%s\"", jstr(ev, "name"));
    else if (!strcmp(type, "join"))
        snprintf(buf, n, "* added %s", target);
    else if (!strcmp(type, "leave"))
        snprintf(buf, n, "* left");
    else if (!strcmp(type, "kick"))
        snprintf(buf, n, "* removed %s", target);
    else if (!strcmp(type, "rename"))
        snprintf(buf, n, "* renamed the room \"%s\"", jstr(ev, "name"));
    else
        snprintf(buf, n, "* %s", type);
}

/* An event of the open room, from history or live; each seq once. */
static void add_event(tui_t *t, json_t *ev)
{
    int64_t seq = jint(ev, "seq");
    for (size_t i = 0; i < t->n_lines; i++)
        if (t->lines[i].seq == seq) return;
    const char *cmid = json_string_value(json_object_get(ev, "cmid"));
    line_t *l = NULL;
    if (jint(ev, "device") == fb_client_device_id(t->c)) l = line_by_cmid(t, cmid);
    if (l && l->seq) l = NULL;
    if (!l) {
        l = line_push(t);
        json_t *from = json_object_get(ev, "from");
        l->from = jint(from, "id");
        l->from_name = fb_strdup(jstr(from, "name"));
        l->is_text = !strcmp(jstr(ev, "type"), "text");
        if (l->is_text) {
            l->text = fb_strdup(jstr(ev, "text"));
        } else {
            char buf[200];
            describe(ev, buf, sizeof buf);
            l->text = fb_strdup(buf);
        }
        if (cmid) l->cmid = fb_strdup(cmid);
    }
    l->seq = seq;
    l->ts = jint(ev, "ts");
    lines_sort(t);
}

static int64_t newest_seq(tui_t *t)
{
    int64_t m = 0;
    for (size_t i = 0; i < t->n_lines; i++)
        m = FB_MAX(m, t->lines[i].seq);
    return m;
}

/* Seeing a message marks it read: only while the room is on screen. */
static void mark_read(tui_t *t)
{
    int64_t seq = newest_seq(t);
    if (t->view != VIEW_ROOM || seq <= t->read_sent) return;
    if (fb_client_read(t->c, t->room, seq, NULL, NULL) == 0) t->read_sent = seq;
}

/* ---- rooms ---- */

static void on_rooms(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    tui_t *t = ud;
    if (err) return;
    json_decref(t->rooms);
    t->rooms = json_incref(json_object_get(reply, "rooms"));
    int n = (int)json_array_size(t->rooms);
    if (t->sel >= n) t->sel = n ? n - 1 : 0;
    draw(t);
}

static void on_refresh_timer(uv_timer_t *timer)
{
    tui_t *t = timer->data;
    t->refresh_pending = false;
    fb_client_rooms(t->c, on_rooms, t);
}

/* Many events in a burst make one `rooms` call. */
static void schedule_refresh(tui_t *t)
{
    if (t->refresh_pending) return;
    t->refresh_pending = true;
    uv_timer_start(&t->refresh, on_refresh_timer, 200, 0);
}

static const char *room_label(json_t *r)
{
    if (!strcmp(jstr(r, "kind"), "direct")) return jstr(json_object_get(r, "peer"), "name");
    return jstr(r, "name");
}

static void set_title(tui_t *t)
{
    size_t i;
    json_t *r;
    snprintf(t->title, sizeof t->title, "room %lld", (long long)t->room);
    json_array_foreach(t->rooms, i, r) if (jint(r, "room") == t->room)
        snprintf(t->title, sizeof t->title, "%s (%lld members)", room_label(r),
                 (long long)jint(r, "member_count"));
}

static void on_history(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    tui_t *t = ud;
    t->loading = false;
    if (err) {
        notice_err(t, err, msg);
        draw(t);
        return;
    }
    if (jint(reply, "room") && jint(reply, "room") != t->room) return;
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(reply, "events"), i, ev) add_event(t, ev);
    t->more_history = json_is_true(json_object_get(reply, "more"));
    mark_read(t);
    draw(t);
}

static void load_older(tui_t *t)
{
    if (t->loading || !t->more_history || !t->n_lines || !t->lines[0].seq) return;
    t->loading = true;
    if (fb_client_history(t->c, t->room, t->lines[0].seq, PAGE, on_history, t)) t->loading = false;
}

static void on_room_info(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    draw(ud); /* members and markers now known: unread counts are current */
}

static void open_room(tui_t *t, int64_t room)
{
    lines_clear(t);
    t->room = room;
    t->view = VIEW_ROOM;
    t->notice[0] = 0;
    set_title(t);
    t->loading = true;
    fb_client_room(t->c, room, on_room_info, t);
    if (fb_client_history(t->c, room, 0, PAGE, on_history, t)) t->loading = false;
    draw(t);
}

static void to_list(tui_t *t)
{
    t->view = VIEW_LIST;
    t->room = 0;
    lines_clear(t);
    fb_client_rooms(t->c, on_rooms, t);
    draw(t);
}

/* ---- client callbacks ---- */

static void on_event(fb_client_t *c, json_t *ev, void *ud)
{
    tui_t *t = ud;
    const char *name = jstr(ev, "event");
    if (!strcmp(name, "msg")) {
        if (t->view == VIEW_ROOM && jint(ev, "room") == t->room && !t->loading) {
            add_event(t, ev);
            mark_read(t);
            const char *type = jstr(ev, "type");
            if (!strcmp(type, "rename") || !strcmp(type, "join") || !strcmp(type, "leave") ||
                !strcmp(type, "kick"))
                fb_client_room(c, t->room, on_room_info, t);
        }
        schedule_refresh(t);
    } else if (!strcmp(name, "read")) {
        if (fb_client_json_user_id(json_object_get(ev, "user")) == fb_client_user_id(c))
            schedule_refresh(t);
    } else if (!strcmp(name, "room")) {
        schedule_refresh(t);
    } else if (!strcmp(name, "logged_out")) {
        notice(t, "%s%s", "this device was logged out", "");
    }
    draw(t);
}

static void on_state(fb_client_t *c, fb_client_state_t s, const char *addr, int err, void *ud)
{
    tui_t *t = ud;
    switch (s) {
    case FB_CLIENT_CONNECTING:
        if (fb_client_site_count(c) > 1)
            snprintf(t->status, sizeof t->status, "%s to site %d (%s)",
                     fb_client_ever_connected(c) ? "reconnecting" : "connecting",
                     fb_client_site(c), addr);
        else
            snprintf(t->status, sizeof t->status, "%s to %s",
                     fb_client_ever_connected(c) ? "reconnecting" : "connecting", addr);
        break;
    case FB_CLIENT_AUTHENTICATED:
        snprintf(t->status, sizeof t->status, "syncing with %s", addr);
        break;
    case FB_CLIENT_READY:
        if (fb_client_site_count(c) > 1)
            snprintf(t->status, sizeof t->status, "connected to site %d (%s) as %s",
                     fb_client_site(c), addr, fb_client_user(c) ? fb_client_user(c) : "?");
        else
            snprintf(t->status, sizeof t->status, "connected to %s as %s", addr,
                     fb_client_user(c) ? fb_client_user(c) : "?");
        schedule_refresh(t);
        if (t->view == VIEW_ROOM) fb_client_room(c, t->room, on_room_info, t);
        break;
    case FB_CLIENT_DISCONNECTED:
        snprintf(t->status, sizeof t->status, "lost %s, reconnecting... (%zu waiting to be sent)",
                 addr, fb_client_outbox_count(c));
        break;
    case FB_CLIENT_STOPPED:
        snprintf(t->status, sizeof t->status, "stopped: %s (/quit)", fb_err_message(err));
        break;
    default:
        snprintf(t->status, sizeof t->status, "%s", fb_client_state_name(s));
    }
    draw(t);
}

/* ---- sending ---- */

typedef struct {
    tui_t *t;
    int64_t room;
    char cmid[FB_CLIENT_CMID_LEN + 1];
} pending_t;

static void on_ack(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    pending_t *p = ud;
    tui_t *t = p->t;
    line_t *l = t->room == p->room ? line_by_cmid(t, p->cmid) : NULL;
    if (l && !err && !l->seq) {
        l->seq = jint(reply, "seq");
        l->ts = jint(reply, "ts");
        lines_sort(t);
    } else if (l && err && !t->quit) {
        /* refused for good (a lost connection never ends up here) */
        l->failed = true;
        notice_err(t, err, msg);
    }
    fb_free(p);
    if (!t->quit) draw(t);
}

static void send_text(tui_t *t, const char *text)
{
    pending_t *p = fb_malloc(sizeof *p);
    p->t = t;
    p->room = t->room;
    fb_client_gen_cmid(p->cmid);
    int err = fb_client_send(t->c, t->room, text, p->cmid, on_ack, p);
    if (err) {
        fb_free(p);
        notice_err(t, err, err == FB_ETOOBIG ? "message too long" : NULL);
        return;
    }
    line_t *l = line_push(t);
    l->from = fb_client_user_id(t->c);
    l->from_name = fb_strdup(fb_client_user(t->c) ? fb_client_user(t->c) : "me");
    l->text = fb_strdup(text);
    l->cmid = fb_strdup(p->cmid);
    l->is_text = true;
    t->scroll = 0;
}

/* ---- commands ---- */

static void on_opened(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    tui_t *t = ud;
    if (err) {
        notice_err(t, err, msg);
        draw(t);
        return;
    }
    schedule_refresh(t);
    open_room(t, jint(json_object_get(reply, "room"), "room"));
}

static void on_done(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    tui_t *t = ud;
    if (err)
        notice_err(t, err, msg);
    else
        notice(t, "%s%s", "done", "");
    draw(t);
}

static void on_left(fb_client_t *c, int err, const char *msg, json_t *reply, void *ud)
{
    tui_t *t = ud;
    if (err) {
        notice_err(t, err, msg);
        draw(t);
        return;
    }
    to_list(t);
}

/* Splits in place on spaces; returns the count. */
static int split(char *s, char **argv, int max)
{
    int n = 0;
    for (char *tok = strtok(s, " "); tok && n < max; tok = strtok(NULL, " "))
        argv[n++] = tok;
    return n;
}

static void command(tui_t *t, char *line)
{
    char *rest = strchr(line, ' ');
    rest = rest ? rest + 1 : line + strlen(line);
    char copy[INPUT_MAX * 4 + 1];
    snprintf(copy, sizeof copy, "%s", line);
    char *argv[64];
    int argc = split(copy, argv, 64);
    const char *cmd = argv[0];
    bool in_room = t->view == VIEW_ROOM;
    int err = 0;
    if (!strcmp(cmd, "/quit")) {
        t->quit = true;
    } else if (!strcmp(cmd, "/rooms")) {
        to_list(t);
    } else if (!strcmp(cmd, "/direct") && argc == 2) {
        err = fb_client_direct(t->c, argv[1], on_opened, t);
    } else if (!strcmp(cmd, "/group") && argc >= 2) {
        err = fb_client_create_group(t->c, argv[1], (const char *const *)argv + 2, (size_t)argc - 2,
                                     on_opened, t);
    } else if (!strcmp(cmd, "/invite") && argc >= 2 && in_room) {
        err = fb_client_invite(t->c, t->room, (const char *const *)argv + 1, (size_t)argc - 1,
                               on_done, t);
    } else if (!strcmp(cmd, "/leave") && argc == 1 && in_room) {
        err = fb_client_leave(t->c, t->room, on_left, t);
    } else if (!strcmp(cmd, "/kick") && argc == 2 && in_room) {
        err = fb_client_kick(t->c, t->room, argv[1], on_done, t);
    } else if (!strcmp(cmd, "/rename") && argc >= 2 && in_room) {
        err = fb_client_rename(t->c, t->room, rest, on_done, t);
    } else {
        notice(t, "%s%s",
               "commands: /direct USER, /group NAME USER..., /rooms, /quit; in a room: "
               "/invite USER..., /leave, /kick USER, /rename NAME",
               "");
    }
    if (err) notice_err(t, err, NULL);
}

static void submit_line(tui_t *t)
{
    char line[INPUT_MAX * 4 + 1];
    t->input[t->in_len] = 0;
    size_t n = wcstombs(line, t->input, sizeof line - 1);
    t->in_len = t->in_pos = 0;
    if (n == (size_t)-1) {
        notice(t, "%s%s", "the input is not valid in this locale", "");
        return;
    }
    line[n] = 0;
    if (!n) {
        if (t->view == VIEW_LIST && json_array_size(t->rooms))
            open_room(t, jint(json_array_get(t->rooms, (size_t)t->sel), "room"));
        return;
    }
    t->notice[0] = 0;
    if (line[0] == '/')
        command(t, line);
    else if (t->view == VIEW_ROOM)
        send_text(t, line);
    else
        notice(t, "%s%s", "open a room first (Enter), or /direct USER", "");
}

/* ---- keys ---- */

static void on_key(tui_t *t, int kind, wint_t ch)
{
    int rows = LINES - 3;
    if (kind == KEY_CODE_YES) {
        switch (ch) {
        case KEY_UP:
            if (t->view == VIEW_LIST && t->sel > 0) t->sel--;
            break;
        case KEY_DOWN:
            if (t->view == VIEW_LIST && t->sel + 1 < (int)json_array_size(t->rooms)) t->sel++;
            break;
        case KEY_PPAGE:
            if (t->view == VIEW_ROOM) {
                t->scroll += rows / 2;
                if (t->scroll > (int)t->n_lines - rows) {
                    t->scroll = FB_MAX(0, (int)t->n_lines - rows);
                    load_older(t);
                }
            }
            break;
        case KEY_NPAGE:
            t->scroll = FB_MAX(0, t->scroll - rows / 2);
            break;
        case KEY_LEFT:
            if (t->in_pos) t->in_pos--;
            break;
        case KEY_RIGHT:
            if (t->in_pos < t->in_len) t->in_pos++;
            break;
        case KEY_HOME:
            t->in_pos = 0;
            break;
        case KEY_END:
            t->in_pos = t->in_len;
            break;
        case KEY_BACKSPACE:
            goto backspace;
        case KEY_DC:
            if (t->in_pos < t->in_len) {
                memmove(&t->input[t->in_pos], &t->input[t->in_pos + 1],
                        (t->in_len - t->in_pos - 1) * sizeof(wchar_t));
                t->in_len--;
            }
            break;
        case KEY_ENTER:
            submit_line(t);
            break;
        }
        return;
    }
    if (ch == '\n' || ch == '\r') {
        submit_line(t);
    } else if (ch == 127 || ch == 8) {
    backspace:
        if (t->in_pos) {
            memmove(&t->input[t->in_pos - 1], &t->input[t->in_pos],
                    (t->in_len - t->in_pos) * sizeof(wchar_t));
            t->in_pos--;
            t->in_len--;
        }
    } else if (ch == 27) {
        if (t->view == VIEW_ROOM) to_list(t);
    } else if (ch == 21) { /* ^U */
        t->in_len = t->in_pos = 0;
    } else if (ch >= 32 && t->in_len < INPUT_MAX) {
        memmove(&t->input[t->in_pos + 1], &t->input[t->in_pos],
                (t->in_len - t->in_pos) * sizeof(wchar_t));
        t->input[t->in_pos++] = (wchar_t)ch;
        t->in_len++;
    }
}

static void on_stdin(uv_poll_t *p, int status, int events)
{
    tui_t *t = p->data;
    wint_t ch;
    int kind;
    while (!t->quit && (kind = get_wch(&ch)) != ERR) {
        if (kind == KEY_CODE_YES && ch == KEY_RESIZE) continue;
        on_key(t, kind, ch);
    }
    if (!t->quit) draw(t);
}

static void on_winch(uv_signal_t *s, int signum)
{
    tui_t *t = s->data;
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) resizeterm(ws.ws_row, ws.ws_col);
    draw(t);
}

static void on_sigint(uv_signal_t *s, int signum)
{
    ((tui_t *)s->data)->quit = true;
}

/* ---- drawing ---- */

/* Writes at most `width` columns of UTF-8 `s` (control characters shown as
 * spaces); returns the columns used. */
static int put_text(const char *s, int width)
{
    mbstate_t ps = {0};
    int used = 0;
    size_t len = strlen(s);
    while (len && used < width) {
        wchar_t wc;
        size_t n = mbrtowc(&wc, s, len, &ps);
        if (n == (size_t)-1 || n == (size_t)-2) {
            wc = L'?';
            n = 1;
            memset(&ps, 0, sizeof ps);
        } else if (n == 0) {
            break;
        }
        if (wc < 32) wc = L' ';
        int w = wcwidth(wc);
        if (w < 0) wc = L'?', w = 1;
        if (used + w > width) break;
        addnwstr(&wc, 1);
        used += w;
        s += n;
        len -= n;
    }
    return used;
}

static int text_width(const char *s)
{
    wchar_t buf[512];
    size_t n = mbstowcs(buf, s, 511);
    if (n == (size_t)-1) return (int)strlen(s);
    buf[n] = 0;
    int w = wcswidth(buf, n);
    return w < 0 ? (int)n : w;
}

static void draw_list(tui_t *t, int rows)
{
    size_t n = json_array_size(t->rooms);
    if (!n) {
        mvaddstr(2, 2, "no rooms yet: /direct USER or /group NAME USER...");
        return;
    }
    int first = t->sel >= rows ? t->sel - rows + 1 : 0;
    for (int i = 0; i < rows && (size_t)(first + i) < n; i++) {
        json_t *r = json_array_get(t->rooms, (size_t)(first + i));
        move(1 + i, 0);
        if (first + i == t->sel) attron(A_REVERSE);
        char badge[24] = "    ";
        if (jint(r, "unread") > 0)
            snprintf(badge, sizeof badge, "%3lld ", (long long)jint(r, "unread"));
        attron(A_BOLD);
        addstr(badge);
        attroff(A_BOLD);
        int used = 4 + put_text(room_label(r), 24);
        for (; used < 30; used++)
            addch(' ');
        json_t *last = json_object_get(r, "last");
        if (last) {
            used += put_text(jstr(json_object_get(last, "from"), "name"), 16);
            addstr(": ");
            used += 2 + put_text(jstr(last, "text"), COLS - used - 3);
        }
        for (; used < COLS; used++)
            addch(' ');
        attroff(A_REVERSE);
    }
}

static void draw_room(tui_t *t, int rows)
{
    int64_t me = fb_client_user_id(t->c);
    int shown = FB_MIN(rows, (int)t->n_lines);
    int last = (int)t->n_lines - 1 - t->scroll;
    int row = rows;
    if (t->more_history && last - shown < 0 && t->scroll) mvaddstr(1, 0, "  (PgUp for older)");
    for (int i = last; i >= 0 && row >= 1; i--, row--) {
        line_t *l = &t->lines[i];
        move(row, 0);
        char prefix[64] = "     ";
        if (l->ts) {
            time_t s = (time_t)(l->ts / 1000);
            struct tm tm;
            localtime_r(&s, &tm);
            strftime(prefix, sizeof prefix, "%H:%M", &tm);
        }
        addstr(prefix);
        addch(' ');
        char mark[48] = "";
        if (l->is_text) {
            int unread = l->seq ? fb_client_unread_for(t->c, t->room, l->seq, l->from) : 0;
            if (l->failed)
                snprintf(mark, sizeof mark, " not sent");
            else if (!l->seq)
                snprintf(mark, sizeof mark, " sending…");
            else if (unread && l->from == me)
                snprintf(mark, sizeof mark, " %d sent", unread);
            else if (unread)
                snprintf(mark, sizeof mark, " %d", unread);
            else if (l->from == me)
                snprintf(mark, sizeof mark, " sent");
        }
        int avail = COLS - 6 - text_width(mark) - 1;
        if (l->from == me) attron(A_BOLD);
        int used = put_text(l->from_name, FB_MIN(16, avail));
        attroff(A_BOLD);
        if (l->is_text) {
            addstr(": ");
            used += 2;
        } else {
            addch(' ');
            used += 1;
        }
        if (!l->is_text) attron(A_DIM);
        used += put_text(l->text, avail - used);
        attroff(A_DIM);
        for (; used < avail; used++)
            addch(' ');
        attron(A_BOLD);
        put_text(mark, COLS - 6 - used);
        attroff(A_BOLD);
    }
}

static void draw(tui_t *t)
{
    if (t->quit) return;
    erase();
    int rows = LINES - 3;
    move(0, 0);
    attron(A_REVERSE);
    char head[256];
    snprintf(head, sizeof head, " firebreak chat  %s  %s",
             fb_client_user(t->c) ? fb_client_user(t->c) : "",
             t->view == VIEW_LIST ? "rooms (Enter opens, /quit)" : t->title);
    int used = put_text(head, COLS);
    for (; used < COLS; used++)
        addch(' ');
    attroff(A_REVERSE);
    if (t->view == VIEW_LIST)
        draw_list(t, rows);
    else
        draw_room(t, rows);
    move(LINES - 2, 0);
    attron(A_REVERSE);
    used = put_text(t->status, COLS);
    if (t->notice[0] && used + 3 < COLS) {
        addstr(" | ");
        used += 3 + put_text(t->notice, COLS - used - 3);
    }
    for (; used < COLS; used++)
        addch(' ');
    attroff(A_REVERSE);
    /* the input line scrolls so the cursor stays visible */
    move(LINES - 1, 0);
    addstr("> ");
    int width = COLS - 3;
    size_t start = 0;
    int cur = 0;
    for (size_t i = 0; i < t->in_pos; i++)
        cur += FB_MAX(wcwidth(t->input[i]), 1);
    while (cur > width && start < t->in_pos)
        cur -= FB_MAX(wcwidth(t->input[start++]), 1);
    int col = 0;
    for (size_t i = start; i < t->in_len; i++) {
        int w = FB_MAX(wcwidth(t->input[i]), 1);
        if (col + w > width) break;
        addnwstr(&t->input[i], 1);
        col += w;
    }
    move(LINES - 1, 2 + cur);
    refresh();
}

/* ---- run ---- */

int fb_chat_tui_run(chat_args_t *a)
{
    tui_t *t = fb_calloc(1, sizeof *t);
    int rc = 0;
    t->a = a;
    setlocale(LC_ALL, "");
    uv_loop_init(&t->loop);
    fb_client_opts_t o = {
        .servers = a->servers,
        .state_path = a->state_path,
        .user = a->user,
        .password = a->password,
        .device = a->device ? a->device : "chat",
        .on_event = on_event,
        .on_state = on_state,
        .ud = t,
    };
    int err = fb_client_new(&t->loop, &o, &t->c);
    if (err) {
        fprintf(stderr, "firebreak chat: cannot start the client: %s\n", fb_err_message(err));
        uv_loop_close(&t->loop);
        fb_free(t);
        return CHAT_EXIT_USAGE;
    }
    fb_log_set_level(FB_LOG_OFF); /* log lines would scribble over the screen */
    initscr();
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    snprintf(t->status, sizeof t->status, "starting");
    uv_poll_init(&t->loop, &t->in_poll, STDIN_FILENO);
    t->in_poll.data = t;
    uv_poll_start(&t->in_poll, UV_READABLE, on_stdin);
    uv_signal_init(&t->loop, &t->winch);
    t->winch.data = t;
    uv_signal_start(&t->winch, on_winch, SIGWINCH);
    uv_signal_init(&t->loop, &t->sigint);
    t->sigint.data = t;
    uv_signal_start(&t->sigint, on_sigint, SIGINT);
    uv_timer_init(&t->loop, &t->refresh);
    t->refresh.data = t;
    fb_client_start(t->c);
    draw(t);
    while (!t->quit)
        uv_run(&t->loop, UV_RUN_ONCE);

    endwin();
    if (fb_client_state(t->c) == FB_CLIENT_STOPPED) {
        int why = fb_client_stop_reason(t->c);
        rc = fb_chat_exit_for(why, NULL);
    }
    if (fb_client_outbox_count(t->c))
        fprintf(stderr, "%zu message(s) not yet acknowledged stay in %s for the next run\n",
                fb_client_outbox_count(t->c), a->state_path);
    uv_close((uv_handle_t *)&t->in_poll, NULL);
    uv_close((uv_handle_t *)&t->winch, NULL);
    uv_close((uv_handle_t *)&t->sigint, NULL);
    uv_close((uv_handle_t *)&t->refresh, NULL);
    fb_client_free_sync(t->c);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    lines_clear(t);
    fb_free(t->lines);
    json_decref(t->rooms);
    fb_free(t);
    return rc;
}
