#!/usr/bin/env bash
# seek and peek: a stopped consumer moved back replays exactly the events
# after the new tick; moved forward (only with --yes) it never sees the
# skipped ones; both are refused while the consumer runs (its pid file is
# locked, or another instance holds its claim) and a tick PgQ no longer
# keeps is refused.  peek shows the next events and changes nothing.  A
# consumer group moves every partition; peek shows each partition's next
# events; seek is refused while a member holds a partition.
source "$(dirname "$0")/lib.sh"
reset_queues q_seek q_seekg
sql "drop table if exists r_seek; create table r_seek (ev_id bigint, data text)"
new_consumer q_seek c_seek '
function process_event(ev, db)
  db:exec("insert into r_seek values ($1, $2)", ev.id, ev.data)
end' "pidfile: $WORK/a.pid"
sed "s#^pidfile: .*#pidfile: $WORK/b.pid#" "$WORK/c_seek.yaml" > "$WORK/c_seek_b.yaml"
Y="$WORK/c_seek.yaml"

insert() { sql "select pgq.insert_event('q_seek', 'x', '$1' || g) from generate_series(1, $2) g" > /dev/null; }
position() { sql "select last_tick from pgq.get_consumer_info('q_seek', 'c_seek')"; }
# times PREFIX: how often each event of the stretch PREFIX was processed, as "events|min|max"
times() {
	sql "select count(*), coalesce(min(n), 0), coalesce(max(n), 0) from
	     (select count(*) n from r_seek where data like '$1%' group by ev_id) s"
}
seek() { "$PGQLUA" seek "$@" > "$WORK/seek.out" 2> "$WORK/seek.err" && rc=0 || rc=$?; }

insert pre 5
drain q_seek c_seek || fail "the first events were not consumed"
P0=$(position)
insert a 10
drain q_seek c_seek || fail "stretch a was not consumed"
P1=$(position)
insert b 7
drain q_seek c_seek || fail "stretch b was not consumed"
P2=$(position)
expect_eq "before any seek every event is processed once" "22|1|1" "$(sql "select count(*), min(n), max(n) from
	(select count(*) n from r_seek group by ev_id) s")"

# ---- the command line
seek "$Y"
expect_eq "seek without a position: exit 64" 64 "$rc"
expect_match "it names the choices" "give one of --tick N, --time TIMESTAMP or --latest" "$(cat "$WORK/seek.err")"
seek "$Y" --tick 12x
expect_eq "seek --tick with no number: exit 64" 64 "$rc"
seek "$Y" --tick 1 --latest
expect_eq "seek with two positions: exit 64" 64 "$rc"

# ---- replay
seek "$Y" --tick "$P0"
expect_eq "seek back: exit 0" 0 "$rc"
expect_match "it prints the old and the new tick" "old tick: $P2 .*new tick: $P0 " "$(tr '\n' ' ' < "$WORK/seek.out")"
expect_match "and how many events will be replayed" "events to replay: 17" "$(cat "$WORK/seek.out")"
expect_eq "the consumer's position is the new tick" "$P0" "$(position)"
drain q_seek c_seek || fail "the replay was not consumed"
expect_eq "the events before the tick are not replayed" "5|1|1" "$(times pre)"
expect_eq "stretch a is processed exactly once more" "10|2|2" "$(times a)"
expect_eq "stretch b is processed exactly once more" "7|2|2" "$(times b)"

P1_TIME=$(sql "select tick_time from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
	where q.queue_name = 'q_seek' and t.tick_id = $P1")
seek --time "$P1_TIME" "$Y"
expect_eq "seek --time: exit 0" 0 "$rc"
expect_match "--time goes to the last tick at or before it" "new tick: $P1 " "$(cat "$WORK/seek.out")"
drain q_seek c_seek || fail "the replay from a time was not consumed"
expect_eq "from the time: stretch a is not replayed" "10|2|2" "$(times a)"
expect_eq "from the time: stretch b is processed once more" "7|3|3" "$(times b)"

# ---- peek
insert k 3
wait_until 30 tick_target q_seek > /dev/null || fail "stretch k was never ticked"
before=$(sql "select last_tick, coalesce(current_batch, 0) from pgq.get_consumer_info('q_seek', 'c_seek')")
out=$("$PGQLUA" peek "$Y" --limit 2) && rc=0 || rc=$?
expect_eq "peek: exit 0" 0 "$rc"
expect_match "peek shows the next events, as many as --limit" "^ev_id \| time \| type \| extra1 \| data
[0-9]+ \| [0-9-]+ [0-9:.]+\+00 \| x \|  \| k1
[0-9]+ \| [^|]+ \| x \|  \| k2
\(2 events\)$" "$out"
out=$("$PGQLUA" peek --json "$Y"); echo "$out" > "$WORK/peek.json"
expect_eq "peek --json: one JSON object per event" 3 "$(grep -c '^{"id":[0-9]*,"time":"[^"]*","type":"x","extra1":null,"data":"k[123]","data_length":2,"retry":0}$' <<< "$out")"
expect_eq "peek changes nothing: same tick, no open batch" "$before" \
	"$(sql "select last_tick, coalesce(current_batch, 0) from pgq.get_consumer_info('q_seek', 'c_seek')")"
drain q_seek c_seek || fail "stretch k was not consumed"
expect_eq "the peeked events are then processed once" "3|1|1" "$(times k)"

# ---- skip
insert c 6
wait_until 30 tick_target q_seek > /dev/null || fail "stretch c was never ticked"
P3=$(position)
seek "$Y" --latest
expect_eq "skipping events without --yes: exit 64" 64 "$rc"
expect_match "it says how many events would be skipped" "events to skip: 6" "$(cat "$WORK/seek.out")"
expect_match "and asks for --yes" "6 events would never be delivered to c_seek; add --yes to skip them" \
	"$(cat "$WORK/seek.err")"
expect_eq "the position is unchanged" "$P3" "$(position)"
seek "$Y" --latest --yes
expect_eq "seek --latest --yes: exit 0" 0 "$rc"
insert d 3
drain q_seek c_seek || fail "stretch d was not consumed"
expect_eq "the skipped events are never processed" "0|0|0" "$(times c)"
expect_eq "the events after them are processed once" "3|1|1" "$(times d)"

# ---- refused while running
"$PGQLUA" run "$Y" >> "$WORK/c_seek.log" 2>&1 &
RUN_PID=$!
CHILD_PIDS+=("$RUN_PID")
running() { [[ $("$PGQLUA" status "$Y" 2>/dev/null | head -1) == *"running (active)"* ]]; }
wait_until 30 running || fail "the consumer did not start"
P4=$(position)
seek "$Y" --tick "$P0"
expect_eq "seek while the pid file is locked: exit 2" 2 "$rc"
expect_match "it says the consumer runs" "^pgqlua: seek: consumer c_seek is running \(pid $RUN_PID, $WORK/a.pid\): stop it first$" \
	"$(cat "$WORK/seek.err")"
seek "$WORK/c_seek_b.yaml" --tick "$P0"
expect_eq "seek while another instance holds the claim: exit 2" 2 "$rc"
expect_match "it names the claim" "is running \(another session holds its claim\): stop it first" "$(cat "$WORK/seek.err")"
kill -TERM "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true
expect_eq "the refused seeks did not move the consumer" "0" \
	"$(sql "select count(*) from pgq.get_consumer_info('q_seek', 'c_seek') where last_tick < $P4")"

# ---- a consumer group of 3 partitions
sql "drop table if exists r_seekg; create table r_seekg (ev_id bigint, data text)"
new_consumer q_seekg c_sg '
function process_event(ev, db)
  db:exec("insert into r_seekg values ($1, $2)", ev.id, ev.data)
end' "partitions: 3
pidfile: $WORK/g.pid"
G="$WORK/c_sg.yaml"
ginsert() { sql "select pgq.insert_event('q_seekg', 'x', '$1' || g) from generate_series(1, $2) g" > /dev/null; }
gdrain() { local i; for i in 0 1 2; do await_drained q_seekg "c_sg.p${i}of3" 60 run_once c_sg || return 1; done; }
gpositions() { sql "select string_agg(last_tick::text, ',' order by consumer_name) from pgq.get_consumer_info('q_seekg')"; }
gtimes() {
	sql "select count(*), coalesce(min(n), 0), coalesce(max(n), 0) from
	     (select count(*) n from r_seekg where data like '$1%' group by ev_id) s"
}
ginsert pre 6
GP0=$(wait_until 30 tick_target q_seekg) || fail "stretch pre was never ticked"
gdrain || fail "the group did not consume stretch pre"
ginsert a 12
gdrain || fail "the group did not consume stretch a"
seek "$G" --tick "$GP0"
expect_eq "group: seek back: exit 0" 0 "$rc"
expect_match "it names the group and the new tick" "^consumer group c_sg on queue q_seekg: 3 partitions
new tick: $GP0 " "$(cat "$WORK/seek.out")"
expect_eq "it prints each partition's old tick" 3 "$(grep -c '^partition [0-2] (c_sg.p[0-2]of3): old tick [0-9]* (.*), [0-9]* events to replay$' "$WORK/seek.out")"
expect_match "and the events the group replays" "events to replay: 12" "$(cat "$WORK/seek.out")"
expect_eq "every partition is at the new tick" "$GP0,$GP0,$GP0" "$(gpositions)"
gdrain || fail "the group did not consume the replay"
expect_eq "group: the events before the tick are not replayed" "6|1|1" "$(gtimes pre)"
expect_eq "group: the stretch is processed exactly once more" "12|2|2" "$(gtimes a)"

ginsert k 4
wait_until 30 tick_target q_seekg > /dev/null || fail "stretch k was never ticked"
gbefore=$(gpositions)
out=$("$PGQLUA" peek "$G") && rc=0 || rc=$?
expect_eq "group: peek: exit 0" 0 "$rc"
expect_eq "peek shows each partition" 3 "$(grep -c '^partition [0-2] (c_sg.p[0-2]of3):$' <<< "$out")"
expect_match "and the group's next events in all" "\(4 events in all\)$" "$out"
out=$("$PGQLUA" peek --json "$G")
expect_eq "peek --json names each event's partition" 4 "$(grep -c '^{"id":[0-9]*,"partition":[0-2],"time":"[^"]*","type":"x","extra1":null,"data":"k[1-4]"' <<< "$out")"
expect_eq "group: peek changes nothing" "$gbefore" "$(gpositions)"
gdrain || fail "the group did not consume stretch k"
expect_eq "group: the peeked events are processed once" "4|1|1" "$(gtimes k)"

ginsert c 5
wait_until 30 tick_target q_seekg > /dev/null || fail "stretch c was never ticked"
seek "$G" --latest
expect_eq "group: skipping without --yes: exit 64" 64 "$rc"
expect_match "it counts the group's events to skip" "events to skip: 5" "$(cat "$WORK/seek.out")"
seek "$G" --latest --yes
expect_eq "group: seek --latest --yes: exit 0" 0 "$rc"
ginsert d 3
gdrain || fail "the group did not consume stretch d"
expect_eq "group: the skipped events are never processed" "0|0|0" "$(gtimes c)"
expect_eq "group: the events after them are processed once" "3|1|1" "$(gtimes d)"

# a member elsewhere (its own pid file) holds the partitions: refused
sed "s#^pidfile: .*#pidfile: $WORK/g2.pid#" "$G" > "$WORK/c_sg_b.yaml"
"$PGQLUA" run "$WORK/c_sg_b.yaml" >> "$WORK/c_sg.log" 2>&1 &
MEMBER_PID=$!
CHILD_PIDS+=("$MEMBER_PID")
claims() { sql "select count(*) from pg_locks where locktype = 'advisory' and granted and objsubid = 2
	and classid::int8 = (hashtext('pgqlua/q_seekg')::int8 & 4294967295)"; }
gheld() { [ "$(claims)" == 3 ]; }
wait_until 30 gheld || fail "the member never took the 3 partitions"
seek "$G" --tick "$GP0"
expect_eq "group: seek while a member holds a partition: exit 2" 2 "$rc"
expect_match "it names the partition and its member" "^pgqlua: seek: consumer group c_sg on queue q_seekg is running \(partition 0 is held by member [^)]+:[0-9]+\): stop every member first$" \
	"$(cat "$WORK/seek.err")"
kill -TERM "$MEMBER_PID"
wait "$MEMBER_PID" 2>/dev/null || true
expect_eq "group: the refused seek moved no partition back" 0 \
	"$(sql "select count(*) from pgq.get_consumer_info('q_seekg') where last_tick <= $GP0")"

# ---- before the oldest kept tick: rotate the event tables until PgQ drops the old ticks
sql "select pgq.set_queue_config('q_seek', 'rotation_period', '0')" > /dev/null
oldest() { sql "select min(tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = 'q_seek'"; }
rotated() {
	[ "$(oldest)" -gt "$P0" ] && return 0
	insert r 1
	drain q_seek c_seek > /dev/null || true
	sql "select pgq.maint_rotate_tables_step1('q_seek')" > /dev/null
	sql "select pgq.maint_rotate_tables_step2()" > /dev/null
	return 1
}
wait_until 60 rotated || fail "PgQ never dropped tick $P0 (oldest: $(oldest))"
P5=$(position)
seek "$Y" --tick "$P0"
expect_eq "seek before the oldest kept tick: exit 69" 69 "$rc"
expect_match "it says why" "^pgqlua: seek: tick $P0 is before the oldest tick PgQ keeps for queue q_seek \(tick [0-9]+ of [^)]+\): its events may be gone; refused$" \
	"$(cat "$WORK/seek.err")"
seek "$Y" --time "2000-01-01 00:00:00+00"
expect_eq "seek --time before the oldest kept tick: exit 69" 69 "$rc"
expect_match "it says why" "2000-01-01 00:00:00\+00 is before the oldest tick PgQ keeps" "$(cat "$WORK/seek.err")"
expect_eq "the refused seeks did not move the consumer" "$P5" "$(position)"
finish
