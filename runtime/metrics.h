/*
 * metrics.h - the consumer's figures in the Prometheus text format, served
 * on `metrics_listen` (GET /metrics, libmicrohttpd's own thread) and
 * written to `metrics_file`.  The figures live in slots of atomic
 * counters: one per worker (up, reloads, restarts, Lua memory) and one per
 * partition of a group (events, batches, durations, PgQ's figures), or a
 * single one for an ungrouped consumer.  Under the supervising parent the
 * slots are a shared mapping the parent creates before it forks: every
 * worker adds to the slots of the partitions it holds and the parent alone
 * serves and writes them, so a scrape sees every worker and partition at
 * once.  A scrape reads the counters only, never the database and never a
 * lock a batch takes, so it cannot slow a batch.  Used by consumer.c,
 * loop.c, batch.c (the worker's side) and service.c, supervise.c (the
 * parent's).
 */
#ifndef PGQLUA_METRICS_H
#define PGQLUA_METRICS_H

#include <stddef.h>

enum metrics_outcome { METRICS_OK = 0, METRICS_RETRY, METRICS_FAILED, METRICS_ERROR, METRICS_N_OUTCOMES };

typedef struct metrics metrics;
typedef struct metrics_part metrics_part;       /* one partition's (or the consumer's) figures */
typedef struct metrics_worker metrics_worker;   /* one worker's figures */

/* Room for the partitions of a group that `pgqlua resize` makes larger
 * than it started (a larger start gets its own count). */
#define METRICS_MAX_PARTITIONS 256

/* Slots for nworkers workers and nparts partitions (labelled partition="I"
 * when grouped; worker="W" when nworkers > 1), in memory shared with the
 * processes forked later when `shared`.  NULL when out of memory. */
metrics *metrics_new(const char *queue, const char *consumer, int nworkers, int nparts, int grouped, int shared);
/* Stop the HTTP server, if any, and free. */
void metrics_free(metrics *m);

/* Serve GET /metrics on addr ("HOST:PORT", "[V6]:PORT" or ":PORT").  0, or
 * -1 with err. */
int metrics_listen(metrics *m, const char *addr, char *err, size_t errlen);

/* The text of the figures, malloc'd (NULL: out of memory). */
char *metrics_render(metrics *m);
/* Write the text to path atomically (path.tmp, renamed).  0 or -1. */
int metrics_write_file(metrics *m, const char *path);

/* ---- a worker forked by the parent ---- */

/* The parent, around each fork: the server's thread is stopped before
 * (no thread may run beside a fork) and started again after, on the same
 * listening socket. */
void metrics_before_fork(metrics *m);
void metrics_after_fork(metrics *m);

/* In the worker: the parent's slots are this worker's (worker number
 * `worker`); the parent's listening socket is closed here. */
void metrics_attach(metrics *m, int worker);
/* The slots a worker was attached to (and its number), or NULL. */
metrics *metrics_attached(int *worker);

/* ---- the slots; every function takes NULL (no metrics) as a no-op ---- */

metrics_part *metrics_part_at(metrics *m, int i);
metrics_worker *metrics_worker_at(metrics *m, int i);

void metrics_count_event(metrics_part *p, enum metrics_outcome o);
void metrics_event_seconds(metrics_part *p, double seconds);
void metrics_count_batch(metrics_part *p, double seconds);
void metrics_count_abort(metrics_part *p);
/* PgQ's figures of the partition and its failed-event rows. */
void metrics_set_db(metrics_part *p, double lag, double last_seen, long long pending, long long failed_rows);

void metrics_set_up(metrics_worker *w, int up, long long lua_memory);
/* The group's layout the worker follows now: the partitions shown are the
 * largest count of the workers' (the start's until one is set). */
void metrics_set_partitions(metrics_worker *w, int partitions);
void metrics_count_reload(metrics_worker *w, int ok);
/* The parent: the worker's restarts so far; a worker that died is down. */
void metrics_set_restarts(metrics_worker *w, int restarts);

#endif
