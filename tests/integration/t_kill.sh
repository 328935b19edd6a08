#!/usr/bin/env bash
# SIGKILL at random moments while a local consumer works through tens of
# thousands of events that write to a table, restarted after each kill: in
# the end every event's effect is there exactly once (the batch's single
# transaction makes this exact).  Two events in three write with db:send
# (pipelined), the third with db:exec.
source "$(dirname "$0")/lib.sh"
reset_queues q_kill
N=${PGQLUA_KILL_EVENTS:-40000}
KILLS=${PGQLUA_KILLS:-24}

sql "drop table if exists r_kill; create table r_kill (ev_id bigint, data text)"
new_consumer q_kill c_kill '
function process_event(ev, db)
  local write = ev.id % 3 == 0 and db.exec or db.send
  write(db, "insert into r_kill values ($1, $2)", ev.id, ev.data)
end' "log_level: info
fetch_size: 100"
# many transactions of 250 events: batches of a few hundred to a few thousand
sql "do \$\$ begin for i in 1 .. $((N / 250)) loop
       perform pgq.insert_event('q_kill', 'x', 'e' || g) from generate_series(1, 250) g; commit;
     end loop; end \$\$" > /dev/null
sql "select pgq.set_queue_config('q_kill', 'ticker_max_count', '1000')" > /dev/null
count() { sql "select count(*) from r_kill"; }
kills=0
for i in $(seq 1 "$KILLS"); do
	before=$(count)
	[ "$before" -ge "$N" ] && break
	"$PGQLUA" run "$WORK/c_kill.yaml" >> "$WORK/c_kill.log" 2>&1 &
	pid=$!
	# once it is working on a batch, kill it at a random moment: before,
	# inside or after a commit
	wait_until 30 bash -c "psql -XAtqc \"select count(*) from pg_stat_activity where application_name = 'pgqlua' and query like 'insert into r_kill%'\" | grep -q '^[1-9]'" || true
	sleep "0.$((RANDOM % 2))$((RANDOM % 10))"   # the random kill point itself, not a wait
	kill -9 "$pid" && kills=$((kills + 1))
	wait "$pid" 2>/dev/null || true
done
drain q_kill c_kill 120 || fail "q_kill did not drain after the kills"
echo "# $N events, $kills kills"
[ "$kills" -ge 20 ] && ok "at least 20 kills happened ($kills)" || fail "only $kills kills before the queue drained"
expect_eq "after $kills SIGKILLs every one of $N events was applied exactly once" "$N|$N" \
	"$(sql "select count(*), count(distinct ev_id) from r_kill")"
finish
