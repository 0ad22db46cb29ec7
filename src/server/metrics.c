/* /metrics: the node's counters in the Prometheus text format, summed over
 * the io loops and the writer at scrape time (relaxed atomics, no locks).
 * SPDX-License-Identifier: MIT */
#include "server/server.h"

#include <stddef.h>

/* One counter of fb_loop_stats_t (at byte offset off), summed over the loops. */
static double sum(const fb_server_t *s, size_t off)
{
    uint64_t t = 0;
    for (int i = 0; i < s->n_loops; i++)
        t += atomic_load((const atomic_uint_fast64_t *)((const char *)&s->loops[i]->stats + off));
    return (double)t;
}
#define SUM(field) sum(s, offsetof(fb_loop_stats_t, field))

static void metric(fb_buf_t *b, const char *name, const char *type, const char *help, double v)
{
    fb_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

void fb_metrics_render(fb_server_t *s, fb_buf_t *b)
{
    const fb_writer_stats_t *w = fb_writer_stats(s->writer);
    uint64_t open = 0;
    for (int i = 0; i < s->n_loops; i++) open += (uint64_t)atomic_load(&s->loops[i]->open_conns);
    metric(b, "firebreak_connections", "gauge", "Open client connections.", (double)open);
    metric(b, "firebreak_connections_accepted_total", "counter", "Connections accepted.",
           SUM(accepted));
    metric(b, "firebreak_requests_total", "counter", "WebSocket requests received.",
           SUM(requests));
    metric(b, "firebreak_fast_requests_total", "counter",
           "Requests (send, read) read without jansson by the fast path.", SUM(fast_requests));
    metric(b, "firebreak_request_errors_total", "counter", "Error replies sent.",
           SUM(errors));
    metric(b, "firebreak_http_requests_total", "counter", "Plain HTTP requests served.",
           SUM(http_requests));
    metric(b, "firebreak_logins_total", "counter", "Successful logins and registrations.",
           SUM(logins));
    metric(b, "firebreak_login_failures_total", "counter", "Logins refused for bad credentials.",
           SUM(login_failures));
    metric(b, "firebreak_pushes_total", "counter", "Frames pushed to connections (fan-out).",
           SUM(pushes));
    metric(b, "firebreak_slow_consumer_closes_total", "counter",
           "Connections closed for exceeding max_output_bytes.", SUM(slow_closes));
    metric(b, "firebreak_bad_frames_total", "counter", "Binary or invalid frames received.",
           SUM(bad_frames));
    metric(b, "firebreak_commits_total", "counter", "Group commits that succeeded.",
           (double)atomic_load(&w->commits));
    metric(b, "firebreak_commit_failures_total", "counter",
           "Group commits that failed (their requests got retryable errors).",
           (double)atomic_load(&w->commit_failures));
    metric(b, "firebreak_write_requests_total", "counter", "Requests handled by the writer.",
           (double)atomic_load(&w->requests));
    metric(b, "firebreak_messages_stored_total", "counter", "Messages committed.",
           (double)atomic_load(&w->events));
    metric(b, "firebreak_commit_seconds_total", "counter", "Time spent in group commits.",
           (double)atomic_load(&w->commit_ns_total) / 1e9);
    metric(b, "firebreak_commit_batch_max", "gauge", "Largest group commit so far (requests).",
           (double)atomic_load(&w->batch_max_seen));
    metric(b, "firebreak_store_holds_total", "counter",
           "Times the writer found the store unreachable and held writes (failovers).",
           (double)atomic_load(&w->holds));
    metric(b, "firebreak_store_hold_seconds_total", "counter",
           "Time writes were held waiting for the store to come back.",
           (double)atomic_load(&w->hold_ns_total) / 1e9);
    metric(b, "firebreak_store_up", "gauge", "0 while the writer waits for the store, else 1.",
           atomic_load(&w->store_down) ? 0.0 : 1.0);
    if (s->relay) {
        const fb_relay_stats_t *r = fb_relay_stats(s->relay);
        metric(b, "firebreak_relay_announcements_total", "counter",
               "Commit announcements heard from the store's change feed.",
               (double)atomic_load(&r->announcements));
        metric(b, "firebreak_relay_events_total", "counter",
               "Events committed through other nodes and pushed to this node's clients.",
               (double)atomic_load(&r->events));
        metric(b, "firebreak_relay_reconnects_total", "counter",
               "Times the change feed was (re)connected to a primary.",
               (double)atomic_load(&r->reconnects));
    }
    metric(b, "firebreak_memory_bytes", "gauge", "Bytes allocated through the node's allocator.",
           (double)fb_mem_in_use());
    metric(b, "firebreak_uptime_seconds", "gauge", "Seconds since start.",
           (double)(fb_now_ms() - s->started_ms) / 1e3);
}
