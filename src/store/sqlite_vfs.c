/* A SQLite VFS that gathers the write-ahead log's appends into large writes.
 *
 * SQLite writes each WAL frame with two pwrite calls (its 24-byte header,
 * then the page), so a commit that dirtied 600 pages costs 1,200 system
 * calls; on the bench's kakao mix (messages spread over thousands of rooms,
 * one dirty page per room) those calls were the writer thread's largest
 * cost. This VFS passes everything to SQLite's own (unix) VFS except a WAL
 * file's writes: a write that continues the previous one is appended to a
 * buffer, which goes out in one pwrite when it is full, when a write lands
 * elsewhere, and before anything that must see the file as written (a sync,
 * read, truncate, size, lock change, file control or close).
 *
 * Why no acknowledged byte can be lost or misread:
 *  - durability: SQLite treats WAL data as durable only after xSync, and
 *    xSync writes the buffer first, then syncs (synchronous = FULL syncs the
 *    log at every commit, before the commit is published in the WAL index);
 *  - other connections read the log through their own file handles, but
 *    only frames the WAL index says are committed: a commit is published
 *    after that sync, so after the buffer has been written (with powersafe
 *    overwrite, the default: without it nothing is gathered, see wc_open);
 *  - a crash loses only buffered frames that no commit had synced yet,
 *    which SQLite's recovery drops anyway (their checksums are missing).
 * SPDX-License-Identifier: MIT */
#include "store/sqlite_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>

#include "common/fb.h"

/* 15 frames of 4 KiB pages per pwrite. The unix VFS writes at most
 * 128 KiB - 1 bytes per call (its seekAndWrite masks the length with
 * 0x1ffff), so the buffer must stay below that. */
#define WC_CAP (64 * 1024)

typedef struct {
    sqlite3_file base; /* our methods */
    bool gather;       /* false: every write passes straight through (see wc_open) */
    char *buf;         /* WC_CAP bytes from the first gathered write; a reader's WAL has none */
    sqlite3_int64 buf_off;
    int buf_len;
    sqlite3_file real[]; /* the unix VFS's file, szOsFile bytes */
} wc_file_t;

static sqlite3_vfs *g_real;
static sqlite3_vfs g_vfs;
static atomic_uint_fast64_t g_writes, g_pwrites; /* WAL writes asked, pwrites made */

static int wc_flush(wc_file_t *f)
{
    if (!f->buf_len) return SQLITE_OK;
    atomic_fetch_add_explicit(&g_pwrites, 1, memory_order_relaxed);
    int rc = f->real->pMethods->xWrite(f->real, f->buf, f->buf_len, f->buf_off);
    f->buf_len = 0;
    return rc;
}

static int wc_close(sqlite3_file *pf)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    fb_free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wc_read(sqlite3_file *pf, void *p, int n, sqlite3_int64 off)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, p, n, off);
}

static int wc_write(sqlite3_file *pf, const void *p, int n, sqlite3_int64 off)
{
    wc_file_t *f = (wc_file_t *)pf;
    atomic_fetch_add_explicit(&g_writes, 1, memory_order_relaxed);
    if (!f->gather) {
        atomic_fetch_add_explicit(&g_pwrites, 1, memory_order_relaxed);
        return f->real->pMethods->xWrite(f->real, p, n, off);
    }
    if (f->buf_len && (off != f->buf_off + f->buf_len || f->buf_len + n > WC_CAP)) {
        int rc = wc_flush(f);
        if (rc != SQLITE_OK) return rc;
    }
    if (n > WC_CAP) {
        atomic_fetch_add_explicit(&g_pwrites, 1, memory_order_relaxed);
        return f->real->pMethods->xWrite(f->real, p, n, off);
    }
    if (!f->buf) f->buf = fb_malloc(WC_CAP);
    if (!f->buf_len) f->buf_off = off;
    memcpy(f->buf + f->buf_len, p, (size_t)n);
    f->buf_len += n;
    return SQLITE_OK;
}

static int wc_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wc_sync(sqlite3_file *pf, int flags)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wc_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wc_lock(sqlite3_file *pf, int level)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xLock(f->real, level);
}

static int wc_unlock(sqlite3_file *pf, int level)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xUnlock(f->real, level);
}

static int wc_check_reserved(sqlite3_file *pf, int *out)
{
    wc_file_t *f = (wc_file_t *)pf;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wc_file_control(sqlite3_file *pf, int op, void *arg)
{
    wc_file_t *f = (wc_file_t *)pf;
    int rc = wc_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wc_sector_size(sqlite3_file *pf)
{
    wc_file_t *f = (wc_file_t *)pf;
    return f->real->pMethods->xSectorSize(f->real);
}

static int wc_device_chars(sqlite3_file *pf)
{
    wc_file_t *f = (wc_file_t *)pf;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* Version 1 methods only: a WAL file is never shared-memory mapped or
 * memory-mapped (SQLite asks those of the database file). */
static const sqlite3_io_methods wc_methods = {
    .iVersion = 1,
    .xClose = wc_close,
    .xRead = wc_read,
    .xWrite = wc_write,
    .xTruncate = wc_truncate,
    .xSync = wc_sync,
    .xFileSize = wc_file_size,
    .xLock = wc_lock,
    .xUnlock = wc_unlock,
    .xCheckReservedLock = wc_check_reserved,
    .xFileControl = wc_file_control,
    .xSectorSize = wc_sector_size,
    .xDeviceCharacteristics = wc_device_chars,
};

/* Every file but a WAL is the unix VFS's own, placed where SQLite asked
 * (our szOsFile is larger than the unix VFS's, so it fits).
 *
 * A WAL's writes are gathered only with "powersafe overwrite" (the unix
 * VFS's default; a `psow=0` URI turns it off). Without it SQLite pads a
 * commit to a sector boundary, syncs at that boundary in the middle of the
 * last frame, writes the frame's tail after the sync and publishes the
 * commit without another sync (wal.c, walWriteToLog): that tail would still
 * be in our buffer while readers read the frame. */
static int wc_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags)
{
    if (!(flags & SQLITE_OPEN_WAL)) return g_real->xOpen(g_real, name, pf, flags, out_flags);
    wc_file_t *f = (wc_file_t *)pf;
    memset(f, 0, sizeof *f);
    int rc = g_real->xOpen(g_real, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        f->base.pMethods = NULL; /* SQLite then does not call xClose */
        return rc;
    }
    /* The WAL's own unix file carries the build's default; a URI's psow=0
     * reaches us only as a parameter of the name (SQLite passes the
     * database's URI parameters on with a WAL's name). */
    f->gather = (f->real->pMethods->xDeviceCharacteristics(f->real) &
                 SQLITE_IOCAP_POWERSAFE_OVERWRITE) &&
                sqlite3_uri_boolean(name, "psow", 1);
    f->base.pMethods = &wc_methods;
    return SQLITE_OK;
}

/* The rest is the unix VFS's. */
static int wc_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    return g_real->xDelete(g_real, name, sync_dir);
}
static int wc_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return g_real->xAccess(g_real, name, flags, out);
}
static int wc_full_path(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return g_real->xFullPathname(g_real, name, n, out);
}
static void *wc_dl_open(sqlite3_vfs *v, const char *name)
{
    return g_real->xDlOpen(g_real, name);
}
static void wc_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    g_real->xDlError(g_real, n, msg);
}
static void (*wc_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    return g_real->xDlSym(g_real, h, sym);
}
static void wc_dl_close(sqlite3_vfs *v, void *h)
{
    g_real->xDlClose(g_real, h);
}
static int wc_randomness(sqlite3_vfs *v, int n, char *out)
{
    return g_real->xRandomness(g_real, n, out);
}
static int wc_sleep(sqlite3_vfs *v, int us)
{
    return g_real->xSleep(g_real, us);
}
static int wc_current_time(sqlite3_vfs *v, double *out)
{
    return g_real->xCurrentTime(g_real, out);
}
static int wc_last_error(sqlite3_vfs *v, int n, char *out)
{
    return g_real->xGetLastError ? g_real->xGetLastError(g_real, n, out) : 0;
}
static int wc_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    return g_real->xCurrentTimeInt64(g_real, out);
}

static int g_rc = SQLITE_ERROR;

static void wc_register(void)
{
    /* SQLite counts its memory under one global mutex at every allocation
     * unless told not to; the writer allocates per row, and the io loops'
     * readers contend for the same mutex. Only possible before SQLite is
     * initialised (sqlite3_vfs_find does that): a process that used SQLite
     * before (a test) keeps the count, which changes nothing else. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    g_real = sqlite3_vfs_find(NULL);
    if (!g_real || g_real->iVersion < 2 || !g_real->xCurrentTimeInt64) return;
    g_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(wc_file_t) + g_real->szOsFile,
        .mxPathname = g_real->mxPathname,
        .zName = FB_SQLITE_VFS,
        .xOpen = wc_open,
        .xDelete = wc_delete,
        .xAccess = wc_access,
        .xFullPathname = wc_full_path,
        .xDlOpen = wc_dl_open,
        .xDlError = wc_dl_error,
        .xDlSym = wc_dl_sym,
        .xDlClose = wc_dl_close,
        .xRandomness = wc_randomness,
        .xSleep = wc_sleep,
        .xCurrentTime = wc_current_time,
        .xGetLastError = wc_last_error,
        .xCurrentTimeInt64 = wc_current_time64,
    };
    g_rc = sqlite3_vfs_register(&g_vfs, 0);
}

int fb_sqlite_vfs_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, wc_register);
    return g_rc;
}

void fb_sqlite_vfs_stats(uint64_t *wal_writes, uint64_t *wal_pwrites)
{
    *wal_writes = atomic_load_explicit(&g_writes, memory_order_relaxed);
    *wal_pwrites = atomic_load_explicit(&g_pwrites, memory_order_relaxed);
}
