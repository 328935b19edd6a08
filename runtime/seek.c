/*
 * seek.c - `pgqlua seek` and `pgqlua peek` (see seek.h).  PgQ has no seek:
 * the position is moved with pgq.register_consumer_at, which checks that
 * the tick exists and drops an open batch, inside a transaction that holds
 * the consumer's claim and locks the queue row (table rotation takes it
 * too, so no rotation can drop the new position's events meanwhile).
 * Peek reads with PgQ's own batch functions and rolls everything back.
 */
#include "seek.h"
#include "exitcode.h"
#include "pgq.h"
#include "service.h"

#include <stdlib.h>
#include <string.h>

#define PEEK_DATA_CHARS 60
#define PEEK_MAX_BATCHES 10000   /* empty ticks walked at most */

typedef struct seek_pos {
	char queue_id[24];
	char table[256];         /* the queue's event tables' parent, quoted */
	char sub_id[24];
	long long tick;          /* sub_last_tick */
	char tick_time[48];
	long long open_batch;    /* 0: none */
	long long oldest, newest;
	char oldest_time[48];
} seek_pos;

#define POS_SQL \
	"select q.queue_id, pgq.quote_fqname(q.queue_data_pfx), s.sub_id, s.sub_last_tick, lt.tick_time," \
	" coalesce(s.sub_batch, 0)," \
	" (select min(tick_id) from pgq.tick t where t.tick_queue = q.queue_id)," \
	" (select max(tick_id) from pgq.tick t where t.tick_queue = q.queue_id)," \
	" (select tick_time from pgq.tick t where t.tick_queue = q.queue_id order by tick_id limit 1)" \
	" from pgq.queue q join pgq.subscription s on s.sub_queue = q.queue_id" \
	" join pgq.consumer co on co.co_id = s.sub_consumer" \
	" join pgq.tick lt on lt.tick_queue = q.queue_id and lt.tick_id = s.sub_last_tick" \
	" where q.queue_name = $1 and co.co_name = $2 for update of q, s"

/* Lock the queue row (rotation waits) and the subscription; read both. */
static int read_position(pgconn *c, const config *cfg, seek_pos *p, char *err, size_t errlen)
{
	const char *params[2] = {cfg->queue_name, cfg->consumer_name};
	PGresult *res = pgconn_exec(c, POS_SQL, 2, params, err, errlen);
	int rc = -1;
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		if (pgq_check_registered(c, cfg->queue_name, cfg->consumer_name, err, errlen) == PGQ_DONE)
			snprintf(err, errlen, "the position of consumer %s on queue %s cannot be read",
			         cfg->consumer_name, cfg->queue_name);
		goto out;
	}
	snprintf(p->queue_id, sizeof(p->queue_id), "%s", PQgetvalue(res, 0, 0));
	snprintf(p->table, sizeof(p->table), "%s", PQgetvalue(res, 0, 1));
	snprintf(p->sub_id, sizeof(p->sub_id), "%s", PQgetvalue(res, 0, 2));
	p->tick = atoll(PQgetvalue(res, 0, 3));
	snprintf(p->tick_time, sizeof(p->tick_time), "%s", PQgetvalue(res, 0, 4));
	p->open_batch = atoll(PQgetvalue(res, 0, 5));
	p->oldest = atoll(PQgetvalue(res, 0, 6));
	p->newest = atoll(PQgetvalue(res, 0, 7));
	snprintf(p->oldest_time, sizeof(p->oldest_time), "%s", PQgetvalue(res, 0, 8));
	rc = 0;
out:
	PQclear(res);
	return rc;
}

/* The tick `to`/`arg` names: 1 found (*tick, time), 0 refused (err says
 * why), -1 error. */
static int resolve_tick(pgconn *c, const config *cfg, const seek_pos *p, seek_to to, const char *arg,
                        long long *tick, char *time, size_t timelen, char *err, size_t errlen)
{
	const char *params[2] = {p->queue_id, arg};
	const char *sql;
	PGresult *res;
	int rc = -1;

	if (to == SEEK_TICK)
		sql = "select tick_id, tick_time from pgq.tick where tick_queue = $1 and tick_id = $2::int8";
	else if (to == SEEK_TIME)
		sql = "select tick_id, tick_time from pgq.tick where tick_queue = $1"
		      " and tick_time <= $2::timestamptz order by tick_id desc limit 1";
	else
		sql = "select tick_id, tick_time from pgq.tick where tick_queue = $1 order by tick_id desc limit 1";
	res = pgconn_exec(c, sql, to == SEEK_LATEST ? 1 : 2, params, err, errlen);
	if (!res)
		return -1;
	if (PQntuples(res) == 1) {
		*tick = atoll(PQgetvalue(res, 0, 0));
		snprintf(time, timelen, "%s", PQgetvalue(res, 0, 1));
		rc = 1;
		goto out;
	}
	rc = 0;
	if (to == SEEK_TICK && atoll(arg) < p->oldest)
		snprintf(err, errlen, "tick %s is before the oldest tick PgQ keeps for queue %s (tick %lld of %s):"
		         " its events may be gone", arg, cfg->queue_name, p->oldest, p->oldest_time);
	else if (to == SEEK_TICK && atoll(arg) > p->newest)
		snprintf(err, errlen, "tick %s does not exist on queue %s (the newest is %lld)", arg,
		         cfg->queue_name, p->newest);
	else if (to == SEEK_TICK)
		snprintf(err, errlen, "tick %s is not a tick of queue %s", arg, cfg->queue_name);
	else if (to == SEEK_TIME)
		snprintf(err, errlen, "%s is before the oldest tick PgQ keeps for queue %s (tick %lld of %s):"
		         " its events may be gone", arg, cfg->queue_name, p->oldest, p->oldest_time);
	else
		snprintf(err, errlen, "queue %s has no ticks (is pgqd running?)", cfg->queue_name);
out:
	PQclear(res);
	return rc;
}

/* Events this consumer gets between ticks lo and hi (lo < hi): what
 * pgq.batch_event_sql selects for one batch from lo to hi. */
static long long count_events(pgconn *c, const seek_pos *p, long long lo, long long hi, char *err,
                              size_t errlen)
{
	char sql[1024], los[24], his[24];
	const char *params[4] = {p->queue_id, los, his, p->sub_id};
	PGresult *res;
	long long n;

	snprintf(los, sizeof(los), "%lld", lo);
	snprintf(his, sizeof(his), "%lld", hi);
	snprintf(sql, sizeof(sql),
	         "select count(*) from %s e, pgq.tick lo, pgq.tick hi"
	         " where lo.tick_queue = $1 and lo.tick_id = $2::int8 and hi.tick_queue = $1 and hi.tick_id = $3::int8"
	         " and e.ev_txid >= txid_snapshot_xmin(lo.tick_snapshot)"
	         " and e.ev_txid <= txid_snapshot_xmax(hi.tick_snapshot)"
	         " and txid_visible_in_snapshot(e.ev_txid, hi.tick_snapshot)"
	         " and not txid_visible_in_snapshot(e.ev_txid, lo.tick_snapshot)"
	         " and (e.ev_owner is null or e.ev_owner = $4::int4)",
	         p->table);
	res = pgconn_exec(c, sql, 4, params, err, errlen);
	if (!res)
		return -1;
	n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return n;
}

int seek_consumer(pgconn *c, const config *cfg, seek_to to, const char *arg, int yes, FILE *out)
{
	char err[PGCONN_ERR_LEN], new_time[48], ids[24];
	const char *params[3] = {cfg->queue_name, cfg->consumer_name, ids};
	seek_pos p;
	long long target = 0, n;
	int rc = EXIT_DB, r;
	PGresult *res;

	memset(&p, 0, sizeof(p));
	r = pgq_claim(c, cfg->queue_name, cfg->consumer_name, err, sizeof(err));
	if (r == PGQ_NONE) {
		fprintf(stderr, "pgqlua: seek: consumer %s on queue %s is running (another session holds its claim):"
		        " stop it first\n", cfg->consumer_name, cfg->queue_name);
		return EXIT_RUNNING;
	}
	if (r != PGQ_DONE || pgconn_cmd(c, "begin", err, sizeof(err)) != 0 ||
	    read_position(c, cfg, &p, err, sizeof(err)) != 0)
		goto fail;
	r = resolve_tick(c, cfg, &p, to, arg, &target, new_time, sizeof(new_time), err, sizeof(err));
	if (r < 0)
		goto fail;
	if (r == 0) {
		fprintf(stderr, "pgqlua: seek: %s; refused\n", err);
		goto out;
	}
	fprintf(out, "consumer %s on queue %s\nold tick: %lld (%s)\nnew tick: %lld (%s)\n", cfg->consumer_name,
	        cfg->queue_name, p.tick, p.tick_time, target, new_time);
	if (p.open_batch)
		fprintf(out, "open batch %lld: dropped, its events come from the new position\n", p.open_batch);
	if (target == p.tick && !p.open_batch) {
		fprintf(out, "already there: nothing changed\n");
		rc = EXIT_OK_;
		goto out;
	}
	n = count_events(c, &p, target < p.tick ? target : p.tick, target < p.tick ? p.tick : target, err,
	                 sizeof(err));
	if (n < 0)
		goto fail;
	if (target < p.tick)
		fprintf(out, "events to replay: %lld\n", n);
	else if (target > p.tick)
		fprintf(out, "events to skip: %lld\n", n);
	if (target > p.tick && n > 0 && !yes) {
		fprintf(stderr, "pgqlua: seek: %lld events would never be delivered to %s; add --yes to skip them\n",
		        n, cfg->consumer_name);
		rc = EXIT_USAGE;
		goto out;
	}
	snprintf(ids, sizeof(ids), "%lld", target);
	res = pgconn_exec(c, "select pgq.register_consumer_at($1, $2, $3::int8)", 3, params, err, sizeof(err));
	if (!res)
		goto fail;
	PQclear(res);
	if (pgconn_cmd(c, "commit", err, sizeof(err)) != 0)
		goto fail;
	fprintf(out, "moved to tick %lld\n", target);
	rc = EXIT_OK_;
	goto out;
fail:
	fprintf(stderr, "pgqlua: seek: %s\n", err);
out:
	pgq_rollback(c);
	return rc;
}

static void peek_row(FILE *out, const PGresult *res, int i, int json)
{
	/* ev_id, ev_time, ev_type, ev_extra1, the start of ev_data, its length, ev_retry */
	const char *v[7];
	for (int k = 0; k < 7; k++)
		v[k] = PQgetisnull(res, i, k) ? NULL : PQgetvalue(res, i, k);
	if (!json) {
		fprintf(out, "%s | %s | %s | %s | %s%s\n", v[0], v[1], v[2] ? v[2] : "", v[3] ? v[3] : "",
		        v[4] ? v[4] : "", v[5] && atol(v[5]) > PEEK_DATA_CHARS ? "..." : "");
		return;
	}
	fprintf(out, "{\"id\":%s,\"time\":", v[0]);
	service_json_str(out, v[1]);
	for (int k = 2; k <= 4; k++) {
		static const char *const names[] = {"", "", "type", "extra1", "data"};
		fprintf(out, ",\"%s\":", names[k]);
		if (v[k])
			service_json_str(out, v[k]);
		else
			fputs("null", out);
	}
	fprintf(out, ",\"data_length\":%s,\"retry\":%s}\n", v[5] ? v[5] : "null", v[6] ? v[6] : "0");
}

int seek_peek(pgconn *c, const config *cfg, int limit, int json, FILE *out)
{
	pgq_batch_knobs k = {cfg->batch_min_count, cfg->batch_min_interval, cfg->batch_min_lag};
	char err[PGCONN_ERR_LEN], lim[24], bid[24];
	const char *params[1];
	int rc = EXIT_DB, shown = 0, batches = 0;
	pgq_batch b;
	pgq_result r;

	memset(&b, 0, sizeof(b));
	r = pgq_check_registered(c, cfg->queue_name, cfg->consumer_name, err, sizeof(err));
	if (r != PGQ_DONE || pgconn_cmd(c, "begin; set local lock_timeout = '10s'", err, sizeof(err)) != 0)
		goto fail;
	if (!json)
		fprintf(out, "ev_id | time | type | extra1 | data\n");
	while (shown < limit && batches < PEEK_MAX_BATCHES) {
		PGresult *res;
		char *sql;
		size_t n;
		r = pgq_next_batch(c, cfg->queue_name, cfg->consumer_name, &k, &b, err, sizeof(err));
		if (r == PGQ_NONE)
			break;
		if (r != PGQ_DONE)
			goto fail;
		batches++;
		n = strlen(b.sql) + 256;
		if (!(sql = malloc(n))) {
			snprintf(err, sizeof(err), "out of memory");
			rc = EXIT_INTERNAL;
			goto fail;
		}
		snprintf(sql, n, "select ev_id, ev_time, ev_type, ev_extra1, left(ev_data, %d), length(ev_data), ev_retry"
		         " from (%s) b order by ev_id limit $1::int4", PEEK_DATA_CHARS, b.sql);
		snprintf(lim, sizeof(lim), "%d", limit - shown);
		params[0] = lim;
		res = pgconn_exec(c, sql, 1, params, err, sizeof(err));
		free(sql);
		if (!res)
			goto fail;
		for (int i = 0; i < PQntuples(res); i++)
			peek_row(out, res, i, json);
		shown += PQntuples(res);
		PQclear(res);
		snprintf(bid, sizeof(bid), "%lld", b.batch_id);
		params[0] = bid;
		if (!(res = pgconn_exec(c, "select pgq.finish_batch($1::int8)", 1, params, err, sizeof(err))))
			goto fail;
		PQclear(res);
		free(b.sql);
		b.sql = NULL;
	}
	if (!json)
		fprintf(out, "(%d event%s%s)\n", shown, shown == 1 ? "" : "s",
		        shown == 0 ? ": no batch is ready for this consumer" : "");
	rc = EXIT_OK_;
	goto out;
fail:
	fprintf(stderr, "pgqlua: peek: %s\n", err);
out:
	free(b.sql);
	pgq_rollback(c);
	return rc;
}
