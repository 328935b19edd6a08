#!/usr/bin/env bash
# http.sh - pgq.http throughput against the local test server
# (tests/tools/httpd.py) answering each request after 20 ms: N events
# (default 5000) in one transaction, each one POST; `pgqlua run --once`
# timed from start to exit (the batch, its commit and the process), for
# pgq.http.send at http_concurrency 1, 16 and 64 and for pgq.http.request
# (waited).  Prints events/s, the TCP connections the server saw and
# requests per connection.  Asserts nothing about speed.
#
#   bench/http.sh PGQLUA_BIN [N]
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PGQLUA=$(realpath "${1:?usage: http.sh PGQLUA_BIN [N]}")
N=${2:-5000}
DIR=$(mktemp -d /tmp/pgqlua-bhttp.XXXXXX)
WORK=$(mktemp -d /tmp/pgqlua-bhttp-work.XXXXXX)
"$ROOT/tests/tools/pgtmp.sh" start "$DIR" > /dev/null
HPID=0
cleanup() {
	[[ $HPID != 0 ]] && kill "$HPID" 2>/dev/null || true
	"$ROOT/tests/tools/pgtmp.sh" stop "$DIR" > /dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$DIR/env"
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

/usr/bin/python3 "$ROOT/tests/tools/httpd.py" --port-file "$WORK/port" --lifetime 3600 --parent-pid $$ &
HPID=$!
for _ in $(seq 100); do [[ -s $WORK/port ]] && break; sleep 0.1; done
BASE="http://127.0.0.1:$(cat "$WORK/port")"
stat() { /usr/bin/python3 -c "import json,urllib.request; d=json.load(urllib.request.urlopen('$BASE/stats')); print(d['$1'])"; }

printf '%-28s %10s %12s %12s %14s\n' "mode" "events" "events/s" "connections" "requests/conn"
run_case() {
	local label=$1 call=$2 conc=$3 q c
	q=q_bh_$label c=c_bh_$label
	cat > "$WORK/$c.lua" <<LUA
function process_event(ev, db)
  local r = pgq.http.$call{ url = "$BASE/slow?ms=20", json = { id = ev.id } }
  if r and r.status ~= 200 then return pgq.EVENT_RETRY end
end
LUA
	cat > "$WORK/$c.yaml" <<YAML
queue_name: $q
consumer_name: $c
db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test"
script: $c.lua
loop_delay: 0.05
http_concurrency: $conc
log_level: warn
fetch_size: 1000
YAML
	"$PGQLUA" install "$WORK/$c.yaml" > /dev/null
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '0.05')" > /dev/null
	sql "select pgq.insert_event('$q', 'x', g::text) from generate_series(1, $N) g" > /dev/null
	sql "select pgq.ticker('$q')" > /dev/null
	local c0 r0 t0 t1 c1 r1
	c0=$(stat connections) r0=$(stat requests)
	t0=$(date +%s.%N)
	"$PGQLUA" run --once "$WORK/$c.yaml" 2>> "$WORK/$c.log"
	t1=$(date +%s.%N)
	c1=$(stat connections) r1=$(stat requests)
	awk -v l="$label" -v n=$((r1 - r0)) -v t0="$t0" -v t1="$t1" -v c=$((c1 - c0)) \
		'BEGIN { printf "%-28s %10d %12.0f %12d %14.0f\n", l, n, n / (t1 - t0), c, c ? n / c : 0 }'
}
run_case send_c1 send 1
run_case send_c16 send 16
run_case send_c64 send 64
run_case request_waited request 1
