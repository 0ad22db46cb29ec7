/* `firebreak chat`: the command line, the password and state-file plumbing,
 * and the scriptable verbs (one line per item, or JSON lines), each a few
 * blocking calls on the client library. It never takes a password as an
 * argument and never speaks the protocol except through src/client.
 * SPDX-License-Identifier: MIT */
#include "tools/chat.h"
#include "tools/tools.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_PASSWORD 1024

static const char usage_text[] =
    "usage: firebreak chat [FLAGS]                 interactive (on a terminal)\n"
    "       firebreak chat [FLAGS] VERB [ARGS]     scripted\n"
    "\n"
    "verbs:\n"
    "  register                 create the account --user and log this device in\n"
    "  login                    log in as a new device (replaces the saved token)\n"
    "  logout                   log this device out (revokes its token)\n"
    "  rooms                    id, kind, name, unread, last message\n"
    "  direct USER              the 1:1 room with USER (prints its id)\n"
    "  group NAME [USER...]     create a group room (prints its id)\n"
    "  invite ROOM USER...      add users to a group room (prints the seq)\n"
    "  leave ROOM               leave a room\n"
    "  kick ROOM USER           remove USER (owner only)\n"
    "  rename ROOM NAME         rename a group room\n"
    "  send ROOM TEXT|-         send TEXT (or stdin with -); prints room, seq, ts once durable\n"
    "  history ROOM             seq, time, sender, text, unread  [--before SEQ] [--limit N]\n"
    "  tail ROOM                print new messages as they arrive [--count N] [--timeout S]\n"
    "  read ROOM SEQ            mark the room read up to SEQ\n"
    "\n"
    "flags:\n"
    "  --server ADDR[,ADDR...]  nodes to use, in order of preference (default 127.0.0.1:8080)\n"
    "  --user NAME              the account (required unless --state names one)\n"
    "  --state FILE             token, cursors, unsent messages (default ~/.firebreak/USER.json)\n"
    "  --password-file FILE     read the password from FILE's first line; else the\n"
    "                           FIREBREAK_PASSWORD variable; else a prompt on a terminal\n"
    "  --device NAME            device name at login/register (default \"chat\")\n"
    "  --json                   JSON lines instead of tab-separated columns\n"
    "  --wait S                 seconds to wait for a node and for each reply (default 10)\n"
    "  --before SEQ, --limit N  history paging\n"
    "  --count N, --timeout S   when tail stops\n"
    "\n"
    "exit status: 0 ok; 1 usage error; 2 could not connect to any node; 3 authentication\n"
    "failed; 4 the server refused the request (error: CODE: MESSAGE on stderr); 5 timeout.\n";

typedef struct {
    chat_args_t *a;
    uv_loop_t loop;
    fb_client_t *c;
    int wait_ms;
    /* tail */
    uv_signal_t sigint; /* lives until the loop is drained at exit */
    int64_t room;
    bool live, stop;
    long long printed;
} chat_t;

/* ---- errors ---- */

int fb_chat_exit_for(int err, const char *msg)
{
    if (err == FB_CLIENT_ETIMEDOUT) {
        fprintf(stderr, "error: timed out\n");
        return CHAT_EXIT_TIMEOUT;
    }
    fprintf(stderr, "error: %s: %s\n", fb_err_code(err), msg ? msg : fb_err_message(err));
    switch (err) {
    case FB_EBADCRED:
    case FB_EBADTOKEN:
    case FB_EEXPIRED:
    case FB_EUNAUTH:
        return CHAT_EXIT_AUTH;
    default:
        return CHAT_EXIT_REFUSED;
    }
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "firebreak chat: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(firebreak chat --help for usage)\n");
    return CHAT_EXIT_USAGE;
}

/* ---- password ---- */

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
}

static int read_password_file(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "firebreak chat: %s: %s\n", path, strerror(errno));
        return CHAT_EXIT_USAGE;
    }
    char buf[MAX_PASSWORD + 2] = {0};
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    chomp(buf);
    if (!ok || !*buf) return usage_error("%s: no password on the first line", path);
    *out = fb_strdup(buf);
    memset(buf, 0, sizeof buf);
    return 0;
}

static int prompt_password(char **out)
{
    if (!isatty(STDIN_FILENO))
        return usage_error("%s", "a password is needed: --password-file, FIREBREAK_PASSWORD "
                                 "or a terminal to prompt on");
    struct termios old, quiet;
    char buf[MAX_PASSWORD + 2] = {0};
    fprintf(stderr, "password: ");
    fflush(stderr);
    tcgetattr(STDIN_FILENO, &old);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    bool ok = fgets(buf, sizeof buf, stdin) != NULL;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fprintf(stderr, "\n");
    chomp(buf);
    if (!ok || !*buf) return usage_error("%s", "no password given");
    *out = fb_strdup(buf);
    memset(buf, 0, sizeof buf);
    return 0;
}

static int get_password(chat_args_t *a, const char *file)
{
    if (a->password) return 0;
    if (file) return read_password_file(file, &a->password);
    const char *env = getenv("FIREBREAK_PASSWORD");
    if (env && *env) {
        a->password = fb_strdup(env);
        return 0;
    }
    return prompt_password(&a->password);
}

/* ---- state file path ---- */

static int default_state_path(chat_args_t *a, char *buf, size_t n)
{
    const char *home = getenv("HOME");
    if (!home || !*home) return usage_error("%s", "no HOME: give --state FILE");
    snprintf(buf, n, "%s/.firebreak", home);
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "firebreak chat: %s: %s\n", buf, strerror(errno));
        return CHAT_EXIT_USAGE;
    }
    snprintf(buf, n, "%s/.firebreak/%s.json", home, a->user);
    return 0;
}

/* ---- the client ---- */

static void on_event(fb_client_t *c, json_t *ev, void *ud);

static int client_open(chat_t *ch, bool ignore_token)
{
    chat_args_t *a = ch->a;
    fb_client_opts_t o = {
        .servers = a->servers,
        .state_path = a->state_path,
        .user = a->user,
        .password = a->password,
        .ignore_token = ignore_token,
        .device = a->device,
        .on_event = on_event,
        .ud = ch,
        .connect_timeout_ms = FB_MIN(ch->wait_ms, 5000),
    };
    int err = fb_client_new(&ch->loop, &o, &ch->c);
    if (err == FB_EINVAL)
        return usage_error("%s", "bad --server list, or the state file "
                                 "belongs to another user");
    if (err) {
        fprintf(stderr, "firebreak chat: cannot read the state file %s\n", a->state_path);
        return CHAT_EXIT_USAGE;
    }
    return 0;
}

static int client_connect(chat_t *ch)
{
    int err = fb_client_connect_sync(ch->c, ch->wait_ms);
    if (!err) return 0;
    if (err == FB_EUNAVAIL) {
        fprintf(stderr, "error: could not connect to any node (%s)\n",
                ch->a->servers ? ch->a->servers : "127.0.0.1:8080");
        return CHAT_EXIT_CONNECT;
    }
    return fb_chat_exit_for(err, NULL);
}

/* Connects with the saved token, or logs in with a password when there is
 * none (asking for it only then). */
static int connect_authed(chat_t *ch, const char *password_file)
{
    int rc = client_open(ch, false);
    if (rc) return rc;
    if (!fb_client_token(ch->c)) {
        fb_client_free_sync(ch->c);
        ch->c = NULL;
        if ((rc = get_password(ch->a, password_file))) return rc;
        if ((rc = client_open(ch, false))) return rc;
    }
    return client_connect(ch);
}

static int call(chat_t *ch, json_t *req, json_t **reply)
{
    json_t *r = NULL;
    int err = fb_client_call_sync(ch->c, req, &r, ch->wait_ms);
    if (!err) {
        if (reply)
            *reply = r;
        else
            json_decref(r);
        return 0;
    }
    json_t *e = json_object_get(r, "error");
    int rc;
    if (err == FB_EUNAVAIL && !r) {
        fprintf(stderr, "error: lost the connection to %s\n", fb_client_addr(ch->c));
        rc = CHAT_EXIT_CONNECT;
    } else {
        rc = fb_chat_exit_for(err, json_string_value(json_object_get(e, "message")));
    }
    json_decref(r);
    return rc;
}

/* ---- printing ---- */

static void print_clean(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch == '\t' || ch == '\n' || ch == '\r' ? ' ' : ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

static void print_json_line(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    puts(s);
    void (*jfree)(void *);
    json_get_alloc_funcs(NULL, &jfree);
    jfree(s);
}

static const char *user_name(json_t *u)
{
    const char *n = json_string_value(json_object_get(u, "name"));
    return n ? n : "?";
}

static void format_time(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* What a non-text event says, for the text column. */
static void describe(json_t *ev, fb_buf_t *b)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *name = json_string_value(json_object_get(ev, "name"));
    json_t *target = json_object_get(ev, "target");
    if (!type) type = "?";
    if (!strcmp(type, "create"))
        fb_buf_appendf(b, "[create] created \"%s\"", name ? name : "");
    else if (!strcmp(type, "join"))
        fb_buf_appendf(b, "[join] added %s", user_name(target));
    else if (!strcmp(type, "leave"))
        fb_buf_appendf(b, "[leave] left");
    else if (!strcmp(type, "kick"))
        fb_buf_appendf(b, "[kick] removed %s", user_name(target));
    else if (!strcmp(type, "rename"))
        fb_buf_appendf(b, "[rename] renamed the room \"%s\"", name ? name : "");
    else
        fb_buf_appendf(b, "[%s]", type);
    fb_buf_append(b, "", 1);
}

static void print_event(chat_t *ch, json_t *ev)
{
    int64_t room = json_integer_value(json_object_get(ev, "room"));
    int64_t seq = json_integer_value(json_object_get(ev, "seq"));
    json_t *from = json_object_get(ev, "from");
    const char *type = json_string_value(json_object_get(ev, "type"));
    bool text = type && !strcmp(type, "text");
    int unread = text ? fb_client_unread_for(ch->c, room, seq,
                                             json_integer_value(json_object_get(from, "id")))
                      : 0;
    if (ch->a->json) {
        json_t *copy = json_deep_copy(ev);
        json_object_del(copy, "event");
        if (text) json_object_set_new(copy, "unread", json_integer(unread));
        print_json_line(copy);
        json_decref(copy);
        return;
    }
    char when[32];
    format_time(json_integer_value(json_object_get(ev, "ts")), when, sizeof when);
    printf("%lld\t%s\t", (long long)seq, when);
    print_clean(stdout, user_name(from));
    putchar('\t');
    if (text) {
        print_clean(stdout, json_string_value(json_object_get(ev, "text")));
        printf("\t%d\n", unread);
    } else {
        fb_buf_t b = {0};
        describe(ev, &b);
        print_clean(stdout, b.data);
        fb_buf_free(&b);
        printf("\t\n");
    }
}

static void on_event(fb_client_t *c, json_t *ev, void *ud)
{
    chat_t *ch = ud;
    if (!ch->live || ch->stop) return;
    const char *name = json_string_value(json_object_get(ev, "event"));
    if (!name || strcmp(name, "msg") != 0) return;
    if (json_integer_value(json_object_get(ev, "room")) != ch->room) return;
    print_event(ch, ev);
    fflush(stdout);
    ch->printed++;
    if (ch->a->count > 0 && ch->printed >= ch->a->count) ch->stop = true;
}

/* ---- arguments ---- */

static int parse_room(const char *s, int64_t *room)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v <= 0) return usage_error("not a room id: %s", s);
    *room = v;
    return 0;
}

static int need_args(int n, int want_min, int want_max, const char *verb)
{
    if (n < want_min || (want_max >= 0 && n > want_max))
        return usage_error("wrong number of arguments for %s", verb);
    return 0;
}

/* ---- verbs ---- */

static int verb_register(chat_t *ch, bool is_login, const char *password_file)
{
    int rc;
    if (!ch->a->user) return usage_error("%s", "--user is required");
    if ((rc = get_password(ch->a, password_file))) return rc;
    if (is_login) {
        /* the client logs in by itself when it has a password and no token */
        if ((rc = client_open(ch, true)) || (rc = client_connect(ch))) return rc;
    } else {
        chat_args_t *a = ch->a;
        char *pw = a->password;
        a->password = NULL; /* connect without logging in */
        rc = client_open(ch, true);
        a->password = pw;
        if (rc || (rc = client_connect(ch))) return rc;
        json_t *req = json_pack("{s:s,s:s,s:s,s:s}", "op", "register", "user", a->user, "password",
                                a->password, "device", a->device ? a->device : "chat");
        if (!req) return usage_error("%s", "the user name or password is not valid UTF-8");
        if ((rc = call(ch, req, NULL))) return rc;
    }
    if (ch->a->json) {
        json_t *j = json_pack("{s:s,s:I,s:I}", "user", fb_client_user(ch->c), "user_id",
                              (json_int_t)fb_client_user_id(ch->c), "device",
                              (json_int_t)fb_client_device_id(ch->c));
        print_json_line(j);
        json_decref(j);
    } else {
        printf("%s as %s (device %lld)\n", is_login ? "logged in" : "registered",
               fb_client_user(ch->c), (long long)fb_client_device_id(ch->c));
    }
    return 0;
}

static int verb_rooms(chat_t *ch)
{
    json_t *reply;
    int rc = call(ch, json_pack("{s:s}", "op", "rooms"), &reply);
    if (rc) return rc;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(reply, "rooms"), i, r)
    {
        if (ch->a->json) {
            print_json_line(r);
            continue;
        }
        const char *kind = json_string_value(json_object_get(r, "kind"));
        const char *name = json_string_value(json_object_get(r, "name"));
        if (kind && !strcmp(kind, "direct")) name = user_name(json_object_get(r, "peer"));
        json_t *last = json_object_get(r, "last");
        printf("%lld\t%s\t", (long long)json_integer_value(json_object_get(r, "room")),
               kind ? kind : "?");
        print_clean(stdout, name);
        printf("\t%lld\t", (long long)json_integer_value(json_object_get(r, "unread")));
        if (last) {
            print_clean(stdout, user_name(json_object_get(last, "from")));
            printf(": ");
            print_clean(stdout, json_string_value(json_object_get(last, "text")));
        }
        putchar('\n');
    }
    json_decref(reply);
    return 0;
}

/* Prints one integer field of the reply (or of its room object). */
static int call_print(chat_t *ch, json_t *req, const char *obj, const char *field)
{
    json_t *reply;
    if (!req) return usage_error("%s", "arguments are not valid UTF-8");
    int rc = call(ch, req, &reply);
    if (rc) return rc;
    json_t *src = obj ? json_object_get(reply, obj) : reply;
    if (ch->a->json)
        print_json_line(src ? src : reply);
    else
        printf("%lld\n", (long long)json_integer_value(json_object_get(src, field)));
    json_decref(reply);
    return 0;
}

static json_t *names_from(char **argv, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_string(argv[i]));
    return a;
}

static char *read_stdin_text(int max)
{
    fb_buf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        fb_buf_append(&b, chunk, n);
        if (b.len > (size_t)max + 2) break;
    }
    if (b.len && b.data[b.len - 1] == '\n') b.len--;
    if (b.len && b.data[b.len - 1] == '\r') b.len--;
    fb_buf_append(&b, "", 1);
    return b.data;
}

static int verb_send(chat_t *ch, int64_t room, const char *arg)
{
    char *stdin_text = NULL;
    const char *text = arg;
    if (!strcmp(arg, "-")) text = stdin_text = read_stdin_text(fb_client_max_text_bytes(ch->c));
    int rc = 0;
    json_t *reply = NULL;
    int err = fb_client_call_sync(
        ch->c, json_pack("{s:s,s:I,s:s}", "op", "send", "room", (json_int_t)room, "text", text),
        &reply, ch->wait_ms);
    if (err == FB_EINVAL && !reply) {
        rc = usage_error("%s", "empty or invalid text");
    } else if (err == FB_ETOOBIG && !reply) {
        rc = usage_error("%s", "text longer than the server's max_text_bytes");
    } else if (err == FB_CLIENT_ETIMEDOUT) {
        fprintf(stderr,
                "error: timed out waiting for the ack; the message stays in the outbox "
                "of %s and is resent by the next run\n",
                ch->a->state_path);
        rc = CHAT_EXIT_TIMEOUT;
    } else if (err) {
        json_t *e = json_object_get(reply, "error");
        rc = fb_chat_exit_for(err, json_string_value(json_object_get(e, "message")));
    } else if (ch->a->json) {
        json_object_del(reply, "id");
        json_object_del(reply, "ok");
        print_json_line(reply);
    } else {
        printf("%lld %lld %lld\n", (long long)json_integer_value(json_object_get(reply, "room")),
               (long long)json_integer_value(json_object_get(reply, "seq")),
               (long long)json_integer_value(json_object_get(reply, "ts")));
    }
    json_decref(reply);
    if (stdin_text) fb_free(stdin_text);
    return rc;
}

/* Member read markers first, so the unread column is current. */
static int load_members(chat_t *ch, int64_t room)
{
    return call(ch, json_pack("{s:s,s:I}", "op", "room", "room", (json_int_t)room), NULL);
}

static int verb_history(chat_t *ch, int64_t room)
{
    int rc = load_members(ch, room);
    if (rc) return rc;
    json_t *req = json_pack("{s:s,s:I}", "op", "history", "room", (json_int_t)room);
    if (ch->a->before > 0) json_object_set_new(req, "before", json_integer(ch->a->before));
    if (ch->a->limit > 0) json_object_set_new(req, "limit", json_integer(ch->a->limit));
    json_t *reply;
    if ((rc = call(ch, req, &reply))) return rc;
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(reply, "events"), i, ev)
    {
        if (!json_object_get(ev, "room")) json_object_set_new(ev, "room", json_integer(room));
        print_event(ch, ev);
    }
    json_decref(reply);
    return 0;
}

static void on_sigint(uv_signal_t *s, int signum)
{
    chat_t *ch = s->data;
    ch->stop = true;
}

static bool tail_done(void *arg)
{
    return ((chat_t *)arg)->stop;
}

static int verb_tail(chat_t *ch, int64_t room)
{
    int rc = load_members(ch, room);
    if (rc) return rc;
    uv_signal_init(&ch->loop, &ch->sigint);
    ch->sigint.data = ch;
    uv_signal_start(&ch->sigint, on_sigint, SIGINT);
    ch->room = room;
    ch->live = true;
    int ms = ch->a->timeout_set ? (int)(ch->a->timeout_s * 1000) : -1;
    fb_client_run_until(ch->c, tail_done, ch, ms); /* a timeout is the normal end */
    ch->live = false;
    uv_close((uv_handle_t *)&ch->sigint, NULL);
    return 0;
}

static int run_verb(chat_t *ch, int argc, char **argv, const char *password_file)
{
    const char *verb = argv[0];
    int n = argc - 1, rc;
    char **args = argv + 1;
    int64_t room = 0;
    if (!strcmp(verb, "register") || !strcmp(verb, "login")) {
        if ((rc = need_args(n, 0, 0, verb))) return rc;
        return verb_register(ch, !strcmp(verb, "login"), password_file);
    }

    static const struct {
        const char *verb;
        int min, max;
        bool room;
    } verbs[] = {
        {"logout", 0, 0, false}, {"rooms", 0, 0, false},  {"direct", 1, 1, false},
        {"group", 1, -1, false}, {"invite", 2, -1, true}, {"leave", 1, 1, true},
        {"kick", 2, 2, true},    {"rename", 2, 2, true},  {"send", 2, 2, true},
        {"history", 1, 1, true}, {"tail", 1, 1, true},    {"read", 2, 2, true},
    };
    size_t v;
    for (v = 0; v < FB_ARRAY_LEN(verbs); v++)
        if (!strcmp(verbs[v].verb, verb)) break;
    if (v == FB_ARRAY_LEN(verbs)) return usage_error("unknown verb '%s'", verb);
    if ((rc = need_args(n, verbs[v].min, verbs[v].max, verb))) return rc;
    if (verbs[v].room && (rc = parse_room(args[0], &room))) return rc;
    if ((rc = connect_authed(ch, password_file))) return rc;

    if (!strcmp(verb, "logout")) {
        if ((rc = call(ch, json_pack("{s:s}", "op", "logout"), NULL))) return rc;
        if (!ch->a->json) printf("logged out\n");
        return 0;
    }
    if (!strcmp(verb, "rooms")) return verb_rooms(ch);
    if (!strcmp(verb, "direct"))
        return call_print(ch, json_pack("{s:s,s:s}", "op", "direct", "user", args[0]), "room",
                          "room");
    if (!strcmp(verb, "group"))
        return call_print(ch,
                          json_pack("{s:s,s:s,s:o}", "op", "create_group", "name", args[0],
                                    "members", names_from(args + 1, n - 1)),
                          "room", "room");
    if (!strcmp(verb, "invite"))
        return call_print(ch,
                          json_pack("{s:s,s:I,s:o}", "op", "invite", "room", (json_int_t)room,
                                    "users", names_from(args + 1, n - 1)),
                          NULL, "seq");
    if (!strcmp(verb, "leave"))
        return call_print(ch, json_pack("{s:s,s:I}", "op", "leave", "room", (json_int_t)room), NULL,
                          "seq");
    if (!strcmp(verb, "kick"))
        return call_print(
            ch, json_pack("{s:s,s:I,s:s}", "op", "kick", "room", (json_int_t)room, "user", args[1]),
            NULL, "seq");
    if (!strcmp(verb, "rename"))
        return call_print(
            ch,
            json_pack("{s:s,s:I,s:s}", "op", "rename", "room", (json_int_t)room, "name", args[1]),
            NULL, "seq");
    if (!strcmp(verb, "send")) return verb_send(ch, room, args[1]);
    if (!strcmp(verb, "history")) return verb_history(ch, room);
    if (!strcmp(verb, "tail")) return verb_tail(ch, room);
    /* read */
    int64_t seq;
    if ((rc = parse_room(args[1], &seq))) return rc;
    return call_print(
        ch,
        json_pack("{s:s,s:I,s:I}", "op", "read", "room", (json_int_t)room, "seq", (json_int_t)seq),
        NULL, "read_seq");
}

/* ---- main ---- */

enum {
    OPT_SERVER = 256,
    OPT_USER,
    OPT_STATE,
    OPT_PWFILE,
    OPT_DEVICE,
    OPT_JSON,
    OPT_WAIT,
    OPT_BEFORE,
    OPT_LIMIT,
    OPT_COUNT,
    OPT_TIMEOUT,
    OPT_PASSWORD
};

static const struct option long_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"user", required_argument, NULL, OPT_USER},
    {"state", required_argument, NULL, OPT_STATE},
    {"password-file", required_argument, NULL, OPT_PWFILE},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"json", no_argument, NULL, OPT_JSON},
    {"wait", required_argument, NULL, OPT_WAIT},
    {"before", required_argument, NULL, OPT_BEFORE},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"count", required_argument, NULL, OPT_COUNT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_num(const char *s, int opt, double *out)
{
    const char *flag = "?";
    for (const struct option *o = long_opts; o->name; o++)
        if (o->val == opt) flag = o->name;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || v < 0) return usage_error("bad number for --%s", flag);
    *out = v;
    return 0;
}

int fb_tool_chat_main(int argc, char **argv)
{
    chat_args_t a = {0};
    chat_t ch = {.a = &a, .wait_ms = 10000};
    const char *password_file = NULL;
    char state_buf[4096];
    int rc = 0, opt;
    double num;
    optind = 0; /* a fresh scan: main may have used getopt */
    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (opt) {
        case OPT_SERVER:
            a.servers = optarg;
            break;
        case OPT_USER:
            a.user = optarg;
            break;
        case OPT_STATE:
            a.state_path = optarg;
            break;
        case OPT_PWFILE:
            password_file = optarg;
            break;
        case OPT_DEVICE:
            a.device = optarg;
            break;
        case OPT_JSON:
            a.json = true;
            break;
        case OPT_PASSWORD:
            return usage_error("%s", "passwords are never taken as arguments (they end up in "
                                     "shell history and ps): use --password-file or "
                                     "FIREBREAK_PASSWORD");
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case '?':
            return usage_error("%s", "bad flag");
        default:
            if ((rc = parse_num(optarg, opt, &num))) return rc;
            if (opt == OPT_WAIT) ch.wait_ms = (int)(num * 1000);
            if (opt == OPT_BEFORE) a.before = (long long)num;
            if (opt == OPT_LIMIT) a.limit = (long long)num;
            if (opt == OPT_COUNT) a.count = (long long)num;
            if (opt == OPT_TIMEOUT) a.timeout_s = num, a.timeout_set = true;
        }
    }
    if (!a.user && !a.state_path) return usage_error("%s", "--user is required");
    if (!a.state_path) {
        if ((rc = default_state_path(&a, state_buf, sizeof state_buf))) return rc;
        a.state_path = state_buf;
    }
    fb_log_set_level(FB_LOG_WARN);
    uv_loop_init(&ch.loop);
    if (optind >= argc) {
        if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
            rc = usage_error("%s", "no verb, and not on a terminal for the interactive mode");
        } else {
            if (!a.user) rc = usage_error("%s", "--user is required");
            if (!rc) {
                if ((rc = client_open(&ch, false)) == 0) {
                    bool has_token = fb_client_token(ch.c) != NULL;
                    fb_client_free_sync(ch.c);
                    ch.c = NULL;
                    if (!has_token) rc = get_password(&a, password_file);
                }
            }
            a.connect_timeout_ms = ch.wait_ms;
            if (!rc) rc = fb_chat_tui_run(&a);
        }
    } else {
        rc = run_verb(&ch, argc - optind, argv + optind, password_file);
    }
    if (ch.c) fb_client_free_sync(ch.c);
    uv_run(&ch.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ch.loop);
    if (a.password) {
        memset(a.password, 0, strlen(a.password));
        fb_free(a.password);
    }
    return rc;
}
