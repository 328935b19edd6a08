#!/usr/bin/env bash
# throughput.sh - events per second of `pgqlua run --once` over N small
# events cut into batches of B (one tick every B events), for a script that
# does nothing and one that INSERTs one row per event.  Prints numbers; it
# asserts nothing.
#
#   bench/throughput.sh PGQLUA_BIN [N] [B...]
# Uses the cluster in $PGQLUA_PGTMP when its env file exists, else starts a
# throwaway one (tests/tools/pgtmp.sh) and stops it at the end.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PGQLUA=$(realpath "${1:?usage: throughput.sh PGQLUA_BIN [N] [B...]}")
N=${2:-200000}
shift $(($# >= 2 ? 2 : 1))
SIZES=("${@:-100 1000 10000}")
# shellcheck disable=SC2206
SIZES=(${SIZES[*]})

DIR=${PGQLUA_PGTMP:-}
own=0
if [[ -z $DIR || ! -f $DIR/env ]]; then
	DIR=$(mktemp -d /tmp/pgqlua-bench.XXXXXX)
	"$ROOT/tests/tools/pgtmp.sh" start "$DIR" > /dev/null
	own=1
fi
# shellcheck disable=SC1091
source "$DIR/env"
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
WORK=$(mktemp -d /tmp/pgqlua-bench-work.XXXXXX)
cleanup() { rm -rf "$WORK"; [[ $own == 1 ]] && "$ROOT/tests/tools/pgtmp.sh" stop "$DIR" > /dev/null; true; }
trap cleanup EXIT
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

cat > "$WORK/noop.lua" <<'LUA'
function process_event() end
LUA
cat > "$WORK/insert.lua" <<'LUA'
function process_event(ev, db)
  db:exec("insert into bench_sink values ($1, $2)", ev.id, ev.data)
end
LUA
sql "drop table if exists bench_sink; create unlogged table bench_sink (id bigint, data text)"

printf '%-8s %-8s %10s %12s\n' script batch events ev/s
for script in noop insert; do
	for B in "${SIZES[@]}"; do
		q=bench_${script}_$B
		sql "select pgq.unregister_consumer(queue_name, consumer_name) from pgq.get_consumer_info() where queue_name = '$q';
		     select pgq.drop_queue('$q') from pgq.queue where queue_name = '$q';
		     select pgq.create_queue('$q');
		     select pgq.set_queue_config('$q', 'ticker_max_count', '$B'),
		            pgq.set_queue_config('$q', 'ticker_max_lag', '1 hour'),
		            pgq.set_queue_config('$q', 'ticker_idle_period', '1 hour')" > /dev/null
		printf 'queue_name: %s\nconsumer_name: bench\ndb: "host=%s port=%s user=%s dbname=pgqlua_test"\nscript: %s.lua\nlog_level: warn\nfetch_size: 1000\nstats_period: 0\n' \
			"$q" "$PGHOST" "$PGPORT" "$PGUSER" "$script" > "$WORK/$q.yaml"
		"$PGQLUA" install "$WORK/$q.yaml" > /dev/null
		# one transaction and one tick per batch of B events
		psql -X -q -v ON_ERROR_STOP=1 > /dev/null <<SQL
do \$\$
begin
  for c in 0 .. ($N / $B) - 1 loop
    -- a tick sees only committed events: tick for the previous chunk first
    perform pgq.ticker('$q');
    perform pgq.insert_event('$q', 'x', 'id=' || i || '&name=bench') from generate_series(1, $B) i;
    commit;
  end loop;
end \$\$;
-- pgqd may have ticked in the middle of a chunk: tick whatever is left
select pgq.set_queue_config('$q', 'ticker_max_count', '1');
select pgq.ticker('$q');
SQL
		sql "truncate bench_sink"
		start=$(date +%s.%N)
		"$PGQLUA" run --once "$WORK/$q.yaml"
		end=$(date +%s.%N)
		got=$([[ $script == insert ]] && sql "select count(*) from bench_sink" || echo "$N")
		printf '%-8s %-8s %10s %12.0f\n' "$script" "$B" "$got" "$(awk -v n="$N" -v a="$start" -v b="$end" 'BEGIN { print n / (b - a) }')"
	done
done
