/*
 * target.h - where a batch's work is committed: the seam between the batch
 * and remote mode.  A local consumer's target is the queue's own database
 * and every call here is a no-op; a remote consumer (target_db) works in
 * the target database, records there which batch and which events it
 * finished, and commits there before the source finishes the batch, so a
 * crash between the two COMMITs is repaired on the next start without
 * running the script again (the outcomes recorded in the target are
 * replayed).  Called by batch.c and loop.c; the SQL is in remote.c.
 * Functions returning int return 0, or -1 with err.
 */
#ifndef PGQLUA_TARGET_H
#define PGQLUA_TARGET_H

#include "config.h"
#include "ldb.h"
#include "pgconn.h"

typedef struct target target;

/* What happens to an event in the end. */
typedef enum event_action {
	ACTION_OK = 0,
	ACTION_RETRY,          /* back through PgQ after a delay */
	ACTION_FAILED          /* into the failed-event table */
} event_action;

typedef struct event_outcome {
	event_action action;
	double delay;          /* ACTION_RETRY: seconds */
	const char *reason;    /* ACTION_FAILED: why */
} event_outcome;

/* How the batch goes on after target_begin. */
typedef enum target_batch {
	TARGET_RUN = 0,        /* run the script */
	TARGET_REPLAY,         /* the target committed this batch already: apply
	                        * its recorded outcomes, run nothing */
	TARGET_ERROR
} target_batch;

/* cfg->target_db NULL: a local target.  NULL on out of memory. */
target *target_new(const config *cfg);
void target_free(target *t);

/* The connection the script's db handle works on: the target's, or the
 * source's own for a local consumer. */
pgconn *target_conn(target *t, pgconn *source);

/* Settings that follow the config (at start and after a reload). */
void target_configure(target *t, const config *cfg);

/* The PgQ consumer whose batch comes next: the consumer, or a group's
 * partition; the target tracks batches under its name (each partition
 * has its own last batch).  The name must outlive the batch. */
void target_set_consumer(target *t, const char *pgq_consumer);

/* (Re)connect if needed; quiet before the first batch (the caller
 * reports).  The start-up check reads the tracking table once. */
int target_connect(target *t, int quiet, char *err, size_t errlen);
int target_check(target *t, char *err, size_t errlen);

/* Batch boundaries. */
target_batch target_begin(target *t, long long batch_id, char *err, size_t errlen);
/* The script's work and the batch's mark commit in the target. */
int target_commit(target *t, long long batch_id, long long tick_id, char *err, size_t errlen);
/* Roll back, and drop the connection when it is broken (why says so). */
void target_reset(target *t);

/* Events.  target_replayed: the outcome recorded in the target for an
 * event it already has; 1 found (*out filled, reason in buf), 0 run the
 * script, -1 error.  target_event_done records an event's outcome in the
 * target where a replay needs it, and in event mode commits it there.
 * target_closes_window: event mode commits each event, so the db handle's
 * window closes at every event's end. */
int target_replayed(target *t, const char *ev_id, event_outcome *out, char *buf, size_t buflen,
                    char *err, size_t errlen);
int target_event_done(target *t, const char *ev_id, const event_outcome *o, char *err, size_t errlen);
int target_event_commit(target *t, ldb_state *db, char *err, size_t errlen);
int target_closes_window(const target *t);

/* The target's name for logs (never with the password); "" when local. */
const char *target_name(const target *t);

#endif
