#!/usr/bin/env bash
# Hard limits behind the cooperative ones: a script that escapes the
# event_timeout hook (a looping error handler, a looping __gc, a long C
# call) or crashes the process is killed by the supervising parent after
# event_timeout + kill_grace; the worker is replaced, the batch comes again,
# and after max_crashes deaths the event is in the failed-event table with
# its reason while the other events of the batch are applied exactly once.
# Load and init have the same limit; lua_memory_limit holds at load and at
# reload; `pgqlua kill` and a second SIGTERM end a loop inside a coroutine.
source "$(dirname "$0")/lib.sh"
QUEUES=(q_dl_xpcall q_dl_gc q_dl_find q_dl_segv q_dl_co q_dl_mem)
reset_queues "${QUEUES[@]}"
sql "drop table if exists r_dl; create table r_dl (q text, ev_id bigint, data text)"
# limits scale with PGQLUA_TEST_TIME_SCALE: a slow machine must not kill
# the events that do nothing wrong
TO=$(scaledf 0.5)
LIMITS="event_timeout: $TO
kill_grace: $TO
max_crashes: 3
max_retries: 0
log_level: info"

# bypass NAME SCRIPT_LINE_FOR_BAD [EXTRA_ENV]: events a, bad, b in one batch
bypass() {
	local name=$1 bad=$2 q=q_dl_$1 c=c_dl_$1
	new_consumer "$q" "$c" "
local function run_bad(ev) $bad end
function process_event(ev, db)
  if ev.data == 'bad' then run_bad(ev) end
  db:exec('insert into r_dl values (\$1, \$2, \$3)', '$q', ev.id, ev.data)
end" "$LIMITS"
	sql "begin; select pgq.insert_event('$q', 'x', d) from unnest(array['a','bad','segv','b']) d; commit" > /dev/null
	wait_until 30 ticked "$q" || fail "$q never ticked"
	"$PGQLUA" run "$WORK/$c.yaml" >> "$WORK/$c.log" 2>&1 &
	local pid=$!
	CHILD_PIDS+=("$pid")
	wait_sql "$name: after max_crashes deaths the event is in the failed-event table" \
		"select count(*) from pgqlua.failed_event where queue_name = '$q' and ev_data = '${3:-bad}'" "1" 60
	wait_drained "$q" "$c" 60 || fail "$name: $q did not drain"
	expect_match "$name: its reason says what killed the consumer" \
		"^killed the consumer 3 times: ${4:-the event ran past its limit \([0-9.]+s\) and kill_grace \([0-9.]+s\)}" \
		"$(sql "select reason from pgqlua.failed_event where queue_name = '$q' and ev_data = '${3:-bad}'")"
	expect_eq "$name: the other events of the batch are applied exactly once" "${5:-a:1,b:1,segv:1}" \
		"$(sql "select string_agg(data || ':' || n, ',' order by data) from (select data, count(*) n from r_dl where q = '$q' group by data) x")"
	expect_eq "$name: the parent replaced the worker each time" "3" \
		"$(grep -c 'restarting the worker' "$WORK/$c.log")"
	expect_match "$name: status counts the worker's restarts" "worker: pid [0-9]+, 3 restarts" \
		"$("$PGQLUA" status "$WORK/$c.yaml")"
	kill -TERM "$pid"
	set +e; wait "$pid"; rc=$?; set -e
	expect_eq "$name: the consumer stops cleanly afterwards" "0" "$rc"
}

bypass xpcall 'xpcall(function() while true do end end, function() while true do end end)'
bypass gc 'setmetatable({}, {__gc = function() while true do end end}); collectgarbage()'
bypass find 'string.rep("a", 4000):find(".-.-.-.-b")'
if [ "${PGQLUA_FAULT_BUILD:-0}" == 1 ]; then
	export PGQLUA_FAULT=segv_in_event
	# (under AddressSanitizer the fault is caught and the worker aborts)
	bypass segv 'return' segv "died of signal (11 \(Segmentation fault\)|6 \(Aborted\))" "a:1,b:1,bad:1"
	unset PGQLUA_FAULT
fi

# ---- load and init have the limit too: the consumer cannot start
for where in top init; do
	body='xpcall(function() while true do end end, function() while true do end end)'
	[ "$where" == init ] && body="function init() $body end"
	new_consumer q_dl_co "c_dl_load_$where" "$body
function process_event() end" "$LIMITS"
	set +e
	out=$(timeout "$(scaled 60)" "$PGQLUA" run "$WORK/c_dl_load_$where.yaml" 2>&1); rc=$?
	set -e
	expect_eq "a script that loops past the limit in its $where level cannot start (exit 65)" "65" "$rc"
	expect_match "and the log says so" "the consumer could not start: the worker the script's load or init\(\) ran past its limit \([0-9.]+s\)" "$out"
done

# ---- kill and a second SIGTERM end a loop inside a coroutine within the grace
new_consumer q_dl_co c_dl_co '
function process_event(ev, db)
  coroutine.wrap(function() while true do end end)()
end' "kill_grace: $TO
log_level: info"
for how in kill term2; do
	sql "select pgq.insert_event('q_dl_co', 'x', 'spin')" > /dev/null
	"$PGQLUA" start "$WORK/c_dl_co.yaml" > /dev/null
	pid=$(cat "$WORK/c_dl_co.yaml.pid")
	CHILD_PIDS+=("$pid")
	spinning() { [ "$(ps -o stat= --ppid "$pid" | head -1 | cut -c1)" == R ]; }
	wait_until 30 spinning || fail "$how: the event never started"
	if [ "$how" == kill ]; then
		"$PGQLUA" kill "$WORK/c_dl_co.yaml" > /dev/null
	else
		kill -TERM "$pid"; kill -INT "$pid"
	fi
	gone() { ! kill -0 "$pid" 2>/dev/null; }
	wait_until 10 gone && ok "$how: a loop inside a coroutine is ended within the grace" \
		|| fail "$how: the consumer is still running"
done

# ---- lua_memory_limit at load, and at reload (the old script goes on)
new_consumer q_dl_mem c_dl_mem 'local hog = string.rep("x", 1e9)
function process_event() end' "lua_memory_limit: 64MB
log_level: info"
set +e; out=$("$PGQLUA" run --once "$WORK/c_dl_mem.yaml" 2>&1); rc=$?; set -e
expect_eq "a script that allocates past lua_memory_limit at load does not start (exit 65)" "65" "$rc"
expect_match "with a clear error" "not enough memory \(lua_memory_limit is 67108864 bytes\)" "$out"
cat > "$WORK/c_dl_mem.lua" <<'LUA'
function process_event(ev, db) db:exec("insert into r_dl values ('q_dl_mem', $1, $2)", ev.id, ev.data) end
LUA
"$PGQLUA" run "$WORK/c_dl_mem.yaml" >> "$WORK/c_dl_mem.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
wait_until 30 grep -q "on queue q_dl_mem started" "$WORK/c_dl_mem.log" || fail "the good script did not start"
cat > "$WORK/c_dl_mem.lua" <<'LUA'
local hog = {}
function init() for i = 1, 1e9 do hog[i] = string.rep("y", 1e6) .. i end end
function process_event() end
LUA
kill -HUP "$pid"
wait_until 30 grep -q "reload failed" "$WORK/c_dl_mem.log" || fail "no failed reload logged"
expect_match "a reload whose init allocates past the limit fails" "reload failed, keeping the old configuration and script: not enough memory" \
	"$(cat "$WORK/c_dl_mem.log")"
sql "select pgq.insert_event('q_dl_mem', 'x', 'after')" > /dev/null
wait_sql "the old script keeps running" "select count(*) from r_dl where q = 'q_dl_mem' and data = 'after'" "1" 60
kill -TERM "$pid"; wait "$pid" || true
finish
