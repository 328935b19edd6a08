#!/usr/bin/env bash
# event_filter: an SQL boolean expression over the event's columns, applied
# on the server inside the batch cursor's query.  Only matching events reach
# the script; the others are never fetched (the debug log's "rows fetched"
# adds up to the matching events).  The cursor's row numbers and end marker
# still guard a filtered batch (a small fetch_size makes many chunks).  A
# filter that is not one valid boolean expression stops the start with a
# config error (exit 78) before any batch is taken.  In a group, a member
# that holds several partitions reads their batches through one cursor
# (a joint batch) with the same filter, and every retry and failed event
# goes to the partition the event belongs to.
source "$(dirname "$0")/lib.sh"
reset_queues q_filter q_filter_grp q_filter_bad
TABLES="'public.orders', 'public.payments'"

sql "drop table if exists r_filter; create table r_filter (ev_id bigint primary key, extra1 text, retry int)"
new_consumer q_filter c_filter '
function process_event(ev, db)
  db:exec("insert into r_filter values ($1, $2, $3) on conflict (ev_id) do update set retry = excluded.retry",
          ev.id, ev.extra1, ev.retry)
  if ev.extra1 == "public.payments" and ev.data == "1" and ev.retry == 0 then return pgq.EVENT_RETRY, 0 end
end' "event_filter: \"ev_extra1 in ($TABLES) -- only these tables\"
fetch_size: 7"
# 600 events over three tables: 200 orders, 200 payments, 200 other
sql "select pgq.insert_event('q_filter', 'I:id', (g % 5)::text,
            (array['public.orders', 'public.payments', 'public.other'])[g % 3 + 1], null, null, null)
     from generate_series(1, 600) g" > /dev/null
drain q_filter c_filter || fail "q_filter did not drain"
expect_eq "only the 400 matching events reached the script, each once" "400|400|0" \
	"$(sql "select count(*), count(distinct ev_id), count(*) filter (where extra1 not in ($TABLES)) from r_filter")"
expect_eq "a retried matching event passes the filter again and comes back" "40" \
	"$(sql "select count(*) from r_filter where retry = 1")"
fetched=$(sed -n 's/.*batch done: [0-9]* events, \([0-9]*\) rows fetched.*/\1/p' "$WORK/c_filter.log" | awk '{ s += $1 } END { print s + 0 }')
expect_eq "the rows fetched from the server are the 400 matching events and the 40 retries, no other" "440" "$fetched"
expect_eq "the log shows outcomes for the 400 matching events only" "400" \
	"$(grep -o 'event [0-9]*: outcome' "$WORK/c_filter.log" | sort -u | wc -l)"

# ---- a group of 4 partitions on one member: joint batches, the same filter
sql "drop table if exists r_filter_grp; create table r_filter_grp (ev_id bigint primary key, extra1 text, retry int)"
new_consumer q_filter_grp c_filter_grp '
function process_event(ev, db)
  if ev.extra1 == "public.orders" and ev.data == "2" then return pgq.EVENT_FAILED, "two" end
  db:exec("insert into r_filter_grp values ($1, $2, $3) on conflict (ev_id) do update set retry = excluded.retry",
          ev.id, ev.extra1, ev.retry)
  if ev.extra1 == "public.payments" and ev.data == "1" and ev.retry == 0 then return pgq.EVENT_RETRY, 0 end
end' "event_filter: \"ev_extra1 in ($TABLES)\"
partitions: 4
partition_key: ev_id
log_level: debug
fetch_size: 7"
sql "select pgq.insert_event('q_filter_grp', 'I:id', (g % 5)::text,
            (array['public.orders', 'public.payments', 'public.other'])[g % 3 + 1], null, null, null)
     from generate_series(1, 600) g" > /dev/null
wait_until 30 ticked q_filter_grp || fail "q_filter_grp never ticked"
for p in 0 1 2 3; do
	await_drained q_filter_grp "c_filter_grp.p${p}of4" 60 run_once c_filter_grp || fail "q_filter_grp did not drain"
done
expect_match "one member's partitions were read through one cursor" "joint batch of 4 partitions" \
	"$(cat "$WORK/c_filter_grp.log")"
expect_eq "the 360 matching events that do not fail reached the script once each" "360|360|0" \
	"$(sql "select count(*), count(distinct ev_id), count(*) filter (where extra1 not in ($TABLES)) from r_filter_grp")"
expect_eq "a retried matching event came back" "40" "$(sql "select count(*) from r_filter_grp where retry = 1")"
expect_eq "each of the 40 failed events records the partition its key belongs to" "40|40" \
	"$(sql "select count(*), count(*) filter (where pgq_consumer = 'c_filter_grp.p' || mod(hashtext(ev_id::text)::int8 + 2147483648, 4) || 'of4')
	        from pgqlua.failed_event where queue_name = 'q_filter_grp'")"
expect_eq "every partition had some of them" "4" \
	"$(sql "select count(distinct pgq_consumer) from pgqlua.failed_event where queue_name = 'q_filter_grp'")"
fetched=$(sed -n 's/.*batch done: [0-9]* events, \([0-9]*\) rows fetched.*/\1/p' "$WORK/c_filter_grp.log" | awk '{ s += $1 } END { print s + 0 }')
expect_eq "the rows fetched are the 400 matching events and the 40 retries, no other" "440" "$fetched"

# ---- filters that are not one boolean expression over the event's columns
sql "drop table if exists r_filter_bad; create table r_filter_bad (ev_id bigint)"
new_consumer q_filter_bad c_filter_bad '
function process_event(ev, db) db:exec("insert into r_filter_bad values ($1)", ev.id) end'
sql "select pgq.insert_event('q_filter_bad', 'x', 'y')" > /dev/null
wait_until 30 ticked q_filter_bad || fail "q_filter_bad never ticked"
bad_filter() {   # WHAT FILTER EXPECTED_MESSAGE_REGEX
	sed -i '/^event_filter:/d' "$WORK/c_filter_bad.yaml"
	printf 'event_filter: "%s"\n' "$2" >> "$WORK/c_filter_bad.yaml"
	set +e
	out=$("$PGQLUA" run --once "$WORK/c_filter_bad.yaml" 2>&1)
	rc=$?
	set -e
	expect_eq "$1: a config error at start (exit 78)" "78" "$rc"
	expect_match "$1: the message names event_filter and the server's reason" \
		"event_filter is not an SQL boolean expression over the event's columns: $3" "$out"
}
bad_filter "an unknown column" "no_such_column = 1" '42703 column "no_such_column" does not exist'
bad_filter "not a boolean" "ev_id + 1" '42804 argument of WHERE must be type boolean'
bad_filter "a second statement" "true); select (1" '42601 cannot insert multiple commands'
bad_filter "not SQL" "ev_type = 'x" '42601 unterminated quoted string'
bad_filter "an open comment" "true /* x" '42601 unterminated /\* comment'
expect_eq "no batch was taken and nothing reached the script" "0|" \
	"$(sql "select (select count(*) from r_filter_bad), current_batch from pgq.get_consumer_info('q_filter_bad', 'c_filter_bad')")"
finish
