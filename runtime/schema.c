/*
 * schema.c - the DDL of the runtime's own schema `pgqlua` in the queue's
 * database (see schema.h): the failed-event table, the tick trigger of the
 * wake-up, and the ownership check every install runs first.
 */
#include "schema.h"

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

const char schema_owner_check_sql[] = OWNER_CHECK;

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
	"alter table pgqlua.failed_event add column if not exists pgq_consumer text;"
	/* a group's current number of partitions (install records the
	 * config's; `pgqlua resize` changes it, members follow between
	 * batches); resizing_to: a resize under way, and whether the queue's
	 * ticker is paused by it (it is resumed by the resize run again) */
	"create table if not exists pgqlua.group_layout ("
	" queue_name text not null,"
	" consumer_name text not null,"
	" partitions int4 not null check (partitions > 0),"
	" resizing_to int4,"
	" paused_by_resize bool not null default false,"
	" changed_at timestamptz not null default now(),"
	" primary key (queue_name, consumer_name));"
	/* one more at every resize: members see a layout change even when
	 * the count came back to theirs (4 -> 6 -> 4) while they slept */
	"alter table pgqlua.group_layout add column if not exists generation int8 not null default 0";

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

int schema_install(pgconn *c, char *err, size_t errlen)
{
	return pgconn_install(c, schema_sql, err, errlen);
}

int schema_install_wakeup(pgconn *c, char *err, size_t errlen)
{
	return pgconn_install(c, wakeup_sql, err, errlen);
}
