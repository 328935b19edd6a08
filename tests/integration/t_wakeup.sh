#!/usr/bin/env bash
# wakeup: the consumer LISTENs for the tick notification that `pgqlua
# install` sets up, so with a long loop_delay an event is still picked up
# as soon as its tick arrives.
source "$(dirname "$0")/lib.sh"
reset_queues q_wake
sql "drop table if exists r_wake; create table r_wake (ev_id bigint)"
new_consumer q_wake c_wake '
function process_event(ev, db) db:exec("insert into r_wake values ($1)", ev.id) end' "loop_delay: 600
wakeup: true"
expect_eq "install puts the tick trigger on pgq.tick" "1" \
	"$(sql "select count(*) from pg_trigger where tgname = 'pgqlua_notify_tick' and tgrelid = 'pgq.tick'::regclass")"
"$PGQLUA" run "$WORK/c_wake.yaml" >> "$WORK/c_wake.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
# after each event the consumer polls, finds nothing and sleeps loop_delay
# (600 s): events 2 and 3 can only be seen by waking on their tick
wait_until 30 grep -q "on queue q_wake started" "$WORK/c_wake.log" || fail "the consumer did not start"
for i in 1 2 3; do
	sql "select pgq.insert_event('q_wake', 'x', 'e$i')" > /dev/null
	wait_sql "event $i is processed when its tick arrives, long before loop_delay (600 s)" \
		"select count(*) from r_wake" "$i" 60
done
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
expect_eq "and SIGTERM still stops it at once while it sleeps" "0" "$rc"
finish
