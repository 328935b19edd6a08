#!/usr/bin/env bash
# The Nagios plugin (`pgqlua check`) and the munin plugin: output formats,
# thresholds and exit codes, an unreachable database, a consumer that is
# registered but not running, failed events.
source "$(dirname "$0")/lib.sh"
reset_queues q_mon

new_consumer q_mon c_mon '
function process_event(ev) if ev.data == "bad" then return pgq.EVENT_FAILED, "bad" end end' "max_retries: 0"
Y="$WORK/c_mon.yaml"
sql "select pgq.insert_event('q_mon', 'x', 'ok')" > /dev/null
drain q_mon c_mon 30 || fail "q_mon did not drain"

check() { set +e; out=$("$PGQLUA" check "$@"); rc=$?; set -e; }
check "$Y"
expect_eq "a healthy consumer: check exits 0" "0" "$rc"
expect_match "one line: status, text, perfdata with thresholds" \
	'^PGQLUA OK - consumer c_mon on queue q_mon: lag [0-9.]+s, last seen [0-9.]+s ago, [0-9]+ pending, 0 failed\|lag=[0-9.]+s;300;900 last_seen=[0-9.]+s;300;900 pending=[0-9]+ failed=0;1;0$' "$out"

# registered but not running: last_seen grows past the thresholds
lagging() { check "$Y" -w 0.5 -c 1; [ "$rc" == 2 ]; }
wait_until 30 lagging && ok "a registered consumer that stopped consuming turns CRITICAL" || fail "check stayed at $rc: $out"
expect_match "and says why" "^PGQLUA CRITICAL - .*not consuming: last batch [0-9]+s ago" "$out"
check "$Y" -w 0.5 -c 1000
expect_eq "between -w and -c it is WARNING" "1" "$rc"
expect_match "WARNING line" "^PGQLUA WARNING - " "$out"

# failed events
sql "select pgq.insert_event('q_mon', 'x', 'bad')" > /dev/null
drain q_mon c_mon 30 || fail "q_mon did not drain"
check "$Y"
expect_eq "one failed event is a WARNING by default (--failed-warn 1)" "1" "$rc"
expect_match "naming the count" "^PGQLUA WARNING - .*1 failed events.*failed=1;1;0$" "$out"
check "$Y" --failed-warn 1 --failed-crit 1
expect_eq "--failed-crit 1 makes it CRITICAL" "2" "$rc"
check "$Y" --failed-warn 0
expect_eq "--failed-warn 0 turns the failed check off" "0" "$rc"

# bad arguments and an unreachable database are UNKNOWN
check "$Y" -w
expect_eq "a missing option value is UNKNOWN" "3" "$rc"
check "$Y" --bogus 1
expect_match "an unknown option is UNKNOWN" "^PGQLUA UNKNOWN - unknown option \"--bogus\"" "$out"
sed 's/^db: .*/db: "host=127.0.0.1 port=1 user=u password=S3cret dbname=x"/' "$Y" > "$WORK/down.yaml"
cp "$WORK/c_mon.lua" "$WORK/down.lua" 2>/dev/null || true
sed -i 's/^script: .*/script: c_mon.lua/' "$WORK/down.yaml"
check "$WORK/down.yaml" -t 5
expect_eq "an unreachable database is UNKNOWN (exit 3)" "3" "$rc"
expect_match "with the reason and no password" "^PGQLUA UNKNOWN - cannot connect to host=127.0.0.1 port=1 dbname=x user=u: " "$out"
[[ "$out" != *S3cret* ]] && ok "no password in check output" || fail "password in check output"
sed 's/^consumer_name: .*/consumer_name: nobody/' "$Y" > "$WORK/nobody.yaml"
check "$WORK/nobody.yaml"
expect_eq "an unregistered consumer is CRITICAL" "2" "$rc"
expect_match "and says so" "^PGQLUA CRITICAL - consumer nobody is not registered on queue q_mon$" "$out"

# munin
cfg=$("$PGQLUA" munin "$Y" config)
expect_match "munin config defines the graph and four fields" \
	"graph_title pgqlua consumer c_mon on queue q_mon.*graph_category pgq.*lag.label .*last_seen.label .*pending.label .*failed.label " "$(echo $cfg)"
vals=$("$PGQLUA" munin "$Y")
expect_match "munin values are name.value N lines" \
	'^lag.value [0-9.]+ last_seen.value [0-9.]+ pending.value [0-9]+ failed.value 1$' "$(echo $vals)"
expect_eq "munin autoconf says yes when the consumer is there" "yes" "$("$PGQLUA" munin "$Y" autoconf)"
expect_match "munin autoconf says no and why otherwise" "^no \(cannot connect" "$("$PGQLUA" munin "$WORK/down.yaml" autoconf)"
expect_eq "munin takes CONFIG from env.PGQLUA_CONFIG" "yes" "$(PGQLUA_CONFIG="$Y" "$PGQLUA" munin autoconf)"
finish
