/*
 * target.c - the batch's target (see target.h): no-ops for a local
 * consumer; for a remote one, the target connection and its transaction,
 * on top of the tracking SQL in remote.c.
 */
#include "target.h"
#include "failed.h"
#include "fault.h"
#include "log.h"
#include "pgq.h"
#include "remote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct target {
	pgconn *conn;            /* NULL: local */
	const char *queue;       /* the config's, which outlives us or is */
	const char *consumer;    /* replaced through target_configure */
	int event_mode;          /* remote_event_mode: each event commits */
	long long batch_id;      /* the batch being processed */
	int replaying;           /* the target committed it already */
	int connected_once;
};

static const char *const action_names[] = {"ok", "retry", "failed"};

target *target_new(const config *cfg)
{
	target *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (cfg->target_db && !(t->conn = pgconn_new(cfg->target_db, cfg->timezone))) {
		free(t);
		return NULL;
	}
	target_configure(t, cfg);
	return t;
}

void target_free(target *t)
{
	if (!t)
		return;
	pgconn_free(t->conn);
	free(t);
}

pgconn *target_conn(target *t, pgconn *source)
{
	return t->conn ? t->conn : source;
}

void target_configure(target *t, const config *cfg)
{
	t->queue = cfg->queue_name;
	t->consumer = cfg->consumer_name;
	t->event_mode = t->conn && cfg->remote_event_mode;
	if (t->conn)
		pgconn_set_prepare(t->conn, cfg->prepared_statements);
}

void target_set_consumer(target *t, const char *pgq_consumer)
{
	t->consumer = pgq_consumer;
}

const char *target_name(const target *t)
{
	return t->conn ? pgconn_safe_name(t->conn) : "";
}

int target_connect(target *t, int quiet, char *err, size_t errlen)
{
	char msg[PGCONN_ERR_LEN];
	if (!t->conn || pgconn_is_ok(t->conn))
		return 0;
	if (pgconn_pg(t->conn)) {
		log_warn("connection to the target %s lost", pgconn_safe_name(t->conn));
		pgconn_close(t->conn, "lost");
	}
	if (pgconn_connect(t->conn, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "target: %s", msg);
		if (!quiet)
			log_error("%s", err);
		return -1;
	}
	if (t->connected_once && !quiet)
		log_info("reconnected to the target %s", pgconn_safe_name(t->conn));
	t->connected_once = 1;
	return 0;
}

int target_check(target *t, char *err, size_t errlen)
{
	char msg[PGCONN_ERR_LEN];
	long long done;
	if (!t->conn)
		return 0;
	if (remote_last_batch(t->conn, t->queue, t->consumer, &done, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "target %s: %s%s", pgconn_safe_name(t->conn), msg,
		         strstr(msg, "pgqlua.") ? FAILED_INSTALL_HINT : "");
		return -1;
	}
	return 0;
}

target_batch target_begin(target *t, long long batch_id, char *err, size_t errlen)
{
	long long done;
	t->batch_id = batch_id;
	t->replaying = 0;
	if (!t->conn)
		return TARGET_RUN;
	if (pgconn_cmd(t->conn, "begin", err, errlen) != 0 ||
	    remote_last_batch(t->conn, t->queue, t->consumer, &done, err, errlen) != 0)
		return TARGET_ERROR;
	if (done < 0) {
		/* no row yet to lock: one is made (committed) first, so that two
		 * instances (a group's member taking over a partition) serialize
		 * on it from the very first batch */
		pgq_rollback(t->conn);
		if (remote_add_consumer(t->conn, t->queue, t->consumer, err, errlen) != 0 ||
		    pgconn_cmd(t->conn, "begin", err, errlen) != 0 ||
		    remote_last_batch(t->conn, t->queue, t->consumer, &done, err, errlen) != 0)
			return TARGET_ERROR;
	}
	t->replaying = done == batch_id;
	if (t->replaying)
		log_info("the target already committed this batch: finishing it without running the script");
	return t->replaying ? TARGET_REPLAY : TARGET_RUN;
}

int target_commit(target *t, long long batch_id, long long tick_id, char *err, size_t errlen)
{
	if (!t->conn)
		return 0;
	if (t->replaying) {
		pgq_rollback(t->conn);
		return 0;
	}
	if (remote_record_batch(t->conn, t->queue, t->consumer, batch_id, tick_id, err, errlen) != 0)
		return -1;
	fault_point("before_target_commit");
	if (pgconn_cmd(t->conn, "commit", err, errlen) != 0)
		return -1;
	fault_point("after_target_commit");
	return 0;
}

void target_reset(target *t)
{
	if (t->conn)
		pgq_reset(t->conn);
}

int target_replayed(target *t, const char *ev_id, event_outcome *out, char *buf, size_t buflen,
                    char *err, size_t errlen)
{
	char action[16];
	int found;
	if (!t->conn || (!t->replaying && !t->event_mode))
		return 0;
	found = remote_find_event(t->conn, t->queue, t->consumer, t->batch_id, ev_id, action,
	                          sizeof(action), &out->delay, buf, buflen, err, errlen);
	if (found < 0)
		return -1;
	if (!found && !t->replaying)
		return 0;   /* event mode: not done yet, run the script */
	log_debug("event %s: already done in the target (%s); not run again", ev_id, found ? action : "ok");
	out->action = ACTION_OK;
	out->reason = buf;
	for (int a = ACTION_OK; found && a <= ACTION_FAILED; a++)
		if (strcmp(action, action_names[a]) == 0)
			out->action = (event_action)a;
	return 1;
}

int target_event_done(target *t, const char *ev_id, const event_outcome *o, char *err, size_t errlen)
{
	if (!t->conn || t->replaying || (!t->event_mode && o->action == ACTION_OK))
		return 0;
	return remote_record_event(t->conn, t->queue, t->consumer, t->batch_id, ev_id,
	                           action_names[o->action], o->delay, o->reason, err, errlen);
}

int target_event_commit(target *t, ldb_state *db, char *err, size_t errlen)
{
	if (!t->event_mode)
		return 0;
	if (pgconn_cmd(t->conn, "commit; begin", err, errlen) != 0)
		return -1;
	ldb_after_commit(db);
	return 0;
}

int target_closes_window(const target *t)
{
	return t->event_mode;
}
