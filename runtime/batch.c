/*
 * batch.c - one batch, top to bottom (see batch.h): open the cursor, take
 * the target's transaction, on_batch_start, every event through the
 * script and its outcome (OK, a retry, a failed-event row), on_batch_end,
 * then commit the target's work and finish the batch in the queue's
 * database.  Everything the script and the runtime write for a batch
 * commits together or not at all; a local consumer's target calls are
 * no-ops (target.h).
 */
#include "batch.h"
#include "clock.h"
#include "failed.h"
#include "fault.h"
#include "log.h"
#include "watch.h"

#include <stdio.h>
#include <stdlib.h>

#define TICK_EVERY_EVENTS 64     /* watchdog notes inside a long chunk */
#define REASON_LEN (LB_MSG_LEN + 64)

/* How the batch goes on after a step. */
typedef enum event_step {
	STEP_NEXT = 0,             /* go on */
	STEP_ABORT,                /* roll back on purpose: ABORT_BATCH, a hook failed */
	STEP_STOP,                 /* a second stop request: roll back now */
	STEP_DB_ERROR              /* a statement of ours failed: rolled back and reported */
} event_step;

static const char *ev_id(const PGresult *res, int row)
{
	return PQgetvalue(res, row, PGQ_EV_ID);
}

/* The partition whose batch holds the event: in a joint batch its row
 * says which; otherwise the batch's own. */
static consumer_part *ev_part(const pgqlua_consumer *c, const PGresult *res, int row)
{
	if (c->njoint > 0) {
		int i = atoi(PQgetvalue(res, row, PGQ_EV_PART));
		if (i >= 0 && i < c->nparts && c->parts[i].joint_batch)
			return &c->parts[i];
	}
	return c->part;
}

/* A statement of ours failed: wait out the script's sends, roll back and
 * report. */
static event_step fail_db(pgqlua_consumer *c, const char *what, const char *err)
{
	ldb_batch_end(c->db);
	consumer_db_failure(c, what, err);
	return STEP_DB_ERROR;
}

/* One debug line per event with what the script decided, in a fixed
 * format (the contract tests read it). */
static void log_outcome(const char *id, const lb_result *r)
{
	if (log_current_level < LOG_LVL_DEBUG)
		return;
	switch (r->outcome) {
	case LB_OK:
		log_debug("event %s: outcome OK", id);
		break;
	case LB_RETRY:
		if (r->delay < 0)
			log_debug("event %s: outcome RETRY", id);
		else
			log_debug("event %s: outcome RETRY delay=%g", id, r->delay);
		break;
	case LB_FAILED:
		log_debug("event %s: outcome FAILED reason=%s", id, r->msg);
		break;
	case LB_ABORT:
		log_debug("event %s: outcome ABORT_BATCH", id);
		break;
	case LB_ERROR:
		log_debug("event %s: outcome ERROR error=%s", id, r->msg);
		break;
	}
}

/* An event's final outcome in the queue's database: a retry or a failed
 * row (the target records it first where a replay needs it). */
static event_step apply_outcome(pgqlua_consumer *c, const PGresult *res, int row, const event_outcome *o)
{
	char err[PGCONN_ERR_LEN];
	const config *cfg = c->cfg;
	const char *part = ev_part(c, res, row)->name;

	if (target_event_done(c->target, ev_id(res, row), o, err, sizeof(err)) != 0)
		return fail_db(c, "recording the event in the target", err);
	switch (o->action) {
	case ACTION_OK:
		break;
	case ACTION_FAILED:
		log_warn("event %s: moved to the failed-event table: %s", ev_id(res, row), o->reason);
		if (failed_record(c->conn, cfg->queue_name, cfg->consumer_name, part, res, row, o->reason,
		                  err, sizeof(err)) != 0)
			return fail_db(c, "recording a failed event", err);
		c->stats.failed++;
		break;
	case ACTION_RETRY:
		if (pgq_retry_event(c->conn, cfg->queue_name, part, res, row, o->delay, err,
		                    sizeof(err)) != 0)
			return fail_db(c, "pgq.event_retry_raw", err);
		c->stats.retries++;
		break;
	}
	return STEP_NEXT;
}

/* What the script's result means for its event: RETRY and errors go back
 * through PgQ until max_retries, then to the failed-event table. */
static event_step settle_event(pgqlua_consumer *c, const PGresult *res, int row, const lb_result *r)
{
	event_outcome o = {ACTION_OK, 0, NULL};
	char reason[REASON_LEN];
	long long retry;

	switch (r->outcome) {
	case LB_OK:
	case LB_ABORT:   /* never here: the batch rolls back */
		break;
	case LB_FAILED:
		o.action = ACTION_FAILED;
		o.reason = r->msg;
		break;
	case LB_ERROR:
	case LB_RETRY:
		if (r->outcome == LB_ERROR) {
			c->stats.errors++;
			log_warn("event %s: script error: %s", ev_id(res, row), r->msg);
		}
		retry = PQgetisnull(res, row, PGQ_EV_RETRY) ? 0 : atoll(PQgetvalue(res, row, PGQ_EV_RETRY));
		if (lb_retries_used_up(c->script, retry, c->cfg->max_retries, r->msg, reason, sizeof(reason))) {
			o.action = ACTION_FAILED;
			o.reason = reason;
			break;
		}
		o.action = ACTION_RETRY;
		o.delay = r->delay < 0 ? c->cfg->retry_delay : r->delay;
		log_debug("event %s: retry %lld in %.3gs%s%s", ev_id(res, row), retry + 1, o.delay,
		          r->msg[0] ? ": " : "", r->msg);
		break;
	}
	return apply_outcome(c, res, row, &o);
}

/* Events of this chunk whose db:send failed after they had ended OK
 * become errors now.  With close, the handle's window is closed first in
 * any case (before the runtime's own SQL). */
static event_step settle_send_failures(pgqlua_consumer *c, const PGresult *res, int close)
{
	char err[PGCONN_ERR_LEN];
	lb_result r;
	int row;

	if (!close && !ldb_failures_pending(c->db))
		return STEP_NEXT;
	if (ldb_close(c->db, err, sizeof(err)) != 0)
		return fail_db(c, "waiting for db:send statements", err);
	while (ldb_take_failure(c->db, &row, r.msg, sizeof(r.msg))) {
		event_step step;
		r.outcome = LB_ERROR;
		r.delay = -1;
		log_outcome(ev_id(res, row), &r);
		if ((step = settle_event(c, res, row, &r)) != STEP_NEXT)
			return step;
	}
	return STEP_NEXT;
}

/* The metrics' count of outcomes. */
static void count_outcome(pgqlua_consumer *c, const PGresult *res, int row, const lb_result *r)
{
	metrics_count_event(ev_part(c, res, row)->fig, r->outcome == LB_OK ? METRICS_OK : r->outcome == LB_RETRY ? METRICS_RETRY
	                                  : r->outcome == LB_FAILED ? METRICS_FAILED : METRICS_ERROR);
}

/* Events whose outcome waited for their pgq.http.send requests (they
 * ended OK without touching the database): their responses decide now,
 * before the chunk's rows are let go. */
static event_step settle_deferred(pgqlua_consumer *c, const PGresult *res)
{
	char err[PGCONN_ERR_LEN];
	event_step step;
	int row;

	if (lb_sends_next_row(c->script) < 0)
		return STEP_NEXT;
	if (ldb_close(c->db, err, sizeof(err)) != 0)
		return fail_db(c, "waiting for db:send statements", err);
	while ((row = lb_sends_next_row(c->script)) >= 0) {
		lb_result r = {LB_OK, -1, ""};
		lb_settle_sends(c->script, row, &r);
		if (c->stop_requests > 1)
			return STEP_STOP;
		log_outcome(ev_id(res, row), &r);
		count_outcome(c, res, row, &r);
		if ((step = settle_event(c, res, row, &r)) != STEP_NEXT)
			return step;
	}
	return STEP_NEXT;
}

/* A statement of the event (or hook) failed although the script went on:
 * the event is an error as it stands. */
static int took_sql_error(pgqlua_consumer *c, const char *who, char *msg, size_t msglen)
{
	const char *sql_msg;
	ldb_error_source src = ldb_event_error(c->db, &sql_msg);
	if (src == LDB_ERR_NONE)
		return 0;
	if (src == LDB_ERR_SEND)
		snprintf(msg, msglen, "%s", sql_msg);
	else
		snprintf(msg, msglen, "the %s went on after an SQL error: %s", who, sql_msg);
	return 1;
}

/* An event that killed the worker max_crashes times (deadline, crash, out
 * of memory) is not run again: it fails with the reason of its last
 * death. */
static int struck(pgqlua_consumer *c, const char *id, lb_result *r)
{
	char why[256];
	long long ev;
	int n;
	if (!watch_any_strikes())
		return 0;
	ev = atoll(id);
	n = watch_strikes(ev, why, sizeof(why));
	if (n <= 0 || n < c->cfg->max_crashes)
		return 0;
	r->outcome = LB_FAILED;
	r->delay = -1;
	snprintf(r->msg, sizeof(r->msg), "killed the consumer %d times: %s", n, why);
	watch_forget(ev);
	return 1;
}

/* One event: the script (unless the target has its outcome already), the
 * undo of its writes when it did not end OK, and its outcome. */
static event_step run_event(pgqlua_consumer *c, const PGresult *res, int row, char *why, size_t whylen)
{
	char err[PGCONN_ERR_LEN], buf[REASON_LEN];
	const char *id = ev_id(res, row);
	event_outcome done;
	event_step step;
	lb_result r;
	int rc, deferred = 0;

	rc = target_replayed(c->target, id, &done, buf, sizeof(buf), err, sizeof(err));
	if (rc != 0)
		return rc < 0 ? fail_db(c, "looking the event up in the target", err) : apply_outcome(c, res, row, &done);
	ldb_event_begin(c->db, row);
	if (!struck(c, id, &r)) {
		watch_begin(WATCH_EVENT, atoll(id), c->cfg->event_timeout);
		fault_segv("segv_in_event", PQgetvalue(res, row, PGQ_EV_DATA));
		metrics_part *fig = ev_part(c, res, row)->fig;
		if (fig) {
			double t0 = clock_mono();
			lb_call_event(c->script, res, row, &r);
			metrics_event_seconds(fig, clock_mono() - t0);
		} else
			lb_call_event(c->script, res, row, &r);
		watch_end();
	}
	if (c->stop_requests > 1)
		return STEP_STOP;
	if (r.outcome == LB_OK && took_sql_error(c, "script", r.msg, sizeof(r.msg)))
		r.outcome = LB_ERROR;
	if (r.outcome == LB_ABORT) {
		log_outcome(id, &r);
		snprintf(why, whylen, "the script returned pgq.ABORT_BATCH at event %s", id);
		return STEP_ABORT;
	}
	/* pgq.http.send: an event that wrote nothing has nothing to undo, so
	 * its outcome may wait for its responses while later events run;
	 * any other one waits for them now */
	if (lb_sends_pending(c->script, row) > 0) {
		if (r.outcome == LB_OK && ldb_event_statements(c->db) == 0 && !target_closes_window(c->target))
			deferred = 1;
		else {
			lb_settle_sends(c->script, row, &r);
			if (c->stop_requests > 1)
				return STEP_STOP;
		}
	}
	rc = ldb_event_end(c->db, r.outcome == LB_OK, r.outcome != LB_OK || target_closes_window(c->target),
	                   err, sizeof(err));
	if (rc < 0)
		return fail_db(c, "undoing an event's writes", err);
	if (rc > 0) {
		r.outcome = LB_ERROR;
		snprintf(r.msg, sizeof(r.msg), "%s", err);
	}
	c->stats.events++;
	if (deferred)
		step = STEP_NEXT;
	else {
		log_outcome(id, &r);
		count_outcome(c, res, row, &r);
		step = settle_event(c, res, row, &r);
	}
	if (step == STEP_NEXT)
		step = settle_send_failures(c, res, 0);
	if (step == STEP_NEXT && target_event_commit(c->target, c->db, err, sizeof(err)) != 0)
		step = fail_db(c, "committing the event in the target", err);
	return step;
}

/* on_batch_start / on_batch_end, their db writes kept; a failure of the
 * hook rolls the batch back. */
static event_step run_hook(pgqlua_consumer *c, int end, const pgq_batch *b, char *why, size_t whylen)
{
	const char *name = end ? "on_batch_end" : "on_batch_start";
	char err[PGCONN_ERR_LEN];
	int rc;

	ldb_event_begin(c->db, LDB_HOOK);
	watch_begin(WATCH_HOOK, 0, c->cfg->event_timeout);
	rc = end ? lb_call_batch_end(c->script, b, err, sizeof(err))
	         : lb_call_batch_start(c->script, b, err, sizeof(err));
	watch_end();
	if (rc == 0 && took_sql_error(c, "hook", err, sizeof(err)))
		rc = -1;
	if (rc == 0) {
		rc = ldb_event_end(c->db, 1, 1, err, sizeof(err));
		if (rc < 0)
			return fail_db(c, name, err);
	}
	if (rc != 0) {
		log_error("%s: %s", name, err);
		snprintf(why, whylen, "%s failed", name);
		return STEP_ABORT;
	}
	return target_event_commit(c->target, c->db, err, sizeof(err)) == 0
	           ? STEP_NEXT : fail_db(c, "committing the hook's work in the target", err);
}

/* Every event of the batch, chunk by chunk: while the script works on one
 * full chunk, the server reads the next (at most two are held). */
static event_step run_events(pgqlua_consumer *c, pgq_cursor_guard *guard, PGresult **res, long long *n_events,
                             char *why, size_t whylen)
{
	char err[PGCONN_ERR_LEN];
	event_step step;

	for (;;) {
		int n, more;
		if (pgq_cursor_check(guard, *res, &n, &more, err, sizeof(err)) != 0) {
			log_error("%s", err);
			snprintf(why, whylen, "its cursor was moved or closed");
			return STEP_ABORT;
		}
		if (more && pgq_fetch_async(c->conn, c->cfg->fetch_size) != 0) {
			pgconn_result_error(c->conn, NULL, err, sizeof(err));
			return fail_db(c, "fetching events", err);
		}
		for (int i = 0; i < n; i++) {
			if (c->stop_requests > 1)
				return STEP_STOP;
			if (i % TICK_EVERY_EVENTS == 0)
				consumer_tell(c, NOTE_TICK, NULL);
			if ((step = run_event(c, *res, i, why, whylen)) != STEP_NEXT)
				return step;
		}
		*n_events += n;
		/* the chunk's sends (db:send, pgq.http.send) are waited for while
		 * its rows are at hand */
		if ((step = settle_deferred(c, *res)) != STEP_NEXT)
			return step;
		if ((step = settle_send_failures(c, *res, 1)) != STEP_NEXT || !more)
			return step;
		PQclear(*res);
		if (!(*res = pgq_fetch_take(c->conn, guard, err, sizeof(err))))
			return fail_db(c, "fetching events", err);
	}
}

/* The batch's COMMIT did not happen, or may not have. */
static event_step commit_failed(pgqlua_consumer *c, pgq_commit done, const char *err)
{
	if (done == PGQ_COMMIT_UNKNOWN)
		return fail_db(c, "finishing the batch (connection lost during the commit: taken as not committed)", err);
	return fail_db(c, "finishing the batch", err);
}

/* A joint batch: every partition's batch finished in the one commit; their
 * next batches are asked for together on the next round. */
static event_step commit_joint(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	long long ids[JOINT_MAX];
	int n = 0;
	pgq_commit done;

	for (int i = 0; i < c->nparts && n < JOINT_MAX; i++)
		if (c->parts[i].joint_batch)
			ids[n++] = c->parts[i].joint_batch;
	done = pgq_finish_batches(c->conn, ids, n, err, sizeof(err));
	if (done != PGQ_COMMITTED)
		return commit_failed(c, done, err);
	fault_point("after_source_commit");
	return STEP_NEXT;
}

/* Commit: the target first (its work and the batch's mark), then the
 * queue's database finishes the batch and reads the next one, unless the
 * consumer is stopping (then no batch is left taken and unprocessed). */
static event_step commit_batch(pgqlua_consumer *c, const pgq_batch *b)
{
	pgq_batch_knobs k = {c->cfg->batch_min_count, c->cfg->batch_min_interval, c->cfg->batch_min_lag};
	char err[PGCONN_ERR_LEN];
	int stopping = c->stop_requests > 0;
	pgq_result next;
	pgq_commit done;

	ldb_batch_end(c->db);
	if (target_commit(c->target, b->batch_id, b->cur_tick_id, err, sizeof(err)) != 0)
		return fail_db(c, "committing the batch in the target", err);
	fault_cut(c->conn, "cut_before_commit");
	if (c->njoint > 0)
		return commit_joint(c);
	done = pgq_finish_and_next(c->conn, b->batch_id, c->cfg->queue_name, c->part->name, &k,
	                           stopping ? NULL : &c->part->next, &next, err, sizeof(err));
	if (done != PGQ_COMMITTED)
		return commit_failed(c, done, err);
	/* committed; an error of next_batch shows on the next try */
	c->part->next_known = stopping || next == PGQ_ERROR ? NEXT_UNKNOWN : next == PGQ_DONE ? NEXT_READY : NEXT_NONE;
	fault_point("after_source_commit");
	return STEP_NEXT;
}

/* Roll both databases back on purpose; the batch comes again. */
static pgqlua_status abort_batch(pgqlua_consumer *c, const char *why)
{
	ldb_batch_end(c->db);
	target_reset(c->target);
	pgq_rollback(c->conn);
	c->stats.aborts++;
	metrics_count_abort(c->part ? c->part->fig : NULL);
	log_warn("batch rolled back (%s); it will be delivered again", why);
	return PGQLUA_BATCH_ABORTED;
}

pgqlua_status batch_run(pgqlua_consumer *c, const pgq_batch *b)
{
	char err[PGCONN_ERR_LEN], why[256] = "immediate stop";
	long long n_events = 0;
	pgq_cursor_guard guard = {.fetch_size = c->cfg->fetch_size, .joint = c->njoint > 0};
	double started = clock_mono();
	event_step step = STEP_NEXT;
	pgqlua_status st;
	target_batch mode;
	PGresult *res;

	res = pgq_open_batch(c->conn, b, c->njoint > 0 ? c->joint_where : c->part->where,
	                     c->njoint > 0 ? c->joint_part : NULL, c->cfg->fetch_size, err, sizeof(err));
	if (!res) {
		step = fail_db(c, "opening the batch cursor", err);
		goto out;
	}
	c->guard = &guard;
	mode = target_begin(c->target, b->batch_id, err, sizeof(err));
	if (mode == TARGET_ERROR) {
		step = fail_db(c, "opening the target transaction", err);
		goto out;
	}
	ldb_batch_begin(c->db, target_conn(c->target, c->conn));
	if (mode == TARGET_RUN && (step = run_hook(c, 0, b, why, sizeof(why))) != STEP_NEXT)
		goto out;
	if ((step = run_events(c, &guard, &res, &n_events, why, sizeof(why))) != STEP_NEXT)
		goto out;
	if (mode == TARGET_RUN && (step = run_hook(c, 1, b, why, sizeof(why))) != STEP_NEXT)
		goto out;
	if ((step = commit_batch(c, b)) != STEP_NEXT)
		goto out;
	watch_commit();
	c->stats.batches++;
	c->stats.lag = b->lag;
	for (int i = 0; i < c->nparts; i++)
		if (c->njoint > 0 ? c->parts[i].joint_batch != 0 : &c->parts[i] == c->part)
			metrics_count_batch(c->parts[i].fig, clock_mono() - started);
	log_debug("batch done: %lld events, %lld rows fetched, lag %.3fs", n_events, guard.rows, b->lag);
out:
	lb_sends_drop(c->script);
	PQclear(res);
	pgconn_drop_async(c->conn);
	if (step == STEP_ABORT || step == STEP_STOP)
		st = abort_batch(c, why);
	else {
		ldb_batch_end(c->db);
		st = step == STEP_NEXT ? PGQLUA_OK : PGQLUA_ERR_DB;
	}
	c->guard = NULL;
	log_set_batch(0);
	return st;
}
