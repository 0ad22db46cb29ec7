/* Entry point of `firebreak admin`.
 * SPDX-License-Identifier: MIT */
#ifndef FB_TOOLS_ADMIN_H
#define FB_TOOLS_ADMIN_H

int fb_tool_admin_main(int argc, char **argv);

#endif
