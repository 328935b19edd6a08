/*
 * remote.c - the target database's side of a remote consumer (see
 * remote.h).  Plain tables in schema pgqlua; no extension needed.
 */
#include "schema.h"
#include "remote.h"
#include "failed.h"
#include "pgq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char remote_schema_sql[] =
	"create schema if not exists pgqlua;"
	"create table if not exists pgqlua.remote_batch ("
	" queue_name text not null,"
	" consumer_name text not null,"
	" batch_id bigint not null,"
	" tick_id bigint not null,"
	" completed_at timestamptz not null default now(),"
	" primary key (queue_name, consumer_name));"
	"create table if not exists pgqlua.remote_event ("
	" queue_name text not null,"
	" consumer_name text not null,"
	" batch_id bigint not null,"
	" ev_id bigint not null,"
	" action text not null check (action in ('ok', 'retry', 'failed')),"
	" delay float8,"
	" reason text,"
	" primary key (queue_name, consumer_name, ev_id))";

int remote_install_schema(pgconn *t, char *err, size_t errlen)
{
	/* the same ownership check first, in the same transaction */
	size_t n = strlen(schema_owner_check_sql) + sizeof(remote_schema_sql);
	char *sql = malloc(n);
	int rc;
	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(sql, n, "%s%s", schema_owner_check_sql, remote_schema_sql);
	rc = pgconn_install(t, sql, err, errlen);
	free(sql);
	return rc;
}

int remote_last_batch(pgconn *t, const char *queue, const char *consumer, long long *batch_id,
                      char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	PGresult *res = pgconn_exec(t,
	                            "select batch_id from pgqlua.remote_batch"
	                            " where queue_name = $1 and consumer_name = $2 for update",
	                            2, p, err, errlen);
	if (!res)
		return -1;
	*batch_id = PQntuples(res) ? atoll(PQgetvalue(res, 0, 0)) : -1;
	PQclear(res);
	return 0;
}

int remote_add_consumer(pgconn *t, const char *queue, const char *consumer, char *err, size_t errlen)
{
	const char *p[2] = {queue, consumer};
	PGresult *res = pgconn_exec(t,
	                            "insert into pgqlua.remote_batch (queue_name, consumer_name, batch_id, tick_id)"
	                            " values ($1, $2, 0, 0) on conflict do nothing",
	                            2, p, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

int remote_record_event(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                        const char *ev_id, const char *action, double delay, const char *reason,
                        char *err, size_t errlen)
{
	char b[32], d[64];
	const char *p[7];
	PGresult *res;
	snprintf(b, sizeof(b), "%lld", batch_id);
	snprintf(d, sizeof(d), "%.6f", delay);
	p[0] = queue;
	p[1] = consumer;
	p[2] = b;
	p[3] = ev_id;
	p[4] = action;
	p[5] = strcmp(action, "retry") == 0 ? d : NULL;
	p[6] = strcmp(action, "failed") == 0 ? reason : NULL;
	res = pgconn_exec(t,
	                  "insert into pgqlua.remote_event values ($1, $2, $3, $4, $5, $6, $7)"
	                  " on conflict (queue_name, consumer_name, ev_id) do update set"
	                  " batch_id = excluded.batch_id, action = excluded.action,"
	                  " delay = excluded.delay, reason = excluded.reason",
	                  7, p, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

int remote_find_event(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                      const char *ev_id, char *action, size_t alen, double *delay, char *reason,
                      size_t rlen, char *err, size_t errlen)
{
	char b[32];
	const char *p[4];
	PGresult *res;
	int found;
	snprintf(b, sizeof(b), "%lld", batch_id);
	p[0] = queue;
	p[1] = consumer;
	p[2] = b;
	p[3] = ev_id;
	res = pgconn_exec(t,
	                  "select action, coalesce(delay, 0), coalesce(reason, '') from pgqlua.remote_event"
	                  " where queue_name = $1 and consumer_name = $2 and batch_id = $3 and ev_id = $4",
	                  4, p, err, errlen);
	if (!res)
		return -1;
	found = PQntuples(res) == 1;
	if (found) {
		snprintf(action, alen, "%s", PQgetvalue(res, 0, 0));
		*delay = atof(PQgetvalue(res, 0, 1));
		snprintf(reason, rlen, "%s", PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	return found;
}

int remote_record_batch(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                        long long tick_id, char *err, size_t errlen)
{
	char b[32], k[32];
	const char *p[4];
	PGresult *res;
	snprintf(b, sizeof(b), "%lld", batch_id);
	snprintf(k, sizeof(k), "%lld", tick_id);
	p[0] = queue;
	p[1] = consumer;
	p[2] = b;
	p[3] = k;
	res = pgconn_exec(t,
	                  "with gone as (delete from pgqlua.remote_event"
	                  "  where queue_name = $1 and consumer_name = $2 and batch_id <> $3::int8)"
	                  " insert into pgqlua.remote_batch (queue_name, consumer_name, batch_id, tick_id)"
	                  " values ($1, $2, $3, $4)"
	                  " on conflict (queue_name, consumer_name) do update set"
	                  " batch_id = excluded.batch_id, tick_id = excluded.tick_id, completed_at = now()",
	                  4, p, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}
