#!/usr/bin/env bash
# http.sh - pgq.http throughput against a local server (bench/slow_httpd.py,
# one asyncio loop) answering each request after 20 ms: N events
# (default 5000) in one transaction, each one POST; `pgqlua run --once`
# timed from start to exit (the batch, its commit and the process), for
# pgq.http.send at http_concurrency 1, 16 and 64 and for pgq.http.request
# (waited), and the Skytools peer: a Python pgq.Consumer POSTing each event
# with urllib (bench/py_consumer.py; needs python3-pgq, python3-skytools,
# python3-psycopg2).  Prints events/s, the TCP connections the server saw,
# requests per connection and the distinct Idempotency-Keys.  Asserts
# nothing about speed.
#
#   bench/http.sh PGQLUA_BIN [N]
#   BENCH_HTTP_CASES="send_c64 python" bench/http.sh ...   # a subset of the cases
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

/usr/bin/python3 "$ROOT/bench/slow_httpd.py" --port-file "$WORK/port" --parent-pid $$ &
HPID=$!
for _ in $(seq 100); do [[ -s $WORK/port ]] && break; sleep 0.1; done
BASE="http://127.0.0.1:$(cat "$WORK/port")"
# the server's counts "connections requests keys", on one connection of its own
counts() { /usr/bin/python3 -c "import json,urllib.request; d=json.load(urllib.request.urlopen('$BASE/stats')); print(d['connections'], d['requests'], d['keys'])"; }

printf '%-28s %10s %12s %12s %14s %8s %8s\n' "mode" "events" "events/s" "connections" "requests/conn" "keys" "CPU s"
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
	timed "$label" "$PGQLUA" run --once "$WORK/$c.yaml"
}
# timed LABEL CMD...: run CMD, print the server's counts of what it sent
timed() {
	local label=$1 c0 r0 k0 t0 t1 c1 r1 k1
	shift
	read -r c0 r0 k0 < <(counts)
	t0=$(date +%s.%N)
	/usr/bin/time -f "%U %S" -o "$WORK/$label.time" "$@" 2>> "$WORK/$label.log"
	t1=$(date +%s.%N)
	read -r c1 r1 k1 < <(counts)
	# the counting request itself is one connection
	awk -v l="$label" -v n=$((r1 - r0)) -v t0="$t0" -v t1="$t1" -v c=$((c1 - c0 - 1)) -v k=$((k1 - k0)) \
		-v cpu="$(awk '{ print $1 + $2 }' "$WORK/$label.time")" \
		'BEGIN { printf "%-28s %10d %12.0f %12d %14.0f %8d %8.2f\n", l, n, n / (t1 - t0), c, c ? n / c : 0, k, cpu }'
}
# the Skytools peer: a pgq.Consumer that POSTs each event with urllib
run_python() {
	local q=q_bh_python c=c_bh_python
	/usr/bin/python3 -c "import pgq, skytools, psycopg2" 2> /dev/null \
		|| { echo "python_urllib: skipped (apt-get install python3-pgq python3-skytools python3-psycopg2)"; return 0; }
	sql "select pgq.create_queue('$q')" > /dev/null
	sql "select pgq.register_consumer('$q', '$c')" > /dev/null
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '0.05')" > /dev/null
	sql "select pgq.insert_event('$q', 'x', g::text) from generate_series(1, $N) g" > /dev/null
	sql "select pgq.ticker('$q')" > /dev/null
	cat > "$WORK/$c.ini" <<INI
[py_consumer]
job_name = $c
queue_name = $q
consumer_name = $c
src_db = host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test
bench_mode = http
http_url = $BASE/slow?ms=20
pgq_lazy_fetch = 1000
loop_delay = 0
use_skylog = 0
INI
	timed python_urllib_waited /usr/bin/python3 "$ROOT/bench/py_consumer.py" -q "$WORK/$c.ini"
}
[[ -n ${BENCH_HTTP_CASES:-} ]] || BENCH_HTTP_CASES="send_c1 send_c16 send_c64 request_waited python"
for case in $BENCH_HTTP_CASES; do
	case $case in
	send_c1) run_case send_c1 send 1 ;;
	send_c16) run_case send_c16 send 16 ;;
	send_c64) run_case send_c64 send 64 ;;
	request_waited) run_case request_waited request 1 ;;
	python) run_python ;;
	*) echo "http.sh: unknown case $case" >&2; exit 64 ;;
	esac
done
