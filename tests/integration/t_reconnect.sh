#!/usr/bin/env bash
# Connection loss: the consumer's backend is terminated while it works, and
# PostgreSQL itself restarts.  The consumer reconnects with back-off, the
# open batch is delivered again, and every event's effect is there once.
source "$(dirname "$0")/lib.sh"
reset_queues q_rc

sql "drop table if exists r_rc; create table r_rc (ev_id bigint, data text)"
new_consumer q_rc c_rc '
function process_event(ev, db)
  db:exec("insert into r_rc values ($1, $2)", ev.id, ev.data)
end' "fetch_size: 50"

"$PGQLUA" run "$WORK/c_rc.yaml" >> "$WORK/c_rc.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")

total=0
for round in 1 2 3 4; do
	sql "select pgq.insert_event('q_rc', 'x', 'r$round-' || i) from generate_series(1, 500) i" > /dev/null
	total=$((total + 500))
	# terminate the consumer's backend while it has work
	wait_until 30 bash -c "[ \"\$(psql -XAtqc \"select count(*) from r_rc\")\" -gt $((total - 500)) ]" || true
	sql "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgqlua'" > /dev/null
done
wait_sql "events inserted while backends were terminated are all processed" "select count(*) from r_rc" "$total" 90

"$ROOT/tests/tools/pgtmp.sh" restart-pg "$PGTMP" > /dev/null
sql "select pgq.insert_event('q_rc', 'x', 'after-restart-' || i) from generate_series(1, 500) i" > /dev/null
total=$((total + 500))
wait_sql "after a PostgreSQL restart the consumer reconnects and catches up" "select count(*) from r_rc" "$total" 90
expect_eq "no event was applied twice" "$total" "$(sql "select count(distinct ev_id) from r_rc")"
expect_match "the log says the connection was lost" "connection to host=[^ ]+ port=[0-9]+ dbname=pgqlua_test user=postgres lost" "$(cat "$WORK/c_rc.log")"
expect_match "the log says it reconnected" "reconnected to host=" "$(cat "$WORK/c_rc.log")"
if grep -q "password" "$WORK/c_rc.log"; then fail "the log mentions a password"; else ok "the log has no password"; fi

kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
expect_eq "SIGTERM after reconnects still exits 0" "0" "$rc"
finish
