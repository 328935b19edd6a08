#!/usr/bin/env bash
# One active instance per consumer: two `pgqlua run` of one consumer with
# different pid files (the same config deployed on two hosts) never apply
# an event twice.  The instance that holds the claim (a session advisory
# lock on its connection) consumes; the other waits as a hot standby and
# takes over when the active one dies.  The active one is SIGKILLed 5
# times while events flow, and a replacement is started each time.
source "$(dirname "$0")/lib.sh"
reset_queues q_sb
KILLS=5
SLICE=2000

sql "drop table if exists r_sb; create table r_sb (ev_id bigint, data text)"
new_consumer q_sb c_sb '
function process_event(ev, db)
  db:exec("insert into r_sb values ($1, $2)", ev.id, ev.data)
end' "log_level: info
pidfile: $WORK/a.pid"
sed "s#^pidfile: .*#pidfile: $WORK/b.pid#" "$WORK/c_sb.yaml" > "$WORK/c_sb_b.yaml"

role() { "$PGQLUA" status "$WORK/$1.yaml" 2>/dev/null | head -1; }
is_active() { [[ $(role "$1") == *"running (active)"* ]]; }
is_standby() { [[ $(role "$1") == *"running (hot standby"* ]]; }
declare -A PID
start() {
	"$PGQLUA" run "$WORK/$1.yaml" >> "$WORK/$1.log" 2>&1 &
	PID[$1]=$!
	CHILD_PIDS+=("$!")
}
insert_slice() {
	sql "do \$\$ begin for i in 1 .. $((SLICE / 500)) loop
	       perform pgq.insert_event('q_sb', 'x', 'e' || g) from generate_series(1, 500) g; commit;
	     end loop; end \$\$" > /dev/null
}

start c_sb
wait_until 30 is_active c_sb || fail "the first instance never became active"
start c_sb_b
wait_until 30 is_standby c_sb_b && ok "a second instance with another pid file waits as a hot standby" \
	|| fail "the second instance is not a standby: $(role c_sb_b)"
expect_match "check stays OK for the standby" "^PGQLUA OK" "$("$PGQLUA" check "$WORK/c_sb_b.yaml")"

active=c_sb standby=c_sb_b takeovers=0
for i in $(seq 1 "$KILLS"); do
	# counted before the slice goes in: the active instance may apply all
	# of it before a count taken afterwards
	before=$(sql "select count(*) from r_sb")
	insert_slice
	wait_until 60 bash -c "[ \$(psql -XAtqc 'select count(*) from r_sb') -gt $before ]" \
		|| fail "kill $i: the active instance applied nothing"
	kill -9 "${PID[$active]}"
	wait "${PID[$active]}" 2>/dev/null || true
	wait_until 30 is_active "$standby" && takeovers=$((takeovers + 1)) \
		|| fail "kill $i: the standby did not take over"
	start "$active"   # the replacement is the new standby
	wait_until 30 is_standby "$active" || fail "kill $i: the replacement is not a standby"
	tmp=$active active=$standby standby=$tmp
done
insert_slice
wait_drained q_sb c_sb 120 || fail "q_sb did not drain"
expect_eq "the standby took over after each of the $KILLS SIGKILLs" "$KILLS" "$takeovers"
expect_eq "every one of $(((KILLS + 1) * SLICE)) events was applied exactly once" \
	"$(((KILLS + 1) * SLICE))|$(((KILLS + 1) * SLICE))" "$(sql "select count(*), count(distinct ev_id) from r_sb")"
expect_match "the standby logged that it waits" "waiting as a hot standby" "$(cat "$WORK/c_sb_b.log")"
kill -TERM "${PID[c_sb]}" "${PID[c_sb_b]}" 2>/dev/null || true
wait "${PID[c_sb]}" "${PID[c_sb_b]}" 2>/dev/null || true
finish
