/*
 * resize.c - `pgqlua resize CONFIG M` (see resize.h).  The only step that
 * changes the group is one transaction at the paused tick T; the others
 * wait.  A stop signal cancels the statement or the wait, and the ticker
 * is resumed on every way out once this run paused it.
 */
#include "resize.h"
#include "clock.h"
#include "exitcode.h"
#include "group.h"
#include "group_layout.h"
#include "schema.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define RESIZE_POLL_MS 50

typedef struct resize {
	pgconn *c;
	config *cfg;
	FILE *out;
	int from, to;
	double timeout;
	char *old_names, *new_names;   /* the partitions' names, array literals */
	char *key_idx;                 /* SQL: the new partition of the event in scope */
	int owns_pause;                /* the pause is this resize's (to resume) */
	int was_paused;                /* the ticker was paused by someone else: left so */
	double paused_at;              /* monotonic */
	long long tick;                /* T */
	char err[1024];
} resize;

static volatile sig_atomic_t stop_requested;
static pgconn *cancel_conn;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
	if (cancel_conn)
		pgconn_cancel(cancel_conn);
}

/* One value of a one-row query as an integer; 0, or -1 with r->err. */
static int query_ll(resize *r, const char *sql, int n, const char *const *p, long long *v)
{
	PGresult *res = pgconn_exec(r->c, sql, n, p, r->err, sizeof(r->err));
	if (!res)
		return -1;
	*v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? atoll(PQgetvalue(res, 0, 0)) : -1;
	PQclear(res);
	return 0;
}

static int cmd(resize *r, const char *sql, int n, const char *const *p)
{
	long long ignored;
	return query_ll(r, sql, n, p, &ignored);
}

/* After a failure in a transaction: roll it back (r->err keeps why). */
static int rollback(resize *r)
{
	char ignored[256];
	if (pgconn_is_ok(r->c))
		(void)pgconn_cmd(r->c, "rollback", ignored, sizeof(ignored));
	return stop_requested ? EXIT_TEMPFAIL : EXIT_DB;
}

#define OLD_SUBS \
	"select s.sub_id, s.sub_last_tick, s.sub_next_tick, s.sub_batch, co.co_name from pgq.subscription s" \
	" join pgq.consumer co on co.co_id = s.sub_consumer join pgq.queue q on q.queue_id = s.sub_queue" \
	" where q.queue_name = $1 and co.co_name = any($2::text[])"

/* Wait until every old partition has reached tick `tick`: before the
 * pause, finished it or working on the batch that ends there (the pause
 * then lasts about one batch); paused, finished it with no batch open.
 * 0, or an exit code with r->err. */
static int wait_partitions(resize *r, long long tick, int paused)
{
	char t[32], sql[1024];
	const char *p[3] = {r->cfg->queue_name, r->old_names, t};
	double deadline = clock_mono() + r->timeout;
	PGresult *res;

	snprintf(t, sizeof(t), "%lld", tick);
	const char *at = paused ? "sub_last_tick >= $3::int8 and sub_batch is null"
	                        : "greatest(sub_last_tick, sub_next_tick) >= $3::int8";
	snprintf(sql, sizeof(sql),
	         "select count(*) filter (where %s),"
	         " string_agg(co_name, ', ' order by co_name) filter (where not (%s))"
	         " from (" OLD_SUBS ") o",
	         at, at);
	for (;;) {
		if (!(res = pgconn_exec(r->c, sql, 3, p, r->err, sizeof(r->err))) && !stop_requested)
			return EXIT_DB;
		if (res && atoi(PQgetvalue(res, 0, 0)) == r->from) {
			PQclear(res);
			return 0;
		}
		if (stop_requested)
			snprintf(r->err, sizeof(r->err), "stopped while waiting for the partitions to reach tick %lld%s%s%s",
			         tick, paused ? " with no batch open" : "", res ? ": behind: " : "", res ? PQgetvalue(res, 0, 1) : "");
		else if (clock_mono() >= deadline)
			snprintf(r->err, sizeof(r->err), "timed out: partitions not at tick %lld%s after %gs: %s (are their members running?)",
			         tick, paused ? " with no batch open" : "", r->timeout, PQgetvalue(res, 0, 1));
		PQclear(res);
		if (stop_requested || clock_mono() >= deadline)
			return EXIT_TEMPFAIL;
		poll(NULL, 0, RESIZE_POLL_MS);
	}
}

/* The group's layout row (recorded now if missing), and whether an earlier
 * run of resize paused the ticker.  0 or an exit code. */
static int read_layout(resize *r)
{
	const char *p[2] = {r->cfg->queue_name, r->cfg->consumer_name};
	PGresult *res;
	if (group_layout_record(r->c, r->cfg, r->err, sizeof(r->err)) != 0 ||
	    !(res = pgconn_exec(r->c,
	                        "select l.partitions, l.paused_by_resize, q.queue_ticker_paused"
	                        " from pgqlua.group_layout l, pgq.queue q"
	                        " where l.queue_name = $1 and l.consumer_name = $2 and q.queue_name = $1",
	                        2, p, r->err, sizeof(r->err))))
		return EXIT_DB;
	if (PQntuples(res) != 1) {
		PQclear(res);
		snprintf(r->err, sizeof(r->err), "queue %s does not exist (run `pgqlua install CONFIG`)", r->cfg->queue_name);
		return EXIT_DB;
	}
	r->from = atoi(PQgetvalue(res, 0, 0));
	r->owns_pause = PQgetvalue(res, 0, 1)[0] == 't';
	r->was_paused = PQgetvalue(res, 0, 2)[0] == 't' && !r->owns_pause;
	PQclear(res);
	return 0;
}

/* Names and the key's SQL for both layouts.  0, or -1 out of memory. */
static int prepare_names(resize *r)
{
	config old = *r->cfg, next = *r->cfg;
	old.partitions = r->from;
	next.partitions = r->to;
	r->old_names = group_names_array(&old);
	r->new_names = group_names_array(&next);
	r->key_idx = group_key_index_sql(&next, r->to);
	return r->old_names && r->new_names && r->key_idx ? 0 : -1;
}

/* Pause the queue's ticker, recording that this resize did (an
 * interrupted run is resumed by the next), then take T: the queue's last
 * tick once no ticker transaction is in flight.  0 or an exit code. */
static int pause_ticker(resize *r)
{
	char to[16];
	const char *p[3] = {r->cfg->queue_name, r->cfg->consumer_name, to};
	snprintf(to, sizeof(to), "%d", r->to);
	if (pgconn_cmd(r->c, "begin", r->err, sizeof(r->err)) != 0 ||
	    cmd(r,
	        "update pgqlua.group_layout set resizing_to = $3::int4, changed_at = now(),"
	        " paused_by_resize = paused_by_resize or not (select queue_ticker_paused from pgq.queue where queue_name = $1)"
	        " where queue_name = $1 and consumer_name = $2",
	        3, p) != 0 ||
	    cmd(r, "select pgq.set_queue_config($1, 'ticker_paused', 'true')", 1, p) != 0 ||
	    pgconn_cmd(r->c, "commit", r->err, sizeof(r->err)) != 0) {
		return rollback(r);
	}
	r->owns_pause = !r->was_paused;
	r->paused_at = clock_mono();
	/* a ticker that read the queue before the pause may still insert a
	 * tick: the SHARE lock waits for it */
	if (pgconn_cmd(r->c, "begin; lock table pgq.tick in share mode", r->err, sizeof(r->err)) != 0 ||
	    query_ll(r, "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
	                " where q.queue_name = $1", 1, p, &r->tick) != 0 ||
	    pgconn_cmd(r->c, "commit", r->err, sizeof(r->err)) != 0) {
		return rollback(r);
	}
	return 0;
}

/* SQL of the move's statements: the old partitions' subscriptions (o)
 * and the new ones by index (n), then what to update. */
#define MOVE_CTE \
	"with pgqlua_old as (" OLD_SUBS ")," \
	" pgqlua_new as (select p.i - 1 pgqlua_idx, s.sub_id pgqlua_sub from unnest($3::text[]) with ordinality p(name, i)" \
	"  join pgq.consumer co on co.co_name = p.name join pgq.subscription s on s.sub_consumer = co.co_id" \
	"  join pgq.queue q on q.queue_id = s.sub_queue and q.queue_name = $1)"

/* The change itself, in the open transaction; *moved gets the retried
 * events (waiting, back in the queue) and failed events moved.  0 or -1. */
static int move_group(resize *r, long long moved[3])
{
	char t[32], *sql = NULL, pfx[128] = "";
	const char *p[5] = {r->cfg->queue_name, r->old_names, r->new_names, t, r->cfg->consumer_name};
	size_t len = strlen(r->key_idx) + 2048;
	long long n;
	PGresult *res;
	int rc = -1;

	snprintf(t, sizeof(t), "%lld", r->tick);
	if (!(sql = malloc(len)) ||
	    !(res = pgconn_exec(r->c, "select queue_data_pfx from pgq.queue where queue_name = $1", 1, p, r->err,
	                        sizeof(r->err))))
		goto out;
	snprintf(pfx, sizeof(pfx), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (strspn(pfx, "abcdefghijklmnopqrstuvwxyz0123456789_.") != strlen(pfx)) {
		snprintf(r->err, sizeof(r->err), "unexpected event table name %s", pfx);
		goto out;
	}
	/* still at T, nothing open, nothing ticked since (the rows locked) */
	if (query_ll(r, "select count(*) from (" OLD_SUBS " and s.sub_last_tick = $3::int8 and s.sub_batch is null"
	                " and not exists (select 1 from pgq.tick t where t.tick_queue = q.queue_id and t.tick_id > $3::int8)"
	                " for update of s) x", 3, (const char *[]){p[0], p[1], t}, &n) != 0)
		goto out;
	if (n != r->from) {
		snprintf(r->err, sizeof(r->err), "the partitions moved past tick %lld (was the ticker resumed?)", r->tick);
		goto out;
	}
	if (query_ll(r, "select count(pgq.register_consumer_at($1, n, $2::int8)) from unnest($3::text[]) n", 3,
	             (const char *[]){p[0], t, p[2]}, &n) != 0)
		goto out;
	snprintf(sql, len, MOVE_CTE ", pgqlua_upd as (update pgq.retry_queue set ev_owner ="
	         " (select pgqlua_sub from pgqlua_new where pgqlua_idx = %s)"
	         " where ev_owner in (select sub_id from pgqlua_old) returning 1)"
	         " select count(*) from pgqlua_upd", r->key_idx);
	if (query_ll(r, sql, 3, p, &moved[0]) != 0)
		goto out;
	/* retried events pgqd has already put back into the queue after T
	 * for an old partition: they are the new partition's now */
	snprintf(sql, len, MOVE_CTE ", pgqlua_tick as (select tick_snapshot pgqlua_snap from pgq.tick k join pgq.queue q"
	         "  on q.queue_id = k.tick_queue where q.queue_name = $1 and k.tick_id = $4::int8),"
	         " pgqlua_upd as (update %s set ev_owner = (select pgqlua_sub from pgqlua_new where pgqlua_idx = %s)"
	         "  from pgqlua_tick where ev_owner in (select sub_id from pgqlua_old)"
	         "  and ev_txid >= txid_snapshot_xmin(pgqlua_snap) and not txid_visible_in_snapshot(ev_txid, pgqlua_snap)"
	         "  returning 1)"
	         " select count(*) from pgqlua_upd", pfx, r->key_idx);
	if (query_ll(r, sql, 4, p, &moved[1]) != 0)
		goto out;
	/* failed events: `failed retry` puts them into their new partition */
	snprintf(sql, len, "with pgqlua_upd as (update pgqlua.failed_event set pgq_consumer = $3 || '.p' || (%s) || 'of%d'"
	         " where queue_name = $1 and consumer_name = $3 and pgq_consumer = any($2::text[]) returning 1)"
	         " select count(*) from pgqlua_upd", r->key_idx, r->to);
	if (query_ll(r, sql, 3, (const char *[]){p[0], p[1], p[4]}, &moved[2]) != 0)
		goto out;
	snprintf(sql, len, "%d", r->to);
	if (cmd(r, "select count(pgq.unregister_consumer($1, n)) from unnest($2::text[]) n", 2, p) != 0 ||
	    cmd(r, "update pgqlua.group_layout set partitions = $3::int4, resizing_to = null, changed_at = now(),"
	           " generation = generation + 1"
	           " where queue_name = $1 and consumer_name = $2", 3, (const char *[]){p[0], p[4], sql}) != 0)
		goto out;
	rc = 0;
out:
	if (!sql)
		snprintf(r->err, sizeof(r->err), "out of memory");
	free(sql);
	return rc;
}

/* Resume the ticker this resize paused (a broken connection is made
 * again for it); prints how long ticks were paused.  0 or EXIT_DB. */
static int resume_ticker(resize *r)
{
	const char *p[2] = {r->cfg->queue_name, r->cfg->consumer_name};
	char err[1024];
	if (!r->owns_pause)
		return 0;
	cancel_conn = NULL;   /* a second signal must not cancel the resume */
	if (!pgconn_is_ok(r->c) && pgconn_connect(r->c, err, sizeof(err)) != 0)
		goto failed;
	(void)pgconn_cmd(r->c, "rollback", err, sizeof(err));
	if (!pgconn_is_ok(r->c))
		goto failed;
	{
		PGresult *res = pgconn_exec(r->c,
		                            "with u as (update pgqlua.group_layout set paused_by_resize = false"
		                            "  where queue_name = $1 and consumer_name = $2)"
		                            " select pgq.set_queue_config($1, 'ticker_paused', 'false')",
		                            2, p, err, sizeof(err));
		if (!res)
			goto failed;
		PQclear(res);
	}
	r->owns_pause = 0;
	if (r->paused_at > 0)
		fprintf(r->out, "ticker of queue %s resumed: ticks were paused for %.3fs\n", r->cfg->queue_name,
		        clock_mono() - r->paused_at);
	else
		fprintf(r->out, "ticker of queue %s resumed (an earlier resize had paused it)\n", r->cfg->queue_name);
	return 0;
failed:
	fprintf(stderr, "pgqlua: resize: resuming the ticker of queue %s failed: %s; run the resize again, or"
	        " select pgq.set_queue_config('%s', 'ticker_paused', 'false')\n", r->cfg->queue_name, err, r->cfg->queue_name);
	return EXIT_DB;
}

/* Everything after the layout is known: the waits, the pause and the
 * move.  0 or an exit code with r->err. */
static int resize_steps(resize *r)
{
	long long latest, moved[3] = {0, 0, 0};
	const char *p[2] = {r->cfg->queue_name, r->old_names};
	int rc;

	if (query_ll(r, "select count(*) from (" OLD_SUBS ") o", 2, p, &latest) != 0)
		return EXIT_DB;
	if (latest != r->from) {
		snprintf(r->err, sizeof(r->err), "only %lld of the %d partitions of group %s are registered (run `pgqlua install CONFIG`)",
		         latest, r->from, r->cfg->consumer_name);
		return EXIT_DB;
	}
	/* catch up first, ticking: the pause then lasts only one tick's work */
	if (query_ll(r, "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
	                " where q.queue_name = $1", 1, p, &latest) != 0)
		return EXIT_DB;
	if ((rc = wait_partitions(r, latest, 0)) != 0 || (rc = pause_ticker(r)) != 0)
		return rc;
	fprintf(r->out, "ticker of queue %s paused at tick %lld%s\n", r->cfg->queue_name, r->tick,
	        r->was_paused ? " (it was paused before the resize: it stays paused)" : "");
	if ((rc = wait_partitions(r, r->tick, 1)) != 0)
		return rc;
	if (pgconn_cmd(r->c, "begin; lock table pgq.retry_queue in share update exclusive mode", r->err, sizeof(r->err)) != 0 ||
	    move_group(r, moved) != 0 || pgconn_cmd(r->c, "commit", r->err, sizeof(r->err)) != 0) {
		return rollback(r);
	}
	fprintf(r->out, "group %s: %d partitions %s.p0of%d .. %s.p%dof%d registered at tick %lld; %lld retried and %lld failed"
	        " events moved to their new partitions; the %d old partitions unregistered\n",
	        r->cfg->consumer_name, r->to, r->cfg->consumer_name, r->to, r->cfg->consumer_name, r->to - 1, r->to, r->tick,
	        moved[0] + moved[1], moved[2], r->from);
	return 0;
}

static int take_lock(resize *r)
{
	const char *p[2] = {r->cfg->queue_name, r->cfg->consumer_name};
	long long got;
	if (query_ll(r, "select pg_try_advisory_lock(hashtext('pgqlua-resize/' || $1), hashtext($2))::int", 2, p, &got) != 0)
		return EXIT_DB;
	if (!got) {
		snprintf(r->err, sizeof(r->err), "another resize of group %s on queue %s is running", r->cfg->consumer_name,
		         r->cfg->queue_name);
		return EXIT_RUNNING;
	}
	return 0;
}

int resize_group(pgconn *c, config *cfg, int to, double timeout, FILE *out)
{
	struct sigaction sa, old_int, old_term, old_hup;
	resize r = {.c = c, .cfg = cfg, .out = out, .to = to, .timeout = timeout};
	int rc, rc2;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	stop_requested = 0;
	cancel_conn = c;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGHUP, &sa, &old_hup);
	if ((rc = schema_install(c, r.err, sizeof(r.err)) != 0 ? EXIT_DB : 0) || (rc = take_lock(&r)) ||
	    (rc = read_layout(&r)))
		goto out;
	if (r.from == to) {
		/* an earlier run to this count got as far as its change: what
		 * is left of it is its pause, resumed below */
		const char *p[2] = {cfg->queue_name, cfg->consumer_name};
		if (cmd(&r, "update pgqlua.group_layout set resizing_to = null where queue_name = $1 and consumer_name = $2",
		        2, p) != 0) {
			rc = EXIT_DB;
			goto out;
		}
		fprintf(out, "group %s on queue %s has %d partitions\n", cfg->consumer_name, cfg->queue_name, to);
		goto out;
	}
	fprintf(out, "group %s on queue %s: resizing from %d to %d partitions\n", cfg->consumer_name, cfg->queue_name,
	        r.from, to);
	if (prepare_names(&r) != 0) {
		snprintf(r.err, sizeof(r.err), "out of memory");
		rc = EXIT_INTERNAL;
		goto out;
	}
	rc = resize_steps(&r);
out:
	fflush(out);
	if (rc)
		fprintf(stderr, "pgqlua: resize: %s%s\n", r.err,
		        rc == EXIT_TEMPFAIL || rc == EXIT_DB ? "; nothing was changed: run the resize again" : "");
	rc2 = resume_ticker(&r);
	cancel_conn = NULL;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	free(r.old_names);
	free(r.new_names);
	free(r.key_idx);
	return rc ? rc : rc2;
}
