#!/usr/bin/env bash
# latency.sh - time from an event's insert to its process_event call, with
# pgqd ticking every second (ticker_period 1 s, queue ticker_max_lag 1 s),
# for a few loop_delay / wakeup settings.  Prints median and 99th
# percentile; asserts nothing.
#
#   bench/latency.sh PGQLUA_BIN [SECONDS_PER_SETTING]
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PGQLUA=$(realpath "${1:?usage: latency.sh PGQLUA_BIN [SECONDS]}")
SECS=${2:-20}
DIR=$(mktemp -d /tmp/pgqlua-latency.XXXXXX)
WORK=$(mktemp -d /tmp/pgqlua-latency-work.XXXXXX)
PGTMP_TICKER_PERIOD=1 "$ROOT/tests/tools/pgtmp.sh" start "$DIR" > /dev/null
cleanup() { kill "${CPID:-0}" 2>/dev/null || true; "$ROOT/tests/tools/pgtmp.sh" stop "$DIR" > /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck disable=SC1091
source "$DIR/env"
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

cat > "$WORK/lat.lua" <<'LUA'
function process_event(ev, db)
  db:exec("insert into lat values ($1, extract(epoch from clock_timestamp() - $2::timestamptz))", ev.data, ev.time)
end
LUA
sql "create table lat (setting text, secs float8)"
printf '%-28s %8s %10s %10s\n' setting events median p99
for setting in "loop_delay=1 wakeup=false" "loop_delay=0.1 wakeup=false" "loop_delay=1 wakeup=true"; do
	ld=${setting#loop_delay=}; ld=${ld%% *}
	wk=${setting#*wakeup=}
	q=lat_$RANDOM
	printf 'queue_name: %s\nconsumer_name: lat\ndb: "host=%s port=%s user=%s dbname=pgqlua_test"\nscript: lat.lua\nloop_delay: %s\nwakeup: %s\nlog_level: warn\n' \
		"$q" "$PGHOST" "$PGPORT" "$PGUSER" "$ld" "$wk" > "$WORK/$q.yaml"
	"$PGQLUA" install "$WORK/$q.yaml" > /dev/null
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '1')" > /dev/null
	"$PGQLUA" run "$WORK/$q.yaml" 2>> "$WORK/consumer.log" &
	CPID=$!
	end=$((SECONDS + SECS))
	while [ $SECONDS -lt $end ]; do
		sql "select pgq.insert_event('$q', 'x', '$setting')" > /dev/null
		sleep "0.0$((RANDOM % 9 + 1))"   # a producer with random gaps
	done
	sleep 3   # let the last ticks arrive
	kill -TERM "$CPID"; wait "$CPID" || true
	sql "select rpad('$setting', 28), lpad(count(*)::text, 8),
	            lpad(round(percentile_cont(0.5) within group (order by secs)::numeric, 3)::text, 10),
	            lpad(round(percentile_cont(0.99) within group (order by secs)::numeric, 3)::text, 10)
	     from lat where setting = '$setting'" | tr -d '|'
done
