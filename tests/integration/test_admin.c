/* Closed registration and `firebreak admin add-user` against a real node, and
 * the contract's promise that no password is stored or logged in the clear
 * (the database, its WAL and the node's log are searched for it).
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "client/client.h"
#include "common/itest.h"
#include "common/node.h"

#define IO_MS 5000
static const char PASSWORD[] = "Correct-Horse-Battery-9417";

/* Runs `firebreak admin --config CONF --data-dir DIR ARGS` with `input` on
 * stdin (the node's own config names its store); exit status. */
static int admin(const fb_test_node_t *n, const char *args, const char *input)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s admin --config %s --data-dir %s/data %s > %s/admin.out 2>&1",
             fb_test_bin(), n->conf, n->dir, args, n->dir);
    FILE *p = popen(cmd, "w");
    assert_non_null(p);
    if (input) fputs(input, p);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static fb_client_t *connect_as(uv_loop_t *loop, const char *addr, const char *user,
                               const char *password, int *rc)
{
    fb_client_opts_t o = {.servers = addr, .user = user, .password = password, .device = "t"};
    fb_client_t *c;
    assert_int_equal(fb_client_new(loop, &o, &c), 0);
    *rc = fb_client_connect_sync(c, IO_MS);
    return c;
}

static void test_closed_registration_and_add_user(void **state)
{
    fb_test_node_t n = {.extra = {"--registration", "closed", NULL}};
    assert_int_equal(fb_test_node_start(&n), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);

    /* register is refused on a closed node */
    fb_client_opts_t o = {.servers = n.addr};
    fb_client_t *anon;
    assert_int_equal(fb_client_new(&loop, &o, &anon), 0);
    assert_int_equal(fb_client_connect_sync(anon, IO_MS), 0);
    json_t *reply = NULL;
    int rc = fb_client_call_sync(anon,
                                 json_pack("{s:s,s:s,s:s}", "op", "register", "user", "carol",
                                           "password", PASSWORD),
                                 &reply, IO_MS);
    assert_int_equal(rc, FB_ECLOSED);
    json_decref(reply);
    fb_client_free_sync(anon);

    /* the operator adds carol while the node runs; bad input is refused */
    char line[128];
    snprintf(line, sizeof line, "%s\n", PASSWORD);
    assert_int_equal(admin(&n, "add-user carol", line), 0);
    assert_int_equal(admin(&n, "add-user carol", line), 3);       /* taken */
    assert_int_equal(admin(&n, "add-user 'Bad Name'", line), 3);  /* invalid */
    assert_int_equal(admin(&n, "add-user dave", "short\n"), 3);   /* too short */
    assert_int_equal(admin(&n, "add-user", NULL), 1);             /* usage */
    assert_int_equal(admin(&n, "users", NULL), 0);
    char out[300];
    snprintf(out, sizeof out, "%s/admin.out", n.dir);
    assert_true(fb_test_file_contains(out, "carol"));
    assert_false(fb_test_file_contains(out, "dave"));

    /* carol logs in and chats with herself in a group */
    fb_client_t *carol = connect_as(&loop, n.addr, "carol", PASSWORD, &rc);
    assert_int_equal(rc, 0);
    reply = fb_itest_call(carol, json_pack("{s:s,s:s,s:[]}", "op", "create_group", "name",
                                           "notes", "members"),
                          IO_MS);
    json_decref(reply);
    fb_client_free_sync(carol);
    fb_client_t *wrong = connect_as(&loop, n.addr, "carol", "not-the-password", &rc);
    assert_int_equal(rc, FB_EBADCRED);
    fb_client_free_sync(wrong);

    /* the password is nowhere in the clear: the store on disk, node log */
    assert_int_equal(fb_test_node_stop(&n, SIGTERM), 0);
    const char *files[] = {"node.log", "admin.out"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s", n.dir, files[i]);
        if (fb_test_file_contains(path, PASSWORD))
            fail_msg("the password is in the clear in %s", path);
    }
    assert_int_equal(fb_test_node_store_contains(&n, PASSWORD), 0);
    /* what is stored instead, found by the same search */
    char hash[256];
    assert_int_equal(fb_test_node_query(&n, "SELECT pwhash FROM users WHERE name = 'carol'", hash,
                                        sizeof hash),
                     0);
    assert_int_equal(strncmp(hash, "$argon2id$", 10), 0);
    assert_int_equal(fb_test_node_store_contains(&n, hash), 1);
    uv_loop_close(&loop);
    fb_test_node_cleanup(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_registration_and_add_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
