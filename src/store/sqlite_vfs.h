/* The SQLite VFS the store opens its databases with: SQLite's own, with a
 * WAL file's appends gathered into large writes (sqlite_vfs.c).
 * SPDX-License-Identifier: MIT */
#ifndef FB_SQLITE_VFS_H
#define FB_SQLITE_VFS_H

#include <stdint.h>

#define FB_SQLITE_VFS "firebreak-wal"

/* Registers the VFS once per process (not as the default); SQLITE_OK or
 * SQLite's error. Safe to call from any thread, any number of times. Also
 * turns SQLite's memory statistics off, process-wide, when SQLite is not
 * initialised yet (they cost a global mutex per allocation). */
int fb_sqlite_vfs_init(void);

/* Since the process started: writes SQLite asked of WAL files, and the
 * pwrite calls they became (for tests and profiles). */
void fb_sqlite_vfs_stats(uint64_t *wal_writes, uint64_t *wal_pwrites);

#endif
