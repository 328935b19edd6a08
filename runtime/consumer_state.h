/*
 * consumer_state.h - the state of one consumer, private to the three files
 * that share it: consumer.c (the public API and settings), loop.c (the
 * run loop: sleep, back-off, stats, reload) and batch.c (one batch).
 */
#ifndef PGQLUA_CONSUMER_STATE_H
#define PGQLUA_CONSUMER_STATE_H

#include "consumer.h"
#include "lbridge.h"
#include "metrics.h"
#include "ldb.h"
#include "pgconn.h"
#include "pgq.h"
#include "target.h"

#include <stdatomic.h>

typedef struct consumer_stats {
	long long events;
	long long batches;
	long long retries;
	long long failed;
	long long errors;
	long long aborts;
	double lag;
} consumer_stats;

/* What is known of the next batch when the loop asks for one. */
typedef enum next_state {
	NEXT_UNKNOWN = 0,      /* ask PgQ */
	NEXT_READY,            /* read with the last batch's commit: in c->next */
	NEXT_NONE              /* none was ready at the last batch's commit */
} next_state;

struct pgqlua_consumer {
	config *cfg;
	pgconn *conn;              /* the queue's database */
	target *target;            /* where the script's work commits */
	lb_script *script;
	ldb_state *db;             /* the script's db handle */
	consumer_stats stats, stats_logged;
	double next_stats;         /* monotonic time of the next stats line */
	double backoff;            /* seconds; 0 after a success */
	int polled;                /* a next_batch call has succeeded once */
	pgq_batch next;            /* NEXT_READY: the next batch */
	const pgq_cursor_guard *guard; /* the open batch's cursor; NULL between batches */
	next_state next_known;
	int listening;             /* LISTEN pgqlua_tick is active on conn */
	int claimed;               /* conn holds the consumer's claim (pgq_claim) */
	int standby;               /* another instance holds it: waiting */
	char last_error[PGCONN_ERR_LEN + 256];
	int wake_r, wake_w;        /* self-pipe: stop and reload wake the sleep */
	int syslog_fallback;       /* no logfile configured: syslog, not stderr */
	metrics *metrics;          /* metrics_listen or metrics_file: the published figures */
	metrics_figures fig;       /* the figures as the loop keeps them */
	double next_metrics_db;    /* monotonic time of the next PgQ figures read */
	double next_metrics_file;  /* and of the next metrics_file write */
	consumer_notify_fn notify;
	void *notify_arg;
	atomic_int stop_requests;  /* set from signal handlers or threads */
	atomic_int reload_requested;
};

/* consumer.c */
void consumer_tell(pgqlua_consumer *c, consumer_note what, const char *msg);
void consumer_apply_settings(pgqlua_consumer *c, const config *cfg);
/* After a failed statement: keep the error for pgqlua_last_error, log it
 * (once the loop polled), roll back both databases and drop broken
 * connections.  Returns PGQLUA_ERR_DB. */
pgqlua_status consumer_db_failure(pgqlua_consumer *c, const char *what, const char *err);

/* loop.c */
int consumer_connect(pgqlua_consumer *c);

#endif
