/*
 * failed.c - the failed-event table's rows (see failed.h); its DDL is in
 * schema.c.
 */
#include "failed.h"
#include "pgq.h"

#include <stdlib.h>
#include <string.h>

int failed_record(pgconn *c, const char *queue, const char *consumer, const char *pgq_consumer,
                  const PGresult *res, int row, const char *reason, char *err, size_t errlen)
{
	const char *params[14];
	PGresult *r;

	params[0] = queue;
	params[1] = consumer;
	for (int i = 0; i < PGQ_EV_NCOLS; i++)
		params[2 + i] = PQgetisnull(res, row, i) ? NULL : PQgetvalue(res, row, i);
	if (!(params[2 + PGQ_EV_TIME] = pgq_event_time(res, row, err, errlen)))
		return -1;
	params[12] = reason;
	params[13] = pgq_consumer && strcmp(pgq_consumer, consumer) != 0 ? pgq_consumer : NULL;
	r = pgconn_exec(c,
	                "insert into pgqlua.failed_event (queue_name, consumer_name, ev_id, ev_time,"
	                " ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,"
	                " ev_extra4, reason, pgq_consumer)"
	                " values ($1, $2, $3, $4::timestamptz, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
	                " on conflict (queue_name, consumer_name, ev_id) do update set"
	                " ev_retry = excluded.ev_retry, reason = excluded.reason, failed_at = now(),"
	                " pgq_consumer = excluded.pgq_consumer",
	                14, params, err, errlen);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

/* ids as a Postgres array literal "{1,2}" or NULL for all. */
static char *ids_array(const long long *ids, int nids)
{
	size_t cap = (size_t)nids * 22 + 3, used = 1;
	char *s;
	if (!ids || nids <= 0)
		return NULL;
	s = malloc(cap);
	if (!s)
		return NULL;
	s[0] = '{';
	for (int i = 0; i < nids; i++)
		used += (size_t)snprintf(s + used, cap - used, "%s%lld", i ? "," : "", ids[i]);
	snprintf(s + used, cap - used, "}");
	return s;
}

static PGresult *run_selected(pgconn *c, const char *sql, const char *queue, const char *consumer,
                              const long long *ids, int nids, char *err, size_t errlen)
{
	char *arr = ids_array(ids, nids);
	const char *params[3] = {queue, consumer, arr};
	PGresult *res;
	if (nids > 0 && !arr) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	res = pgconn_exec(c, sql, 3, params, err, errlen);
	free(arr);
	return res;
}

#define SELECTED " queue_name = $1 and consumer_name = $2 and ($3::int8[] is null or ev_id = any($3::int8[]))"

static void print_missing(FILE *out, const PGresult *res, const long long *ids, int nids)
{
	for (int i = 0; i < nids; i++) {
		int found = 0;
		for (int r = 0; r < PQntuples(res) && !found; r++)
			found = atoll(PQgetvalue(res, r, 0)) == ids[i];
		if (!found)
			fprintf(out, "event %lld: not in the failed-event table\n", ids[i]);
	}
}

long failed_list(pgconn *c, const char *queue, const char *consumer, const long long *ids,
                 int nids, FILE *out, char *err, size_t errlen)
{
	PGresult *res = run_selected(c,
	                             "select ev_id, ev_type, ev_data, reason, failed_at, coalesce(ev_retry, 0)"
	                             " from pgqlua.failed_event where" SELECTED " order by ev_id",
	                             queue, consumer, ids, nids, err, errlen);
	long n;
	if (!res)
		return -1;
	n = PQntuples(res);
	for (int r = 0; r < n; r++)
		fprintf(out, "%s\ttype=%s\tretries=%s\tfailed_at=%s\treason=%s\tdata=%s\n",
		        PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 5),
		        PQgetvalue(res, r, 4), PQgetvalue(res, r, 3), PQgetvalue(res, r, 2));
	print_missing(out, res, ids, nids);
	fprintf(out, "%ld failed event%s\n", n, n == 1 ? "" : "s");
	PQclear(res);
	return n;
}

long failed_retry(pgconn *c, const char *queue, const char *consumer, const long long *ids,
                  int nids, FILE *out, char *err, size_t errlen)
{
	/* one statement: the rows leave the table exactly when they enter
	 * pgq's retry queue for this consumer only, with a fresh retry count */
	PGresult *res = run_selected(c,
	                             "with f as (delete from pgqlua.failed_event where" SELECTED
	                             " returning *)"
	                             " select ev_id, pgq.event_retry_raw(queue_name, coalesce(pgq_consumer, consumer_name), now(),"
	                             " ev_id, ev_time, 0, ev_type, ev_data, ev_extra1, ev_extra2,"
	                             " ev_extra3, ev_extra4), coalesce(pgq_consumer, consumer_name) from f order by ev_id",
	                             queue, consumer, ids, nids, err, errlen);
	long n;
	if (!res)
		return -1;
	n = PQntuples(res);
	for (int r = 0; r < n; r++)
		fprintf(out, "event %s: put back into the queue for consumer %s\n", PQgetvalue(res, r, 0),
		        PQgetvalue(res, r, 2));
	print_missing(out, res, ids, nids);
	fprintf(out, "%ld event%s retried\n", n, n == 1 ? "" : "s");
	PQclear(res);
	return n;
}

long failed_delete(pgconn *c, const char *queue, const char *consumer, const long long *ids,
                   int nids, FILE *out, char *err, size_t errlen)
{
	PGresult *res = run_selected(c,
	                             "delete from pgqlua.failed_event where" SELECTED " returning ev_id",
	                             queue, consumer, ids, nids, err, errlen);
	long n;
	if (!res)
		return -1;
	n = PQntuples(res);
	for (int r = 0; r < n; r++)
		fprintf(out, "event %s: deleted\n", PQgetvalue(res, r, 0));
	print_missing(out, res, ids, nids);
	fprintf(out, "%ld event%s deleted\n", n, n == 1 ? "" : "s");
	PQclear(res);
	return n;
}
