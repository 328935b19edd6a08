/*
 * consumer.c - the batch loop and the public pgqlua_* API (pgqlua.h).
 * One batch is one transaction on the queue's database: the script's
 * writes, retries, failed-event rows and finish_batch commit together.
 * Reloads are applied here, between batches, and nowhere else.
 */
#include "consumer.h"
#include "failed.h"
#include "lbridge.h"
#include "ldb.h"
#include "log.h"
#include "pgconn.h"
#include "pgq.h"
#include "remote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN 1.0
#define BACKOFF_MAX 30.0

typedef struct consumer_stats {
	long long events;
	long long batches;
	long long retries;
	long long failed;
	long long errors;
	long long aborts;
	double lag;
} consumer_stats;

struct pgqlua_consumer {
	config *cfg;
	pgconn *conn;
	pgconn *tconn;             /* remote consumer: the target; NULL: local */
	long long batch_id;        /* the batch being processed */
	int replaying;             /* the target has this batch: apply its outcomes only */
	lb_script *script;
	ldb_state db;
	consumer_stats stats, stats_logged;
	double next_stats;         /* monotonic time of the next stats line */
	double backoff;            /* seconds; 0 after a success */
	int polled;                /* a next_batch call has succeeded once */
	pgq_batch next;            /* the next batch, read with the last finish_batch */
	const pgq_cursor_guard *guard; /* the open batch's cursor; NULL between batches */
	int next_known;            /* 0: ask pgq; 1: next is ready; 2: none was ready */
	int listening;             /* LISTEN pgqlua_tick is active on conn */
	char last_error[1024];
	int wake_r, wake_w;        /* self-pipe: stop and reload wake the sleep */
	int syslog_fallback;        /* no logfile configured: syslog, not stderr */
	consumer_notify_fn notify;
	void *notify_arg;
	atomic_int stop_requests;   /* set from signal handlers or threads */
	atomic_int reload_requested;
};

typedef enum event_step {
	STEP_NEXT = 0,             /* go on with the next event */
	STEP_ABORT,                /* the script asked to abort the batch */
	STEP_STOP,                 /* a second stop request: roll back now */
	STEP_DB_ERROR              /* the runtime's own SQL failed */
} event_step;

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *pgqlua_version(void)
{
	return PGQLUA_VERSION;
}

const char *pgqlua_status_str(pgqlua_status st)
{
	switch (st) {
	case PGQLUA_OK: return "ok";
	case PGQLUA_NO_BATCH: return "no batch ready";
	case PGQLUA_BATCH_ABORTED: return "batch aborted; it will be delivered again";
	case PGQLUA_STOPPED: return "stopped";
	case PGQLUA_ERR_USAGE: return "usage error";
	case PGQLUA_ERR_CONFIG: return "configuration error";
	case PGQLUA_ERR_SCRIPT: return "script error";
	case PGQLUA_ERR_DB: return "database error";
	case PGQLUA_ERR_INTERNAL: return "internal error";
	}
	return "unknown status";
}

static void apply_settings(pgqlua_consumer *c, const config *cfg);

void consumer_log_to_syslog_by_default(pgqlua_consumer *c)
{
	c->syslog_fallback = 1;
	apply_settings(c, c->cfg);
}

void consumer_set_notify(pgqlua_consumer *c, consumer_notify_fn fn, void *arg)
{
	c->notify = fn;
	c->notify_arg = arg;
}

static void note(pgqlua_consumer *c, consumer_note what, const char *msg)
{
	if (c->notify)
		c->notify(c->notify_arg, what, msg);
}

const char *pgqlua_last_error(const pgqlua_consumer *c)
{
	return c->last_error;
}

const config *consumer_config(const pgqlua_consumer *c)
{
	return c->cfg;
}

/* Settings of a config that apply at once, at start and after a reload. */
static void apply_settings(pgqlua_consumer *c, const config *cfg)
{
	pgconn_set_prepare(c->conn, cfg->prepared_statements);
	if (c->tconn)
		pgconn_set_prepare(c->tconn, cfg->prepared_statements);
	log_set_level((log_level)cfg->log_level);
	log_set_consumer(cfg->consumer_name);
	log_use_syslog(cfg->log_syslog || (c->syslog_fallback && !cfg->logfile) ? "pgqlua" : NULL);
	if (!cfg->logfile)
		log_open_file(NULL);
	else if (log_open_file(cfg->logfile) != 0)
		log_error("cannot open logfile %s: %s; logging to stderr", cfg->logfile, strerror(errno));
}

pgqlua_status consumer_open_config(config *cfg, pgqlua_consumer **out, char *err, size_t errlen)
{
	pgqlua_consumer *c = calloc(1, sizeof(*c));
	int fds[2], oom;

	*out = NULL;
	if (c)
		c->wake_r = c->wake_w = -1;
	if (!c || pipe(fds) != 0) {
		free(c);
		config_free(cfg);
		snprintf(err, errlen, "out of memory or file descriptors");
		return PGQLUA_ERR_INTERNAL;
	}
	for (int i = 0; i < 2; i++)
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	c->wake_r = fds[0];
	c->wake_w = fds[1];
	c->cfg = cfg;
	if (pgconn_check_conninfo(cfg->db, err, errlen) != 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", err);
		snprintf(err, errlen, "%s: %s", cfg->path, msg);
		pgqlua_close(c);
		return PGQLUA_ERR_CONFIG;
	}
	if (cfg->target_db && pgconn_check_conninfo(cfg->target_db, err, errlen) != 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", err);
		snprintf(err, errlen, "%s: target_%s", cfg->path, msg);
		pgqlua_close(c);
		return PGQLUA_ERR_CONFIG;
	}
	c->conn = pgconn_new(cfg->db, cfg->timezone);
	if (cfg->target_db && c->conn)
		c->tconn = pgconn_new(cfg->target_db, cfg->timezone);
	if (!c->conn || (cfg->target_db && !c->tconn)) {
		pgqlua_close(c);
		snprintf(err, errlen, "out of memory");
		return PGQLUA_ERR_INTERNAL;
	}
	apply_settings(c, cfg);
	c->script = lb_script_load(cfg, &c->db, &oom, err, errlen);
	if (!c->script) {
		pgqlua_close(c);
		return oom ? PGQLUA_ERR_INTERNAL : PGQLUA_ERR_SCRIPT;
	}
	c->next_stats = now_mono() + cfg->stats_period;
	*out = c;
	return PGQLUA_OK;
}

pgqlua_status pgqlua_open(const char *config_path, pgqlua_consumer **out, char *err, size_t errlen)
{
	config *cfg;
	*out = NULL;
	if (!config_path) {
		snprintf(err, errlen, "no config file given");
		return PGQLUA_ERR_USAGE;
	}
	if (config_load(config_path, &cfg, err, errlen) != CONFIG_OK)
		return PGQLUA_ERR_CONFIG;
	return consumer_open_config(cfg, out, err, errlen);
}

void pgqlua_close(pgqlua_consumer *c)
{
	if (!c)
		return;
	lb_script_free(c->script);
	ldb_free(&c->db);
	if (c->next_known == 1)
		free(c->next.sql);
	pgconn_free(c->conn);
	pgconn_free(c->tconn);
	config_free(c->cfg);
	if (c->wake_r >= 0)
		close(c->wake_r);
	if (c->wake_w >= 0)
		close(c->wake_w);
	free(c);
}

void pgqlua_request_stop(pgqlua_consumer *c)
{
	int saved = errno;
	if (atomic_fetch_add(&c->stop_requests, 1) >= 1) {
		/* the second request: stop at once, even inside SQL or Lua */
		pgconn_cancel(c->conn);
		lb_interrupt(c->script);
	}
	if (write(c->wake_w, "s", 1) < 0) {
		/* the pipe is full: the loop is awake already */
	}
	errno = saved;
}

void pgqlua_request_reload(pgqlua_consumer *c)
{
	int saved = errno;
	c->reload_requested = 1;
	if (write(c->wake_w, "r", 1) < 0) {
		/* as above */
	}
	errno = saved;
}

/* Take the tick notifications libpq has read; 1 if one was for our queue. */
static int take_ticks(pgqlua_consumer *c)
{
	PGconn *pg = pgconn_pg(c->conn);
	PGnotify *n;
	int ours = 0;
	if (!pg || !PQconsumeInput(pg))
		return 0;
	while ((n = PQnotifies(pg)) != NULL) {
		ours |= strcmp(n->extra, c->cfg->queue_name) == 0;
		PQfreemem(n);
	}
	return ours;
}

/* Sleep up to secs, waking at once on stop or reload, and on a tick of our
 * queue when wakeup is on. */
static void consumer_sleep(pgqlua_consumer *c, double secs)
{
	struct pollfd pfd[2] = {{c->wake_r, POLLIN, 0}, {-1, POLLIN, 0}};
	double until = now_mono() + (secs > 3600 ? 3600 : secs);
	char buf[64];

	if (c->stop_requests || c->reload_requested)
		return;
	if (c->listening && pgconn_is_ok(c->conn)) {
		(void)take_ticks(c);   /* older than the last next_batch: stale */
		pfd[1].fd = PQsocket(pgconn_pg(c->conn));
	}
	for (;;) {
		double left = until - now_mono();
		int r;
		if (left <= 0)
			return;
		r = poll(pfd, pfd[1].fd >= 0 ? 2 : 1, (int)(left * 1000) + 1);
		if (r <= 0)
			return;
		if (pfd[0].revents) {
			while (read(c->wake_r, buf, sizeof(buf)) > 0)
				;
			return;
		}
		if (pfd[1].revents && (take_ticks(c) || !pgconn_is_ok(c->conn)))
			return;
	}
}

static double next_backoff(pgqlua_consumer *c)
{
	c->backoff = c->backoff <= 0 ? BACKOFF_MIN : c->backoff * 2;
	if (c->backoff > BACKOFF_MAX)
		c->backoff = BACKOFF_MAX;
	return c->backoff;
}

static void log_stats(pgqlua_consumer *c, const char *what)
{
	consumer_stats *s = &c->stats, *o = &c->stats_logged;
	char line[256];
	snprintf(line, sizeof(line), "events=%lld batches=%lld retries=%lld failed=%lld errors=%lld aborts=%lld lag=%.1fs",
	         s->events - o->events, s->batches - o->batches, s->retries - o->retries,
	         s->failed - o->failed, s->errors - o->errors, s->aborts - o->aborts, s->lag);
	log_info("%s: %s", what, line);
	note(c, NOTE_STATS, line);
	*o = *s;
}

static void maybe_log_stats(pgqlua_consumer *c)
{
	double now;
	if (c->cfg->stats_period <= 0)
		return;
	now = now_mono();
	if (now < c->next_stats)
		return;
	c->next_stats = now + c->cfg->stats_period;
	log_stats(c, "stats");
}

/* After a failed statement: roll back, drop a broken connection. */
/* Roll back, and drop a connection that is broken or cannot be trusted. */
static void conn_reset(pgconn *conn)
{
	if (!conn)
		return;
	pgq_rollback(conn);
	if (pgconn_is_ok(conn) && PQpipelineStatus(pgconn_pg(conn)) != PQ_PIPELINE_OFF)
		pgconn_close(conn);
	if (!pgconn_is_ok(conn) && pgconn_pg(conn)) {
		log_warn("connection to %s lost; the open batch will be delivered again",
		         pgconn_safe_name(conn));
		pgconn_close(conn);
	}
}

/* After a failed statement: roll back both databases, drop broken connections. */
static pgqlua_status db_failure(pgqlua_consumer *c, const char *what, const char *err)
{
	char why[512];
	const char *hint;
	if (pgq_cursor_explain(c->conn, c->guard, why, sizeof(why)))
		err = why;
	hint = strstr(err, "pgqlua.") ? " (run `pgqlua install CONFIG`)" : "";
	snprintf(c->last_error, sizeof(c->last_error), "%s: %s%s", what, err, hint);
	/* before the first poll the caller reports it (pgqlua run exits) */
	if (c->polled)
		log_error("%s", c->last_error);
	conn_reset(c->tconn);
	conn_reset(c->conn);
	return PGQLUA_ERR_DB;
}

#ifdef PGQLUA_FAULT_INJECTION
/* Tests only: PGQLUA_FAULT=point kills the process there, as a crash would. */
static void fault_point(const char *point)
{
	const char *f = getenv("PGQLUA_FAULT");
	if (f && strcmp(f, point) == 0) {
		log_warn("fault injection: killed at %s", point);
		raise(SIGKILL);
	}
}
#else
#define fault_point(point) ((void)0)
#endif

static event_step send_to_failed(pgqlua_consumer *c, const PGresult *res, int row, const char *reason)
{
	char err[1024];
	log_warn("event %s: moved to the failed-event table: %s", PQgetvalue(res, row, PGQ_EV_ID), reason);
	if (failed_record(c->conn, c->cfg->queue_name, c->cfg->consumer_name, res, row, reason, err,
	                  sizeof(err)) != 0) {
		db_failure(c, "recording a failed event", err);
		return STEP_DB_ERROR;
	}
	c->stats.failed++;
	return STEP_NEXT;
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

/* The source's side of an event's final outcome: a retry or a failed row;
 * a remote consumer also records it in the target.  action is "ok",
 * "retry" or "failed". */
static event_step apply_outcome(pgqlua_consumer *c, const PGresult *res, int row, const char *action,
                                double delay, const char *reason)
{
	char err[1024];
	const char *id = PQgetvalue(res, row, PGQ_EV_ID);

	if (c->tconn && !c->replaying && (c->cfg->remote_event_mode || strcmp(action, "ok") != 0)) {
		if (remote_record_event(c->tconn, c->cfg->queue_name, c->cfg->consumer_name, c->batch_id, id,
		                        action, delay, reason, err, sizeof(err)) != 0) {
			db_failure(c, "recording the event in the target", err);
			return STEP_DB_ERROR;
		}
	}
	if (strcmp(action, "failed") == 0)
		return send_to_failed(c, res, row, reason);
	if (strcmp(action, "retry") == 0) {
		if (pgq_retry_event(c->conn, c->cfg->queue_name, c->cfg->consumer_name, res, row, delay, err,
		                    sizeof(err)) != 0) {
			db_failure(c, "pgq.event_retry_raw", err);
			return STEP_DB_ERROR;
		}
		c->stats.retries++;
	}
	return STEP_NEXT;
}

/* Remote event mode: each event's target work commits on its own. */
static event_step commit_target_event(pgqlua_consumer *c)
{
	char err[1024];
	if (!c->tconn || !c->cfg->remote_event_mode)
		return STEP_NEXT;
	if (pgconn_cmd(c->tconn, "commit; begin", err, sizeof(err)) != 0) {
		db_failure(c, "committing the event in the target", err);
		return STEP_DB_ERROR;
	}
	ldb_after_commit(&c->db);
	return STEP_NEXT;
}

/* An event the target already has (a batch or, in event mode, an event
 * committed there before a crash): apply its recorded outcome only. */
static int replay_event(pgqlua_consumer *c, const PGresult *res, int row, event_step *step)
{
	char err[1024], action[16], reason[1200];
	double delay;
	int found;
	if (!c->tconn || (!c->replaying && !c->cfg->remote_event_mode))
		return 0;
	found = remote_find_event(c->tconn, c->cfg->queue_name, c->cfg->consumer_name, c->batch_id,
	                          PQgetvalue(res, row, PGQ_EV_ID), action, sizeof(action), &delay, reason,
	                          sizeof(reason), err, sizeof(err));
	if (found < 0) {
		db_failure(c, "looking the event up in the target", err);
		*step = STEP_DB_ERROR;
		return 1;
	}
	if (!found && !c->replaying)
		return 0;   /* event mode: not done yet, run the script */
	log_debug("event %s: already done in the target (%s); not run again",
	          PQgetvalue(res, row, PGQ_EV_ID), found ? action : "ok");
	*step = found ? apply_outcome(c, res, row, action, delay, reason) : STEP_NEXT;
	return 1;
}

/* What an event's result means for it: a retry, a failed row, or nothing
 * more (OK).  The handle's window is closed unless the result is OK. */
static event_step settle_event(pgqlua_consumer *c, const PGresult *res, int row, lb_result *r)
{
	const char *id = PQgetvalue(res, row, PGQ_EV_ID);
	long long retry;

	switch (r->outcome) {
	case LB_OK:
		return apply_outcome(c, res, row, "ok", 0, NULL);
	case LB_FAILED:
		return apply_outcome(c, res, row, "failed", 0, r->msg);
	default:
		if (r->outcome == LB_ERROR) {
			c->stats.errors++;
			log_warn("event %s: script error: %s", id, r->msg);
		}
		/* RETRY or an error: back through PgQ, unless retries are used up */
		retry = PQgetisnull(res, row, PGQ_EV_RETRY) ? 0 : atoll(PQgetvalue(res, row, PGQ_EV_RETRY));
		if (retry >= c->cfg->max_retries) {
			char reason[1200];
			snprintf(reason, sizeof(reason), "max_retries (%d) reached: %s", c->cfg->max_retries,
			         r->msg[0] ? r->msg : "retried by the script");
			return apply_outcome(c, res, row, "failed", 0, reason);
		}
		if (r->delay < 0)
			r->delay = c->cfg->retry_delay;
		log_debug("event %s: retry %lld in %.3gs%s%s", id, retry + 1, r->delay, r->msg[0] ? ": " : "",
		          r->msg);
		return apply_outcome(c, res, row, "retry", r->delay, NULL);
	}
}

/* Events of this chunk whose db:send failed after they had ended OK:
 * they become errors now.  With close, the handle's window is closed
 * first in any case (before the runtime's own SQL). */
static event_step settle_send_failures(pgqlua_consumer *c, const PGresult *res, int close)
{
	char err[1024];
	int row;
	lb_result r;

	if (!close && !ldb_failures_pending(&c->db))
		return STEP_NEXT;
	if (ldb_close(&c->db, err, sizeof(err)) != 0) {
		db_failure(c, "waiting for db:send statements", err);
		return STEP_DB_ERROR;
	}
	while (ldb_take_failure(&c->db, &row, r.msg, sizeof(r.msg))) {
		event_step step;
		r.outcome = LB_ERROR;
		r.delay = -1;
		log_debug("event %s: outcome ERROR error=%s", PQgetvalue(res, row, PGQ_EV_ID), r.msg);
		step = settle_event(c, res, row, &r);
		if (step != STEP_NEXT)
			return step;
	}
	return STEP_NEXT;
}

static event_step consumer_handle_event(pgqlua_consumer *c, const PGresult *res, int row)
{
	lb_result r;
	char err[1024];
	const char *id = PQgetvalue(res, row, PGQ_EV_ID);
	event_step step;
	int rc;

	if (replay_event(c, res, row, &step))
		return step;
	ldb_event_begin(&c->db, row);
	lb_call_event(c->script, res, row, &r);
	if (c->stop_requests > 1)
		return STEP_STOP;
	if (r.outcome == LB_OK && c->db.sql_failed) {
		r.outcome = LB_ERROR;
		/* a failed send is its event's error as it stands */
		snprintf(r.msg, sizeof(r.msg), "%s%s", strncmp(c->db.sql_error, "db:send: ", 9) == 0 ? "" :
		         "the script went on after an SQL error: ", c->db.sql_error);
	}
	if (r.outcome == LB_ABORT) {
		log_outcome(id, &r);
		return STEP_ABORT;
	}
	rc = ldb_event_end(&c->db, r.outcome == LB_OK, r.outcome != LB_OK || c->cfg->remote_event_mode, err,
	                   sizeof(err));
	if (rc < 0) {
		db_failure(c, "undoing an event's writes", err);
		return STEP_DB_ERROR;
	}
	if (rc > 0) {
		r.outcome = LB_ERROR;
		snprintf(r.msg, sizeof(r.msg), "%s", err);
	}
	log_outcome(id, &r);
	c->stats.events++;
	step = settle_event(c, res, row, &r);
	if (step == STEP_NEXT)
		step = settle_send_failures(c, res, 0);
	return step == STEP_NEXT ? commit_target_event(c) : step;
}

static pgqlua_status consumer_abort_batch(pgqlua_consumer *c, const char *why)
{
	ldb_batch_end(&c->db);
	if (c->tconn)
		pgq_rollback(c->tconn);
	pgq_rollback(c->conn);
	c->stats.aborts++;
	log_warn("batch rolled back (%s); it will be delivered again", why);
	log_set_batch(0);
	return PGQLUA_BATCH_ABORTED;
}

/* on_batch_start / on_batch_end with their db writes kept; on failure the
 * batch is rolled back and *st says how. */
static int consumer_batch_hook(pgqlua_consumer *c, int end, const pgq_batch *b, pgqlua_status *st)
{
	const char *name = end ? "on_batch_end" : "on_batch_start";
	char err[1024];
	int rc;

	ldb_event_begin(&c->db, LDB_HOOK);
	rc = end ? lb_call_batch_end(c->script, b, err, sizeof(err))
	         : lb_call_batch_start(c->script, b, err, sizeof(err));
	if (rc == 0 && c->db.sql_failed) {
		snprintf(err, sizeof(err), "%s%s", strncmp(c->db.sql_error, "db:send: ", 9) == 0 ? "" :
		         "the hook went on after an SQL error: ", c->db.sql_error);
		rc = -1;
	}
	if (rc != 0) {
		log_error("%s: %s", name, err);
		*st = consumer_abort_batch(c, end ? "on_batch_end failed" : "on_batch_start failed");
		return -1;
	}
	rc = ldb_event_end(&c->db, 1, 1, err, sizeof(err));
	if (rc > 0) {
		log_error("%s: %s", name, err);
		*st = consumer_abort_batch(c, end ? "on_batch_end failed" : "on_batch_start failed");
		return -1;
	}
	if (rc < 0) {
		ldb_batch_end(&c->db);
		*st = db_failure(c, name, err);
		return -1;
	}
	return 0;
}

static pgqlua_status consumer_process_batch(pgqlua_consumer *c, const pgq_batch *b)
{
	char err[1024];
	PGresult *res;
	pgqlua_status st = PGQLUA_OK;
	long long n_events = 0;
	pgq_batch_knobs k = {c->cfg->batch_min_count, c->cfg->batch_min_interval, c->cfg->batch_min_lag};
	int finished, stopping;
	pgq_result nr;
	pgq_cursor_guard guard = {.fetch_size = c->cfg->fetch_size};

	res = pgq_open_batch(c->conn, b, c->cfg->fetch_size, err, sizeof(err));
	if (!res)
		return db_failure(c, "opening the batch cursor", err);
	c->guard = &guard;
	c->batch_id = b->batch_id;
	c->replaying = 0;
	if (c->tconn) {
		long long done;
		if (pgconn_cmd(c->tconn, "begin", err, sizeof(err)) != 0 ||
		    remote_last_batch(c->tconn, c->cfg->queue_name, c->cfg->consumer_name, &done, err,
		                      sizeof(err)) != 0) {
			st = db_failure(c, "opening the target transaction", err);
			goto out;
		}
		c->replaying = done == b->batch_id;
		if (c->replaying)
			log_info("the target already committed this batch: finishing it without running the script");
	}
	ldb_batch_begin(&c->db, c->tconn ? c->tconn : c->conn);
	if (!c->replaying && (consumer_batch_hook(c, 0, b, &st) != 0 ||
	                      commit_target_event(c) != STEP_NEXT)) {
		if (st == PGQLUA_OK)
			st = PGQLUA_ERR_DB;
		goto out;
	}
	for (;;) {
		int n, more;
		if (pgq_cursor_check(&guard, res, &n, &more, err, sizeof(err)) != 0) {
			log_error("%s", err);
			st = consumer_abort_batch(c, "its cursor was moved or closed");
			goto out;
		}
		/* a full chunk: the server reads the next one while the script
		 * works on this one (at most two chunks are held) */
		if (more && pgq_fetch_async(c->conn, c->cfg->fetch_size) != 0) {
			ldb_batch_end(&c->db);
			pgconn_result_error(c->conn, NULL, err, sizeof(err));
			st = db_failure(c, "fetching events", err);
			goto out;
		}
		for (int i = 0; i < n; i++) {
			event_step step;
			if (c->stop_requests > 1) {
				st = consumer_abort_batch(c, "immediate stop");
				goto out;
			}
			if ((i & 63) == 0)
				note(c, NOTE_TICK, NULL);
			step = consumer_handle_event(c, res, i);
			if (step == STEP_ABORT) {
				char why[128];
				snprintf(why, sizeof(why), "the script returned pgq.ABORT_BATCH at event %s",
				         PQgetvalue(res, i, PGQ_EV_ID));
				st = consumer_abort_batch(c, why);
				goto out;
			}
			if (step == STEP_STOP) {
				st = consumer_abort_batch(c, "immediate stop");
				goto out;
			}
			if (step == STEP_DB_ERROR) {
				ldb_batch_end(&c->db);
				st = PGQLUA_ERR_DB;
				goto out;
			}
		}
		n_events += n;
		/* the chunk's sends are waited for while its rows are at hand */
		if (settle_send_failures(c, res, 1) != STEP_NEXT) {
			ldb_batch_end(&c->db);
			st = PGQLUA_ERR_DB;
			goto out;
		}
		if (!more)
			break;
		PQclear(res);
		res = pgq_fetch_take(c->conn, &guard, err, sizeof(err));
		if (!res) {
			ldb_batch_end(&c->db);
			st = db_failure(c, "fetching events", err);
			goto out;
		}
	}
	if (!c->replaying && consumer_batch_hook(c, 1, b, &st) != 0)
		goto out;
	ldb_batch_end(&c->db);
	if (c->tconn) {
		/* the safe order: the target commits the work and the batch's
		 * mark first; then the source finishes the batch */
		if (c->replaying)
			pgq_rollback(c->tconn);
		else if (remote_record_batch(c->tconn, c->cfg->queue_name, c->cfg->consumer_name, b->batch_id,
		                             b->cur_tick_id, err, sizeof(err)) != 0 ||
		         (fault_point("before_target_commit"), pgconn_cmd(c->tconn, "commit", err, sizeof(err))) != 0) {
			st = db_failure(c, "committing the batch in the target", err);
			goto out;
		}
		fault_point("after_target_commit");
	}
	/* the next batch comes with this one's commit, unless the consumer is
	 * stopping: then no batch is left taken and unprocessed */
	stopping = c->stop_requests > 0;
	nr = pgq_finish_and_next(c->conn, b->batch_id, c->cfg->queue_name, c->cfg->consumer_name, &k,
	                         stopping ? NULL : &c->next, &finished, err, sizeof(err));
	if (!finished) {
		st = db_failure(c, "finishing the batch", err);
		goto out;
	}
	/* the batch is committed; an error of next_batch shows on the next try */
	c->next_known = stopping ? 0 : nr == PGQ_DONE ? 1 : nr == PGQ_NONE ? 2 : 0;
	fault_point("after_source_commit");
	c->stats.batches++;
	c->stats.lag = b->lag;
	log_debug("batch done: %lld events, lag %.3fs", n_events, b->lag);
out:
	c->guard = NULL;
	PQclear(res);
	pgconn_drop_async(c->conn);
	log_set_batch(0);
	return st;
}

static int consumer_connect_target(pgqlua_consumer *c)
{
	char err[1024];
	if (!c->tconn || pgconn_is_ok(c->tconn))
		return 0;
	if (pgconn_pg(c->tconn)) {
		log_warn("connection to the target %s lost", pgconn_safe_name(c->tconn));
		pgconn_close(c->tconn);
	}
	if (pgconn_connect(c->tconn, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "target: %s", err);
		if (c->polled)
			log_error("%s", c->last_error);
		return -1;
	}
	if (c->polled)
		log_info("reconnected to the target %s", pgconn_safe_name(c->tconn));
	return 0;
}

static int consumer_connect(pgqlua_consumer *c)
{
	char err[1024];
	if (consumer_connect_target(c) != 0)
		return -1;
	if (pgconn_is_ok(c->conn))
		return 0;
	if (pgconn_pg(c->conn)) {
		/* it broke while idle (seen by the wake-up's socket watch) */
		log_warn("connection to %s lost", pgconn_safe_name(c->conn));
		pgconn_close(c->conn);
	}
	if (pgconn_connect(c->conn, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "%s", err);
		if (c->polled)
			log_error("%s", err);
		return -1;
	}
	if (c->polled)
		log_info("reconnected to %s", pgconn_safe_name(c->conn));
	else
		log_debug("connected to %s", pgconn_safe_name(c->conn));
	c->listening = c->cfg->wakeup && pgconn_cmd(c->conn, "listen pgqlua_tick", err, sizeof(err)) == 0;
	return 0;
}

pgqlua_status pgqlua_run_batch(pgqlua_consumer *c)
{
	pgq_batch b;
	pgq_batch_knobs k = {c->cfg->batch_min_count, c->cfg->batch_min_interval, c->cfg->batch_min_lag};
	char err[1024];
	pgq_result r;

	if (consumer_connect(c) != 0)
		return PGQLUA_ERR_DB;
	if (c->next_known == 1) {
		b = c->next;
		r = PGQ_DONE;
	} else if (c->next_known == 2)
		r = PGQ_NONE;
	else
		r = pgq_next_batch(c->conn, c->cfg->queue_name, c->cfg->consumer_name, &k, &b, err, sizeof(err));
	c->next_known = 0;
	if (r == PGQ_ERROR)
		return db_failure(c, "pgq.next_batch_custom", err);
	c->polled = 1;
	if (r == PGQ_NONE)
		return PGQLUA_NO_BATCH;
	log_set_batch(b.batch_id);
	{
		pgqlua_status st = consumer_process_batch(c, &b);
		free(b.sql);
		return st;
	}
}

static void consumer_reload(pgqlua_consumer *c)
{
	char err[1024], diff[256];
	config *ncfg;
	lb_script *ns;

	c->reload_requested = 0;
	log_info("reload requested: reading %s", c->cfg->path);
	note(c, NOTE_RELOADING, NULL);
	if (config_load(c->cfg->path, &ncfg, err, sizeof(err)) != CONFIG_OK) {
		log_error("reload failed, keeping the old configuration and script: %s", err);
		note(c, NOTE_RELOAD_FAILED, err);
		return;
	}
	config_diff_restart_only(c->cfg, ncfg, diff, sizeof(diff));
	if (diff[0])
		log_warn("reload: %s changed; ignored until restart", diff);
	/* settings that cannot change at runtime keep their running values */
	if (config_keep_restart_only(c->cfg, ncfg) != 0) {
		log_error("reload failed, keeping the old configuration and script: out of memory");
		config_free(ncfg);
		return;
	}
	ns = lb_script_load(ncfg, &c->db, NULL, err, sizeof(err));
	if (!ns) {
		log_error("reload failed, keeping the old configuration and script: %s", err);
		config_free(ncfg);
		note(c, NOTE_RELOAD_FAILED, err);
		return;
	}
	lb_script_free(c->script);
	config_free(c->cfg);
	c->script = ns;
	c->cfg = ncfg;
	apply_settings(c, ncfg);
	log_info("reloaded: script %s", ncfg->script);
	note(c, NOTE_RELOADED, ncfg->script);
}

pgqlua_status pgqlua_run(pgqlua_consumer *c, int once)
{
	pgqlua_status st = PGQLUA_OK;

	if (consumer_connect(c) != 0) {
		note(c, NOTE_START_FAILED, c->last_error);
		return PGQLUA_ERR_DB;
	}
	{
		char err[1024];
		if (pgq_check_registered(c->conn, c->cfg->queue_name, c->cfg->consumer_name, err,
		                         sizeof(err)) != PGQ_DONE) {
			snprintf(c->last_error, sizeof(c->last_error), "%s", err);
			note(c, NOTE_START_FAILED, c->last_error);
			return PGQLUA_ERR_DB;
		}
	}
	if (c->tconn) {
		char err[1024];
		long long done;
		if (remote_last_batch(c->tconn, c->cfg->queue_name, c->cfg->consumer_name, &done, err,
		                      sizeof(err)) != 0) {
			snprintf(c->last_error, sizeof(c->last_error), "target %s: %s%s", pgconn_safe_name(c->tconn),
			         err, strstr(err, "pgqlua.") ? " (run `pgqlua install CONFIG`)" : "");
			note(c, NOTE_START_FAILED, c->last_error);
			return PGQLUA_ERR_DB;
		}
	}
	note(c, NOTE_READY, NULL);
	log_info("consumer %s on queue %s started (script %s)", c->cfg->consumer_name,
	         c->cfg->queue_name, c->cfg->script);
	while (!c->stop_requests) {
		note(c, NOTE_TICK, NULL);
		if (c->reload_requested)
			consumer_reload(c);
		maybe_log_stats(c);
		st = pgqlua_run_batch(c);
		if (st == PGQLUA_OK) {
			c->backoff = 0;
			continue;
		}
		if (st == PGQLUA_NO_BATCH) {
			c->backoff = 0;
			if (once) {
				st = PGQLUA_OK;
				break;
			}
			consumer_sleep(c, c->cfg->loop_delay);
		} else if (st == PGQLUA_BATCH_ABORTED || st == PGQLUA_ERR_DB) {
			if (once || !c->polled)
				break;
			consumer_sleep(c, next_backoff(c));
		} else
			break;
	}
	note(c, NOTE_STOPPING, NULL);
	if (c->stop_requests && (st == PGQLUA_OK || st == PGQLUA_NO_BATCH || st == PGQLUA_BATCH_ABORTED ||
	                         st == PGQLUA_ERR_DB))
		st = PGQLUA_STOPPED;
	{
		struct rusage ru;
		c->stats_logged = (consumer_stats){0};
		getrusage(RUSAGE_SELF, &ru);
		log_stats(c, "totals");
		log_info("consumer exits: %s (peak RSS %ld kB)", pgqlua_status_str(st), ru.ru_maxrss);
	}
	return st;
}
