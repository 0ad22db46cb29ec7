/* The one binary: `firebreak VERB ...` dispatches to the node (serve) or to
 * a tool that speaks the protocol. It holds no logic of its own.
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "common/fb.h"
#include "server/server.h"
#include "tools/admin.h"
#include "tools/tools.h"

static void usage(FILE *f)
{
    fprintf(f, "firebreak %s: a messenger that survives the loss of a data center\n\n"
               "usage: firebreak VERB [ARGS]\n\n"
               "  serve     run a node (firebreak serve --help)\n"
               "  chat      the terminal client, interactive or scripted (firebreak chat --help)\n"
               "  admin     operator commands on a node's store (firebreak admin --help)\n"
               "  drill     fault drill: load, a fault, then check nothing acked was lost\n"
               "  bench     the load generator and the machine's limits (firebreak bench --help)\n"
               "  version   print the version\n",
            FB_VERSION);
}

int main(int argc, char **argv)
{
    fb_mem_install_hooks();
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "serve") == 0) return fb_server_main(argc - 1, argv + 1);
    if (strcmp(verb, "chat") == 0) return fb_tool_chat_main(argc - 1, argv + 1);
    if (strcmp(verb, "admin") == 0) return fb_tool_admin_main(argc - 1, argv + 1);
    if (strcmp(verb, "drill") == 0) return fb_tool_drill_main(argc - 1, argv + 1);
    if (strcmp(verb, "bench") == 0) return fb_tool_bench_main(argc - 1, argv + 1);
    if (strcmp(verb, "version") == 0 || strcmp(verb, "--version") == 0) {
        printf("firebreak %s (protocol %d)\n", FB_VERSION, FB_PROTOCOL_VERSION);
        return 0;
    }
    if (strcmp(verb, "help") == 0 || strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "firebreak: unknown verb '%s'\n\n", verb);
    usage(stderr);
    return 1;
}
