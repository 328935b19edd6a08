/*
 * consumer.c - the public pgqlua_* API (pgqlua.h) and the consumer's
 * settings: open and close a consumer, requests from signal handlers and
 * threads (stop, reload), notes to the program around it.  The run loop
 * is in loop.c, one batch in batch.c.
 */
#include "consumer_state.h"
#include "clock.h"
#include "failed.h"
#include "group.h"
#include "log.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void consumer_log_to_syslog_by_default(pgqlua_consumer *c)
{
	c->syslog_fallback = 1;
	consumer_apply_settings(c, c->cfg);
}

void consumer_set_notify(pgqlua_consumer *c, consumer_notify_fn fn, void *arg)
{
	c->notify = fn;
	c->notify_arg = arg;
}

void consumer_tell(pgqlua_consumer *c, consumer_note what, const char *msg)
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
void consumer_apply_settings(pgqlua_consumer *c, const config *cfg)
{
	pgconn_set_prepare(c->conn, cfg->prepared_statements);
	target_configure(c->target, cfg);
	log_configure((log_level)cfg->log_level, cfg->consumer_name, cfg->logfile, cfg->log_syslog,
	              c->syslog_fallback);
}

pgqlua_status consumer_db_failure(pgqlua_consumer *c, const char *what, const char *err)
{
	char why[512];
	/* a failure caused by a script that closed the batch's cursor says so */
	if (pgq_cursor_explain(c->conn, c->guard, why, sizeof(why)))
		err = why;
	snprintf(c->last_error, sizeof(c->last_error), "%s: %s%s", what, err,
	         strstr(err, "pgqlua.") ? FAILED_INSTALL_HINT : "");
	/* before the first poll the caller reports it (pgqlua run exits) */
	if (c->polled)
		log_error("%s", c->last_error);
	target_reset(c->target);
	pgq_reset(c->conn);
	return PGQLUA_ERR_DB;
}

/* The conninfo strings parse (without echoing them: they may hold a
 * password). */
static pgqlua_status check_conninfo(const config *cfg, char *err, size_t errlen)
{
	char msg[PGCONN_ERR_LEN];
	if (pgconn_check_conninfo(cfg->db, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "%s: %s", cfg->path, msg);
		return PGQLUA_ERR_CONFIG;
	}
	if (cfg->target_db && pgconn_check_conninfo(cfg->target_db, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "%s: target_%s", cfg->path, msg);
		return PGQLUA_ERR_CONFIG;
	}
	return PGQLUA_OK;
}

/* The consumer's PgQ consumers: itself, or a group's partitions. */
static int open_parts(pgqlua_consumer *c, const config *cfg)
{
	int n = group_size(cfg), oom = 0;
	if (!(c->parts = calloc((size_t)n, sizeof(consumer_part))))
		return -1;
	c->nparts = n;
	c->grouped = cfg->partitions > 0;
	for (int i = 0; i < n; i++) {
		c->parts[i].name = group_part_name(cfg, i);
		c->parts[i].where = group_part_where(cfg, i, &oom);
		if (!c->parts[i].name || oom)
			return -1;
	}
	return 0;
}

static void free_parts(pgqlua_consumer *c)
{
	for (int i = 0; c->parts && i < c->nparts; i++) {
		if (c->parts[i].next_known == NEXT_READY)
			free(c->parts[i].next.sql);
		free(c->parts[i].name);
		free(c->parts[i].where);
	}
	free(c->parts);
	c->parts = NULL;
}

/* Each partition's figures slot (its number's: a resize keeps counting in
 * the same slots), and the layout the figures show. */
static void attach_part_figures(pgqlua_consumer *c)
{
	for (int i = 0; i < c->nparts; i++)
		c->parts[i].fig = metrics_part_at(c->metrics, i);
	if (c->grouped)
		metrics_set_partitions(c->mworker, c->nparts);
}

int consumer_parts_reset(pgqlua_consumer *c, int partitions)
{
	free_parts(c);
	c->cfg->partitions = partitions;
	c->rr = 0;
	c->part = NULL;
	c->unowned_since = 0;
	c->next_balance = 0;
	if (open_parts(c, c->cfg) != 0)
		return -1;
	attach_part_figures(c);
	return 0;
}

static int open_wake_pipe(pgqlua_consumer *c)
{
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	for (int i = 0; i < 2; i++)
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	c->wake_r = fds[0];
	c->wake_w = fds[1];
	return 0;
}

/* The figures' slots: a worker's under the supervising parent (which
 * serves and writes them), or the consumer's own, served from here. */
static pgqlua_status open_metrics(pgqlua_consumer *c, const config *cfg, char *err, size_t errlen)
{
	int worker = 0;
	metrics *m = metrics_attached(&worker);

	if (!m && (cfg->metrics_listen || cfg->metrics_file)) {
		if (!(m = c->metrics_own = metrics_new(cfg->queue_name, cfg->consumer_name, 1, c->nparts, c->grouped, 0))) {
			snprintf(err, errlen, "out of memory");
			return PGQLUA_ERR_INTERNAL;
		}
		if (cfg->metrics_listen && metrics_listen(m, cfg->metrics_listen, err, errlen) != 0)
			return PGQLUA_ERR_CONFIG;
	}
	if (!m)
		return PGQLUA_OK;
	c->metrics = m;
	c->mworker = metrics_worker_at(m, worker);
	attach_part_figures(c);
	return PGQLUA_OK;
}

pgqlua_status consumer_open_config(config *cfg, pgqlua_consumer **out, char *err, size_t errlen)
{
	pgqlua_consumer *c = calloc(1, sizeof(*c));
	pgqlua_status st = PGQLUA_ERR_INTERNAL;
	int oom;

	*out = NULL;
	if (!c) {
		config_free(cfg);
		snprintf(err, errlen, "out of memory");
		return PGQLUA_ERR_INTERNAL;
	}
	c->wake_r = c->wake_w = -1;
	c->layout_gen = -1;
	c->cfg = cfg;
	if ((st = check_conninfo(cfg, err, errlen)) != PGQLUA_OK)
		goto fail;
	st = PGQLUA_ERR_INTERNAL;
	if (open_parts(c, cfg) != 0 || open_wake_pipe(c) != 0 || !(c->conn = pgconn_new(cfg->db, cfg->timezone)) || !(c->target = target_new(cfg)) ||
	    !(c->db = ldb_new())) {
		snprintf(err, errlen, "out of memory or file descriptors");
		goto fail;
	}
	consumer_apply_settings(c, cfg);
	watch_begin(WATCH_LOAD, 0, lb_load_timeout(cfg));
	c->script = lb_script_load(cfg, c->db, &oom, err, errlen);
	watch_end();
	if (!c->script) {
		st = oom ? PGQLUA_ERR_INTERNAL : PGQLUA_ERR_SCRIPT;
		goto fail;
	}
	c->next_stats = clock_mono() + cfg->stats_period;
	if ((st = open_metrics(c, cfg, err, errlen)) != PGQLUA_OK)
		goto fail;
	*out = c;
	return PGQLUA_OK;
fail:
	pgqlua_close(c);
	return st;
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
	metrics_free(c->metrics_own);   /* first: its thread reads nothing of ours, but stop it early */
	lb_script_free(c->script);
	ldb_free(c->db);
	free_parts(c);
	pgconn_free(c->conn);
	target_free(c->target);
	config_free(c->cfg);
	if (c->wake_r >= 0)
		close(c->wake_r);
	if (c->wake_w >= 0)
		close(c->wake_w);
	free(c);
}

/* Wake the loop's sleep (async-signal-safe). */
static void wake(pgqlua_consumer *c, const char *why)
{
	if (write(c->wake_w, why, 1) < 0) {
		/* the pipe is full: the loop is awake already */
	}
}

void pgqlua_request_stop(pgqlua_consumer *c)
{
	int saved = errno;
	if (atomic_fetch_add(&c->stop_requests, 1) >= 1) {
		/* the second request: stop at once, even inside SQL or Lua */
		pgconn_cancel(c->conn);
		lb_interrupt(c->script);
	}
	wake(c, "s");
	errno = saved;
}

void pgqlua_request_reload(pgqlua_consumer *c)
{
	int saved = errno;
	c->reload_requested = 1;
	wake(c, "r");
	errno = saved;
}
