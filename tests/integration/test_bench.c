/* `firebreak bench` against a real node, as a smoke test and never as a
 * timed pass/fail: the kakao mix at a modest rate runs and loses nothing,
 * several load processes and loops agree on the check, the jansson-only
 * path agrees with the fast one, and a node that dies mid-run is reported
 * as a failure (so the check can fail at all).
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/node.h"

/* Runs cmd and reads the JSON it prints; its exit status in *status. */
static json_t *run_json(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t err;
    json_t *j = json_loadf(p, 0, &err);
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (!j) print_error("%s: no JSON result (%s), status %d\n", cmd, err.text, *status);
    return j;
}

/* Runs `firebreak bench ARGS --server ADDR --json -`; the parsed JSON
 * result (NULL if there was none) and the exit status. */
static json_t *bench(const fb_test_node_t *n, const char *args, int *status)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s bench %s --server %s --json - --quiet --password bench-password-1",
             fb_test_bin(), args, n->addr);
    return run_json(cmd, status);
}

static int64_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return (int64_t)json_integer_value(v);
}

static void assert_clean(json_t *r)
{
    assert_int_equal(jint(r, "lost"), 0);
    assert_int_equal(jint(r, "duplicated"), 0);
    assert_int_equal(jint(r, "extra"), 0);
    assert_int_equal(jint(r, "content_mismatch"), 0);
    assert_int_equal(jint(r, "unchecked"), 0);
    assert_int_equal(jint(r, "errors"), 0);
    assert_true(json_is_true(json_object_get(r, "passed")));
    assert_true(jint(r, "acked") > 0);
    assert_true(jint(r, "deliveries") >= jint(r, "acked"));
    assert_true(jint(r, "receivers") > 0);
}

/* bench limits: every probe reports a rate; the fan-out runs twice, 16
 * messages per write and one message per write. */
static void test_limits(void **state)
{
    char dir[] = "/tmp/fb_limits_XXXXXX", cmd[512];
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "%s bench limits --data-dir %s --duration 300ms --members 50 "
             "--conns 10 --json -", fb_test_bin(), dir);
    int st;
    json_t *r = run_json(cmd, &st);
    assert_int_equal(st, 0);
    rmdir(dir);
    assert_non_null(r);
    const char *probe[] = {"fsync", "sqlite", "echo", "fanout", "fanout_single"};
    const char *key[] = {"per_s", "rows_per_s", "msgs_per_s", "deliveries_per_s", "deliveries_per_s"};
    for (int i = 0; i < 5; i++) {
        json_t *v = json_object_get(json_object_get(r, probe[i]), key[i]);
        if (!json_is_number(v) || json_number_value(v) <= 0)
            fail_msg("bench limits: no %s.%s", probe[i], key[i]);
    }
    assert_int_equal(jint(json_object_get(r, "fanout"), "per_write"), 16);
    assert_int_equal(jint(json_object_get(r, "fanout_single"), "per_write"), 1);
    json_decref(r);
}

static void test_kakao_smoke(void **state)
{
    fb_test_node_t n = {0};
    assert_int_equal(fb_test_node_start(&n), 0);
    int st;
    json_t *r = bench(&n, "kakao --rate 500 --duration 3s --warmup 500ms --users 400 --reconnects 20", &st);
    assert_non_null(r);
    assert_clean(r);
    assert_int_equal(st, 0);
    json_t *c = json_object_get(r, "counters");
    assert_true(jint(c, "reconnects") > 0); /* devices did drop, resync and resend */
    assert_true(jint(c, "reads_acked") > 0);
    assert_true(jint(c, "fast_frames") > jint(c, "slow_frames"));
    json_decref(r);
    fb_test_node_cleanup(&n);
}

/* Two load processes of two loops each: the receivers' records travel
 * between processes to be checked against the rooms' owners. */
static void test_procs_and_threads_agree(void **state)
{
    fb_test_node_t n = {0};
    assert_int_equal(fb_test_node_start(&n), 0);
    int st;
    json_t *r = bench(&n, "fanout --members 60 --senders 2 --rate 200 --duration 2s --warmup 0 "
                          "--procs 2 --threads 2",
                      &st);
    assert_non_null(r);
    assert_clean(r);
    assert_int_equal(st, 0);
    assert_int_equal(jint(r, "receivers"), 60);
    assert_int_equal(jint(r, "deliveries"), 60 * jint(r, "acked"));
    json_decref(r);
    r = bench(&n, "ingest --senders 8 --rooms 4 --members 3 --window 8 --duration 2s --warmup 0 "
                  "--threads 2 --full-parse",
              &st);
    assert_non_null(r);
    assert_clean(r);
    assert_int_equal(st, 0);
    assert_int_equal(jint(r, "deliveries"), 3 * jint(r, "acked"));
    json_t *c = json_object_get(r, "counters");
    assert_int_equal(jint(c, "fast_frames"), 0); /* --full-parse: jansson for every frame */
    json_decref(r);
    fb_test_node_cleanup(&n);
}

/* The idle connections scenario counts the connections it held and pings
 * every one of them before closing; an idle authenticated connection costs
 * the node at most 4 KiB (without AddressSanitizer, whose quarantine keeps
 * freed memory resident on purpose). */
static void test_connections(void **state)
{
    fb_test_node_t n = {0};
    assert_int_equal(fb_test_node_start(&n), 0);
    char args[128];
    snprintf(args, sizeof args, "connections --conns 1000 --users 10 --duration 1s --procs 2 --node-pid %d",
             (int)n.pid);
    int st;
    json_t *r = bench(&n, args, &st);
    assert_non_null(r);
    assert_int_equal(st, 0);
    json_t *c = json_object_get(r, "counters"), *node = json_object_get(r, "node");
    assert_int_equal(jint(c, "connected"), 1000);
    assert_int_equal(jint(c, "pings_ok"), 1000);
    assert_true(json_number_value(json_object_get(node, "open_connections")) >= 1000);
    assert_true(json_is_integer(json_object_get(node, "rss_after_kib")));
#ifndef __SANITIZE_ADDRESS__
    double per_conn = json_number_value(json_object_get(node, "rss_per_conn_bytes"));
    if (per_conn > 4096) fail_msg("%.0f bytes of node RSS per idle connection (bound 4096)", per_conn);
#endif
    json_decref(r);
    fb_test_node_cleanup(&n);
}

/* A node killed in the middle of a run: the bench must say so. */
static void test_dead_node_fails_the_run(void **state)
{
    fb_test_node_t n = {0};
    assert_int_equal(fb_test_node_start(&n), 0);
    pid_t node = n.pid;
    pid_t killer = fork();
    assert_true(killer >= 0);
    if (killer == 0) {
        usleep(1500 * 1000);
        kill(node, SIGKILL);
        _exit(0);
    }
    int st;
    json_t *r = bench(&n, "ingest --senders 4 --rooms 4 --members 2 --rate 400 --duration 4s "
                          "--warmup 0 --drain 1s",
                      &st);
    waitpid(killer, NULL, 0);
    assert_non_null(r);
    assert_int_equal(st, 1);
    assert_false(json_is_true(json_object_get(r, "passed")));
    assert_true(jint(r, "errors") > 0);
    json_decref(r);
    fb_test_node_stop(&n, SIGKILL);
    fb_test_node_cleanup(&n);
}

/* A kakao run at rate 0 would send nothing and pass: refused as usage. */
static void test_kakao_rate_zero_refused(void **state)
{
    /* refused before any connection: no node needed (nothing listens there) */
    fb_test_node_t n = {.addr = "127.0.0.1:9"};
    int st;
    json_t *r = bench(&n, "kakao --rate 0 --duration 2s", &st);
    assert_null(r);
    assert_int_equal(st, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kakao_smoke),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_procs_and_threads_agree),
        cmocka_unit_test(test_connections),
        cmocka_unit_test(test_dead_node_fails_the_run),
        cmocka_unit_test(test_kakao_rate_zero_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
