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

/* Runs `firebreak admin --data-dir DIR ARGS` with `input` on stdin; exit status. */
static int admin(const fb_test_node_t *n, const char *args, const char *input)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s admin --data-dir %s/data %s > %s/admin.out 2>&1", fb_test_bin(),
             n->dir, args, n->dir);
    FILE *p = popen(cmd, "w");
    assert_non_null(p);
    if (input) fputs(input, p);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = strlen(needle), cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    bool found = false;
    size_t got;
    /* Overlapping reads, so that a match across two reads is not missed. */
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (memmem(buf, len, needle, n)) found = true;
        if (len > n) {
            memmove(buf, buf + len - n, n);
            len = n;
        }
    }
    free(buf);
    fclose(f);
    return found;
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
    assert_true(file_contains(out, "carol"));
    assert_false(file_contains(out, "dave"));

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

    /* the password is nowhere in the clear: database, WAL, node log */
    assert_int_equal(fb_test_node_stop(&n, SIGTERM), 0);
    const char *files[] = {"data/firebreak.db", "data/firebreak.db-wal", "node.log", "admin.out"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%s", n.dir, files[i]);
        if (file_contains(path, PASSWORD)) fail_msg("the password is in the clear in %s", path);
    }
    char db[400];
    snprintf(db, sizeof db, "%s/data/firebreak.db", n.dir);
    assert_true(file_contains(db, "$argon2id$")); /* what is stored instead */
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
