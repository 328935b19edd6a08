#!/usr/bin/env bash
# SIGKILL at random moments while a local consumer works through tens of
# thousands of events that write to a table, restarted after each kill: in
# the end every event's effect is there exactly once (the batch's single
# transaction makes this exact).  Two events in three write with db:send
# (pipelined), the third with db:exec.  The queue is fed in slices, one per
# kill, and each kill waits for the consumer to be applying events, so the
# number of kills never depends on how fast the machine is.
source "$(dirname "$0")/lib.sh"
reset_queues q_kill
KILLS=${PGQLUA_KILLS:-24}
SLICE=${PGQLUA_KILL_SLICE:-2000}   # events fed before each kill (250 a transaction)
N=$((KILLS * SLICE))

sql "drop table if exists r_kill; create table r_kill (ev_id bigint, data text)"
new_consumer q_kill c_kill '
function process_event(ev, db)
  local write = ev.id % 3 == 0 and db.exec or db.send
  write(db, "insert into r_kill values ($1, $2)", ev.id, ev.data)
end' "log_level: info
fetch_size: 100"
sql "select pgq.set_queue_config('q_kill', 'ticker_max_count', '1000')" > /dev/null
count() { sql "select count(*) from r_kill"; }
# applying: the consumer is inside a batch that writes (or has committed
# some of the current slice)
applying() {
	[ "$(count)" -gt "$1" ] ||
		psql -XAtqc "select count(*) from pg_stat_activity where application_name = 'pgqlua' and query like 'insert into r_kill%'" | grep -q '^[1-9]'
}
kills=0 mid=0
for i in $(seq 1 "$KILLS"); do
	# many transactions of 250 events: batches of a few hundred to a few thousand
	sql "do \$\$ begin for i in 1 .. $((SLICE / 250)) loop
	       perform pgq.insert_event('q_kill', 'x', 'e' || g) from generate_series(1, 250) g; commit;
	     end loop; end \$\$" > /dev/null
	before=$(count)
	"$PGQLUA" run "$WORK/c_kill.yaml" >> "$WORK/c_kill.log" 2>&1 &
	pid=$!
	# once it is working on a batch, kill it at a random moment: before,
	# inside or after a commit
	wait_until 60 applying "$before" || fail "kill $i: the consumer never started applying events"
	sleep "0.$((RANDOM % 2))$((RANDOM % 10))"   # the random kill point itself, not a wait
	[ "$(count)" -lt "$((before + SLICE))" ] && mid=$((mid + 1))
	kill -9 "$pid" && kills=$((kills + 1))
	wait "$pid" 2>/dev/null || true
done
drain q_kill c_kill 120 || fail "q_kill did not drain after the kills"
echo "# $N events, $kills kills, $mid of them before the consumer had applied its slice"
expect_eq "every one of the $KILLS SIGKILLs hit a running consumer" "$KILLS" "$kills"
expect_eq "after $kills SIGKILLs every one of $N events was applied exactly once" "$N|$N" \
	"$(sql "select count(*), count(distinct ev_id) from r_kill")"
finish
