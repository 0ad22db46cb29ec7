/* Spawning and stopping test nodes (see node.h). The node is started with
 * fork + exec; it is stopped by the PID we got, never by name.
 * SPDX-License-Identifier: MIT */
#include "common/node.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *fb_test_bin(void)
{
    const char *b = getenv("FIREBREAK_BIN");
    return b && *b ? b : "build/firebreak";
}

int fb_test_tmpdir(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "/tmp/fbtest-%s-XXXXXX", tag);
    return mkdtemp(out) ? 0 : -1;
}

static int spawn(fb_test_node_t *n, const char *listen)
{
    char ready[300], data[300];
    snprintf(ready, sizeof ready, "%s/ready", n->dir);
    snprintf(data, sizeof data, "%s/data", n->dir);
    snprintf(n->log, sizeof n->log, "%s/node.log", n->dir);
    unlink(ready);
    const char *argv[48] = {fb_test_bin(), "serve", "--listen", listen, "--data-dir", data,
                            "--ready-file", ready, "--set", "argon2_opslimit=1", "--set",
                            "argon2_memlimit_kib=8", "--log-level", "info"};
    int k = 14;
    for (int i = 0; n->extra[i] && k < 46; i++) argv[k++] = n->extra[i];
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no node behind */
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    n->pid = pid;
    /* Wait for the ready file (bounded: 15 s). */
    for (int i = 0; i < 1500; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            char line[64] = {0};
            bool ok = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            if (ok && strchr(line, '\n')) {
                line[strcspn(line, "\n")] = 0;
                snprintf(n->addr, sizeof n->addr, "%s", line);
                return 0;
            }
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            n->pid = 0;
            fprintf(stderr, "node exited during start; see %s\n", n->log);
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "node did not become ready; see %s\n", n->log);
    fb_test_node_stop(n, SIGKILL);
    return -1;
}

int fb_test_node_start(fb_test_node_t *n)
{
    if (!n->dir[0] && fb_test_tmpdir(n->dir, sizeof n->dir, "node") != 0) return -1;
    return spawn(n, "127.0.0.1:0");
}

int fb_test_node_restart(fb_test_node_t *n)
{
    return spawn(n, n->addr);
}

int fb_test_node_stop(fb_test_node_t *n, int sig)
{
    if (n->pid <= 0) return -1;
    kill(n->pid, sig);
    int st = 0;
    while (waitpid(n->pid, &st, 0) < 0 && errno == EINTR) {}
    n->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void fb_test_node_cleanup(fb_test_node_t *n)
{
    if (n->pid > 0) fb_test_node_stop(n, SIGTERM);
    if (n->dir[0] && !getenv("FB_KEEP_TEST_DIRS")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", n->dir);
    }
    n->dir[0] = 0;
}
