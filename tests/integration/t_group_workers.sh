#!/usr/bin/env bash
# workers: K runs K members of a group under the one supervising parent of
# `pgqlua run`: they share the partitions evenly, `status` lists every
# worker, a partition whose member is stuck turns `check` WARNING (naming
# it) and `munin` graphs each partition, a SIGKILLed worker is replaced by
# the parent and the partitions are shared again, a stop ends them all, and
# `run --once` with several workers drains the queue and exits 0.
source "$(dirname "$0")/lib.sh"
reset_queues q_grpw
N=6

sql "drop table if exists r_grpw; create table r_grpw (ev_id bigint, member text)"
new_consumer q_grpw c_grpw '
function process_event(ev, db)
  if ev.data == "stall" then db:exec("select pg_advisory_xact_lock(4242)") end
  db:exec("insert into r_grpw values ($1, current_setting($2))", ev.id, "application_name")
end' "partitions: $N
workers: 3
log_level: info"
sql "create or replace function public.pgqlua_test_owners(q text, c text, n int) returns table (member text, held int) language sql as \$\$
	select a.application_name, count(l.objid)::int
	  from pg_stat_activity a left join pg_locks l on l.pid = a.pid and l.locktype = 'advisory' and l.granted
	   and l.objsubid = 2 and l.classid::int8 = (hashtext('pgqlua/' || q)::int8 & 4294967295)
	   and l.objid::int8 in (select hashtext(c || '.p' || i || 'of' || n)::int8 & 4294967295 from generate_series(0, n - 1) i)
	 where a.application_name like 'pgqlua/%' and a.datname = current_database()
	 group by a.application_name \$\$" > /dev/null
spread() { sql "select count(*) || ' members, ' || coalesce(sum(held), 0) || ' owned, spread ' || coalesce(max(held) - min(held), 0)
                from public.pgqlua_test_owners('q_grpw', 'c_grpw', $N)"; }
balanced() { [ "$(spread)" == "$1 members, $N owned, spread 0" ]; }
drained_all() {
	local p
	for p in $(seq 0 $((N - 1))); do wait_drained q_grpw "c_grpw.p${p}of$N" 60 || return 1; done
}

"$PGQLUA" run "$WORK/c_grpw.yaml" >> "$WORK/c_grpw.log" 2>&1 &
parent=$!
CHILD_PIDS+=("$parent")
wait_until 60 balanced 3 && ok "one pgqlua run with workers: 3 is 3 members sharing the 6 partitions: $(spread)" \
	|| fail "the 3 workers did not share the partitions: $(spread)"
expect_eq "the parent has 3 worker processes" "3" "$(pgrep -P "$parent" | wc -l)"
sql "select pgq.insert_event('q_grpw', 'x', 'e' || g) from generate_series(1, 3000) g" > /dev/null
drained_all || fail "q_grpw did not drain"
expect_eq "every event applied once" "3000|3000" "$(sql "select count(*), count(distinct ev_id) from r_grpw")"
expect_eq "all 3 workers consumed" "3" "$(sql "select count(distinct member) from r_grpw")"

# ---- status, check and munin of the group
st=$("$PGQLUA" status "$WORK/c_grpw.yaml" || true)
expect_match "status lists the 3 workers with their pids" \
	"workers: 3 of 3 running: pid [0-9]+ \(0 restarts, active\), pid [0-9]+ \(0 restarts, active\), pid [0-9]+ \(0 restarts, active\)" "$st"
for w in $(pgrep -P "$parent"); do
	[[ "$st" == *"pid $w "* ]] || fail "status does not list worker $w: $st"
done
expect_match "status --json lists the workers" '"workers":\[\{"worker":0,"pid":[0-9]+,"restarts":0,"role":"active"\},\{"worker":1,.*\{"worker":2,' \
	"$("$PGQLUA" status --json "$WORK/c_grpw.yaml" || true)"
expect_match "status shows each partition's owner, lag and pending events" \
	"c_grpw\.p5of6: owner [^ ]+:[0-9]+, lag [0-9.]+s, last seen [0-9.]+s ago, [0-9]+ pending events" "$st"
munin=$("$PGQLUA" munin "$WORK/c_grpw.yaml")
expect_match "munin gives each partition's lag and pending events" "p0_lag\.value [0-9.]+.*p5_pending\.value [0-9]+" \
	"$(tr '\n' ' ' <<< "$munin")"
expect_match "munin config labels each partition's fields" "p5_lag\.label c_grpw\.p5of6 lag" \
	"$("$PGQLUA" munin "$WORK/c_grpw.yaml" config)"
# a member stuck in an event (it waits for a lock the test holds): its
# partitions fall behind, the others go on
psql -X -q -c "select pg_advisory_lock(4242)" -c "select pg_sleep(600)" > /dev/null 2>&1 &
holder=$!
CHILD_PIDS+=("$holder")
wait_sql "the test holds the lock the stalled event waits for" \
	"select count(*) from pg_locks where locktype = 'advisory' and objid = 4242 and granted" "1"
sid=$(sql "select pgq.insert_event('q_grpw', 'x', 'stall')")
stuck=$(sql "select mod(hashtext('$sid')::int8 + 2147483648, $N)")
check_rc() { set +e; out=$("$PGQLUA" check "$WORK/c_grpw.yaml" -w "$(scaled 3)" -c 3600); rc=$?; set -e; }
warned() { check_rc; [ "$rc" == 1 ]; }
wait_until 60 warned && ok "a partition behind past -w turns check WARNING: $out" || fail "check did not warn: $rc $out"
expect_match "check names the partition that is behind" "partition c_grpw\.p${stuck}of$N (lags|took no batch for) [0-9]+s" "$out"
sql "select pg_terminate_backend($(sql "select pid from pg_locks where locktype = 'advisory' and objid = 4242 and granted and not exists (select 1 from pg_stat_activity a where a.pid = pg_locks.pid and a.application_name like 'pgqlua/%')"))" > /dev/null
wait "$holder" 2>/dev/null || true
drained_all || fail "q_grpw did not drain once the lock was released"
healthy() { check_rc; [ "$rc" == 0 ]; }
wait_until 60 healthy && ok "check is OK again once the partition caught up" || fail "check stayed at $rc: $out"
sql "delete from r_grpw where ev_id = $sid" > /dev/null

victim=$(pgrep -P "$parent" | head -1)
kill -9 "$victim"
wait_until 30 bash -c "! pgrep -P $parent | grep -qx $victim" || fail "the killed worker is still there"
wait_until 60 balanced 3 && ok "a SIGKILLed worker is replaced and the partitions are shared again: $(spread)" \
	|| fail "not shared again after a worker was killed: $(spread)"
expect_eq "the parent runs 3 workers again" "3" "$(pgrep -P "$parent" | wc -l)"
sql "select pgq.insert_event('q_grpw', 'x', 'f' || g) from generate_series(1, 3000) g" > /dev/null
drained_all || fail "q_grpw did not drain after the kill"
expect_eq "every event applied once across the kill" "6000|6000" "$(sql "select count(*), count(distinct ev_id) from r_grpw")"

kill -TERM "$parent"
set +e
wait "$parent"
rc=$?
set -e
expect_eq "a stop ends every worker and the parent exits 0" "0|0" "$rc|$(spread | sed 's/ members.*//')"

sed -i 's/^workers: 3/workers: 2/' "$WORK/c_grpw.yaml"
sql "select pgq.insert_event('q_grpw', 'x', 'g' || g) from generate_series(1, 2000) g" > /dev/null
wait_until 30 ticked q_grpw || fail "q_grpw never ticked"
set +e
"$PGQLUA" run --once "$WORK/c_grpw.yaml" >> "$WORK/c_grpw.log" 2>&1
rc=$?
set -e
expect_eq "run --once with 2 workers exits 0" "0" "$rc"
for p in $(seq 0 $((N - 1))); do   # later ticks are taken by more runs
	await_drained q_grpw "c_grpw.p${p}of$N" 60 run_once c_grpw || fail "q_grpw was not drained by run --once"
done
expect_eq "every event applied once" "8000|8000" "$(sql "select count(*), count(distinct ev_id) from r_grpw")"
finish
