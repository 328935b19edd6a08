/*
 * seek.c - `pgqlua seek` (see seek.h).  PgQ has no seek: the position is
 * moved with pgq.register_consumer_at, which checks that the tick exists
 * and drops an open batch, inside a transaction that holds the consumer's
 * claim (every partition's, for a group) and locks the queue row (table
 * rotation takes it too, so no rotation can drop the new position's
 * events meanwhile).
 */
#include "seek.h"
#include "exitcode.h"
#include "group.h"
#include "pgq.h"

#include <stdlib.h>
#include <string.h>


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

/* One PgQ consumer moved: the consumer, or a partition of a group. */
typedef struct seek_part {
	char *name;
	char *where;             /* its filter (event_filter, the partition's share); NULL: none */
	seek_pos pos;
	long long events;        /* replayed (the target is before its tick) or skipped */
} seek_part;

/* Lock the queue row (rotation waits) and the subscription; read both. */
static int read_position(pgconn *c, const config *cfg, const char *name, seek_pos *p, char *err, size_t errlen)
{
	const char *params[2] = {cfg->queue_name, name};
	PGresult *res = pgconn_exec(c, POS_SQL, 2, params, err, errlen);
	int rc = -1;
	if (!res)
		return -1;
	if (PQntuples(res) != 1) {
		if (pgq_check_registered(c, cfg->queue_name, name, err, errlen) == PGQ_DONE)
			snprintf(err, errlen, "the position of consumer %s on queue %s cannot be read", name,
			         cfg->queue_name);
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
 * pgq.batch_event_sql selects for one batch from lo to hi, through the
 * consumer's filter. */
static long long count_events(pgconn *c, const seek_pos *p, const char *where, long long lo, long long hi,
                              char *err, size_t errlen)
{
	char *sql, los[24], his[24];
	const char *params[4] = {p->queue_id, los, his, p->sub_id};
	size_t len = 1024 + (where ? strlen(where) : 0);
	PGresult *res;
	long long n;

	if (!(sql = malloc(len))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(los, sizeof(los), "%lld", lo);
	snprintf(his, sizeof(his), "%lld", hi);
	/* the filter's newlines end its `--` comments */
	snprintf(sql, len,
	         "select count(*) from %s e, pgq.tick lo, pgq.tick hi"
	         " where lo.tick_queue = $1 and lo.tick_id = $2::int8 and hi.tick_queue = $1 and hi.tick_id = $3::int8"
	         " and e.ev_txid >= txid_snapshot_xmin(lo.tick_snapshot)"
	         " and e.ev_txid <= txid_snapshot_xmax(hi.tick_snapshot)"
	         " and txid_visible_in_snapshot(e.ev_txid, hi.tick_snapshot)"
	         " and not txid_visible_in_snapshot(e.ev_txid, lo.tick_snapshot)"
	         " and (e.ev_owner is null or e.ev_owner = $4::int4)%s%s%s",
	         p->table, where ? " and (\n" : "", where ? where : "", where ? "\n)" : "");
	res = pgconn_exec(c, sql, 4, params, err, errlen);
	free(sql);
	if (!res)
		return -1;
	n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return n;
}

static void free_parts(seek_part *parts, int n)
{
	for (int i = 0; parts && i < n; i++) {
		free(parts[i].name);
		free(parts[i].where);
	}
	free(parts);
}

static seek_part *open_parts(const config *cfg, int n)
{
	seek_part *parts = calloc((size_t)n, sizeof(seek_part));
	int oom = 0;
	for (int i = 0; parts && i < n; i++) {
		parts[i].name = group_part_name(cfg, i);
		parts[i].where = group_part_where(cfg, i, &oom);
		if (!parts[i].name || oom) {
			free_parts(parts, n);
			return NULL;
		}
	}
	return parts;
}

/* Partition i's claim is held by someone else: say who. */
static void refuse_running(pgconn *c, const config *cfg, int i)
{
	char err[PGCONN_ERR_LEN];
	group_view v;
	if (cfg->partitions <= 0) {
		fprintf(stderr, "pgqlua: seek: consumer %s on queue %s is running (another session holds its claim):"
		        " stop it first\n", cfg->consumer_name, cfg->queue_name);
		return;
	}
	if (group_view_read(c, cfg, &v, err, sizeof(err)) != 0)
		memset(&v, 0, sizeof(v));
	fprintf(stderr, "pgqlua: seek: consumer group %s on queue %s is running (partition %d is held by %s%s):"
	        " stop every member first\n", cfg->consumer_name, cfg->queue_name, i,
	        v.owner && v.owner[i] ? "member " : "another session", v.owner && v.owner[i] ? v.owner[i] : "");
	group_view_free(&v);
}

/* Take the claim of every partition (of the consumer); a member holding
 * one is running.  EXIT_OK_, EXIT_RUNNING or EXIT_DB. */
static int claim_all(pgconn *c, const config *cfg, seek_part *parts, int n)
{
	char err[PGCONN_ERR_LEN];
	for (int i = 0; i < n; i++) {
		pgq_result r = pgq_claim(c, cfg->queue_name, parts[i].name, err, sizeof(err));
		if (r == PGQ_ERROR) {
			fprintf(stderr, "pgqlua: seek: %s\n", err);
			return EXIT_DB;
		}
		if (r == PGQ_NONE) {
			refuse_running(c, cfg, i);
			return EXIT_RUNNING;
		}
	}
	return EXIT_OK_;
}

/* The events each partition replays or skips; their sums. */
static int count_all(pgconn *c, seek_part *parts, int n, long long target, long long *replay, long long *skip,
                     char *err, size_t errlen)
{
	*replay = *skip = 0;
	for (int i = 0; i < n; i++) {
		long long t = parts[i].pos.tick;
		parts[i].events = t == target ? 0
		                  : count_events(c, &parts[i].pos, parts[i].where, target < t ? target : t,
		                                 target < t ? t : target, err, errlen);
		if (parts[i].events < 0)
			return -1;
		*(target < t ? replay : skip) += parts[i].events;
	}
	return 0;
}

/* The old and new positions (the consumer's, or each partition's) and the
 * events replayed and skipped. */
static void report(FILE *out, const config *cfg, const seek_part *parts, int n, long long target,
                   const char *new_time, long long replay, long long skip)
{
	int back = 0, fwd = 0;
	if (cfg->partitions <= 0)
		fprintf(out, "consumer %s on queue %s\nold tick: %lld (%s)\nnew tick: %lld (%s)\n", cfg->consumer_name,
		        cfg->queue_name, parts[0].pos.tick, parts[0].pos.tick_time, target, new_time);
	else
		fprintf(out, "consumer group %s on queue %s: %d partitions\nnew tick: %lld (%s)\n", cfg->consumer_name,
		        cfg->queue_name, n, target, new_time);
	for (int i = 0; i < n; i++) {
		const seek_part *p = &parts[i];
		if (cfg->partitions > 0)
			fprintf(out, "partition %d (%s): old tick %lld (%s), %lld events to %s\n", i, p->name, p->pos.tick,
			        p->pos.tick_time, p->events, target < p->pos.tick ? "replay" : "skip");
		if (p->pos.open_batch)
			fprintf(out, "%s%sopen batch %lld: dropped, its events come from the new position\n",
			        cfg->partitions > 0 ? p->name : "", cfg->partitions > 0 ? ": " : "", p->pos.open_batch);
		back |= target < p->pos.tick;
		fwd |= target > p->pos.tick;
	}
	if (back)
		fprintf(out, "events to replay: %lld\n", replay);
	if (fwd)
		fprintf(out, "events to skip: %lld\n", skip);
}

/* Move every partition to target (one not there yet, or with a batch
 * open).  0, or -1 with err. */
static int move_all(pgconn *c, const config *cfg, const seek_part *parts, int n, long long target, char *err,
                    size_t errlen)
{
	char ids[24];
	snprintf(ids, sizeof(ids), "%lld", target);
	for (int i = 0; i < n; i++) {
		const char *params[3] = {cfg->queue_name, parts[i].name, ids};
		PGresult *res;
		if (parts[i].pos.tick == target && !parts[i].pos.open_batch)
			continue;
		if (!(res = pgconn_exec(c, "select pgq.register_consumer_at($1, $2, $3::int8)", 3, params, err, errlen)))
			return -1;
		PQclear(res);
	}
	return 0;
}

static int nothing_to_do(const seek_part *parts, int n, long long target)
{
	for (int i = 0; i < n; i++)
		if (parts[i].pos.tick != target || parts[i].pos.open_batch)
			return 0;
	return 1;
}

int seek_consumer(pgconn *c, const config *cfg, seek_to to, const char *arg, int yes, FILE *out)
{
	char err[PGCONN_ERR_LEN] = "", new_time[48];
	int n = group_size(cfg), rc, r;
	seek_part *parts = open_parts(cfg, n);
	long long target = 0, replay, skip;

	if (!parts) {
		fprintf(stderr, "pgqlua: seek: out of memory\n");
		return EXIT_INTERNAL;
	}
	if ((rc = claim_all(c, cfg, parts, n)) != EXIT_OK_)
		goto out;
	rc = EXIT_DB;
	if (pgconn_cmd(c, "begin", err, sizeof(err)) != 0)
		goto fail;
	for (int i = 0; i < n; i++)
		if (read_position(c, cfg, parts[i].name, &parts[i].pos, err, sizeof(err)) != 0)
			goto fail;
	r = resolve_tick(c, cfg, &parts[0].pos, to, arg, &target, new_time, sizeof(new_time), err, sizeof(err));
	if (r < 0)
		goto fail;
	if (r == 0) {
		fprintf(stderr, "pgqlua: seek: %s; refused\n", err);
		goto out;
	}
	if (count_all(c, parts, n, target, &replay, &skip, err, sizeof(err)) != 0)
		goto fail;
	report(out, cfg, parts, n, target, new_time, replay, skip);
	if (nothing_to_do(parts, n, target)) {
		fprintf(out, "already there: nothing changed\n");
		rc = EXIT_OK_;
		goto out;
	}
	if (skip > 0 && !yes) {
		fprintf(stderr, "pgqlua: seek: %lld events would never be delivered to %s; add --yes to skip them\n",
		        skip, cfg->consumer_name);
		rc = EXIT_USAGE;
		goto out;
	}
	if (move_all(c, cfg, parts, n, target, err, sizeof(err)) != 0 || pgconn_cmd(c, "commit", err, sizeof(err)) != 0)
		goto fail;
	if (cfg->partitions > 0)
		fprintf(out, "moved %d partitions to tick %lld\n", n, target);
	else
		fprintf(out, "moved to tick %lld\n", target);
	rc = EXIT_OK_;
	goto out;
fail:
	fprintf(stderr, "pgqlua: seek: %s\n", err);
out:
	pgq_rollback(c);
	free_parts(parts, n);
	return rc;
}
