/* `firebreak drill` against one node: a run where the node is SIGKILLed and
 * restarted mid-load must find nothing lost, duplicated or out of order and
 * must measure the outage it caused; a run where the node's data is rolled
 * back to an earlier copy must find the acknowledged messages that vanished
 * and fail. The drill runs as a subprocess ($FIREBREAK_BIN drill); its fault
 * and heal commands ask this process, through request files, to kill,
 * restart, snapshot or restore the node, so the node stays our child.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/node.h"
#include "common/pg.h"

#define DRILL_WAIT_S 60 /* a drill that takes longer is killed and the test fails */

typedef struct {
    fb_test_node_t node;
    char ctl[300];    /* request files from the drill's commands */
    char script[300]; /* ctl.sh: the fault and heal commands */
    int actions;
} dt_t;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* rm -rf TO && cp -a FROM TO */
static int copy_dir(const char *from, const char *to)
{
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
    return system(cmd);
}

/* ---- the node's side of the fault and heal commands ---- */

static int do_action(dt_t *t, const char *action, char *msg, size_t n)
{
    fb_test_node_t *node = &t->node;
    char data[300], snap[300];
    snprintf(data, sizeof data, "%s/data", node->dir);
    snprintf(snap, sizeof snap, "%s/snap", node->dir);
    if (!strcmp(action, "kill")) {
        int st = fb_test_node_stop(node, SIGKILL);
        snprintf(msg, n, "node killed (status %d)", st);
        return st == 128 + SIGKILL ? 0 : 1;
    }
    bool snapshot = !strcmp(action, "snapshot"), restore = !strcmp(action, "restore");
    if (!strcmp(action, "restart") || snapshot || restore) {
        if (snapshot || restore) fb_test_node_stop(node, SIGKILL);
        /* a copy of what a crash left: the database with its WAL */
        if (snapshot && copy_dir(data, snap) != 0) {
            snprintf(msg, n, "snapshot failed");
            return 1;
        }
        if (restore && copy_dir(snap, data) != 0) {
            snprintf(msg, n, "restore failed");
            return 1;
        }
        if (fb_test_node_restart(node) != 0) {
            snprintf(msg, n, "restart failed (see the node's log)");
            fprintf(stderr, "restart failed; see %s\n", node->log);
            return 1;
        }
        snprintf(msg, n, "node %s, pid %d", action, (int)node->pid);
        return 0;
    }
    snprintf(msg, n, "unknown action %s", action);
    return 1;
}

/* Answers one pending request file, if any. */
static void serve_requests(dt_t *t)
{
    static const char *actions[] = {"kill", "restart", "snapshot", "restore"};
    for (size_t i = 0; i < sizeof actions / sizeof *actions; i++) {
        char req[400], done[400], tmp[420], msg[400];
        snprintf(req, sizeof req, "%s/%s.req", t->ctl, actions[i]);
        if (access(req, F_OK) != 0) continue;
        unlink(req);
        int st = do_action(t, actions[i], msg, sizeof msg);
        t->actions++;
        snprintf(done, sizeof done, "%s/%s.done", t->ctl, actions[i]);
        snprintf(tmp, sizeof tmp, "%s.tmp", done);
        FILE *f = fopen(tmp, "w");
        assert_non_null(f);
        fprintf(f, "%d %s\n", st, msg);
        fclose(f);
        assert_int_equal(rename(tmp, done), 0);
    }
}

static void write_script(dt_t *t)
{
    snprintf(t->ctl, sizeof t->ctl, "%s/ctl", t->node.dir);
    snprintf(t->script, sizeof t->script, "%s/ctl.sh", t->node.dir);
    assert_int_equal(mkdir(t->ctl, 0700), 0);
    FILE *f = fopen(t->script, "w");
    assert_non_null(f);
    fprintf(f,
            "#!/bin/sh\n"
            "# ctl.sh ACTION: asks the test to act on its node; waits (10 s at most)\n"
            "d='%s'\n"
            "rm -f \"$d/$1.done\"\n"
            ": > \"$d/$1.req\"\n"
            "i=0\n"
            "while [ ! -e \"$d/$1.done\" ]; do\n"
            "  sleep 0.02; i=$((i + 1))\n"
            "  if [ $i -gt 500 ]; then echo \"no answer to $1\"; exit 2; fi\n"
            "done\n"
            "read st msg < \"$d/$1.done\"\n"
            "echo \"$msg\"\n"
            "exit \"$st\"\n",
            t->ctl);
    fclose(f);
    assert_int_equal(chmod(t->script, 0700), 0);
}

/* ---- running the drill ---- */

static void print_file(const char *path, const char *prefix)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        print_message("%s%s", prefix, line);
    fclose(f);
}

/* Runs `firebreak drill ARGS... --json FILE` and serves its requests until it
 * exits. Returns its exit status; *report is its JSON report (or NULL). */
static int run_drill(dt_t *t, const char *const *args, json_t **report)
{
    char out[300], log[300], json[300];
    snprintf(out, sizeof out, "%s/drill.out", t->node.dir);
    snprintf(log, sizeof log, "%s/drill.log", t->node.dir);
    snprintf(json, sizeof json, "%s/drill.json", t->node.dir);
    unlink(json);
    const char *argv[64] = {fb_test_bin(), "drill"};
    int k = 2;
    for (int i = 0; args[i] && k < 60; i++)
        argv[k++] = args[i];
    argv[k++] = "--json";
    argv[k++] = json;
    argv[k] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo >= 0) dup2(fo, 1);
        if (fe >= 0) dup2(fe, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    time_t start = time(NULL);
    for (;;) {
        serve_requests(t);
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) break;
        if (time(NULL) - start > DRILL_WAIT_S) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            print_file(log, "drill log: ");
            fail_msg("the drill ran for more than %d s", DRILL_WAIT_S);
        }
        sleep_ms(20);
    }
    print_file(out, "");
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    json_error_t jerr;
    *report = json_load_file(json, 0, &jerr);
    if (!*report || rc >= 128) {
        print_file(log, "drill log: ");
        if (!*report) fail_msg("no JSON report (exit %d): %s", rc, jerr.text);
    }
    return rc;
}

static int64_t jnum(json_t *j, const char *path)
{
    /* "a.b": one level of nesting is all the report has */
    char key[64];
    snprintf(key, sizeof key, "%s", path);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = 0;
        j = json_object_get(j, key);
        path = path + (dot - key) + 1;
    }
    json_t *v = json_object_get(j, dot ? path : key);
    if (!json_is_number(v)) fail_msg("report: %s is not a number", path);
    return (int64_t)json_number_value(v);
}

/* ---- fixtures ---- */

static int setup(void **state)
{
    dt_t *t = calloc(1, sizeof *t);
    if (!t) return -1;
    *state = t;
    return fb_test_node_start(&t->node);
}

static int teardown(void **state)
{
    dt_t *t = *state;
    if (!t) return 0;
    fb_test_node_cleanup(&t->node);
    free(t);
    return 0;
}

/* ---- tests ---- */

/* The node is SIGKILLed 2 s into the load and restarted 1 s later. */
static void test_drill_kill_restart(void **state)
{
    dt_t *t = *state;
    write_script(t);
    char fault[400], heal[400];
    snprintf(fault, sizeof fault, "%s kill", t->script);
    snprintf(heal, sizeof heal, "%s restart", t->script);
    const char *args[] = {
        "--sites",         t->node.addr, "--senders",        "6",   "--readers",       "3",
        "--rooms",         "3",          "--rate",           "300", "--duration",      "6s",
        "--fault-cmd",     fault,        "--fault-at",       "2s",  "--fault-site",    "1",
        "--heal-cmd",      heal,         "--heal-at",        "+1s", "--setup-timeout", "20s",
        "--drain-timeout", "20s",        "--verify-timeout", "20s", "--quiet",         NULL};
    json_t *r = NULL;
    int rc = run_drill(t, args, &r);
    assert_int_equal(rc, 0);
    assert_string_equal(json_string_value(json_object_get(r, "result")), "pass");
    assert_int_equal(t->actions, 2);
    assert_int_equal(jnum(r, "lost"), 0);
    assert_int_equal(jnum(r, "duplicated"), 0);
    assert_int_equal(jnum(r, "reordered"), 0);
    assert_int_equal(jnum(r, "gaps"), 0);
    assert_int_equal(jnum(r, "diverged"), 0);
    assert_int_equal(jnum(r, "unacked_at_end"), 0);
    int64_t sent = jnum(r, "sent");
    assert_true(sent >= 1000); /* ~300/s for 6 s, less what piled up in the outage */
    assert_int_equal(jnum(r, "acked"), sent);
    assert_true(jnum(r, "checks.text_events") >= sent);
    assert_int_equal(jnum(r, "checks.read_back_passes"), 1);
    /* nothing could be acked between the kill and the restart a second
     * later: the drill must have seen that much silence */
    assert_true(jnum(r, "write_outage.ms") >= 950);
    assert_true(jnum(r, "write_outage.ms") < 15000);
    /* the site probe (its own client and thread) and the readers both
     * went without an answer while the node was down */
    assert_true(jnum(r, "read_outage.all_ms") >= 950);
    assert_true(jnum(r, "read_outage.probes_ok") > 10);
    assert_true(jnum(r, "read_outage.readers_all_ms") >= 950);
    json_t *sites = json_object_get(json_object_get(r, "read_outage"), "sites");
    assert_int_equal(json_array_size(sites), 1);
    assert_true(json_is_null(json_object_get(json_array_get(sites, 0), "setup_error")));
    assert_true(jnum(r, "drill_stall.ms") >= 10); /* at least one tick apart */
    assert_int_equal(jnum(r, "fault.exit_status"), 0);
    assert_int_equal(jnum(r, "heal.exit_status"), 0);
    json_decref(r);
}

/* The node's data is copied 1.5 s in and put back 2 s later: what was acked
 * in between is gone, and the drill must say so. */
static void test_drill_detects_loss(void **state)
{
    dt_t *t = *state;
    /* the loss is made by putting an old copy of the node's data dir back:
     * a node on PostgreSQL keeps nothing there */
    if (fb_test_pg_nodes()) skip();
    write_script(t);
    char fault[400], heal[400];
    snprintf(fault, sizeof fault, "%s snapshot", t->script);
    snprintf(heal, sizeof heal, "%s restore", t->script);
    const char *args[] = {
        "--sites",          t->node.addr, "--senders",       "4",    "--readers",       "2",
        "--rooms",          "2",          "--rate",          "200",  "--duration",      "5s",
        "--fault-cmd",      fault,        "--fault-at",      "1.5s", "--heal-cmd",      heal,
        "--heal-at",        "3.5s",       "--setup-timeout", "20s",  "--drain-timeout", "20s",
        "--verify-timeout", "20s",        "--quiet",         NULL};
    json_t *r = NULL;
    int rc = run_drill(t, args, &r);
    assert_int_equal(rc, 4);
    assert_string_equal(json_string_value(json_object_get(r, "result")), "fail");
    assert_int_equal(t->actions, 2);
    int64_t lost = jnum(r, "lost");
    /* about 2 s at 200/s were acked between the copy and its return */
    assert_true(lost >= 100);
    assert_true(lost <= jnum(r, "acked"));
    /* the readers were handed the history that was rolled back */
    assert_true(jnum(r, "diverged") > 0);
    /* read again once in case a replica lagged; a real loss does not shrink */
    assert_int_equal(jnum(r, "checks.read_back_passes"), 2);
    char want[64];
    snprintf(want, sizeof want, "lost %lld", (long long)lost);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "failures"), 0)), want);
    json_decref(r);
}

/* Bad flags are usage errors; no node answering is a setup error. */
static void test_drill_usage_and_setup_errors(void **state)
{
    dt_t *t = *state;
    struct {
        const char *args[10];
        int rc;
    } cases[] = {
        {{"--help"}, 0},
        {{"--senders", "4"}, 1},
        {{"--sites", "127.0.0.1"}, 1},
        {{"--sites", "127.0.0.1:9", "--fault-at", "2s"}, 1},
        {{"--sites", "127.0.0.1:9", "--fault-cmd", "true", "--fault-at", "50s"}, 1},
        {{"--sites", "127.0.0.1:9", "--fault-cmd", "true", "--heal-cmd", "true", "--heal-at", "5s"},
         1},
        {{"--sites", "127.0.0.1:9", "--user-prefix", "Bad!"}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *argv[16] = {fb_test_bin(), "drill"};
        int k = 2;
        for (int j = 0; cases[i].args[j]; j++)
            argv[k++] = cases[i].args[j];
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != cases[i].rc)
            fail_msg("case %zu (%s ...): exit %d, expected %d", i, cases[i].args[0],
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1, cases[i].rc);
    }
    /* a node that is gone: setup fails within --setup-timeout */
    char addr[64];
    snprintf(addr, sizeof addr, "%s", t->node.addr);
    fb_test_node_stop(&t->node, SIGTERM);
    const char *args[] = {"--sites", addr, "--setup-timeout", "1s", "--duration", "1s", NULL};
    json_t *r = NULL;
    time_t start = time(NULL);
    assert_int_equal(run_drill(t, args, &r), 2);
    assert_true(time(NULL) - start <= 10);
    assert_string_equal(json_string_value(json_object_get(r, "result")), "error");
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drill_kill_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drill_detects_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drill_usage_and_setup_errors, setup, teardown),
    };
    if (getenv("FB_TEST_FILTER")) cmocka_set_test_filter(getenv("FB_TEST_FILTER"));
    return cmocka_run_group_tests_name("drill", tests, NULL, NULL);
}
