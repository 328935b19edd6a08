#!/usr/bin/env bash
# Prometheus metrics: metrics_listen serves GET /metrics and metrics_file
# holds the same text; both pass `promtool check metrics`, count events by
# outcome, batches, reloads, and carry PgQ's figures and the failed-event
# rows.  A group run by two workers is served once, by the supervising
# parent: one scrape shows every partition's series (partition="I") and
# every worker's (worker="W"), with the restarts the parent counted.  A bad
# metrics_listen stops the start (exit 78).  The scrape config
# and alert rules in README pass `promtool check config` / `check rules`.
source "$(dirname "$0")/lib.sh"
reset_queues q_met q_metg
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
new_consumer q_met c_met '
function process_event(ev)
  if ev.data:sub(1, 1) == "f" then return pgq.EVENT_FAILED, "no" end
  if ev.data:sub(1, 1) == "e" then error("boom") end
end' "metrics_listen: \"127.0.0.1:$PORT\"
metrics_file: $WORK/c_met.prom
stats_period: 0.2
max_retries: 0"
Y="$WORK/c_met.yaml"
URL="http://127.0.0.1:$PORT/metrics"
L='queue="q_met",consumer="c_met"'

"$PGQLUA" run "$Y" >> "$WORK/c_met.log" 2>&1 &
RUN_PID=$!
CHILD_PIDS+=("$RUN_PID")
scrape() { curl -sf --max-time 5 "$URL" > "$WORK/scrape.txt"; }
has() { scrape && grep -qx "$1" "$WORK/scrape.txt"; }
wait_until 30 has "pgqlua_up{$L} 1" && ok "GET /metrics: pgqlua_up is 1" || fail "pgqlua_up never 1: $(cat "$WORK/scrape.txt" 2>&1)"
sql "select pgq.insert_event('q_met', 'x', 'ok' || g) from generate_series(1, 5) g;
     select pgq.insert_event('q_met', 'x', 'fail' || g) from generate_series(1, 2) g;
     select pgq.insert_event('q_met', 'x', 'err1')" > /dev/null
wait_drained q_met c_met || fail "q_met did not drain"
for line in "pgqlua_events_total{$L,outcome=\"ok\"} 5" "pgqlua_events_total{$L,outcome=\"failed\"} 2" \
	"pgqlua_events_total{$L,outcome=\"error\"} 1" "pgqlua_events_total{$L,outcome=\"retry\"} 0" \
	"pgqlua_failed_events{$L} 3" "pgqlua_event_duration_seconds_count{$L} 8"; do
	wait_until 30 has "$line" && ok "scrape shows $line" || fail "scrape never showed $line"
done
expect_match "batches and their duration are counted" "pgqlua_batch_duration_seconds_count\{$L\} [1-9]" "$(cat "$WORK/scrape.txt")"
for m in pgqlua_lag_seconds pgqlua_last_seen_seconds pgqlua_pending_events pgqlua_lua_memory_bytes \
	pgqlua_worker_restarts_total pgqlua_batch_aborts_total pgqlua_batches_total; do
	grep -q "^$m{$L} [0-9]" "$WORK/scrape.txt" && ok "scrape has $m" || fail "scrape lacks $m"
done
promtool check metrics < "$WORK/scrape.txt" > "$WORK/promtool.out" 2>&1 \
	&& ok "promtool check metrics passes on the scrape" || fail "promtool: $(cat "$WORK/promtool.out")"
expect_eq "other paths are 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/other")"

file_has() { grep -qx "$1" "$WORK/c_met.prom" 2>/dev/null; }
wait_until 30 file_has "pgqlua_events_total{$L,outcome=\"ok\"} 5" && ok "metrics_file holds the same figures" \
	|| fail "metrics_file: $(cat "$WORK/c_met.prom" 2>&1)"
promtool check metrics < "$WORK/c_met.prom" > "$WORK/promtool.out" 2>&1 \
	&& ok "promtool check metrics passes on metrics_file" || fail "promtool: $(cat "$WORK/promtool.out")"

kill -HUP "$RUN_PID"
wait_until 30 has "pgqlua_reloads_total{$L,result=\"ok\"} 1" && ok "a reload is counted" || fail "the reload was not counted"
kill -TERM "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true

# a group of 4 partitions in 2 workers: the parent serves all of them
new_consumer q_metg c_metg 'function process_event(ev) end' "partitions: 4
workers: 2
metrics_listen: \"127.0.0.1:$PORT\"
metrics_file: $WORK/c_metg.prom
stats_period: 0.2"
LG='queue="q_metg",consumer="c_metg"'
"$PGQLUA" run "$WORK/c_metg.yaml" >> "$WORK/c_metg.log" 2>&1 &
RUN_PID=$!
CHILD_PIDS+=("$RUN_PID")
wait_until 30 has "pgqlua_up{$LG,worker=\"1\"} 1" && wait_until 30 has "pgqlua_up{$LG,worker=\"0\"} 1" \
	&& ok "both workers are up in the parent's scrape" || fail "workers not up: $(cat "$WORK/scrape.txt" 2>&1)"
sql "select pgq.insert_event('q_metg', 'x', 'g' || g) from generate_series(1, 40) g" > /dev/null
for i in 0 1 2 3; do wait_drained q_metg "c_metg.p${i}of4" || fail "partition $i did not drain"; done
ok_sum() { scrape && [ "$(awk -v l="pgqlua_events_total{$LG,partition=" 'index($0, l) == 1 && /outcome="ok"/ { n += $2 } END { print n + 0 }' "$WORK/scrape.txt")" == 40 ]; }
wait_until 30 ok_sum && ok "one scrape counts the 40 events over the partitions" || fail "events: $(grep events_total "$WORK/scrape.txt")"
for i in 0 1 2 3; do
	grep -q "^pgqlua_events_total{$LG,partition=\"$i\",outcome=\"ok\"} [1-9]" "$WORK/scrape.txt" \
		&& grep -q "^pgqlua_batch_duration_seconds_count{$LG,partition=\"$i\"} [1-9]" "$WORK/scrape.txt" \
		&& ok "partition $i has its series" || fail "partition $i lacks its series"
done
pending_known() { scrape && [ "$(grep -c "^pgqlua_pending_events{$LG,partition=" "$WORK/scrape.txt")" == 4 ]; }
wait_until 30 pending_known && ok "PgQ's figures per partition" || fail "pending per partition: $(grep pending "$WORK/scrape.txt")"
promtool check metrics < "$WORK/scrape.txt" > "$WORK/promtool.out" 2>&1 \
	&& ok "promtool check metrics passes on the group's scrape" || fail "promtool: $(cat "$WORK/promtool.out")"
W1=$(pgrep -P "$RUN_PID" | head -n 1)
W1_INDEX=$(grep -l "^worker_pid=$W1\$" "$WORK"/c_metg.yaml.pid.state* | sed -n 's/.*state\.\([0-9]*\)$/\1/p')
kill -KILL "$W1"
wait_until 30 has "pgqlua_worker_restarts_total{$LG,worker=\"${W1_INDEX:-0}\"} 1" \
	&& ok "the parent counts the killed worker's restart" || fail "restart not counted: $(grep restarts "$WORK/scrape.txt")"
file_has_g() { grep -q "^pgqlua_events_total{$LG,partition=\"3\",outcome=\"ok\"} [1-9]" "$WORK/c_metg.prom" 2>/dev/null; }
wait_until 30 file_has_g && ok "the parent writes metrics_file with the partitions" || fail "metrics_file: $(head -c 600 "$WORK/c_metg.prom" 2>&1)"
kill -TERM "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true

# a bad address stops the start
sed -i "s/^metrics_listen: .*/metrics_listen: \"nowhere\"/" "$Y"
out=$("$PGQLUA" run --once "$Y" 2>&1) && rc=0 || rc=$?
expect_eq "metrics_listen without a port: exit 78" 78 "$rc"
expect_match "it says why" "metrics_listen \"nowhere\": give HOST:PORT" "$out"

# README's scrape config and alert rules
awk '/^# prometheus.yml$/ { on = 1 } on && /^```$/ { on = 0 } on' "$ROOT/README.md" > "$WORK/prometheus.yml"
awk '/^# pgqlua.rules.yml$/ { on = 1 } on && /^```$/ { on = 0 } on' "$ROOT/README.md" > "$WORK/pgqlua.rules.yml"
promtool check rules "$WORK/pgqlua.rules.yml" > "$WORK/promtool.out" 2>&1 \
	&& ok "README's alert rules pass promtool check rules" || fail "promtool check rules: $(cat "$WORK/promtool.out")"
expect_match "three alert rules" "SUCCESS: 3 rules found" "$(cat "$WORK/promtool.out")"
promtool check config "$WORK/prometheus.yml" > "$WORK/promtool.out" 2>&1 \
	&& ok "README's scrape config passes promtool check config" || fail "promtool check config: $(cat "$WORK/promtool.out")"
finish
