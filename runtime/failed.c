/*
 * failed.c - schema pgqlua and the failed-event table (see failed.h).
 */
#include "failed.h"
#include "pgq.h"

#include <stdlib.h>
#include <string.h>

#define OWNER_CHECK \
	"do $chk$ declare" \
	" me oid := (select oid from pg_roles where rolname = current_user);" \
	" what text;" \
	" begin" \
	"  select format('schema pgqlua belongs to role %s', nspowner::regrole) into what" \
	"   from pg_namespace where nspname = 'pgqlua' and nspowner <> me;" \
	"  if what is null then" \
	"   select format('function %s belongs to role %s', p.oid::regprocedure, p.proowner::regrole) into what" \
	"    from pg_proc p join pg_namespace n on n.oid = p.pronamespace" \
	"    where n.nspname = 'pgqlua' and p.proowner <> me order by p.oid limit 1;" \
	"  end if;" \
	"  if what is null then" \
	"   select format('%s %s belongs to role %s', case c.relkind when 'r' then 'table' when 'v' then 'view'" \
	"     when 'S' then 'sequence' else 'relation' end, c.oid::regclass, c.relowner::regrole) into what" \
	"    from pg_class c join pg_namespace n on n.oid = c.relnamespace" \
	"    where n.nspname = 'pgqlua' and c.relowner <> me order by c.oid limit 1;" \
	"  end if;" \
	"  if what is not null then" \
	"   raise exception using errcode = '42501', message = what || format(', not to the installing role %s:' ||" \
	"    ' refused (give schema pgqlua and everything in it to that role, or drop them)', current_user::regrole);" \
	"  end if;" \
	" end $chk$;"

const char failed_owner_check_sql[] = OWNER_CHECK;

static const char schema_sql[] =
	OWNER_CHECK
	"create schema if not exists pgqlua;"
	"create table if not exists pgqlua.failed_event ("
	" queue_name text not null,"
	" consumer_name text not null,"
	" ev_id bigint not null,"
	" ev_time timestamptz not null,"
	" ev_txid bigint,"
	" ev_retry int4,"
	" ev_type text,"
	" ev_data text,"
	" ev_extra1 text,"
	" ev_extra2 text,"
	" ev_extra3 text,"
	" ev_extra4 text,"
	" reason text not null,"
	" failed_at timestamptz not null default now(),"
	" primary key (queue_name, consumer_name, ev_id));"
	/* a group's partition: the PgQ consumer that took the event (NULL:
	 * consumer_name itself) */
	"alter table pgqlua.failed_event add column if not exists pgq_consumer text";

/* wake-up: a NOTIFY with the queue's name when PgQ records a tick */
static const char wakeup_sql[] =
	OWNER_CHECK
	"create or replace function pgqlua.notify_tick() returns trigger language plpgsql as $f$"
	" begin"
	"  perform pg_notify('pgqlua_tick', q.queue_name) from pgq.queue q where q.queue_id = new.tick_queue;"
	"  return null;"
	" end $f$;"
	"drop trigger if exists pgqlua_notify_tick on pgq.tick;"
	"create trigger pgqlua_notify_tick after insert on pgq.tick"
	" for each row execute function pgqlua.notify_tick()";

int failed_install_schema(pgconn *c, char *err, size_t errlen)
{
	return pgconn_install(c, schema_sql, err, errlen);
}

int failed_install_wakeup(pgconn *c, char *err, size_t errlen)
{
	return pgconn_install(c, wakeup_sql, err, errlen);
}

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
