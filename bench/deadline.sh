#!/usr/bin/env bash
# deadline.sh - how long a runaway event holds its consumer up: for each way
# of escaping the cooperative event_timeout hook (a looping xpcall handler, a
# looping __gc, a long C call in string.find, and a segmentation fault when
# the binary has fault injection), the time from the start of the bad event
# (the debug line `event <id of the event before it>: outcome OK`) to the
# replacement worker's `consumer ... started` line, for every death until
# the event is in the failed-event table.  The queue holds one batch a, bad,
# b; event_timeout 0.5 s, kill_grace 0.5 s (and the default 2 s for one
# bypass), max_crashes 6, max_retries 0.  Prints the median and max of the
# deaths (and of the start-to-strike part alone, without the restart
# back-off), and the lost / doubled applies of a and b (must be 0); asserts
# nothing about speed.
#
#   bench/deadline.sh PGQLUA_BIN
# Fault injection (the segv row) is detected in the binary; set
# PGQLUA_FAULT_BUILD=0 or 1 to decide it yourself.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PGQLUA=$(realpath "${1:?usage: deadline.sh PGQLUA_BIN}")
DIR=$(mktemp -d /tmp/pgqlua-deadline.XXXXXX)
WORK=$(mktemp -d /tmp/pgqlua-deadline-work.XXXXXX)
"$ROOT/tests/tools/pgtmp.sh" start "$DIR" > /dev/null
CPID=0
stop_consumer() {
	[[ $CPID != 0 ]] || return 0
	kill -TERM "$CPID" 2>/dev/null || true
	local _
	for _ in $(seq 50); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$CPID" 2>/dev/null || true
	wait "$CPID" 2>/dev/null || true
	CPID=0
}
cleanup() { stop_consumer; "$ROOT/tests/tools/pgtmp.sh" stop "$DIR" > /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck disable=SC1091
source "$DIR/env"
# the runtime's Lua modules, copied now so that edits to the tree during the run do not reach it
if [[ -z ${PGQLUA_LUA_DIR:-} && -d $ROOT/lua ]]; then
	cp -r "$ROOT/lua" "$WORK/lua"
	export PGQLUA_LUA_DIR=$WORK/lua
fi
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

FAULT=${PGQLUA_FAULT_BUILD:-}
if [[ -z $FAULT ]]; then
	FAULT=0
	grep -qa 'fault injection: segmentation fault' "$PGQLUA" && FAULT=1
fi

sql "create table r_dl (q text, data text);
     create table dl_death (q text, k int, t_start timestamptz, t_death timestamptz, t_restart timestamptz)"

# run_case LABEL GRACE BYPASS BAD_LUA [BAD_DATA]: one consumer on a fresh
# queue holding a, BAD_DATA (default bad), b in one transaction.
run_case() {
	local label=$1 grace=$2 name=$3 bad=$4 baddata=${5:-bad}
	local q=q_dl_$label c=c_dl_$label ids a_id bad_id deadline
	cat > "$WORK/$c.lua" <<LUA
local function run_bad(ev) $bad end
function process_event(ev, db)
  if ev.data == '$baddata' then run_bad(ev) end
  db:exec('insert into r_dl values (\$1, \$2)', '$q', ev.data)
end
LUA
	{
		printf 'queue_name: %s\nconsumer_name: %s\n' "$q" "$c"
		printf 'db: "host=%s port=%s user=%s dbname=pgqlua_test"\n' "$PGHOST" "$PGPORT" "$PGUSER"
		printf 'script: %s.lua\nloop_delay: 0.05\nevent_timeout: 0.5\n' "$c"
		[[ $grace == default ]] || printf 'kill_grace: %s\n' "$grace"
		printf 'max_crashes: 6\nmax_retries: 0\nlog_level: debug\n'
	} > "$WORK/$c.yaml"
	"$PGQLUA" install "$WORK/$c.yaml" > /dev/null
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '0.05'),
	            pgq.set_queue_config('$q', 'ticker_idle_period', '0.2')" > /dev/null
	ids=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "begin" \
		-c "select pgq.insert_event('$q', 'x', 'a')" \
		-c "select pgq.insert_event('$q', 'x', '$baddata')" \
		-c "select pgq.insert_event('$q', 'x', 'b')" -c "commit")
	a_id=$(sed -n 1p <<< "$ids"); bad_id=$(sed -n 2p <<< "$ids")
	[[ $name == segv ]] && export PGQLUA_FAULT=segv_in_event
	"$PGQLUA" run "$WORK/$c.yaml" 2> "$WORK/$c.log" &
	CPID=$!
	unset PGQLUA_FAULT
	# done: the bad event is failed and the batch is finished
	deadline=$((SECONDS + 60)); [[ $grace == default ]] && deadline=$((deadline + 20))
	until [[ $(sql "select count(*) from pgqlua.failed_event where queue_name = '$q'") == 1 &&
	         $(sql "select count(*) from pgq.get_consumer_info('$q', '$c') where current_batch is null") == 1 ]]; do
		if ((SECONDS >= deadline)) || ! kill -0 "$CPID" 2>/dev/null; then
			echo "$label: the consumer ended or timed out; its log ends with:" >&2; tail -3 "$WORK/$c.log" >&2; break
		fi
		sleep 0.1
	done
	stop_consumer
	awk -v a="event $a_id: outcome OK" -v bad="the worker died in event $bad_id " -v q="$q" '
		function ts() { return $1 " " $2 " " $3 }
		index($0, a) { start = ts() }
		index($0, bad) && start != "" { death = ts(); pend = 1; next }
		pend && / consumer .* on queue .* started/ { print q "\t" ++k "\t" start "\t" death "\t" ts(); pend = 0; start = "" }
	' "$WORK/$c.log" | psql -X -q -v ON_ERROR_STOP=1 -c "\\copy dl_death from stdin"
	printf '%s\t%s\t%s\t%s\n' "$label" "$grace" "$q" "$baddata" >> "$WORK/cases"
}

run_case xpcall 0.5 xpcall 'xpcall(function() while true do end end, function() while true do end end)'
run_case gc 0.5 gc 'setmetatable({}, {__gc = function() while true do end end}); collectgarbage()'
run_case find 0.5 find 'string.rep("a", 4000):find(".-.-.-.-b")'
[[ $FAULT == 1 ]] && run_case segv 0.5 segv 'return' segv
run_case xpcall_g2 default xpcall 'xpcall(function() while true do end end, function() while true do end end)'

sql "create table dl_case (label text, grace text, q text, baddata text)"
psql -X -q -v ON_ERROR_STOP=1 -c "\\copy dl_case from '$WORK/cases'"
printf '%-10s %6s %6s %9s %9s %9s %9s %5s %7s %6s\n' bypass grace deaths median max kill_med kill_max lost doubled failed
sql "select rpad(split_part(c.label, '_', 1), 10), lpad(case c.grace when 'default' then '2' else c.grace end, 6),
            lpad(count(d.k)::text, 6),
            lpad(coalesce(round(extract(epoch from percentile_cont(0.5) within group (order by d.t_restart - d.t_start))::numeric, 3)::text, '-'), 9),
            lpad(coalesce(round(extract(epoch from max(d.t_restart - d.t_start))::numeric, 3)::text, '-'), 9),
            lpad(coalesce(round(extract(epoch from percentile_cont(0.5) within group (order by d.t_death - d.t_start))::numeric, 3)::text, '-'), 9),
            lpad(coalesce(round(extract(epoch from max(d.t_death - d.t_start))::numeric, 3)::text, '-'), 9),
            lpad((select count(*) from unnest(array['a', 'b']) x(data)
                   where not exists (select 1 from r_dl r where r.q = c.q and r.data = x.data))::text, 5),
            lpad((select coalesce(sum(n - 1), 0) from (select count(*) n from r_dl r where r.q = c.q and r.data in ('a', 'b') group by r.data) y)::text, 7),
            lpad((select count(*) from pgqlua.failed_event f where f.queue_name = c.q and f.ev_data = c.baddata)::text, 6)
     from dl_case c left join dl_death d on d.q = c.q
     group by c.label, c.grace, c.q, c.baddata order by min(d.t_start) nulls last" | tr -d '|'
echo "seconds; median/max: bad event's start -> replacement worker's 'started' line (back-off 0.25 s doubling included);"
echo "kill_med/kill_max: start -> the parent's strike line; lost/doubled: applies of a and b (must be 0); failed: must be 1"
