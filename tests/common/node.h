/* Test harness: runs a real `firebreak serve` on 127.0.0.1 with its data in
 * a fresh temporary folder, and stops, kills or restarts it by its PID.
 * Only for tests; never listens beyond loopback.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TEST_NODE_H
#define FB_TEST_NODE_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    char dir[256];  /* data dir (removed by fb_test_node_cleanup) */
    char addr[64];  /* "127.0.0.1:PORT" once started */
    char log[320];  /* the node's stderr */
    const char *extra[16]; /* more `serve` arguments, NULL-terminated */
} fb_test_node_t;

/* Starts a node on a free loopback port (fast argon2 settings for tests). */
int fb_test_node_start(fb_test_node_t *n);
/* Starts it again on the same data dir and port. */
int fb_test_node_restart(fb_test_node_t *n);
/* Sends sig (SIGTERM: orderly, SIGKILL: a crash) and reaps the process;
 * returns its exit status (or 128 + signal). */
int fb_test_node_stop(fb_test_node_t *n, int sig);
/* Stops it if running and removes its folder. */
void fb_test_node_cleanup(fb_test_node_t *n);
/* Path of the firebreak binary under test ($FIREBREAK_BIN or build/firebreak). */
const char *fb_test_bin(void);
/* Makes a temporary folder; returns 0. */
int fb_test_tmpdir(char *out, size_t n, const char *tag);

#endif
