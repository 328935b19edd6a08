/*
 * pgq.c - the PgQ batch protocol and registration SQL (see pgq.h).
 * Each function is one or two round trips; the caller owns transactions
 * except where a function says it begins or commits one.
 */
#include "pgq.h"
#include "pgq_int.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CURSOR_NAME "pgqlua_batch"

static void fmt_seconds(char *buf, size_t len, double s, int set)
{
	if (set)
		snprintf(buf, len, "%.6f seconds", s);
	else
		buf[0] = '\0';
}

#define NEXT_BATCH_SQL \
	"select batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time," \
	" extract(epoch from now() - cur_tick_time)::float8," \
	" case when batch_id is not null then pgq.batch_event_sql(batch_id) end" \
	" from pgq.next_batch_custom($1, $2, $3::interval, $4::int4, $5::interval)"

void pgq_next_batch_params(const pgq_batch_knobs *k, const char **params, char *lag, size_t laglen,
                              char *interval, size_t ilen, char *count, size_t clen,
                              const char *queue, const char *consumer)
{
	fmt_seconds(lag, laglen, k->min_lag, k->min_lag >= 0);
	fmt_seconds(interval, ilen, k->min_interval, k->min_interval >= 0);
	snprintf(count, clen, "%d", k->min_count);
	params[0] = queue;
	params[1] = consumer;
	params[2] = lag[0] ? lag : NULL;
	params[3] = k->min_count > 0 ? count : NULL;
	params[4] = interval[0] ? interval : NULL;
}

/* Read next_batch_custom's row into out; frees res. */
static pgq_result next_batch_result(PGresult *res, pgq_batch *out, char *err, size_t errlen)
{
	pgq_result rc = PGQ_ERROR;
	if (PQntuples(res) != 1) {
		snprintf(err, errlen, "pgq.next_batch_custom returned %d rows", PQntuples(res));
		goto out;
	}
	if (PQgetisnull(res, 0, 0)) {
		rc = PGQ_NONE;
		goto out;
	}
	memset(out, 0, sizeof(*out));
	out->batch_id = atoll(PQgetvalue(res, 0, 0));
	out->cur_tick_id = atoll(PQgetvalue(res, 0, 1));
	out->prev_tick_id = atoll(PQgetvalue(res, 0, 2));
	snprintf(out->cur_tick_time, sizeof(out->cur_tick_time), "%s", PQgetvalue(res, 0, 3));
	snprintf(out->prev_tick_time, sizeof(out->prev_tick_time), "%s", PQgetvalue(res, 0, 4));
	out->lag = atof(PQgetvalue(res, 0, 5));
	out->sql = strdup(PQgetvalue(res, 0, 6));
	rc = out->sql ? PGQ_DONE : PGQ_ERROR;
	if (!out->sql)
		snprintf(err, errlen, "out of memory");
out:
	PQclear(res);
	return rc;
}

pgq_result pgq_next_batch(pgconn *c, const char *queue, const char *consumer,
                          const pgq_batch_knobs *k, pgq_batch *out, char *err, size_t errlen)
{
	char lag[64], interval[64], count[32];
	const char *params[5];
	PGresult *res;

	pgq_next_batch_params(k, params, lag, sizeof(lag), interval, sizeof(interval), count, sizeof(count),
	                  queue, consumer);
	res = pgconn_exec(c, NEXT_BATCH_SQL, 5, params, err, errlen);
	if (!res)
		return PGQ_ERROR;
	return next_batch_result(res, out, err, errlen);
}

/* The filter's place in the cursor query: on the batch's rows, before
 * they are numbered.  The newlines end a `--` comment the filter may
 * hold. */
#define FILTER_HEAD ") b where (\n"
#define FILTER_TAIL "\n)"

/* The cursor's text: the batch's rows (filtered), each with its exact
 * time, then the end marker (a row of NULLs); all numbered.  A joint
 * batch adds each row's partition (the part expression, computed once per
 * row: `offset 0` keeps it out of the filter's copy). */
static char *cursor_sql(const pgq_batch *b, const char *where, const char *part, int fetch_size)
{
	static const char plain[] = "begin; declare " CURSOR_NAME " no scroll cursor for"
	                            " select u.*, row_number() over () from (select b.* from (";
	static const char joint[] = "begin; declare " CURSOR_NAME " no scroll cursor for"
	                            " select u.ev_id, u.ev_time, u.ev_txid, u.ev_retry, u.ev_type, u.ev_data,"
	                            " u.ev_extra1, u.ev_extra2, u.ev_extra3, u.ev_extra4, row_number() over (),"
	                            " u.pgqlua_part from (select b.* from (select e.*, (\n";
	static const char joint_mid[] = "\n)::int4 as pgqlua_part from (";
	static const char joint_end[] = ") e offset 0";
	char tail[200];
	size_t len = strlen(b->sql) + (where ? strlen(where) : 0) + (part ? strlen(part) : 0) + sizeof(joint) +
	             sizeof(joint_mid) + sizeof(joint_end) + sizeof(FILTER_HEAD) + sizeof(tail);
	char *sql = malloc(len);

	if (!sql)
		return NULL;
	snprintf(tail, sizeof(tail), "%s union all select null, null, null, null, null, null, null,"
	                             " null, null, null%s) u; fetch %d from " CURSOR_NAME,
	         where ? FILTER_TAIL : ") b", part ? ", null" : "", fetch_size);
	if (part)
		snprintf(sql, len, "%s%s%s%s%s%s%s%s", joint, part, joint_mid, b->sql, joint_end,
		         where ? FILTER_HEAD : "", where ? where : "", tail);
	else
		snprintf(sql, len, "%s%s%s%s%s", plain, b->sql, where ? FILTER_HEAD : "", where ? where : "", tail);
	return sql;
}

PGresult *pgq_open_batch(pgconn *c, const pgq_batch *b, const char *where, const char *part, int fetch_size,
                         char *err, size_t errlen)
{
	/* batch_event_sql's query in our own cursor (what get_batch_cursor
	 * does, without PL/pgSQL handing over each row); BEGIN and the first
	 * FETCH ride in the same round trip */
	char *sql = cursor_sql(b, where, part, fetch_size);
	PGresult *res = NULL;
	int got;

	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	got = pgconn_exec_rows(c, sql, &res, 1, err, errlen);
	free(sql);
	if (got == 0)
		snprintf(err, errlen, "opening the batch cursor returned no rows");
	return got == 1 ? res : NULL;
}

int pgq_check_filter(pgconn *c, const char *where, char *err, size_t errlen)
{
	/* the batch's columns as pgq.batch_event_sql returns them, no rows;
	 * sent alone through the extended protocol, which takes exactly one
	 * statement */
	static const char head[] = "select 1 from (select ev_id, ev_time, ev_txid, ev_retry, ev_type,"
	                           " ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4"
	                           " from pgq.event_template where false" FILTER_HEAD;
	size_t wn = strlen(where);
	char *sql = malloc(sizeof(head) + wn + sizeof(FILTER_TAIL));
	PGresult *res;
	int rc = -1;

	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(sql, head, sizeof(head) - 1);
	memcpy(sql + sizeof(head) - 1, where, wn);
	strcpy(sql + sizeof(head) - 1 + wn, FILTER_TAIL);
	res = PQexecParams(pgconn_pg(c), sql, 0, NULL, NULL, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		rc = 0;
	else
		pgconn_result_error(c, res, err, errlen);
	PQclear(res);
	free(sql);
	return rc;
}

int pgq_fetch_async(pgconn *c, int fetch_size)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "fetch %d from " CURSOR_NAME, fetch_size);
	return pgconn_send_async(c, sql);
}

/* "events A to B" of a chunk's n events, or "on_batch_start". */
static void chunk_span(char *buf, size_t len, const PGresult *res, int n)
{
	if (n <= 0)
		snprintf(buf, len, "an event");
	else if (n == 1)
		snprintf(buf, len, "event %s", PQgetvalue(res, 0, PGQ_EV_ID));
	else
		snprintf(buf, len, "events %s to %s", PQgetvalue(res, 0, PGQ_EV_ID),
		         PQgetvalue(res, n - 1, PGQ_EV_ID));
}

/* Who ran while the fetch that returned chunk number k (0-based) was
 * pending: chunk k's fetch was sent before chunk k-1 was processed, so the
 * culprit ran in chunk k-2 (or in on_batch_start for chunk 1). */
static const char *culprit(const pgq_cursor_guard *g)
{
	return g->chunks < 2 ? "on_batch_start" : g->span[g->chunks % 2];
}

#define CURSOR_TOUCHED "the batch cursor " CURSOR_NAME " was %s by SQL the script ran (during %s)"

int pgq_cursor_check(pgq_cursor_guard *g, const PGresult *res, int *n, int *more, char *err,
                     size_t errlen)
{
	int rows = PQntuples(res), ended = 0;

	*n = 0;
	*more = 0;
	if (PQnfields(res) != PGQ_CURSOR_NCOLS + (g->joint ? 1 : 0) || strcmp(PQfname(res, PGQ_EV_ROW), "row_number") != 0) {
		snprintf(err, errlen, CURSOR_TOUCHED "; the batch is rolled back", "replaced", culprit(g));
		return -1;
	}
	/* numbered g->rows + 1, + 2, ... with no gap, the marker included */
	if (rows > 0 && PQgetisnull(res, rows - 1, PGQ_EV_ID))
		ended = 1;
	if ((rows > 0 && (atoll(PQgetvalue(res, 0, PGQ_EV_ROW)) != g->rows + 1 ||
	                  atoll(PQgetvalue(res, rows - 1, PGQ_EV_ROW)) != g->rows + rows)) ||
	    (!ended && rows < g->fetch_size)) {
		snprintf(err, errlen, CURSOR_TOUCHED ": the events after row %lld of the batch would have been skipped; the batch is rolled back",
		         "moved or closed", culprit(g), g->rows);
		return -1;
	}
	rows -= ended;
	g->rows += rows;
	chunk_span(g->span[g->chunks % 2], sizeof(g->span[0]), res, rows);
	g->chunks++;
	*n = rows;
	*more = !ended;
	return 0;
}

PGresult *pgq_fetch_take(pgconn *c, const pgq_cursor_guard *g, char *err, size_t errlen)
{
	PGresult *res = pgconn_take_async(c, err, errlen);
	if (!res && strncmp(err, "34000", 5) == 0)
		snprintf(err, errlen, CURSOR_TOUCHED "; the batch is rolled back", "closed", culprit(g));
	return res;
}

int pgq_cursor_explain(pgconn *c, const pgq_cursor_guard *g, char *err, size_t errlen)
{
	const char *e = g ? pgconn_async_error(c) : NULL;
	if (!e || strncmp(e, "34000", 5) != 0)
		return 0;
	snprintf(err, errlen, CURSOR_TOUCHED "; the batch is rolled back", "closed", culprit(g));
	return 1;
}

/* YYYY-MM-DD HH:MM:SS[.ffffff](+|-)HH[:MM[:SS]][ BC]: what DateStyle ISO
 * prints for a timestamptz. */
static int iso_time(const char *t)
{
	static const char shape[] = "dddd-dd-dd dd:dd:dd";
	size_t i;
	for (i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i])
			return 0;
	t += i;
	if (*t == '.')
		for (t++; *t >= '0' && *t <= '9'; t++)
			;
	if (*t != '+' && *t != '-')
		return 0;
	for (t++; (*t >= '0' && *t <= '9') || *t == ':'; t++)
		;
	return *t == '\0' || strcmp(t, " BC") == 0;
}

const char *pgq_event_time(const PGresult *res, int row, char *err, size_t errlen)
{
	const char *t = PQgetvalue(res, row, PGQ_EV_TIME);
	if (iso_time(t) || strcmp(t, "infinity") == 0 || strcmp(t, "-infinity") == 0)
		return t;
	snprintf(err, errlen, "event %s: its ev_time is not in ISO 8601 (did the script change DateStyle?);"
	         " it cannot be sent back exactly", PQgetvalue(res, row, PGQ_EV_ID));
	return NULL;
}

int pgq_retry_event(pgconn *c, const char *queue, const char *consumer, const PGresult *res,
                    int row, double delay, char *err, size_t errlen)
{
	char retry[32], secs[64];
	const char *params[12];
	PGresult *r;
	long long n = PQgetisnull(res, row, PGQ_EV_RETRY) ? 0 : atoll(PQgetvalue(res, row, PGQ_EV_RETRY));

	snprintf(retry, sizeof(retry), "%lld", n + 1);
	snprintf(secs, sizeof(secs), "%.6f", delay);
	params[0] = queue;
	params[1] = consumer;
	params[2] = secs;
	params[3] = PQgetvalue(res, row, PGQ_EV_ID);
	if (!(params[4] = pgq_event_time(res, row, err, errlen)))
		return -1;
	params[5] = retry;
	for (int i = 0; i < 6; i++) {
		int col = PGQ_EV_TYPE + i;
		params[6 + i] = PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
	}
	r = pgconn_exec(c,
	                "select pgq.event_retry_raw($1, $2, now() + $3::float8 * interval '1 second',"
	                " $4::int8, $5::timestamptz, $6::int4, $7, $8, $9, $10, $11, $12)",
	                12, params, err, errlen);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* pgq.finish_batch, failing (22P02, with the text below) unless it
 * returns 1, so that a batch another instance finished is not committed */
#define FINISH_SQL \
	"select case f when 1 then 1 else ('batch %lld " PGQ_FINISH_NOT_OPEN " (pgq.finish_batch returned '" \
	" || f || ')')::int4 end from pgq.finish_batch(%lld) f"

/* err as the caller reports it when the batch was not open. */
static void finish_error(long long batch_id, char *err, size_t errlen)
{
	if (strstr(err, PGQ_FINISH_NOT_OPEN))
		snprintf(err, errlen, "pgq.finish_batch: batch %lld " PGQ_FINISH_NOT_OPEN "; rolled back", batch_id);
}

pgq_commit pgq_finish_and_next(pgconn *c, long long batch_id, const char *queue,
                               const char *consumer, const pgq_batch_knobs *k, pgq_batch *next,
                               pgq_result *next_res, char *err, size_t errlen)
{
	/* COMMIT closes the cursor (a script that closed it has skipped
	 * nothing here: its last chunk is in) */
	enum { PRE_FINISH, PRE_COMMIT, PRE_N };
	char finish[256];
	const char *pre[PRE_N] = {finish, "commit"};
	const char *params[5];
	char lag[64], interval[64], count[32];
	int failed_at;
	PGresult *res;

	*next_res = PGQ_NONE;
	snprintf(finish, sizeof(finish), FINISH_SQL, batch_id, batch_id);
	if (!next) {
		/* finish only: the consumer is stopping */
		char sql[320];
		snprintf(sql, sizeof(sql), "%s; commit", finish);
		if (pgconn_cmd(c, sql, err, errlen) == 0)
			return PGQ_COMMITTED;
		finish_error(batch_id, err, errlen);
		return pgconn_is_ok(c) ? PGQ_NOT_COMMITTED : PGQ_COMMIT_UNKNOWN;
	}
	pgq_next_batch_params(k, params, lag, sizeof(lag), interval, sizeof(interval), count, sizeof(count),
	                  queue, consumer);
	res = pgconn_exec_after(c, pre, PRE_N, NEXT_BATCH_SQL, 5, params, &failed_at, err, errlen);
	if (failed_at == PGCONN_LOST)
		return PGQ_COMMIT_UNKNOWN;
	if (failed_at >= 0 && failed_at <= PRE_COMMIT) {
		finish_error(batch_id, err, errlen);
		return PGQ_NOT_COMMITTED;
	}
	*next_res = res ? next_batch_result(res, next, err, errlen) : PGQ_ERROR;
	return PGQ_COMMITTED;
}

void pgq_rollback(pgconn *c)
{
	char err[256];
	if (pgconn_is_ok(c) && PQtransactionStatus(pgconn_pg(c)) != PQTRANS_IDLE)
		(void)pgconn_cmd(c, "rollback", err, sizeof(err));
}

void pgq_reset(pgconn *c)
{
	pgq_rollback(c);
	if (pgconn_is_ok(c) && PQpipelineStatus(pgconn_pg(c)) != PQ_PIPELINE_OFF)
		pgconn_close(c, "results left unread after a failure");
	if (!pgconn_is_ok(c) && pgconn_pg(c)) {
		log_warn("connection to %s lost; the open batch will be delivered again", pgconn_safe_name(c));
		pgconn_close(c, "lost during a batch");
	}
}

static int scalar_int(pgconn *c, const char *sql, int nparams, const char *const *params,
                      char *err, size_t errlen)
{
	PGresult *res = pgconn_exec(c, sql, nparams, params, err, errlen);
	int v;
	if (!res)
		return -1;
	v = (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	return v;
}

pgq_result pgq_claim(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	/* the two-key form: a lock space of its own, apart from one-key locks */
	int got = scalar_int(c, "select pg_try_advisory_lock(hashtext('pgqlua/' || $1), hashtext($2))::int",
	                     2, p, err, errlen);
	return got < 0 ? PGQ_ERROR : got ? PGQ_DONE : PGQ_NONE;
}

int pgq_release(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	return scalar_int(c, "select pg_advisory_unlock(hashtext('pgqlua/' || $1), hashtext($2))::int", 2, p,
	                  err, errlen) < 0 ? -1 : 0;
}

pgq_result pgq_check_registered(pgconn *c, const char *queue, const char *consumer,
                                char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	pgq_result rc = PGQ_ERROR;
	PGresult *res = pgconn_exec(c,
	                            "select exists (select 1 from pgq.queue where queue_name = $1),"
	                            " exists (select 1 from pgq.subscription s"
	                            " join pgq.queue q on q.queue_id = s.sub_queue"
	                            " join pgq.consumer co on co.co_id = s.sub_consumer"
	                            " where q.queue_name = $1 and co.co_name = $2)",
	                            2, p, err, errlen);
	if (!res) {
		if (strstr(err, "42P01") || strstr(err, "3F000")) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", err);
			snprintf(err, errlen, "PgQ is not installed in this database (%s)", msg);
		}
		return PGQ_ERROR;
	}
	if (PQgetvalue(res, 0, 0)[0] != 't') {
		snprintf(err, errlen, "queue %s does not exist (" PGQ_INSTALL_HINT ")", queue);
		rc = PGQ_NONE;
	} else if (PQgetvalue(res, 0, 1)[0] != 't') {
		snprintf(err, errlen, "consumer %s is not registered on queue %s (" PGQ_INSTALL_HINT " or `pgqlua register CONFIG`)",
		         consumer, queue);
		rc = PGQ_NONE;
	} else
		rc = PGQ_DONE;
	PQclear(res);
	return rc;
}

int pgq_create_queue(pgconn *c, const char *queue, char *err, size_t errlen)
{
	const char *p[1] = {queue};
	return scalar_int(c, "select pgq.create_queue($1)", 1, p, err, errlen);
}

int pgq_register(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	return scalar_int(c, "select pgq.register_consumer($1, $2)", 2, p, err, errlen);
}

int pgq_unregister(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	return scalar_int(c, "select pgq.unregister_consumer($1, $2)", 2, p, err, errlen);
}
