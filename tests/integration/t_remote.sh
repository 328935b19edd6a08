#!/usr/bin/env bash
# Remote consumers: the queue in pgqlua_test, the work in pgqlua_target.
# Both remote modes; RETRY / FAILED / ABORT_BATCH against the target; SIGKILL
# at the commit points (fault injection) and at random moments, and the
# target's backend terminated mid-batch: every event's effect lands in the
# target exactly once.
source "$(dirname "$0")/lib.sh"
reset_queues q_rb q_re q_rpath q_rcrash q_rev q_rgrp
T="host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_target"
tsql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d pgqlua_target -c "$1"; }
tsql "drop table if exists r_remote; create table r_remote (q text, ev_id bigint, data text, retry int)"
tsql "delete from pgqlua.remote_batch; delete from pgqlua.remote_event" > /dev/null 2>&1 || true
sql "drop table if exists r_remote"   # the queue database must stay untouched

SCRIPT='
function process_event(ev, db)
  local write = ev.id % 2 == 0 and db.exec or db.send   -- both, in the target
  write(db, "insert into r_remote values ($1, $2, $3, $4)", os.getenv("PGQLUA_TEST_Q") or "?", ev.id, ev.data, ev.retry)
  if ev.data == "retry" and ev.retry < 1 then return pgq.EVENT_RETRY, 0 end
  if ev.data == "fail" then return pgq.EVENT_FAILED, "refused" end
  if ev.data == "abort" and ev.retry == 0 and not aborted then aborted = true; return pgq.ABORT_BATCH end
  if ev.data == "slow" then db:exec("select pg_sleep(0.005)") end
end'

# ---- both modes, the result paths
for mode in batch event; do
	q=q_r${mode:0:1}
	new_consumer "$q" "c_$mode" "$SCRIPT" "target_db: \"$T\"
remote_mode: $mode
max_retries: 3
env_allow: [PGQLUA_TEST_Q]"
	expect_match "install creates the target's schema ($mode)" "target .*dbname=pgqlua_target.*: schema pgqlua ready" \
		"$(cat "$WORK/c_$mode.install.out")"
	sql "select pgq.insert_event('$q', 'x', d) from unnest(array['a','retry','fail','b']) d" > /dev/null
	export PGQLUA_TEST_Q=$q
	drain "$q" "c_$mode" 60 || fail "$q did not drain"
	expect_eq "$mode mode: OK and retried events land in the target once; RETRY and FAILED writes are rolled back" \
		"a:0,b:0,retry:1" "$(tsql "select string_agg(data || ':' || retry, ',' order by data) from r_remote where q = '$q'")"
	expect_eq "$mode mode: the FAILED event is in the queue database's failed table" "fail|refused" \
		"$(sql "select ev_data || '|' || reason from pgqlua.failed_event where queue_name = '$q'")"
	expect_eq "$mode mode: the target records the last completed batch" "t" \
		"$(tsql "select batch_id > 0 from pgqlua.remote_batch where queue_name = '$q'")"
done
expect_eq "nothing was written to the queue's database" "" "$(sql "select to_regclass('public.r_remote')")"

# ---- ABORT_BATCH rolls the target back; the batch comes again
new_consumer q_rpath c_rpath "$SCRIPT" "target_db: \"$T\"
env_allow: [PGQLUA_TEST_Q]"
export PGQLUA_TEST_Q=q_rpath
sql "begin; select pgq.insert_event('q_rpath', 'x', d) from unnest(array['one','abort','three']) d; commit" > /dev/null
wait_until 30 ticked q_rpath || fail "q_rpath never ticked"
"$PGQLUA" run "$WORK/c_rpath.yaml" >> "$WORK/c_rpath.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
wait_until 60 bash -c "[ \"\$(psql -XAtq -d pgqlua_target -c \"select count(*) from r_remote where q = 'q_rpath'\")\" -ge 3 ]" || true
wait_drained q_rpath c_rpath 60 || fail "q_rpath did not drain"
expect_eq "after ABORT_BATCH each event is in the target once" "abort,one,three" \
	"$(tsql "select string_agg(data, ',' order by data) from r_remote where q = 'q_rpath'")"
expect_match "status shows the target's last batch beside the source's tick" \
	"target: last completed batch [0-9]+ \(tick [0-9]+, [0-9.]+s ago\); source at tick [0-9]+" "$("$PGQLUA" status "$WORK/c_rpath.yaml")"
expect_match "check shows it too" "^PGQLUA OK - .*target at batch [0-9]+ \(tick [0-9]+\), source at tick [0-9]+" \
	"$("$PGQLUA" check "$WORK/c_rpath.yaml")"
kill -TERM "$pid"; wait "$pid" || true

# ---- crashes: SIGKILL at the commit points and at random moments
crash_round() {   # QUEUE CONSUMER MODE N_BATCHES
	local q=$1 c=$2 total=0 kills=0 point
	export PGQLUA_TEST_Q=$q
	for i in $(seq 1 "$4"); do
		sql "select pgq.insert_event('$q', 'x', 'slow') from generate_series(1, 50)" > /dev/null
		total=$((total + 50))
		wait_until 30 ticked "$q" || fail "$q never ticked"
		if [ "${PGQLUA_FAULT_BUILD:-0}" == 1 ] && [ $((i % 2)) == 0 ]; then
			case $((i % 6)) in
				0) point=after_target_commit ;;
				2) point=before_target_commit ;;
				*) point=after_source_commit ;;
			esac
			set +e
			PGQLUA_FAULT=$point "$PGQLUA" run --once "$WORK/$c.yaml" >> "$WORK/$c.log" 2>&1
			[ $? == 137 ] && kills=$((kills + 1))
			set -e
		else
			"$PGQLUA" run "$WORK/$c.yaml" >> "$WORK/$c.log" 2>&1 &
			local rp=$!
			# kill it at a moment when part of the batch may be done
			local target=$(( total - 50 + RANDOM % 50 ))
			wait_until 30 bash -c "[ \"\$(psql -XAtq -d pgqlua_target -c \"select count(*) from r_remote where q = '$q'\")\" -ge $target ]" || true
			kill -9 "$rp" 2>/dev/null && kills=$((kills + 1))
			wait "$rp" 2>/dev/null || true
		fi
	done
	drain "$q" "$c" 120 || fail "$q did not drain after the crashes"
	echo "# $3 mode: $total events, $kills kills"
	[ "$kills" -ge 10 ] && ok "$3 mode: at least 10 kills happened ($kills)" || fail "$3 mode: only $kills kills"
	expect_eq "$3 mode: after $kills kills every one of $total events is in the target exactly once" "$total|$total" \
		"$(tsql "select count(*), count(distinct ev_id) from r_remote where q = '$q'")"
}
new_consumer q_rcrash c_rcrash "$SCRIPT" "target_db: \"$T\"
log_level: info
env_allow: [PGQLUA_TEST_Q]"
crash_round q_rcrash c_rcrash batch 24
if [ "${PGQLUA_FAULT_BUILD:-0}" == 1 ]; then
	expect_match "the fault points were hit" "fault injection: killed at after_target_commit" "$(cat "$WORK/c_rcrash.log")"
	expect_match "a batch the target already had was finished without running the script" \
		"the target already committed this batch" "$(cat "$WORK/c_rcrash.log")"
fi
new_consumer q_rev c_rev "$SCRIPT" "target_db: \"$T\"
remote_mode: event
log_level: info
env_allow: [PGQLUA_TEST_Q]"
crash_round q_rev c_rev event 16

# ---- the target's backend terminated mid-batch
export PGQLUA_TEST_Q=q_rev
before=$(tsql "select count(*) from r_remote where q = 'q_rev'")
sql "select pgq.insert_event('q_rev', 'x', 'slow') from generate_series(1, 400)" > /dev/null
"$PGQLUA" run "$WORK/c_rev.yaml" >> "$WORK/c_rev.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
for k in 1 2 3; do
	wait_until 30 bash -c "[ \"\$(psql -XAtq -d pgqlua_target -c \"select count(*) from r_remote where q = 'q_rev'\")\" -gt $((before + k * 60)) ]" || true
	tsql "select pg_terminate_backend(pid) from pg_stat_activity where datname = 'pgqlua_target' and application_name = 'pgqlua'" > /dev/null
done
wait_until 120 bash -c "[ \"\$(psql -XAtq -d pgqlua_target -c \"select count(*) from r_remote where q = 'q_rev'\")\" -ge $((before + 400)) ]" \
	|| fail "not all events arrived after the target's backend was terminated"
kill -TERM "$pid"; wait "$pid" || true
expect_eq "after the target's backend was terminated 3 times, each event is in the target once" "$((before + 400))|$((before + 400))" \
	"$(tsql "select count(*), count(distinct ev_id) from r_remote where q = 'q_rev'")"
expect_match "the consumer reconnected to the target" "reconnected to the target" "$(cat "$WORK/c_rev.log")"

# ---- a remote group: batches tracked in the target per partition
tsql "drop table if exists r_rgrp; drop sequence if exists rgrp_seq; create sequence rgrp_seq;
      create table r_rgrp (ev_id bigint, k text, retry int, seq bigint)"
sql "drop table if exists rgrp_src; create table rgrp_src (id int primary key, v int)"
new_consumer q_rgrp c_rgrp '
function process_event(ev, db)
  db:exec("insert into r_rgrp values ($1, $2, $3, nextval($4))", ev.id, pgq.urldecode(ev.data).id, ev.retry, "rgrp_seq")
end' "target_db: \"$T\"
partitions: 4
workers: 2
log_level: info"
sql "create trigger rgrp_src_q after insert or update on rgrp_src for each row execute procedure pgq.logutriga('q_rgrp')"
sql "insert into rgrp_src select g, 0 from generate_series(1, 100) g" > /dev/null
"$PGQLUA" run "$WORK/c_rgrp.yaml" >> "$WORK/c_rgrp.log" 2>&1 &
parent=$!
CHILD_PIDS+=("$parent")
kills=0
for round in $(seq 1 16); do
	before=$(tsql "select count(*) from r_rgrp")
	sql "do \$\$ begin for j in 0 .. 4 loop update rgrp_src set v = v + 1 where id % 5 = j; commit; end loop; end \$\$" > /dev/null
	if [ $((round % 2)) == 0 ]; then
		wait_until 30 bash -c "[ \"\$(psql -XAtq -d pgqlua_target -c 'select count(*) from r_rgrp')\" -gt $before ]" || true
		victim=$(pgrep -P "$parent" | shuf -n 1 || true)
		[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null && kills=$((kills + 1))
	fi
done
for p in 0 1 2 3; do wait_drained q_rgrp "c_rgrp.p${p}of4" 120 || fail "partition $p of the remote group did not drain"; done
expect_match "status shows each partition's last batch in the target" \
	"target: the partitions' last completed batches at ticks [1-9][0-9]*, [1-9][0-9]*, [1-9][0-9]*, [1-9][0-9]*; source at tick [0-9]+" \
	"$("$PGQLUA" status "$WORK/c_rgrp.yaml" || true)"
rg_ok() { out=$("$PGQLUA" check "$WORK/c_rgrp.yaml") && [[ "$out" =~ ^PGQLUA\ OK\ -\ .*target\ at\ batch\ [0-9]+\ \(tick\ [0-9]+\) ]]; }
wait_until 60 rg_ok && ok "check of the remote group is OK (every partition owned again) and shows the target" \
	|| fail "check of the remote group: $out"
kill -TERM "$parent"; wait "$parent" || true
total=$(sql "select 100 + sum(v) from rgrp_src")
[ "$kills" -ge 6 ] && ok "remote group: $kills workers SIGKILLed while consuming" || fail "remote group: only $kills kills"
expect_eq "remote group: every one of the $total events is in the target exactly once" "$total|$total" \
	"$(tsql "select count(*), count(distinct ev_id) from r_rgrp")"
expect_eq "remote group: the events of every key that were not retried were applied in ev_id order" "0" \
	"$(tsql "select count(*) from (select ev_id, lag(ev_id) over (partition by k order by seq) prev
	                                from r_rgrp where retry = 0) x where prev > ev_id")"
expect_eq "remote group: the target tracks each partition's last batch" "4" \
	"$(tsql "select count(*) from pgqlua.remote_batch where queue_name = 'q_rgrp' and consumer_name like 'c\_rgrp.p_of4' and batch_id > 0")"
finish
