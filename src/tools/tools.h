/* Entry points of the tools that speak the protocol, dispatched by src/main.c
 * (`firebreak chat ...`). Each takes argv with argv[0] the tool's name and
 * returns the process exit status; none may assume it owns main.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TOOLS_H
#define FB_TOOLS_H

/* `firebreak chat`: the terminal client (docs/chat.md). */
int fb_tool_chat_main(int argc, char **argv);
/* `firebreak drill`: the fault drill and checker (docs/drill.md). */
int fb_tool_drill_main(int argc, char **argv);
/* `firebreak bench`: the load generator (docs/benchmarks.md). */
int fb_tool_bench_main(int argc, char **argv);

#endif
