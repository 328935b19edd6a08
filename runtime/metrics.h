/*
 * metrics.h - the consumer's figures in the Prometheus text format, served
 * on `metrics_listen` (GET /metrics, libmicrohttpd's own thread) and
 * written to `metrics_file`.  The loop publishes a copy of its figures
 * between batches; a scrape reads that copy only, never the database and
 * never the consumer's state, so it cannot slow a batch.  Used by loop.c.
 */
#ifndef PGQLUA_METRICS_H
#define PGQLUA_METRICS_H

#include <stddef.h>

#define METRICS_BUCKETS 14

typedef struct metrics_hist {
	long long le[METRICS_BUCKETS]; /* observations in bucket i only (not cumulative) */
	long long count;
	double sum;
} metrics_hist;

enum metrics_outcome { METRICS_OK = 0, METRICS_RETRY, METRICS_FAILED, METRICS_ERROR, METRICS_N_OUTCOMES };

typedef struct metrics_figures {
	int up;                        /* connected and the script loaded */
	long long events[METRICS_N_OUTCOMES];
	long long batches, aborts;
	metrics_hist batch_seconds, event_seconds;
	int db_known;                  /* the PgQ figures below were read */
	double lag, last_seen;
	long long pending, failed_rows;
	long long reloads_ok, reloads_failed;
	long long worker_restarts;
	long long lua_memory;
} metrics_figures;

typedef struct metrics metrics;

/* NULL when out of memory. */
metrics *metrics_new(const char *queue, const char *consumer);
/* Stop the HTTP server, if any, and free. */
void metrics_free(metrics *m);

/* Serve GET /metrics on addr ("HOST:PORT", "[V6]:PORT" or ":PORT").  0, or
 * -1 with err. */
int metrics_listen(metrics *m, const char *addr, char *err, size_t errlen);

void metrics_observe(metrics_hist *h, double seconds);

/* Replace the published figures by f (a short copy under a mutex). */
void metrics_publish(metrics *m, const metrics_figures *f);

/* The text of the published figures, malloc'd (NULL: out of memory). */
char *metrics_render(metrics *m);

/* Write the text to path atomically (path.tmp, renamed).  0 or -1. */
int metrics_write_file(metrics *m, const char *path);

#endif
