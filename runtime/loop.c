/*
 * loop.c - the run loop behind pgqlua_run and pgqlua_run_batch: connect
 * (and reconnect with back-off), ask PgQ for the next batch, hand it to
 * batch.c, sleep until the next tick, a stop or a reload, log stats.
 * Reloads are applied here, between batches, and nowhere else: a new
 * config and script are built beside the running ones and swapped in
 * only when both are good.
 */
#include "batch.h"
#include "clock.h"
#include "lbridge.h"
#include "group.h"
#include "joint.h"
#include "log.h"
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define BACKOFF_MIN 1.0          /* seconds after the first failure */
#define BACKOFF_MAX 30.0         /* and at most, doubling in between */
#define STANDBY_POLL 1.0         /* a hot standby tries the claim at least this often */
#define SLEEP_MAX 3600.0         /* one sleep's longest stretch (loop_delay is not capped) */

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
static void loop_sleep(pgqlua_consumer *c, double secs)
{
	struct pollfd pfd[2] = {{c->wake_r, POLLIN, 0}, {-1, POLLIN, 0}};
	double until = clock_mono() + (secs > SLEEP_MAX ? SLEEP_MAX : secs);
	char buf[64];

	if (c->stop_requests || c->reload_requested)
		return;
	if (c->listening && pgconn_is_ok(c->conn)) {
		(void)take_ticks(c);   /* older than the last next_batch: stale */
		pfd[1].fd = PQsocket(pgconn_pg(c->conn));
	}
	for (;;) {
		double left = until - clock_mono();
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
	consumer_tell(c, NOTE_STATS, line);
	*o = *s;
}

#define METRICS_DB_PERIOD 30.0   /* PgQ figures for metrics without stats_period */

/* PgQ's figures of one partition (or the consumer) for the metrics, on
 * the loop's connection between batches (a scrape never waits for the
 * database). */
static void metrics_read_part(pgqlua_consumer *c, consumer_part *p)
{
	const char *params[3] = {c->cfg->queue_name, p->name, c->cfg->consumer_name};
	char err[PGCONN_ERR_LEN];
	PGresult *res = pgconn_exec(c->conn,
	                  "select extract(epoch from lag)::float8, extract(epoch from last_seen)::float8,"
	                  " coalesce(pending_events, 0),"
	                  " (select count(*) from pgqlua.failed_event f where f.queue_name = $1 and f.consumer_name = $3"
	                  "  and coalesce(f.pgq_consumer, f.consumer_name) = $2)"
	                  " from pgq.get_consumer_info($1, $2)",
	                  3, params, err, sizeof(err));
	if (!res) {
		log_debug("metrics: reading PgQ's figures: %s", err);
		return;
	}
	if (PQntuples(res) == 1)
		metrics_set_db(p->fig, PQgetisnull(res, 0, 0) ? 0 : atof(PQgetvalue(res, 0, 0)),
		               PQgetisnull(res, 0, 1) ? 0 : atof(PQgetvalue(res, 0, 1)), atoll(PQgetvalue(res, 0, 2)),
		               atoll(PQgetvalue(res, 0, 3)));
	PQclear(res);
}

/* Refresh PgQ's figures of the partitions this member holds (every
 * stats_period), the worker's own, and write metrics_file when due (the
 * consumer's own metrics; a supervising parent writes it otherwise), or
 * now when `final`. */
static void metrics_tick(pgqlua_consumer *c, int final)
{
	double now, period = c->cfg->stats_period > 0 ? c->cfg->stats_period : METRICS_DB_PERIOD;
	if (!c->metrics)
		return;
	now = clock_mono();
	if ((now >= c->next_metrics_db || final) && pgconn_is_ok(c->conn)) {
		c->next_metrics_db = now + period;
		for (int i = 0; i < c->nparts; i++)
			if (!c->grouped || c->parts[i].claimed)
				metrics_read_part(c, &c->parts[i]);
	}
	metrics_set_up(c->mworker, pgconn_is_ok(c->conn) && c->script != NULL && !final,
	               c->script ? (long long)lb_memory_used(c->script) : 0);
	if (c->metrics_own && c->cfg->metrics_file && (now >= c->next_metrics_file || final)) {
		c->next_metrics_file = now + period;
		if (metrics_write_file(c->metrics_own, c->cfg->metrics_file) != 0)
			log_warn("metrics_file %s: cannot write it", c->cfg->metrics_file);
	}
}

static void maybe_log_stats(pgqlua_consumer *c)
{
	double now;
	if (c->cfg->stats_period <= 0)
		return;
	now = clock_mono();
	if (now < c->next_stats)
		return;
	c->next_stats = now + c->cfg->stats_period;
	log_stats(c, "stats");
}

int consumer_connect(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	if (target_connect(c->target, !c->polled, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "%s", err);
		return -1;
	}
	if (pgconn_is_ok(c->conn))
		return 0;
	if (pgconn_pg(c->conn)) {
		/* it broke while idle (seen by the wake-up's socket watch) */
		log_warn("connection to %s lost", pgconn_safe_name(c->conn));
		pgconn_close(c->conn, "lost while idle");
	}
	group_claims_lost(c);   /* a new session: the claims are to be taken again */
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
	if (c->cfg->tcp_keepalive > 0) {
		/* the server probes a silent connection: a member on a lost machine
		 * loses its session, and with it its claims (no-op on a Unix socket) */
		char sql[200];
		int idle = (int)(c->cfg->tcp_keepalive + 0.5), gap = idle / 3;
		snprintf(sql, sizeof(sql), "set tcp_keepalives_idle = %d; set tcp_keepalives_interval = %d;"
		         " set tcp_keepalives_count = 3", idle > 0 ? idle : 1, gap > 0 ? gap : 1);
		if (pgconn_cmd(c->conn, sql, err, sizeof(err)) != 0)
			log_warn("tcp_keepalive not set: %s", err);
	}
	if (c->grouped) {
		char sql[256];
		group_member_id(c->member, sizeof(c->member));
		group_member_sql(c->cfg, c->member, sql, sizeof(sql));
		if (pgconn_cmd(c->conn, sql, err, sizeof(err)) != 0) {
			snprintf(c->last_error, sizeof(c->last_error), "naming the group member: %s", err);
			pgconn_close(c->conn, "naming the group member failed");
			return -1;
		}
	}
	return 0;
}

/* One active instance per consumer: take the claim before any batch.
 * PGQLUA_OK claimed; PGQLUA_NO_BATCH while another instance holds it (a
 * hot standby: it tries again on the next round). */
static pgqlua_status claim(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	pgq_result r;
	if (c->grouped)
		return group_balance(c);
	if (c->parts[0].claimed)
		return PGQLUA_OK;
	r = pgq_claim(c->conn, c->cfg->queue_name, c->parts[0].name, err, sizeof(err));
	if (r == PGQ_ERROR)
		return consumer_db_failure(c, "claiming the consumer", err);
	c->polled = 1;
	if (r == PGQ_NONE) {
		if (!c->standby) {
			log_info("another instance of consumer %s on queue %s is active: waiting as a hot standby",
			         c->cfg->consumer_name, c->cfg->queue_name);
			consumer_tell(c, NOTE_STANDBY, NULL);
		}
		c->standby = 1;
		return PGQLUA_NO_BATCH;
	}
	if (c->standby) {
		log_info("took over consumer %s on queue %s: now active", c->cfg->consumer_name, c->cfg->queue_name);
		consumer_tell(c, NOTE_ACTIVE, NULL);
	}
	c->standby = 0;
	c->parts[0].claimed = 1;
	c->parts[0].next_known = NEXT_UNKNOWN;
	return PGQLUA_OK;
}

/* A partition's batch taken on its own (with a joint batch's lead). */
pgqlua_status loop_run_one(pgqlua_consumer *c, consumer_part *p, pgq_batch *b)
{
	pgqlua_status st;

	log_set_batch(b->batch_id);
	if (c->grouped)
		log_debug("partition %s: batch %lld", p->name, b->batch_id);
	c->part = p;
	target_set_consumer(c->target, p->name);
	st = batch_run(c, b);
	c->part = NULL;
	return st;
}

/* pgq.next_batch failed: after a resize that is no failure (the old
 * partitions are gone; the new ones come next). */
pgqlua_status loop_next_batch_failed(pgqlua_consumer *c, const char *err)
{
	if (c->grouped && pgconn_is_ok(c->conn)) {
		int changed = group_follow_layout(c);
		if (changed != 0)
			return changed > 0 ? PGQLUA_OK : changed == -1 ? PGQLUA_ERR_DB : PGQLUA_ERR_INTERNAL;
	}
	return consumer_db_failure(c, "pgq.next_batch_custom", err);
}

/* The next batch of partition p, if one is ready, through batch.c. */
static pgqlua_status run_part(pgqlua_consumer *c, consumer_part *p)
{
	pgq_batch_knobs k = {c->cfg->batch_min_count, c->cfg->batch_min_interval, c->cfg->batch_min_lag};
	char err[PGCONN_ERR_LEN];
	pgqlua_status st;
	pgq_result r;
	pgq_batch b;

	switch (p->next_known) {
	case NEXT_READY:
		b = p->next;
		r = PGQ_DONE;
		break;
	case NEXT_NONE:
		r = PGQ_NONE;
		break;
	case NEXT_UNKNOWN:
	default:
		r = pgq_next_batch(c->conn, c->cfg->queue_name, p->name, &k, &b, err, sizeof(err));
		break;
	}
	p->next_known = NEXT_UNKNOWN;
	if (r == PGQ_ERROR)
		return loop_next_batch_failed(c, err);
	c->polled = 1;
	if (r == PGQ_NONE)
		return PGQLUA_NO_BATCH;
	st = loop_run_one(c, p, &b);
	free(b.sql);
	return st;
}

pgqlua_status pgqlua_run_batch(pgqlua_consumer *c)
{
	pgqlua_status st;

	if (consumer_connect(c) != 0)
		return PGQLUA_ERR_DB;
	if ((st = claim(c)) != PGQLUA_OK)
		return st;
	if (c->grouped && !c->cfg->target_db) {
		consumer_part *held[JOINT_MAX];
		int idx[JOINT_MAX], n = 0;
		/* in partition order, the order every command that takes
		 * several partitions' batches in one transaction (peek, resize)
		 * locks their subscriptions in: no deadlock between them */
		for (int i = 0; i < c->nparts && n <= JOINT_MAX; i++)
			if (c->parts[i].claimed) {
				if (n < JOINT_MAX) {
					idx[n] = i;
					held[n] = &c->parts[i];
				}
				n++;
			}
		if (n > 1 && n <= JOINT_MAX)   /* more: each in turn */
			return joint_run(c, held, idx, n);
	}
	/* each partition held in turn: the first with a batch ready runs it */
	for (int k = 0; k < c->nparts; k++) {
		int i = (c->rr + k) % c->nparts;
		if (!c->parts[i].claimed)
			continue;
		st = run_part(c, &c->parts[i]);
		if (st != PGQLUA_NO_BATCH) {
			c->rr = (i + 1) % c->nparts;
			return st;
		}
	}
	c->polled = 1;
	return PGQLUA_NO_BATCH;
}

static void reload(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN], diff[256];
	config *ncfg = NULL;
	lb_script *ns;

	c->reload_requested = 0;
	log_info("reload requested: reading %s", c->cfg->path);
	consumer_tell(c, NOTE_RELOADING, NULL);
	if (config_load(c->cfg->path, &ncfg, err, sizeof(err)) != CONFIG_OK)
		goto failed;
	config_diff_restart_only(c->cfg, ncfg, diff, sizeof(diff));
	if (diff[0])
		log_warn("reload: %s changed; ignored until restart", diff);
	/* settings that cannot change at runtime keep their running values */
	if (config_keep_restart_only(c->cfg, ncfg) != 0) {
		snprintf(err, sizeof(err), "out of memory");
		goto failed;
	}
	watch_begin(WATCH_LOAD, 0, lb_load_timeout(ncfg));
	ns = lb_script_load(ncfg, c->db, NULL, err, sizeof(err));
	watch_end();
	if (!ns)
		goto failed;
	lb_script_free(c->script);
	config_free(c->cfg);
	c->script = ns;
	c->cfg = ncfg;
	consumer_apply_settings(c, ncfg);
	log_info("reloaded: script %s", ncfg->script);
	metrics_count_reload(c->mworker, 1);
	consumer_tell(c, NOTE_RELOADED, ncfg->script);
	return;
failed:
	config_free(ncfg);
	log_error("reload failed, keeping the old configuration and script: %s", err);
	metrics_count_reload(c->mworker, 0);
	consumer_tell(c, NOTE_RELOAD_FAILED, err);
}

/* Before the first batch: the queue, the consumer and the target's
 * tracking are there, and event_filter is valid SQL (a clear error and
 * exit otherwise). */
static pgqlua_status check_start(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	if (consumer_connect(c) != 0)
		return PGQLUA_ERR_DB;
	if (c->grouped && group_follow_layout(c) < 0)
		return PGQLUA_ERR_DB;
	for (int i = 0; i < c->nparts; i++)
		if (pgq_check_registered(c->conn, c->cfg->queue_name, c->parts[i].name, err, sizeof(err)) != PGQ_DONE) {
			snprintf(c->last_error, sizeof(c->last_error), "%s", err);
			return PGQLUA_ERR_DB;
		}
	if (target_check(c->target, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "%s", err);
		return PGQLUA_ERR_DB;
	}
	if (c->cfg->event_filter && pgq_check_filter(c->conn, c->cfg->event_filter, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error),
		         "%s: event_filter is not an SQL boolean expression over the event's columns: %s",
		         c->cfg->path, err);
		return pgconn_is_ok(c->conn) ? PGQLUA_ERR_CONFIG : PGQLUA_ERR_DB;
	}
	/* every partition's filter has the same shape: one check covers all */
	if (c->grouped && pgq_check_filter(c->conn, c->parts[0].where, err, sizeof(err)) != 0) {
		snprintf(c->last_error, sizeof(c->last_error),
		         "%s: partition_key is not an SQL expression over the event's columns: %s", c->cfg->path, err);
		return pgconn_is_ok(c->conn) ? PGQLUA_ERR_CONFIG : PGQLUA_ERR_DB;
	}
	return PGQLUA_OK;
}

static void log_totals(pgqlua_consumer *c, pgqlua_status st)
{
	struct rusage ru;
	c->stats_logged = (consumer_stats){0};
	getrusage(RUSAGE_SELF, &ru);
	log_stats(c, "totals");
	log_info("consumer exits: %s (peak RSS %ld kB)", pgqlua_status_str(st), ru.ru_maxrss);
}

pgqlua_status pgqlua_run(pgqlua_consumer *c, int once)
{
	pgqlua_status st;

	c->once = once;
	st = check_start(c);

	if (st != PGQLUA_OK) {
		consumer_tell(c, NOTE_START_FAILED, c->last_error);
		return st;
	}
	consumer_tell(c, NOTE_READY, NULL);
	log_info("consumer %s on queue %s started (script %s)", c->cfg->consumer_name,
	         c->cfg->queue_name, c->cfg->script);
	log_debug("Lua modules from %s", lb_lua_dir());
	while (!c->stop_requests) {
		consumer_tell(c, NOTE_TICK, NULL);
		if (c->reload_requested)
			reload(c);
		maybe_log_stats(c);
		metrics_tick(c, 0);
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
			loop_sleep(c, c->standby && c->cfg->loop_delay > STANDBY_POLL ? STANDBY_POLL : c->cfg->loop_delay);
		} else if (st == PGQLUA_BATCH_ABORTED || st == PGQLUA_ERR_DB) {
			if (once || !c->polled)
				break;
			loop_sleep(c, next_backoff(c));
		} else
			break;
	}
	consumer_tell(c, NOTE_STOPPING, NULL);
	if (c->stop_requests && (st == PGQLUA_OK || st == PGQLUA_NO_BATCH || st == PGQLUA_BATCH_ABORTED ||
	                         st == PGQLUA_ERR_DB))
		st = PGQLUA_STOPPED;
	metrics_tick(c, 1);
	log_totals(c, st);
	return st;
}
