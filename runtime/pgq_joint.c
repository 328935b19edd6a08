/*
 * pgq_joint.c - the PgQ SQL of a joint batch (see pgq.h): the next batches
 * of several consumers in one statement, the lead's query widened to all
 * their retried events, and one commit that finishes them all.
 */
#include "pgq.h"
#include "pgq_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEXT_BATCHES_SQL \
	"with b as materialized (select n.o, n.name, x.* from unnest($2::text[]) with ordinality n(name, o)," \
	"  lateral pgq.next_batch_custom($1, n.name, $3::interval, $4::int4, $5::interval) x)" \
	" select batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time," \
	" extract(epoch from now() - cur_tick_time)::float8," \
	" (select s.sub_id from pgq.subscription s, pgq.consumer co, pgq.queue q" \
	"  where co.co_name = b.name and s.sub_consumer = co.co_id and q.queue_name = $1 and s.sub_queue = q.queue_id)," \
	" case when o = (select l.o from b l where l.batch_id is not null order by l.prev_tick_id, l.o limit 1)" \
	"  then pgq.batch_event_sql(batch_id) end" \
	" from b order by o"

pgq_result pgq_next_batches(pgconn *c, const char *queue, const char *names, int n, const pgq_batch_knobs *k,
                            pgq_batch *out, int *lead, char *err, size_t errlen)
{
	char lag[64], interval[64], count[32];
	const char *params[5];
	pgq_result rc = PGQ_NONE;
	PGresult *res;

	pgq_next_batch_params(k, params, lag, sizeof(lag), interval, sizeof(interval), count, sizeof(count),
	                  queue, names);
	if (!(res = pgconn_exec(c, NEXT_BATCHES_SQL, 5, params, err, errlen)))
		return PGQ_ERROR;
	if (PQntuples(res) != n) {
		snprintf(err, errlen, "pgq.next_batch_custom returned %d rows for %d consumers", PQntuples(res), n);
		PQclear(res);
		return PGQ_ERROR;
	}
	*lead = -1;
	for (int i = 0; i < n; i++) {
		pgq_batch *b = &out[i];
		memset(b, 0, sizeof(*b));
		if (PQgetisnull(res, i, 0))
			continue;
		b->batch_id = atoll(PQgetvalue(res, i, 0));
		b->cur_tick_id = atoll(PQgetvalue(res, i, 1));
		b->prev_tick_id = atoll(PQgetvalue(res, i, 2));
		snprintf(b->cur_tick_time, sizeof(b->cur_tick_time), "%s", PQgetvalue(res, i, 3));
		snprintf(b->prev_tick_time, sizeof(b->prev_tick_time), "%s", PQgetvalue(res, i, 4));
		b->lag = atof(PQgetvalue(res, i, 5));
		b->sub_id = atoll(PQgetvalue(res, i, 6));
		rc = PGQ_DONE;
		if (PQgetisnull(res, i, 7))
			continue;
		*lead = i;
		if (!(b->sql = strdup(PQgetvalue(res, i, 7)))) {
			snprintf(err, errlen, "out of memory");
			rc = PGQ_ERROR;
			break;
		}
	}
	PQclear(res);
	return rc;
}

/* How batch_event_sql names the consumer whose retried events a batch
 * reads. */
#define OWNER_CLAUSE " and (ev_owner is null or ev_owner = %lld)"

char *pgq_joint_sql(const char *sql, long long lead_sub, const long long *subs, int n)
{
	char pat[64], *out, *o;
	size_t plen, cap, ilen;
	char *in_list;
	const char *p;
	int found = 0;

	plen = (size_t)snprintf(pat, sizeof(pat), OWNER_CLAUSE, lead_sub);
	if (!(in_list = malloc((size_t)n * 24 + 64)))
		return NULL;
	o = in_list + sprintf(in_list, " and (ev_owner is null or ev_owner in (");
	for (int i = 0; i < n; i++)
		o += sprintf(o, "%s%lld", i ? ", " : "", subs[i]);
	strcpy(o, "))");
	ilen = strlen(in_list);
	for (p = sql; (p = strstr(p, pat)); p += plen)
		found++;
	cap = strlen(sql) + (size_t)found * ilen + 1;
	if (!found || !(out = malloc(cap))) {
		free(in_list);
		return NULL;
	}
	for (o = out, p = sql;;) {
		const char *q = strstr(p, pat);
		size_t k = q ? (size_t)(q - p) : strlen(p);
		memcpy(o, p, k);
		o += k;
		if (!q)
			break;
		memcpy(o, in_list, ilen);
		o += ilen;
		p = q + plen;
	}
	*o = '\0';
	free(in_list);
	return out;
}

pgq_commit pgq_finish_batches(pgconn *c, const long long *ids, int n, char *err, size_t errlen)
{
	size_t cap = (size_t)n * 24 + 512;
	char *sql = malloc(cap), *o;
	int rc;

	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return PGQ_NOT_COMMITTED;
	}
	o = sql + sprintf(sql, "select case f when 1 then 1 else ('batch ' || x || ' " PGQ_FINISH_NOT_OPEN
	                  " (pgq.finish_batch returned ' || f || ')')::int4 end from unnest('{");
	for (int i = 0; i < n; i++)
		o += sprintf(o, "%s%lld", i ? "," : "", ids[i]);
	strcpy(o, "}'::int8[]) x, pgq.finish_batch(x) f; commit");
	rc = pgconn_cmd(c, sql, err, errlen);
	free(sql);
	if (rc == 0)
		return PGQ_COMMITTED;
	if (strstr(err, PGQ_FINISH_NOT_OPEN))
		snprintf(err, errlen, "pgq.finish_batch: a batch of the joint batch " PGQ_FINISH_NOT_OPEN "; rolled back");
	return pgconn_is_ok(c) ? PGQ_NOT_COMMITTED : PGQ_COMMIT_UNKNOWN;
}
