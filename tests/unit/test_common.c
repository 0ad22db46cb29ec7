/* Unit tests of the foundations: the int64 hash map, the MPSC queue (one thread and
 * four producers), byte buffers, the error table, allocator accounting, configuration
 * parsing, password and token hashing, per-message unread counts, and the UTF-8
 * check that fast paths share with jansson.
 * SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/auth.h"
#include "chat/receipts.h"
#include "common/fb.h"
#include "common/map.h"
#include "common/mpsc.h"
#include "server/config.h"

#include "common/rand.h"

static void *tag(uintptr_t v)
{
    return (void *)v;
}

/* ---- fb_map ---- */

static void test_map_basic(void **state)
{
    size_t mem0 = fb_mem_in_use();
    fb_map_t m;
    fb_map_init(&m);
    /* an empty map answers without allocating */
    assert_null(fb_map_get(&m, 5));
    assert_null(fb_map_del(&m, 5));
    assert_int_equal(m.live, 0);

    fb_map_put(&m, 5, tag(50));
    fb_map_put(&m, 7, tag(70));
    fb_map_put(&m, INT64_MAX, tag(99));
    assert_int_equal(m.live, 3);
    assert_ptr_equal(fb_map_get(&m, 5), tag(50));
    assert_ptr_equal(fb_map_get(&m, 7), tag(70));
    assert_ptr_equal(fb_map_get(&m, INT64_MAX), tag(99));
    assert_null(fb_map_get(&m, 6));

    /* replace keeps one entry */
    fb_map_put(&m, 5, tag(51));
    assert_int_equal(m.live, 3);
    assert_ptr_equal(fb_map_get(&m, 5), tag(51));

    assert_ptr_equal(fb_map_del(&m, 5), tag(51));
    assert_int_equal(m.live, 2);
    assert_null(fb_map_get(&m, 5));
    assert_null(fb_map_del(&m, 5));
    assert_ptr_equal(fb_map_get(&m, 7), tag(70));

    /* reinsert after delete */
    fb_map_put(&m, 5, tag(52));
    assert_ptr_equal(fb_map_get(&m, 5), tag(52));
    assert_int_equal(m.live, 3);

    /* iteration sees exactly the live keys */
    size_t seen = 0;
    for (size_t i = 0; i < m.cap; i++)
        if (m.slots[i].key > 0) {
            seen++;
            assert_ptr_equal(fb_map_get(&m, m.slots[i].key), m.slots[i].val);
        }
    assert_int_equal(seen, 3);
    fb_map_free(&m);
    assert_int_equal(m.cap, 0);
    assert_null(m.slots);
    assert_int_equal(fb_mem_in_use(), mem0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* 100k random keys, then a random mix of puts, deletes and gets against a
 * reference array; deleted keys come back. */
static void test_map_random(void **state)
{
    enum { N = 100000, OPS = 400000 };
    int64_t *keys = malloc(N * sizeof *keys);
    uintptr_t *ref = calloc(N, sizeof *ref); /* 0: absent */
    assert_non_null(keys);
    assert_non_null(ref);
    for (size_t i = 0; i < N; i++) {
        /* half wide random keys, half a dense run (clusters for linear probing) */
        keys[i] = i % 2 ? (int64_t)(rnd() >> 1) + 1 : (int64_t)(i + 1);
    }
    int64_t *sorted = malloc(N * sizeof *sorted);
    assert_non_null(sorted);
    memcpy(sorted, keys, N * sizeof *keys);
    qsort(sorted, N, sizeof *sorted, cmp_i64);
    for (size_t i = 1; i < N; i++)
        assert_true(sorted[i] != sorted[i - 1]);
    free(sorted);

    fb_map_t m;
    fb_map_init(&m);
    for (size_t i = 0; i < N; i++) {
        fb_map_put(&m, keys[i], tag(i + 1));
        ref[i] = i + 1;
    }
    assert_int_equal(m.live, N);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(fb_map_get(&m, keys[i]), tag(i + 1));

    size_t live = N;
    for (size_t op = 0; op < OPS; op++) {
        size_t i = rnd() % N;
        switch (rnd() % 4) {
        case 0: /* put or replace */
        case 1: {
            uintptr_t v = (uintptr_t)(rnd() % 1000000) + 1;
            if (!ref[i]) live++;
            fb_map_put(&m, keys[i], tag(v));
            ref[i] = v;
            break;
        }
        case 2: /* delete */
            assert_ptr_equal(fb_map_del(&m, keys[i]), tag(ref[i]));
            if (ref[i]) live--;
            ref[i] = 0;
            break;
        default:
            assert_ptr_equal(fb_map_get(&m, keys[i]), tag(ref[i]));
        }
    }
    assert_int_equal(m.live, live);
    size_t seen = 0;
    for (size_t i = 0; i < N; i++) {
        assert_ptr_equal(fb_map_get(&m, keys[i]), tag(ref[i]));
        seen += ref[i] != 0;
    }
    assert_int_equal(seen, live);
    /* keys never inserted stay absent */
    for (int64_t k = N + 1; k < N + 1000; k++)
        if (fb_map_get(&m, k)) {
            bool known = false;
            for (size_t i = 1; i < N && !known; i += 2)
                known = keys[i] == k && ref[i];
            assert_true(known);
        }
    fb_map_free(&m);
    free(keys);
    free(ref);
}

/* A sliding window: 200 live keys while 1M distinct keys pass through. The
 * tombstones left behind must neither grow the table without bound nor break
 * lookups (a probe must still end). */
static void test_map_tombstone_churn(void **state)
{
    enum { WINDOW = 200, TOTAL = 1000000 };
    fb_map_t m;
    fb_map_init(&m);
    size_t max_cap = 0;
    for (int64_t k = 1; k <= TOTAL; k++) {
        fb_map_put(&m, k, tag((uintptr_t)k));
        if (k > WINDOW) {
            assert_ptr_equal(fb_map_del(&m, k - WINDOW), tag((uintptr_t)(k - WINDOW)));
            assert_null(fb_map_get(&m, k - WINDOW));
        }
        if (k % 9973 == 0) {
            assert_int_equal(m.live, WINDOW);
            for (int64_t j = k - WINDOW + 1; j <= k; j++)
                assert_ptr_equal(fb_map_get(&m, j), tag((uintptr_t)j));
            assert_null(fb_map_get(&m, k + 1));
            assert_null(fb_map_get(&m, k - WINDOW));
        }
        assert_true(m.used < m.cap); /* an empty slot remains */
        max_cap = FB_MAX(max_cap, m.cap);
    }
    assert_int_equal(m.live, WINDOW);
    assert_true(max_cap <= 1024);

    /* delete everything, then reinsert the same keys */
    for (int64_t k = TOTAL - WINDOW + 1; k <= TOTAL; k++)
        assert_non_null(fb_map_del(&m, k));
    assert_int_equal(m.live, 0);
    for (int64_t k = 1; k <= 5000; k++)
        assert_null(fb_map_get(&m, k));
    for (int64_t k = TOTAL - WINDOW + 1; k <= TOTAL; k++)
        fb_map_put(&m, k, tag(7));
    for (int64_t k = TOTAL - WINDOW + 1; k <= TOTAL; k++)
        assert_ptr_equal(fb_map_get(&m, k), tag(7));
    assert_int_equal(m.live, WINDOW);
    fb_map_free(&m);
}

/* ---- fb_mpsc ---- */

typedef struct {
    fb_mpsc_node_t node;
    int producer;
    int idx;
} item_t;

static void test_mpsc_single_thread(void **state)
{
    enum { N = 1000 };
    fb_mpsc_t q;
    fb_mpsc_init(&q);
    assert_null(fb_mpsc_pop(&q));
    item_t *items = calloc(N, sizeof *items);
    assert_non_null(items);

    /* one in, one out, repeatedly: exercises the stub on every pop */
    for (int i = 0; i < 10; i++) {
        items[i].idx = i;
        fb_mpsc_push(&q, &items[i].node);
        fb_mpsc_node_t *n = fb_mpsc_pop(&q);
        assert_ptr_equal(n, &items[i].node);
        assert_null(fb_mpsc_pop(&q));
    }

    for (int i = 0; i < N; i++) {
        items[i].idx = i;
        fb_mpsc_push(&q, &items[i].node);
    }
    for (int i = 0; i < N; i++) {
        fb_mpsc_node_t *n = fb_mpsc_pop(&q);
        assert_non_null(n);
        assert_int_equal(FB_CONTAINER_OF(n, item_t, node)->idx, i);
    }
    assert_null(fb_mpsc_pop(&q));

    /* interleaved: pushes while half drained, FIFO throughout */
    int next_in = 0, next_out = 0;
    while (next_out < N) {
        for (int k = 0; k < 3 && next_in < N; k++)
            fb_mpsc_push(&q, &items[next_in++].node);
        fb_mpsc_node_t *n = fb_mpsc_pop(&q);
        if (!n) {
            assert_int_equal(next_in, next_out);
            continue;
        }
        assert_int_equal(FB_CONTAINER_OF(n, item_t, node)->idx, next_out);
        next_out++;
    }
    assert_null(fb_mpsc_pop(&q));
    free(items);
}

enum { PRODUCERS = 4, PER_PRODUCER = 100000 };

typedef struct {
    fb_mpsc_t *q;
    item_t *items;
    pthread_barrier_t *start;
} producer_t;

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    pthread_barrier_wait(p->start);
    for (int i = 0; i < PER_PRODUCER; i++) {
        fb_mpsc_push(p->q, &p->items[i].node);
        if (i % 1024 == 0) sched_yield(); /* vary the interleaving */
    }
    return NULL;
}

static void test_mpsc_threads(void **state)
{
    fb_mpsc_t q;
    fb_mpsc_init(&q);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, PRODUCERS + 1);
    item_t *items = calloc((size_t)PRODUCERS * PER_PRODUCER, sizeof *items);
    uint8_t *seen = calloc((size_t)PRODUCERS * PER_PRODUCER, 1);
    assert_non_null(items);
    assert_non_null(seen);
    producer_t ps[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        ps[p] = (producer_t){.q = &q, .items = items + (size_t)p * PER_PRODUCER, .start = &start};
        for (int i = 0; i < PER_PRODUCER; i++) {
            ps[p].items[i].producer = p;
            ps[p].items[i].idx = i;
        }
        assert_int_equal(pthread_create(&th[p], NULL, producer_main, &ps[p]), 0);
    }
    pthread_barrier_wait(&start);

    int next[PRODUCERS] = {0};
    size_t total = 0, empty_polls = 0;
    while (total < (size_t)PRODUCERS * PER_PRODUCER) {
        fb_mpsc_node_t *n = fb_mpsc_pop(&q);
        if (!n) {
            if (++empty_polls % 64 == 0) sched_yield();
            continue;
        }
        item_t *it = FB_CONTAINER_OF(n, item_t, node);
        assert_true(it->producer >= 0 && it->producer < PRODUCERS);
        size_t slot = (size_t)(it - items);
        assert_true(slot < (size_t)PRODUCERS * PER_PRODUCER);
        if (seen[slot]) fail_msg("node %d/%d popped twice", it->producer, it->idx);
        seen[slot] = 1;
        /* one producer's nodes come out in the order it pushed them */
        if (it->idx != next[it->producer])
            fail_msg("producer %d: got node %d, want %d", it->producer, it->idx,
                     next[it->producer]);
        next[it->producer]++;
        total++;
    }
    for (int p = 0; p < PRODUCERS; p++) {
        pthread_join(th[p], NULL);
        assert_int_equal(next[p], PER_PRODUCER);
    }
    assert_null(fb_mpsc_pop(&q));
    pthread_barrier_destroy(&start);
    free(items);
    free(seen);
}

/* ---- fb_buf ---- */

static void test_buf(void **state)
{
    size_t mem0 = fb_mem_in_use();
    fb_buf_t b = {0};
    fb_buf_append(&b, "", 0); /* nothing to add: no allocation needed */
    assert_int_equal(b.len, 0);
    fb_buf_append(&b, "hello", 5);
    fb_buf_append(&b, " world", 6);
    assert_int_equal(b.len, 11);
    assert_true(b.cap >= 11);
    assert_memory_equal(b.data, "hello world", 11);

    fb_buf_appendf(&b, "[%d:%s]", 42, "x");
    assert_int_equal(b.len, 17);
    assert_memory_equal(b.data, "hello world[42:x]", 17);

    /* formatted output at and around the 256-byte stack buffer, and far beyond */
    size_t sizes[] = {255, 256, 257, 10000, 300000};
    for (size_t s = 0; s < FB_ARRAY_LEN(sizes); s++) {
        size_t n = sizes[s];
        char *big = malloc(n + 1);
        assert_non_null(big);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)('A' + i % 26);
        big[n] = 0;
        fb_buf_t f = {0};
        /* output of exactly n bytes */
        fb_buf_appendf(&f, "%s", big);
        assert_int_equal(f.len, n);
        assert_memory_equal(f.data, big, n);
        fb_buf_reset(&f);
        fb_buf_append(&f, "<", 1);
        fb_buf_appendf(&f, "%s|%zu", big, n);
        char tail[32];
        int tl = snprintf(tail, sizeof tail, "|%zu", n);
        assert_int_equal(f.len, 1 + n + (size_t)tl);
        assert_int_equal(f.data[0], '<');
        assert_memory_equal(f.data + 1, big, n);
        assert_memory_equal(f.data + 1 + n, tail, (size_t)tl);
        /* appending after a large appendf keeps what was there */
        fb_buf_append(&f, "!", 1);
        assert_int_equal(f.data[f.len - 1], '!');
        assert_memory_equal(f.data + 1, big, n);
        fb_buf_free(&f);
        free(big);
    }
    fb_buf_appendf(&b, "%s", ""); /* empty output appends nothing */
    assert_int_equal(b.len, 17);

    /* consume from the front */
    fb_buf_consume(&b, 6);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "world[42:x]", 11);
    fb_buf_consume(&b, 0);
    assert_int_equal(b.len, 11);
    fb_buf_consume(&b, 11);
    assert_int_equal(b.len, 0);
    fb_buf_append(&b, "abc", 3);
    fb_buf_consume(&b, 100); /* more than held: empties */
    assert_int_equal(b.len, 0);

    /* reset keeps the memory */
    fb_buf_append(&b, "0123456789", 10);
    char *data = b.data;
    size_t cap = b.cap;
    fb_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    fb_buf_append(&b, "xy", 2);
    assert_memory_equal(b.data, "xy", 2);

    /* reserve grows capacity without changing content */
    fb_buf_reserve(&b, 100000);
    assert_true(b.cap >= 100002);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "xy", 2);

    fb_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    fb_buf_free(&b); /* twice is harmless */
    assert_int_equal(fb_mem_in_use(), mem0);
}

/* ---- the error table ---- */

static void test_errors(void **state)
{
    /* every code maps to a protocol code that maps back to a code with the
     * same protocol code (two internal codes share "internal"/"unavailable") */
    int n = 0;
    for (int e = -1; e >= FB_EIO; e--, n++) {
        const char *code = fb_err_code(e);
        assert_non_null(code);
        assert_true(*fb_err_message(e) != 0);
        int back = fb_err_from_code(code);
        assert_string_equal(fb_err_code(back), code);
        if (e != FB_ENOMEM && e != FB_EIO) assert_int_equal(back, e);
    }
    assert_int_equal(n, 22);

    assert_string_equal(fb_err_code(FB_ENOTMEMBER), "not_member");
    assert_string_equal(fb_err_message(FB_ENOTMEMBER), "you are not a member of this room");
    assert_int_equal(fb_err_from_code("not_member"), FB_ENOTMEMBER);
    assert_int_equal(fb_err_from_code("bad_request"), FB_EBADREQ);
    assert_int_equal(fb_err_from_code("unavailable"), FB_EUNAVAIL);
    assert_int_equal(fb_err_from_code("internal"), FB_EINTERNAL);
    assert_int_equal(fb_err_from_code("no_such_code"), FB_EINTERNAL);
    assert_int_equal(fb_err_from_code(""), FB_EINTERNAL);
    assert_string_equal(fb_err_code(FB_EIO), "unavailable");
    assert_string_equal(fb_err_code(FB_ENOMEM), "internal");

    /* unknown numbers read as internal */
    assert_string_equal(fb_err_code(-999), "internal");
    assert_string_equal(fb_err_code(12345), "internal");
    assert_true(fb_err_retryable(-999));

    /* retryable: only what may succeed when sent again */
    assert_true(fb_err_retryable(FB_EUNAVAIL));
    assert_true(fb_err_retryable(FB_EBUSY));
    assert_true(fb_err_retryable(FB_EINTERNAL));
    assert_true(fb_err_retryable(FB_ENOMEM));
    assert_true(fb_err_retryable(FB_EIO));
    int non_retryable[] = {FB_EINVAL,  FB_EBADREQ,   FB_EUNKNOWNOP, FB_ETOOBIG,    FB_EUTF8,
                           FB_EUNAUTH, FB_EBADTOKEN, FB_EEXPIRED,   FB_EBADCRED,   FB_ENAMETAKEN,
                           FB_ECLOSED, FB_ENOTFOUND, FB_ENOTMEMBER, FB_EFORBIDDEN, FB_EVERSION,
                           FB_EFULL,   FB_ESTATE};
    for (size_t i = 0; i < FB_ARRAY_LEN(non_retryable); i++)
        if (fb_err_retryable(non_retryable[i]))
            fail_msg("%s is retryable", fb_err_code(non_retryable[i]));
}

/* ---- the allocator ---- */

static void test_mem_accounting(void **state)
{
    size_t m0 = fb_mem_in_use();
    char *p = fb_malloc(1000);
    assert_int_equal(fb_mem_in_use(), m0 + 1000);
    memset(p, 'x', 1000);
    p = fb_realloc(p, 5000);
    assert_int_equal(fb_mem_in_use(), m0 + 5000);
    assert_int_equal(p[999], 'x');
    p = fb_realloc(p, 10);
    assert_int_equal(fb_mem_in_use(), m0 + 10);
    assert_int_equal(p[9], 'x');

    int *z = fb_calloc(10, sizeof(int));
    assert_int_equal(fb_mem_in_use(), m0 + 10 + 10 * sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], 0);

    char *s = fb_strdup("hello");
    assert_string_equal(s, "hello");
    char *t = fb_strndup("hello world", 5);
    assert_string_equal(t, "hello");
    assert_int_equal(fb_mem_in_use(), m0 + 10 + 10 * sizeof(int) + 6 + 6);

    char *q = fb_realloc(NULL, 64); /* realloc of NULL is malloc */
    assert_int_equal(fb_mem_in_use(), m0 + 10 + 10 * sizeof(int) + 12 + 64);
    void *e = fb_malloc(0);
    assert_non_null(e);

    fb_free(p);
    fb_free(z);
    fb_free(s);
    fb_free(t);
    fb_free(q);
    fb_free(e);
    fb_free(NULL);
    assert_int_equal(fb_mem_in_use(), m0);

    /* json through the hooks is counted too, and returned */
    fb_mem_install_hooks();
    json_t *o = json_pack("{s:s}", "k", "a string of some length");
    assert_true(fb_mem_in_use() > m0);
    json_decref(o);
    assert_int_equal(fb_mem_in_use(), m0);
}

/* ---- configuration ---- */

static void test_config_defaults(void **state)
{
    fb_config_t c;
    memset(&c, 0xab, sizeof c);
    fb_config_defaults(&c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.data_dir, "./firebreak-data");
    assert_string_equal(c.store, "sqlite");
    assert_int_equal(c.io_threads, 0);
    assert_true(c.registration_open);
    /* the limits of docs/protocol.md */
    assert_int_equal(c.max_frame_bytes, 65536);
    assert_int_equal(c.max_text_bytes, 8192);
    assert_int_equal(c.max_output_bytes, 4194304);
    assert_int_equal(c.max_room_members, 10000);
    assert_int_equal(c.history_page_max, 200);
    assert_int_equal(c.token_ttl_days, 90);
    assert_int_equal(c.handshake_timeout_ms, 10000);
    assert_int_equal(c.writer_batch_max, 4096);
    assert_int_equal(c.sqlite_cache_mib, 64);
    assert_int_equal(c.argon2_opslimit, 2);
    assert_int_equal(c.argon2_memlimit_kib, 65536);
    assert_int_equal(c.log_level, FB_LOG_INFO);
    char path[700];
    fb_config_db_path(&c, path, sizeof path);
    assert_string_equal(path, "./firebreak-data/firebreak.db");
}

#define SET_OK(c, k, v)                                                                            \
    do {                                                                                           \
        char e_[256] = "";                                                                         \
        int rc_ = fb_config_set(c, k, v, e_, sizeof e_);                                           \
        if (rc_ != 0) fail_msg("%s = %s refused: %s", k, v, e_);                                   \
    } while (0)

/* Expects a refusal whose message contains want. */
static void set_bad(fb_config_t *c, const char *k, const char *v, const char *want)
{
    char err[256] = "";
    int rc = fb_config_set(c, k, v, err, sizeof err);
    if (rc != FB_EINVAL) fail_msg("%s = '%s' gave %d, want FB_EINVAL", k, v, rc);
    if (!strstr(err, want)) fail_msg("%s = '%s': message '%s' lacks '%s'", k, v, err, want);
}

static void test_config_set(void **state)
{
    fb_config_t c;
    fb_config_defaults(&c);

    /* integers */
    SET_OK(&c, "max_text_bytes", "100");
    assert_int_equal(c.max_text_bytes, 100);
    SET_OK(&c, "max_output_bytes", "4294967296");
    assert_int_equal(c.max_output_bytes, (int64_t)1 << 32);
    SET_OK(&c, "io_threads", "4");
    assert_int_equal(c.io_threads, 4);
    SET_OK(&c, "writer_batch_max", "1");
    assert_int_equal(c.writer_batch_max, 1);
    SET_OK(&c, "sqlite_cache_mib", "2");
    assert_int_equal(c.sqlite_cache_mib, 2);
    set_bad(&c, "sqlite_cache_mib", "1", "sqlite_cache_mib");
    SET_OK(&c, "argon2_memlimit_kib", "8");
    assert_int_equal(c.argon2_memlimit_kib, 8);
    set_bad(&c, "max_text_bytes", "abc", "max_text_bytes");
    set_bad(&c, "max_text_bytes", "10x", "max_text_bytes");
    set_bad(&c, "max_text_bytes", "", "max_text_bytes");
    set_bad(&c, "max_text_bytes", "1.5", "max_text_bytes");
    set_bad(&c, "max_text_bytes", "0", "from 1 to 1048576");
    set_bad(&c, "max_text_bytes", "1048577", "max_text_bytes");
    set_bad(&c, "max_frame_bytes", "1023", "max_frame_bytes");
    set_bad(&c, "io_threads", "-1", "io_threads");
    set_bad(&c, "io_threads", "65", "io_threads");
    set_bad(&c, "token_ttl_days", "99999999999999999999999", "token_ttl_days");
    assert_int_equal(c.max_text_bytes, 100);
    assert_int_equal(c.io_threads, 4);

    /* strings */
    SET_OK(&c, "data_dir", "/var/lib/firebreak");
    assert_string_equal(c.data_dir, "/var/lib/firebreak");
    char path[700];
    fb_config_db_path(&c, path, sizeof path);
    assert_string_equal(path, "/var/lib/firebreak/firebreak.db");
    set_bad(&c, "data_dir", "", "data_dir");
    char longdir[600];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[sizeof longdir - 1] = 0;
    set_bad(&c, "data_dir", longdir, "data_dir");
    SET_OK(&c, "store", "sqlite");
    assert_string_equal(c.store, "sqlite");
    set_bad(&c, "store", "rocksdb", "store");

    /* listen */
    SET_OK(&c, "listen", "0.0.0.0:9000");
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9000);
    SET_OK(&c, "listen", "localhost:0");
    assert_string_equal(c.listen_host, "localhost");
    assert_int_equal(c.listen_port, 0);
    const char *bad_listen[] = {"8080", ":8080", "host:", "host:port", "host:65536", "host:-1"};
    for (size_t i = 0; i < FB_ARRAY_LEN(bad_listen); i++)
        set_bad(&c, "listen", bad_listen[i], "listen");
    assert_string_equal(c.listen_host, "localhost");
    assert_int_equal(c.listen_port, 0);

    /* registration */
    SET_OK(&c, "registration", "closed");
    assert_false(c.registration_open);
    SET_OK(&c, "registration", "open");
    assert_true(c.registration_open);
    set_bad(&c, "registration", "maybe", "registration");
    set_bad(&c, "registration", "OPEN", "registration");
    assert_true(c.registration_open);

    /* log level */
    SET_OK(&c, "log_level", "debug");
    assert_int_equal(c.log_level, FB_LOG_DEBUG);
    SET_OK(&c, "log_level", "error");
    assert_int_equal(c.log_level, FB_LOG_ERROR);
    set_bad(&c, "log_level", "verbose", "log_level");

    /* unknown key */
    set_bad(&c, "max_txt_bytes", "5", "unknown configuration key 'max_txt_bytes'");
}

/* A refused value must leave the configuration as it was: a caller that
 * reports the error and goes on (or tries another source) must not run with
 * half of a bad setting. */
static void test_config_refusal_changes_nothing(void **state)
{
    fb_config_t c;
    char err[256];
    fb_config_defaults(&c);
    assert_int_equal(fb_config_set(&c, "store", "rocksdb", err, sizeof err), FB_EINVAL);
    assert_string_equal(c.store, "sqlite");
    assert_int_equal(fb_config_set(&c, "log_level", "debug", err, sizeof err), 0);
    assert_int_equal(fb_config_set(&c, "log_level", "loud", err, sizeof err), FB_EINVAL);
    assert_int_equal(c.log_level, FB_LOG_DEBUG);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_load(void **state)
{
    char dir[] = "/tmp/fb_common_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/firebreak.conf", dir);

    write_file(path, "# Firebreak\n"
                     "\n"
                     "   # an indented comment\n"
                     "listen = 0.0.0.0:9001\n"
                     "data_dir=/srv/fb\n"
                     "\t max_text_bytes   =  4096 \t\n"
                     "registration = closed\n"
                     "\n"
                     "log_level = warn\n"
                     "io_threads = 2\n"
                     "max_room_members = 500"); /* no final newline */
    fb_config_t c;
    fb_config_defaults(&c);
    err[0] = 0;
    int rc = fb_config_load(&c, path, err, sizeof err);
    if (rc) fail_msg("load failed: %s", err);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9001);
    assert_string_equal(c.data_dir, "/srv/fb");
    assert_int_equal(c.max_text_bytes, 4096);
    assert_false(c.registration_open);
    assert_int_equal(c.log_level, FB_LOG_WARN);
    assert_int_equal(c.io_threads, 2);
    assert_int_equal(c.max_room_members, 500);
    assert_int_equal(c.max_frame_bytes, 65536); /* untouched keys keep defaults */

    /* an unknown key, reported with its line */
    write_file(path, "# comment\n\nmax_text_bytes = 10\nbogus_key = 1\nio_threads = 3\n");
    fb_config_defaults(&c);
    err[0] = 0;
    assert_int_equal(fb_config_load(&c, path, err, sizeof err), FB_EINVAL);
    assert_non_null(strstr(err, ":4:"));
    assert_non_null(strstr(err, "bogus_key"));
    assert_int_equal(c.io_threads, 0); /* nothing after the bad line was applied */

    /* a bad value, reported with its line and key */
    write_file(path, "listen = 127.0.0.1:1\n# x\nmax_frame_bytes = lots\n");
    fb_config_defaults(&c);
    err[0] = 0;
    assert_int_equal(fb_config_load(&c, path, err, sizeof err), FB_EINVAL);
    assert_non_null(strstr(err, ":3:"));
    assert_non_null(strstr(err, "max_frame_bytes"));

    /* a line that is not key = value */
    write_file(path, "\n\nio_threads 3\n");
    err[0] = 0;
    assert_int_equal(fb_config_load(&c, path, err, sizeof err), FB_EINVAL);
    assert_non_null(strstr(err, ":3:"));
    assert_non_null(strstr(err, "key = value"));

    /* an empty file is fine */
    write_file(path, "");
    assert_int_equal(fb_config_load(&c, path, err, sizeof err), 0);

    /* a missing file */
    unlink(path);
    err[0] = 0;
    assert_int_equal(fb_config_load(&c, path, err, sizeof err), FB_EINVAL);
    assert_non_null(strstr(err, "cannot open"));
    rmdir(dir);
}

/* What --print-config writes reads back to the same configuration. */
static void test_config_print_roundtrip(void **state)
{
    char dir[] = "/tmp/fb_common_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[512] = "";
    snprintf(path, sizeof path, "%s/printed.conf", dir);
    fb_config_t a, b;
    fb_config_defaults(&a);
    SET_OK(&a, "listen", "10.0.0.1:7000");
    SET_OK(&a, "data_dir", "/data/x");
    SET_OK(&a, "io_threads", "3");
    SET_OK(&a, "registration", "closed");
    SET_OK(&a, "max_text_bytes", "777");
    SET_OK(&a, "writer_batch_max", "99");
    SET_OK(&a, "log_level", "debug");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fb_config_print(&a, f);
    fclose(f);
    fb_config_defaults(&b);
    int rc = fb_config_load(&b, path, err, sizeof err);
    if (rc) fail_msg("printed config does not load: %s", err);
    assert_string_equal(b.listen_host, a.listen_host);
    assert_int_equal(b.listen_port, a.listen_port);
    assert_string_equal(b.data_dir, a.data_dir);
    assert_string_equal(b.store, a.store);
    assert_int_equal(b.io_threads, a.io_threads);
    assert_int_equal(b.registration_open, a.registration_open);
    assert_int_equal(b.max_text_bytes, a.max_text_bytes);
    assert_int_equal(b.writer_batch_max, a.writer_batch_max);
    assert_int_equal(b.max_output_bytes, a.max_output_bytes);
    assert_int_equal(b.log_level, a.log_level);
    unlink(path);
    rmdir(dir);
}

/* The store keys: the backend, its connection strings (checked, never
 * printed with a password), and what a chosen backend needs. */
static void test_config_store_keys(void **state)
{
    fb_config_t c;
    char err[256] = "";
    fb_config_defaults(&c);
    assert_string_equal(c.pg_conninfo, "");
    assert_string_equal(c.pg_read_conninfo, "");
    assert_int_equal(fb_config_check(&c, err, sizeof err), 0);
    SET_OK(&c, "store", "postgres");
    assert_int_equal(fb_config_check(&c, err, sizeof err), FB_EINVAL);
    assert_non_null(strstr(err, "pg_conninfo"));
    const char *multi = "host=127.0.1.1,127.0.2.1,127.0.3.1 port=5432 dbname=firebreak"
                        " user=firebreak target_session_attrs=read-write connect_timeout=2";
    SET_OK(&c, "pg_conninfo", multi);
    assert_string_equal(c.pg_conninfo, multi);
    assert_int_equal(fb_config_check(&c, err, sizeof err), 0);
    SET_OK(&c, "pg_read_conninfo", "postgresql://firebreak@127.0.1.1/firebreak");
    SET_OK(&c, "pg_read_conninfo", ""); /* back to "use pg_conninfo" */
    assert_string_equal(c.pg_read_conninfo, "");
    /* a broken string is refused without quoting it (it may hold a password) */
    set_bad(&c, "pg_conninfo", "host=x password='s3cret", "pg_conninfo");
    assert_int_equal(fb_config_set(&c, "pg_conninfo", "host=x password='s3cret", err, sizeof err),
                     FB_EINVAL);
    assert_null(strstr(err, "s3cret"));
    assert_string_equal(c.pg_conninfo, multi);

    /* printed: the password redacted, everything else kept */
    char out[512];
    fb_config_redact_conninfo("host=db password=s3cret user=u", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    assert_non_null(strstr(out, "password='redacted'"));
    assert_non_null(strstr(out, "host='db'"));
    assert_non_null(strstr(out, "user='u'"));
    fb_config_redact_conninfo("postgresql://u:s3cret@db/x", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    fb_config_redact_conninfo(multi, out, sizeof out);
    assert_string_equal(out, multi); /* no password: as given */

    char dir[] = "/tmp/fb_common_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/printed.conf", dir);
    SET_OK(&c, "pg_read_conninfo", "host=127.0.1.1 password=s3cret dbname=firebreak");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fb_config_print(&c, f);
    fclose(f);
    fb_config_t b;
    fb_config_defaults(&b);
    int rc = fb_config_load(&b, path, err, sizeof err);
    if (rc) fail_msg("printed config does not load: %s", err);
    assert_string_equal(b.store, "postgres");
    assert_string_equal(b.pg_conninfo, multi);
    assert_null(strstr(b.pg_read_conninfo, "s3cret"));
    assert_non_null(strstr(b.pg_read_conninfo, "dbname='firebreak'"));
    unlink(path);
    rmdir(dir);
}

/* ---- auth ---- */

static void test_auth_password(void **state)
{
    assert_int_equal(fb_auth_init(), 0);
    char h1[FB_PWHASH_MAX], h2[FB_PWHASH_MAX];
    const char *pw = "correct horse 배터리";
    assert_int_equal(fb_auth_hash_password(pw, strlen(pw), 1, 8192, h1), 0);
    assert_int_equal(strncmp(h1, "$argon2id$", 10), 0);
    assert_non_null(memchr(h1, 0, sizeof h1));
    assert_null(strstr(h1, pw)); /* never the password itself */
    assert_true(fb_auth_verify_password(h1, pw, strlen(pw), 1, 8192));
    /* salted: the same password hashes differently, and both verify */
    assert_int_equal(fb_auth_hash_password(pw, strlen(pw), 1, 8192, h2), 0);
    assert_string_not_equal(h1, h2);
    assert_true(fb_auth_verify_password(h2, pw, strlen(pw), 1, 8192));

    assert_false(fb_auth_verify_password(h1, "correct horse", 13, 1, 8192));
    assert_false(fb_auth_verify_password(h1, pw, strlen(pw) - 1, 1, 8192));
    assert_false(fb_auth_verify_password(h1, "", 0, 1, 8192));
    /* the length is what counts, not a NUL */
    assert_true(fb_auth_verify_password(h1, "correct horse 배터리 and more", strlen(pw), 1, 8192));
    /* an unknown user: no hash, never true */
    assert_false(fb_auth_verify_password(NULL, pw, strlen(pw), 1, 8192));
    assert_false(fb_auth_verify_password("$argon2id$garbage", pw, strlen(pw), 1, 8192));
}

static void sha256_hex(const char *hex, uint8_t out[32])
{
    SHA256((const unsigned char *)hex, strlen(hex), out);
}

static bool is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static void test_auth_tokens(void **state)
{
    assert_int_equal(fb_auth_init(), 0);
    const char *good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    uint8_t h[32], want[32];
    assert_int_equal(fb_auth_token_hash(good, h), 0);
    sha256_hex(good, want);
    assert_memory_equal(h, want, 32);

    char bad63[64], bad65[66], upper[65], nonhex[65];
    memcpy(bad63, good, 63);
    bad63[63] = 0;
    snprintf(bad65, sizeof bad65, "%sa", good);
    snprintf(upper, sizeof upper, "%s", good);
    upper[20] = 'A';
    snprintf(nonhex, sizeof nonhex, "%s", good);
    nonhex[63] = 'g';
    const char *bad[] = {"",
                         "abc",
                         bad63,
                         bad65,
                         upper,
                         nonhex,
                         "                                                                ",
                         "0011223344556677 899aabbccddeeff00112233445566778899aabbccddeeff"};
    for (size_t i = 0; i < FB_ARRAY_LEN(bad); i++) {
        memset(h, 0x5a, sizeof h);
        if (fb_auth_token_hash(bad[i], h) != FB_EBADTOKEN) fail_msg("token '%s' accepted", bad[i]);
    }

    char t1[FB_TOKEN_HEX + 1], t2[FB_TOKEN_HEX + 1];
    uint8_t h1[32], h2[32], check[32];
    fb_auth_new_token(t1, h1);
    fb_auth_new_token(t2, h2);
    assert_true(is_lower_hex(t1, FB_TOKEN_HEX));
    assert_true(is_lower_hex(t2, FB_TOKEN_HEX));
    assert_string_not_equal(t1, t2);
    assert_memory_not_equal(h1, h2, 32);
    /* the stored hash is the hash of the presented token */
    assert_int_equal(fb_auth_token_hash(t1, check), 0);
    assert_memory_equal(check, h1, 32);
    sha256_hex(t2, want);
    assert_memory_equal(h2, want, 32);
}

/* ---- receipts ---- */

static void test_unread_for(void **state)
{
    /* alice (1) sent seq 10; members joined and read at various points */
    fb_member_t ms[] = {
        {.user_id = 1, .joined_seq = 1, .read_seq = 0},   /* the sender: never counted */
        {.user_id = 2, .joined_seq = 1, .read_seq = 9},   /* counts */
        {.user_id = 3, .joined_seq = 5, .read_seq = 10},  /* read it */
        {.user_id = 4, .joined_seq = 10, .read_seq = 9},  /* joined at it: counts */
        {.user_id = 5, .joined_seq = 11, .read_seq = 10}, /* joined after it */
        {.user_id = 6, .joined_seq = 2, .read_seq = 12},  /* read past it */
        {.user_id = 7, .joined_seq = 3, .read_seq = 0},   /* counts */
    };
    fb_event_t ev = {.room_id = 1, .seq = 10, .kind = FB_EV_TEXT, .actor_id = 1};
    assert_int_equal(fb_unread_for(ms, FB_ARRAY_LEN(ms), &ev), 3);
    assert_int_equal(fb_unread_for(ms, 0, &ev), 0);
    assert_int_equal(fb_unread_for(ms, 1, &ev), 0);
    /* the same members, for a message by user 2 */
    ev.actor_id = 2;
    assert_int_equal(fb_unread_for(ms, FB_ARRAY_LEN(ms), &ev), 3); /* 1, 4, 7 */
    ev.seq = 12;
    ev.actor_id = 6;
    /* 1 (read 0), 2 (read 9), 3 (read 10), 4, 5 (joined 11 <= 12, read 10), 7 */
    assert_int_equal(fb_unread_for(ms, FB_ARRAY_LEN(ms), &ev), 6);
    int kinds[] = {FB_EV_CREATE, FB_EV_JOIN, FB_EV_LEAVE, FB_EV_KICK, FB_EV_RENAME};
    for (size_t i = 0; i < FB_ARRAY_LEN(kinds); i++) {
        ev.kind = kinds[i];
        assert_int_equal(fb_unread_for(ms, FB_ARRAY_LEN(ms), &ev), -1);
    }
}

/* fb_utf8_seq answers as jansson does: a sequence it calls valid loads as a
 * JSON string, any other does not. Every first and second byte; the third
 * and fourth (where the first byte announces them) over the bytes where the
 * rules change: the ends of the continuation ranges, ASCII, NUL. */
static void check_utf8_seq(const unsigned char *b, size_t *valid)
{
    char s[5] = {(char)b[0], (char)b[1], (char)b[2], (char)b[3], 0};
    size_t n = fb_utf8_seq(s);
    /* jansson takes the bytes the first byte announces (at least one) */
    size_t len = n ? n : b[0] < 0xc0 ? 1 : b[0] < 0xe0 ? 2 : b[0] < 0xf0 ? 3 : 4;
    char json[8] = {'"'};
    memcpy(json + 1, s, len);
    json[len + 1] = '"';
    json_t *j = json_loadb(json, len + 2, JSON_DECODE_ANY, NULL);
    if ((n > 0) != (j != NULL))
        fail_msg("%02x %02x %02x %02x: fb_utf8_seq %zu, jansson %s", b[0], b[1], b[2], b[3], n,
                 j ? "accepts" : "refuses");
    json_decref(j);
    *valid += n > 1;
}

static void test_utf8_seq_matches_jansson(void **state)
{
    static const unsigned char tail[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90,
                                         0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    size_t valid = 0;
    /* controls, '"' and '\\' are refused or read by jansson for other reasons */
    for (int b0 = 0x20; b0 < 256; b0++) {
        if (b0 == '"' || b0 == '\\') continue;
        size_t n2 = b0 >= 0xe0 ? sizeof tail : 1, n3 = b0 >= 0xf0 ? sizeof tail : 1;
        for (int b1 = 0; b1 < 256; b1++)
            for (size_t i2 = 0; i2 < n2; i2++)
                for (size_t i3 = 0; i3 < n3; i3++) {
                    unsigned char b[4] = {(unsigned char)b0, (unsigned char)b1,
                                          n2 > 1 ? tail[i2] : 0x80, n3 > 1 ? tail[i3] : 0x80};
                    check_utf8_seq(b, &valid);
                }
    }
    assert_true(valid > 10000); /* the valid side was reached too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_basic),
        cmocka_unit_test(test_map_random),
        cmocka_unit_test(test_map_tombstone_churn),
        cmocka_unit_test(test_mpsc_single_thread),
        cmocka_unit_test(test_mpsc_threads),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_mem_accounting),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_set),
        cmocka_unit_test(test_config_refusal_changes_nothing),
        cmocka_unit_test(test_config_load),
        cmocka_unit_test(test_config_print_roundtrip),
        cmocka_unit_test(test_config_store_keys),
        cmocka_unit_test(test_auth_password),
        cmocka_unit_test(test_auth_tokens),
        cmocka_unit_test(test_unread_for),
        cmocka_unit_test(test_utf8_seq_matches_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
