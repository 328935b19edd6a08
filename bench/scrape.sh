#!/usr/bin/env bash
# scrape.sh - does a Prometheus scraper slow the consumer?  The same N noop
# events (default 100000, batches of ~1000) consumed by `pgqlua run --once`
# with metrics_listen on, alternately without and with a scraper hitting
# /metrics 20 times a second; REPS (3) of each, interleaved; prints events
# per second of each run and the medians.
#
#   bench/scrape.sh PGQLUA_BIN PGTMP_DIR [N]
#
# PGTMP_DIR: a cluster from tests/tools/pgtmp.sh start.  Needs curl.
set -euo pipefail
PGQLUA=$1 PGTMP=$2 N=${3:-100000} REPS=${REPS:-3}
# shellcheck disable=SC1091
source "$PGTMP/env"
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
WORK=$(mktemp -d /tmp/pgqlua-scrape.XXXXXX)
trap 'kill $SCRAPER 2>/dev/null || true; rm -rf "$WORK"' EXIT
SCRAPER=""
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
echo 'function process_event() end' > "$WORK/noop.lua"
cat > "$WORK/c.yaml" <<YAML
queue_name: q_scrape
consumer_name: c_scrape
db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test"
script: noop.lua
fetch_size: 1000
log_level: warn
metrics_listen: "127.0.0.1:$PORT"
YAML
sql "select pgq.unregister_consumer('q_scrape', 'c_scrape') from pgq.queue where queue_name = 'q_scrape';
     select pgq.drop_queue('q_scrape') from pgq.queue where queue_name = 'q_scrape'" > /dev/null
"$PGQLUA" install "$WORK/c.yaml" > /dev/null
sql "select pgq.set_queue_config('q_scrape', 'ticker_max_count', '1000')" > /dev/null
one_run() {   # $1: scrape or quiet; prints events per second
	local t0 t1
	sql "select pgq.insert_event('q_scrape', 'x', 'e' || g) from generate_series(1, $N) g" > /dev/null
	# wait until ticked: the last tick sees every event
	until [ "$(sql "select ev_new from pgq.get_queue_info('q_scrape')")" == 0 ]; do sleep 0.1; done
	if [ "$1" == scrape ]; then
		( while :; do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" || true; sleep 0.05; done ) &
		SCRAPER=$!
	fi
	t0=$(date +%s.%N)
	"$PGQLUA" run --once "$WORK/c.yaml"
	t1=$(date +%s.%N)
	[ -n "$SCRAPER" ] && { kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; }
	awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}
quiet=() scraped=()
for _ in $(seq 1 "$REPS"); do
	q=$(one_run quiet); s=$(one_run scrape)
	echo "quiet $q ev/s   scraped $s ev/s"
	quiet+=("$q"); scraped+=("$s")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "median: quiet $(median "${quiet[@]}") ev/s, scraped 20/s $(median "${scraped[@]}") ev/s"
