#!/usr/bin/env bash
# The daemon: start/status/stop, a second start refused, a stale pid file
# replaced, stop in the middle of a batch (it commits) and kill (it rolls
# back and comes again), logmore/logless, the log file reopened by reload,
# journal priority prefixes and sd_notify messages.
source "$(dirname "$0")/lib.sh"
reset_queues q_dmn q_slow

sql "drop table if exists r_slow; create table r_slow (ev_id bigint, run text)"
new_consumer q_dmn c_dmn 'function process_event() pgq.log.debug("debug line") pgq.log.warn("warn line") end' \
	"logfile: c_dmn.log
log_level: info
shutdown_timeout: 30"
Y="$WORK/c_dmn.yaml"
running() { "$PGQLUA" status "$Y" > /dev/null 2>&1; }
stopped() { ! running; }

out=$("$PGQLUA" start "$Y")
expect_match "start daemonizes and reports the pid" "^pgqlua: consumer c_dmn started \(pid [0-9]+\)$" "$out"
pid=$(cat "$Y.pid")
CHILD_PIDS+=("$pid")
set +e
status_out=$("$PGQLUA" status "$Y"); rc=$?
set -e
expect_eq "status of a running consumer exits 0" "0" "$rc"
expect_match "status shows pid, uptime, script and PgQ figures" \
	"running \(active\), pid $pid, up [0-9]+s.*script: $WORK/c_dmn.lua \(loaded [0-9]+s ago\); last reload: none.*pgq: lag [0-9.]+s, last seen [0-9.]+s ago, [0-9]+ pending events, 0 failed events" \
	"$(echo $status_out)"
expect_match "status --json is one JSON object" \
	"^\{\"consumer\":\"c_dmn\",\"queue\":\"q_dmn\",\"running\":true,\"pid\":$pid,\"uptime\":[0-9]+,.*\"registered\":true,\"lag\":[0-9.]+,\"last_seen\":[0-9.]+,\"pending\":[0-9]+,\"failed\":0\}$" \
	"$("$PGQLUA" status --json "$Y")"
set +e
again=$("$PGQLUA" start "$Y" 2>&1); rc=$?
set -e
expect_eq "a second start is refused with exit 2" "2" "$rc"
expect_match "and says who runs" "already running \(pid $pid, pid file $Y.pid\)" "$again"

# logmore / logless
sql "select pgq.insert_event('q_dmn', 'x', 'a')" > /dev/null
wait_until 30 grep -q "warn line" "$WORK/c_dmn.log" || fail "no warn line"
if grep -q "debug line" "$WORK/c_dmn.log"; then fail "debug logged at info"; else ok "at info, debug lines are not logged"; fi
"$PGQLUA" logmore "$Y" > /dev/null
wait_until 30 grep -q "log level is now DEBUG" "$WORK/c_dmn.log" && ok "logmore: the log says the new level" || fail "logmore not applied"
sql "select pgq.insert_event('q_dmn', 'x', 'b')" > /dev/null
wait_until 30 grep -q "debug line" "$WORK/c_dmn.log" && ok "after logmore, debug lines are logged" || fail "no debug line after logmore"
"$PGQLUA" logless "$Y" > /dev/null
"$PGQLUA" logless "$Y" > /dev/null
wait_until 30 grep -q "log level is now WARN" "$WORK/c_dmn.log" && ok "logless twice: warn" || fail "logless not applied"
n_info=$(grep -c " INFO " "$WORK/c_dmn.log")
sql "select pgq.insert_event('q_dmn', 'x', 'c')" > /dev/null
wait_until 30 bash -c "[ \$(grep -c 'warn line' '$WORK/c_dmn.log') -ge 3 ]" || fail "third event not processed"
expect_eq "at warn, no new info lines" "$n_info" "$(grep -c " INFO " "$WORK/c_dmn.log")"

# reload reopens the log file (logrotate)
mv "$WORK/c_dmn.log" "$WORK/c_dmn.log.1"
"$PGQLUA" reload "$Y" > /dev/null
wait_until 30 test -s "$WORK/c_dmn.log" && ok "reload reopens a renamed log file" || fail "no new log file after reload"
wait_until 30 grep -q "reloaded: script" "$WORK/c_dmn.log" || fail "no reload line in the new log"
expect_match "status shows the last reload" "last reload: ok" "$("$PGQLUA" status "$Y")"

out=$("$PGQLUA" stop "$Y")
expect_match "stop waits and reports" "stopping consumer c_dmn \(pid $pid\).*waiting up to 30s.*consumer c_dmn stopped" "$(echo $out)"
set +e
"$PGQLUA" status "$Y" > /dev/null; rc=$?
set -e
expect_eq "status of a stopped consumer exits 3" "3" "$rc"
[ ! -e "$Y.pid" ] && ok "stop removes the pid file" || fail "pid file left behind"

# a stale pid file (a dead process's) is replaced
echo 999999 > "$Y.pid"
out=$("$PGQLUA" start "$Y")
expect_match "start replaces a stale pid file" "started \(pid [0-9]+\)" "$out"
pid=$(cat "$Y.pid")
CHILD_PIDS+=("$pid")
out=$("$PGQLUA" restart "$Y")
expect_match "restart stops and starts again with a new pid" "stopped.*started \(pid [0-9]+\)" "$(echo $out)"
newpid=$(cat "$Y.pid")
CHILD_PIDS+=("$newpid")
[ "$newpid" != "$pid" ] && running && ok "the restarted consumer runs as pid $newpid" || fail "restart did not give a new running process"
"$PGQLUA" stop "$Y" > /dev/null
wait_until 10 stopped || fail "not stopped"

# stop in the middle of a long batch: the batch commits; kill: it rolls back
new_consumer q_slow c_slow '
local run = "first"
function init() run = os.getenv("PGQLUA_TEST_RUN") or "?" end
function process_event(ev, db)
  db:exec("insert into r_slow values ($1, $2)", ev.id, run)
  db:exec("select pg_sleep(0.02)")
end' "logfile: c_slow.log
env_allow: [PGQLUA_TEST_RUN]"
S="$WORK/c_slow.yaml"
sql "select pgq.insert_event('q_slow', 'x', i::text) from generate_series(1, 100) i" > /dev/null
wait_until 30 ticked q_slow || fail "q_slow never ticked"
PGQLUA_TEST_RUN=stopped "$PGQLUA" start "$S" > /dev/null
CHILD_PIDS+=("$(cat "$S.pid")")
in_batch() { psql -XAtqc "select count(*) > 0 from pg_stat_activity where application_name = 'pgqlua' and query like '%pg_sleep%'" | grep -q t; }
wait_until 30 in_batch || fail "the slow batch never started"
set +e
"$PGQLUA" stop "$S" > /dev/null; rc=$?
set -e
expect_eq "stop in the middle of a batch exits 0" "0" "$rc"
expect_eq "the batch being processed was committed whole" "100|100" \
	"$(sql "select count(*), count(distinct ev_id) from r_slow where run = 'stopped'")"
expect_eq "a stopped consumer leaves no batch taken (the next is not fetched)" "t" \
	"$(sql "select current_batch is null from pgq.get_consumer_info('q_slow', 'c_slow')")"

sql "select pgq.insert_event('q_slow', 'x', i::text) from generate_series(1, 100) i" > /dev/null
wait_until 30 ticked q_slow || fail "q_slow never ticked again"
PGQLUA_TEST_RUN=killed "$PGQLUA" start "$S" > /dev/null
CHILD_PIDS+=("$(cat "$S.pid")")
wait_until 30 in_batch || fail "the second slow batch never started"
out=$("$PGQLUA" kill "$S")
expect_match "kill reports the rollback" "killed; its open batch was rolled back" "$out"
expect_eq "nothing of the killed batch is committed" "0" "$(sql "select count(*) from r_slow where run = 'killed'")"
PGQLUA_TEST_RUN=after "$PGQLUA" start "$S" > /dev/null
CHILD_PIDS+=("$(cat "$S.pid")")
wait_sql "after the next start the killed batch is processed in full" \
	"select count(*) from r_slow where run = 'after'" "100" 60
"$PGQLUA" stop "$S" > /dev/null
expect_eq "every event processed exactly once" "200|200" "$(sql "select count(*), count(distinct ev_id) from r_slow")"

# journal priority prefixes when stderr is the journal
touch "$WORK/journal.err"
JOURNAL_STREAM=$(stat -c '%d:%i' "$WORK/journal.err") "$PGQLUA" run --once "$WORK/c_slow.yaml" 2>> "$WORK/journal.err" || true
sed -i 's/^logfile: .*//' "$WORK/c_slow.yaml"
JOURNAL_STREAM=$(stat -c '%d:%i' "$WORK/journal.err") "$PGQLUA" run --once "$WORK/c_slow.yaml" 2>> "$WORK/journal.err" || true
expect_match "with JOURNAL_STREAM naming stderr, lines carry <N> priorities" "^<7>[0-9-]+ [0-9:.]+ UTC \[[0-9]+\] DEBUG .*<6>[0-9-]+ [0-9:.]+ UTC \[[0-9]+\] INFO " \
	"$(tr '\n' ' ' < "$WORK/journal.err")"

# sd_notify: READY, RELOADING/READY, STATUS, STOPPING on a socket we create
if [ -n "${NOTIFY_LISTEN:-}" ]; then
	"$NOTIFY_LISTEN" "$WORK/notify.sock" 60 > "$WORK/notify.out" &
	lpid=$!
	CHILD_PIDS+=("$lpid")
	wait_until 10 test -S "$WORK/notify.sock" || fail "no notify socket"
	sed -i 's/^log_level: .*/log_level: info\nstats_period: 0.2/' "$WORK/c_slow.yaml"
	NOTIFY_SOCKET="$WORK/notify.sock" WATCHDOG_USEC=200000 "$PGQLUA" run "$WORK/c_slow.yaml" 2> "$WORK/notify.err" &
	rpid=$!
	CHILD_PIDS+=("$rpid")
	wait_until 30 grep -q "^READY=1" "$WORK/notify.out" && ok "READY=1 after connecting" || fail "no READY=1"
	kill -HUP "$rpid"
	wait_until 30 grep -qE '^RELOADING=1\|MONOTONIC_USEC=[0-9]+$' "$WORK/notify.out" && ok "RELOADING=1 with MONOTONIC_USEC on reload" || fail "no RELOADING=1"
	wait_until 30 grep -q "^READY=1|STATUS=reloaded" "$WORK/notify.out" && ok "READY=1 again after the reload" || fail "no READY=1 after reload"
	wait_until 30 grep -q "^STATUS=events=" "$WORK/notify.out" && ok "STATUS= with a summary" || fail "no STATUS="
	wait_until 30 grep -q "^WATCHDOG=1" "$WORK/notify.out" && ok "WATCHDOG=1 when WATCHDOG_USEC is set" || fail "no WATCHDOG=1"
	kill -TERM "$rpid"; wait "$rpid" || true
	wait_until 30 grep -q "^STOPPING=1" "$WORK/notify.out" && ok "STOPPING=1 on stop" || fail "no STOPPING=1"
	kill "$lpid" 2>/dev/null || true
else
	fail "NOTIFY_LISTEN (the notify_listen helper) is not set"
fi
finish
