/* `firebreak admin`: operator commands that work directly on a node's store
 * (the node may be running: SQLite serialises the writers). Passwords come
 * from a file or standard input, never from the command line.
 * SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/auth.h"
#include "common/fb.h"
#include "proto/proto.h"
#include "server/config.h"
#include "store/store.h"
#include "tools/admin.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: firebreak admin [--config FILE] [--data-dir DIR] COMMAND\n\n"
               "  add-user NAME [--password-file FILE]   create an account (for registration = closed);\n"
               "                                         the password is read from FILE or from the\n"
               "                                         first line of standard input\n"
               "  users                                  list accounts\n\n"
               "exit status: 0 done, 1 usage, 2 store error, 3 name taken or invalid\n");
}

static int read_password(const char *file, char *buf, size_t n)
{
    FILE *f = file ? fopen(file, "r") : stdin;
    if (!f) {
        fprintf(stderr, "firebreak admin: cannot open %s: %s\n", file, strerror(errno));
        return -1;
    }
    if (!fgets(buf, (int)n, f)) buf[0] = 0;
    if (file) fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

static int add_user(fb_store_t *st, const fb_config_t *cfg, const char *name, const char *pwfile)
{
    char pw[FB_PASSWORD_MAX + 2], hash[FB_PWHASH_MAX];
    int64_t id;
    if (!fb_valid_user_name(name)) {
        fprintf(stderr, "firebreak admin: '%s' is not a valid user name (1-32 of a-z 0-9 . _ -)\n", name);
        return 3;
    }
    if (read_password(pwfile, pw, sizeof pw)) return 1;
    size_t len = strlen(pw);
    if (len < FB_PASSWORD_MIN || len > FB_PASSWORD_MAX) {
        sodium_memzero(pw, sizeof pw);
        fprintf(stderr, "firebreak admin: the password must be %d to %d bytes\n", FB_PASSWORD_MIN,
                FB_PASSWORD_MAX);
        return 3;
    }
    int rc = fb_auth_hash_password(pw, len, (uint64_t)cfg->argon2_opslimit,
                                   (size_t)cfg->argon2_memlimit_kib * 1024, hash);
    sodium_memzero(pw, sizeof pw);
    if (!rc) rc = fb_store_user_create(st, name, hash, fb_now_ms(), &id);
    sodium_memzero(hash, sizeof hash);
    if (rc == FB_ENAMETAKEN) {
        fprintf(stderr, "firebreak admin: the user name '%s' is taken\n", name);
        return 3;
    }
    if (rc) {
        fprintf(stderr, "firebreak admin: %s\n", fb_err_message(rc));
        return 2;
    }
    printf("%lld\t%s\n", (long long)id, name);
    return 0;
}

static int list_users(fb_store_t *st)
{
    for (int64_t id = 1;; id++) {
        fb_user_t u = {0};
        int rc = fb_store_user_by_id(st, id, &u);
        if (rc == FB_ENOTFOUND) return 0;
        if (rc) return 2;
        printf("%lld\t%s\n", (long long)u.id, u.name);
        fb_user_clear(&u);
    }
}

int fb_tool_admin_main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                         {"data-dir", required_argument, 0, 'd'},
                                         {"password-file", required_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    fb_config_t cfg;
    fb_config_defaults(&cfg);
    const char *pwfile = NULL;
    char err[512];
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            if (fb_config_load(&cfg, optarg, err, sizeof err)) {
                fprintf(stderr, "firebreak admin: %s\n", err);
                return 1;
            }
            break;
        case 'd': snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", optarg); break;
        case 'p': pwfile = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[optind];
    bool add = strcmp(cmd, "add-user") == 0;
    if (!(add && optind + 2 == argc) && !(strcmp(cmd, "users") == 0 && optind + 1 == argc)) {
        usage(stderr);
        return 1;
    }
    if (fb_auth_init()) return 2;
    char path[600];
    if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "firebreak admin: cannot create %s: %s\n", cfg.data_dir, strerror(errno));
        return 2;
    }
    fb_config_db_path(&cfg, path, sizeof path);
    fb_store_config_t sc = {.kind = cfg.store, .path = path, .conninfo = cfg.pg_conninfo,
                            .read_conninfo = cfg.pg_read_conninfo};
    fb_store_t *st;
    if (fb_store_open(&sc, &st)) {
        fprintf(stderr, "firebreak admin: cannot open the store at %s\n", path);
        return 2;
    }
    int rc = add ? add_user(st, &cfg, argv[optind + 1], pwfile) : list_users(st);
    fb_store_close(st);
    return rc;
}
