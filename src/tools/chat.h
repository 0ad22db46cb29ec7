/* What the scriptable verbs of `firebreak chat` (chat.c) and its interactive
 * screen (chat_tui.c) share: the parsed command line and the exit statuses.
 * Neither may reach past the client library to the protocol.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TOOLS_CHAT_H
#define FB_TOOLS_CHAT_H

#include "client/client.h"

/* Exit statuses, as documented in docs/chat.md and --help. */
enum {
    CHAT_EXIT_OK = 0,
    CHAT_EXIT_USAGE = 1,
    CHAT_EXIT_CONNECT = 2,
    CHAT_EXIT_AUTH = 3,
    CHAT_EXIT_REFUSED = 4,
    CHAT_EXIT_TIMEOUT = 5,
};

typedef struct {
    const char *servers;
    const char *user;
    const char *state_path;
    const char *device;
    char *password; /* wiped and freed at exit */
    bool json;
    int connect_timeout_ms;
    long long before, limit, count;
    double timeout_s; /* tail: stop after; other verbs: per-request limit */
    bool timeout_set;
} chat_args_t;

/* The interactive screen; returns an exit status. */
int fb_chat_tui_run(chat_args_t *a);

/* Maps a client error to an exit status, printing `error: code: message`. */
int fb_chat_exit_for(int err, const char *msg);

#endif
