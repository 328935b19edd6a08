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

/* The most partitions whose batches one joint batch takes. */
#define JOINT_MAX 64

/* One PgQ consumer of this config: the consumer itself, or one partition
 * of a group (group.h).  Its claim is held on the consumer's connection,
 * which runs its batches. */
typedef struct consumer_part {
	char *name;                /* its PgQ consumer name */
	char *where;               /* its batch cursor filter; NULL: every event */
	int claimed;               /* conn holds its claim (pgq_claim) */
	next_state next_known;
	pgq_batch next;            /* NEXT_READY: its next batch */
	double released_at;        /* monotonic: when this member gave it up */
	metrics_part *fig;         /* its figures; NULL: no metrics */
	long long joint_batch;     /* its batch in the joint batch running now; 0: not in one */
} consumer_part;

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
	consumer_part *parts;      /* the consumer, or a group's partitions */
	int nparts;
	int grouped;               /* partitions: shared among members (group.c) */
	int once;                  /* run --once: a member takes what it can and gives nothing up */
	consumer_part *part;       /* whose batch runs now (a joint batch's lead); NULL between batches */
	int njoint;                /* a joint batch runs: its partitions (joint_batch set); 0: c->part's alone */
	char *joint_where;         /* and its cursor's filter and partition column (pgq_open_batch) */
	char *joint_part;
	int rr;                    /* the partition to look at first next time */
	char member[64];           /* a group member's name: HOST:PID */
	double next_balance;       /* monotonic: the next look at the group's owners */
	double unowned_since;      /* monotonic: a partition has had no owner since */
	double joined_at;          /* monotonic: this member's first look at the group */
	long long layout_gen;      /* the group layout's generation the parts follow; -1: not read yet */
	const pgq_cursor_guard *guard; /* the open batch's cursor; NULL between batches */
	int listening;             /* LISTEN pgqlua_tick is active on conn */
	int standby;               /* another instance holds it (a group: no partition held): waiting */
	char last_error[PGCONN_ERR_LEN + 256];
	int wake_r, wake_w;        /* self-pipe: stop and reload wake the sleep */
	int syslog_fallback;       /* no logfile configured: syslog, not stderr */
	metrics *metrics;          /* the figures' slots (metrics.h); NULL: no metrics */
	metrics *metrics_own;      /* the consumer's own slots and server (no supervising parent) */
	metrics_worker *mworker;   /* this worker's slot */
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

/* A group's layout changed (a resize): drop the partitions (no claim may
 * be held on them any more) and take up `partitions` of them, unclaimed.
 * 0, or -1 out of memory. */
int consumer_parts_reset(pgqlua_consumer *c, int partitions);

/* loop.c */
int consumer_connect(pgqlua_consumer *c);
/* Partition p's batch b through batch.c (c->part set around it). */
pgqlua_status loop_run_one(pgqlua_consumer *c, consumer_part *p, pgq_batch *b);
/* pgq.next_batch failed with err: after a resize that is no failure (the
 * old partitions are gone; the new ones come next). */
pgqlua_status loop_next_batch_failed(pgqlua_consumer *c, const char *err);

/* group.c: between batches, look at the group's owners (at most every
 * half second), take unowned partitions up to this member's share and
 * give one up when it holds more; PGQLUA_OK or a database failure. */
pgqlua_status group_balance(pgqlua_consumer *c);
/* The connection is new: no claim is held any more. */
void group_claims_lost(pgqlua_consumer *c);
/* Read the group's layout and, when a resize changed it, give up every
 * claim and take up the new partitions (between batches).  1 changed, 0
 * not, -1 on a database failure (c->last_error), -2 out of memory. */
int group_follow_layout(pgqlua_consumer *c);

#endif
