#!/usr/bin/env bash
# Consumer groups on the real PgQ and pgqd: 3 members of one config with 8
# partitions consume pgq.logutriga events of 300 rows (every change of a row
# has one key: table and primary key) while random members are SIGKILLed
# and replaced.  Every event is applied exactly once, the events of each
# key that were not retried are processed in ev_id order (a processing
# sequence is recorded), every partition has an owner again after a kill,
# and a member that joins gets its share (within one of even).  A failed
# event records its partition and `failed retry` puts it back there.
source "$(dirname "$0")/lib.sh"
reset_queues q_grp q_grpf
KILLS=${PGQLUA_GROUP_KILLS:-15}
ROWS=300
ROUNDS=100     # at least this many updates of every row: over 30,000 events in all
N=8

sql "drop table if exists grp_src, r_grp; drop sequence if exists grp_seq;
     create sequence grp_seq;
     create table r_grp (ev_id bigint, k text, retry int, seq bigint, member text);
     create table grp_src (id int primary key, v int)"
new_consumer q_grp c_grp '
function process_event(ev, db)
  local row = pgq.urldecode(ev.data)
  db:exec("insert into r_grp values ($1, $2, $3, nextval($4), current_setting($5))",
          ev.id, row.id, ev.retry, "grp_seq", "application_name")
end' "partitions: $N
log_level: info
pidfile: $WORK/m1.pid"
for m in 2 3 4; do sed "s#^pidfile: .*#pidfile: $WORK/m$m.pid#" "$WORK/c_grp.yaml" > "$WORK/m$m.yaml"; done
cp "$WORK/c_grp.yaml" "$WORK/m1.yaml"
sql "create trigger grp_src_q after insert or update on grp_src for each row execute procedure pgq.logutriga('q_grp')"
expect_eq "install registers the 8 partitions at one tick" "8|1" \
	"$(sql "select count(*), count(distinct last_tick) from pgq.get_consumer_info('q_grp') where consumer_name like 'c\_grp.p%of8'")"
expect_match "install names the partitions" "consumer group c_grp on queue q_grp: 8 partitions c_grp.p0of8 .. c_grp.p7of8" \
	"$(cat "$WORK/c_grp.install.out")"

# owners: members holding a partition's claim, by member name; spread: max - min
sql "create or replace function public.pgqlua_test_owners(q text, c text, n int) returns table (member text, held int) language sql as \$\$
	select a.application_name, count(l.objid)::int
	  from pg_stat_activity a left join pg_locks l on l.pid = a.pid and l.locktype = 'advisory' and l.granted
	   and l.objsubid = 2 and l.classid::int8 = (hashtext('pgqlua/' || q)::int8 & 4294967295)
	   and l.objid::int8 in (select hashtext(c || '.p' || i || 'of' || n)::int8 & 4294967295 from generate_series(0, n - 1) i)
	 where a.application_name like 'pgqlua/%' and a.datname = current_database()
	 group by a.application_name \$\$" > /dev/null
owned() { sql "select coalesce(sum(held), 0) from public.pgqlua_test_owners('q_grp', 'c_grp', $N)"; }
spread() { sql "select count(*) || ' members, ' || coalesce(sum(held), 0) || ' owned, spread ' || coalesce(max(held) - min(held), 0)
                from public.pgqlua_test_owners('q_grp', 'c_grp', $N)"; }
balanced() { [ "$(spread)" == "$1 members, $N owned, spread $((N % $1 == 0 ? 0 : 1))" ]; }

declare -A PID
start() {
	"$PGQLUA" run "$WORK/$1.yaml" >> "$WORK/$1.log" 2>&1 &
	PID[$1]=$!
	CHILD_PIDS+=("$!")
}
produce() {   # one round of changes: every row once, in 10 transactions
	sql "do \$\$ begin for j in 0 .. 9 loop
	       update grp_src set v = v + 1 where id % 10 = j; commit;
	     end loop; end \$\$" > /dev/null
}
sql "insert into grp_src select g, 0 from generate_series(1, $ROWS) g" > /dev/null

start m1
start m2
start m3
wait_until 60 balanced 3 && ok "3 members share the 8 partitions within one of even: $(spread)" \
	|| fail "3 members never balanced: $(spread)"

st=$("$PGQLUA" status "$WORK/m1.yaml" || true)
expect_match "status shows the group: partitions, owners and members" \
	"group: 8 partitions, 0 without an owner; 3 members: .*c_grp\.p7of8: owner [^ ]+:[0-9]+, lag [0-9.]+s" "$(tr '\n' ' ' <<< "$st")"
expect_match "check is OK while every partition has an owner" "^PGQLUA OK" "$("$PGQLUA" check "$WORK/m1.yaml")"

rounds=0 kills=0 failovers=0
live=(m1 m2 m3) spare=m4
while [ $rounds -lt $ROUNDS ]; do
	before=$(sql "select count(*) from r_grp")   # before the changes: the members may be quick
	for _ in 1 2 3 4 5 6; do produce; rounds=$((rounds + 1)); done
	if [ $kills -lt "$KILLS" ]; then
		wait_until 60 bash -c "[ \$(psql -XAtqc 'select count(*) from r_grp') -gt $before ]" \
			|| fail "kill $((kills + 1)): the members applied nothing"
		i=$((RANDOM % 3)) victim=${live[$i]}
		kill -9 "${PID[$victim]}"
		wait "${PID[$victim]}" 2>/dev/null || true
		kills=$((kills + 1))
		# the two left take the dead member's partitions
		wait_until 30 bash -c "[ \"\$(psql -XAtqc \"select coalesce(sum(held), 0) from public.pgqlua_test_owners('q_grp', 'c_grp', $N)\")\" == $N ]" \
			&& failovers=$((failovers + 1)) || fail "kill $kills: the partitions of $victim were not taken over: $(spread)"
		start "$spare"
		live[$i]=$spare spare=$victim
	fi
done
produce_events=$((ROWS * (rounds + 1)))
wait_until 60 balanced 3 && ok "after $kills kills and replacements, 3 members share the partitions: $(spread)" \
	|| fail "not balanced after the kills: $(spread)"
for p in $(seq 0 $((N - 1))); do
	wait_drained q_grp "c_grp.p${p}of$N" 120 || fail "partition $p did not drain"
done
expect_eq "$KILLS SIGKILLs of random members, each followed by a takeover of every partition" "$KILLS" "$failovers"
expect_eq "every one of the $produce_events events over $ROWS keys was applied exactly once" \
	"$produce_events|$produce_events|$ROWS" "$(sql "select count(*), count(distinct ev_id), count(distinct k) from r_grp")"
expect_eq "the events of every key that were not retried were processed in ev_id order" "0" \
	"$(sql "select count(*) from (select ev_id, lag(ev_id) over (partition by k order by seq) prev
	                               from r_grp where retry = 0) x where prev > ev_id")"

# ---- failover and balance
victim=${live[0]}
kill -9 "${PID[$victim]}"
wait "${PID[$victim]}" 2>/dev/null || true
t0=$SECONDS
wait_until 30 balanced 2 && ok "a member killed: the 2 left own every partition, evenly, after $((SECONDS - t0))s: $(spread)" \
	|| fail "2 members did not take over evenly: $(spread)"
start "$victim"
wait_until 60 balanced 3 && ok "a member joins: it gets its share from the others: $(spread)" \
	|| fail "the new member did not get its share: $(spread)"
expect_match "members log the partitions they take and give up" "gave up partition c_grp\.p[0-7]of8" "$(cat "$WORK"/m*.log)"
for m in "${live[@]}" "$victim" "$spare"; do kill -TERM "${PID[$m]}" 2>/dev/null || true; done
for m in "${!PID[@]}"; do wait "${PID[$m]}" 2>/dev/null || true; done
set +e
out=$("$PGQLUA" check "$WORK/m1.yaml")
rc=$?
set -e
expect_eq "check is CRITICAL when no partition has an owner: $out" "2" "$rc"
expect_match "check says which partitions have no owner" "8 of 8 partitions have no owner \(0 members\)" "$out"

# ---- a failed event records its partition; `failed retry` puts it back there
sql "drop table if exists r_grpf; create table r_grpf (ev_id bigint primary key, data text, retry int)"
new_consumer q_grpf c_grpf '
function process_event(ev, db)
  if ev.data == "poison" and ev.retry == 0 and #db:exec("select 1 from r_grpf where data = $1", "cured") == 0 then
    return pgq.EVENT_FAILED, "poisoned"
  end
  if ev.data == "ok3" and ev.retry == 0 then return pgq.EVENT_RETRY, 0 end
  db:exec("insert into r_grpf values ($1, $2, $3)", ev.id, ev.data, ev.retry)
end' "partitions: 3"
sql "select pgq.insert_event('q_grpf', 'x', case when g = 7 then 'poison' else 'ok' || g end) from generate_series(1, 20) g" > /dev/null
wait_until 30 ticked q_grpf || fail "q_grpf never ticked"
drain_group() {   # run --once until every partition is drained
	local p
	for p in 0 1 2; do await_drained q_grpf "c_grpf.p${p}of3" 60 run_once c_grpf || return 1; done
}
drain_group || fail "q_grpf did not drain"
part=$(sql "select pgq_consumer from pgqlua.failed_event where queue_name = 'q_grpf'")
expect_match "the failed event records the partition that took it" '^c_grpf\.p[0-2]of3$' "$part"
expect_eq "the other 19 events were applied once" "19" "$(sql "select count(*) from r_grpf")"
expect_eq "a retried event came back through its partition's retry queue" "1" "$(sql "select retry from r_grpf where data = 'ok3'")"
sql "insert into r_grpf values (0, 'cured')" > /dev/null
expect_match "failed retry puts the event back into its partition" "put back into the queue for consumer $part" \
	"$("$PGQLUA" failed retry "$WORK/c_grpf.yaml" all)"
drain_group || fail "q_grpf did not drain after the retry"
expect_eq "the retried event came back through its partition and was applied" "1|0" \
	"$(sql "select count(*) filter (where data = 'poison'), (select count(*) from pgqlua.failed_event where queue_name = 'q_grpf') from r_grpf")"
finish
