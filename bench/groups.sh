#!/usr/bin/env bash
# groups.sh - consumer groups on a throwaway cluster (not a timed test):
#  1. scaling: a script that waits 2 ms per event on the server
#     (select pg_sleep(0.002)), 8 partitions, 1, 2 and 4 members (workers:
#     M under one `pgqlua run`): events/s and the ratio to one member;
#  2. the cost of grouping with a no-op script: 8 partitions on one member
#     against an ungrouped consumer, batches of about 1,000 and 10,000;
#  3. failover: 3 members, 10 SIGKILLs of a member; the time until every
#     partition has an owner again (median and max);
#  4. resize: 4 members of 8 partitions with a no-op script while a
#     producer inserts (200 events per transaction, 10 ms apart; the rate
#     reached is printed); 6 resizes 8 -> 12 -> 8 ...:
#     how long ticks were paused (median and max) and each resize's wall
#     time.
# SECTIONS="scaling cost failover resize" (the default) picks the parts.
# Each rate is events / wall time from the start of `pgqlua run` to the last
# partition's finish (process start and the first claims included).
#
#   bench/groups.sh PGQLUA_BIN [EVENTS_SCALING] [EVENTS_COST]
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PGQLUA=$(realpath "${1:?usage: groups.sh PGQLUA_BIN [EVENTS_SCALING] [EVENTS_COST]}")
E_SCALE=${2:-12000}
E_COST=${3:-200000}
DIR=$(mktemp -d /tmp/pgqlua-groups.XXXXXX)
WORK=$(mktemp -d /tmp/pgqlua-groups-work.XXXXXX)
"$ROOT/tests/tools/pgtmp.sh" start "$DIR" > /dev/null
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	"$ROOT/tests/tools/pgtmp.sh" stop "$DIR" > /dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$DIR/env"
export PGDATABASE=pgqlua_test PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
now() { date +%s.%N; }

# config NAME QUEUE PARTITIONS WORKERS SCRIPT_BODY
config() {
	echo "$5" > "$WORK/$1.lua"
	cat > "$WORK/$1.yaml" <<YAML
queue_name: $2
consumer_name: $1
db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test"
script: $1.lua
partitions: $3
workers: $4
fetch_size: 1000
loop_delay: 0.05
log_level: warn
stats_period: 0
pidfile: $WORK/$1.pid
YAML
	sql "select pgq.create_queue('$2')" > /dev/null
	sql "select pgq.set_queue_config('$2', 'ticker_max_lag', '0.05')" > /dev/null
	"$PGQLUA" install "$WORK/$1.yaml" > /dev/null
}
# done_all QUEUE CONSUMER: every one of its PgQ consumers is past the last tick, no batch open
done_all() {
	[ "$(sql "select bool_and(c.last_tick >= q.last_tick_id and c.current_batch is null)
	          from pgq.get_consumer_info('$1') c, pgq.get_queue_info('$1') q
	          where c.consumer_name = '$2' or c.consumer_name like '$2.p%'")" == t ]
}
ticked() { [ "$(sql "select ev_new = 0 from pgq.get_queue_info('$1')")" == t ]; }
# fill QUEUE N BATCH: N events, BATCH per transaction; pgqd ticks every BATCH
# events (about: a tick may cover two transactions), then the rest
fill() {
	sql "select pgq.set_queue_config('$1', 'ticker_max_count', '$3'), pgq.set_queue_config('$1', 'ticker_max_lag', '3600'),
	            pgq.set_queue_config('$1', 'ticker_idle_period', '3600')" > /dev/null
	sql "do \$\$ begin for i in 1 .. $(($2 / $3)) loop
	       perform pgq.insert_event('$1', 'x', 'e' || g) from generate_series(1, $3) g; commit;
	     end loop; end \$\$" > /dev/null
	sql "select pgq.set_queue_config('$1', 'ticker_max_lag', '0.05')" > /dev/null
	until ticked "$1"; do sleep 0.05; done
}
# timed NAME QUEUE: run until drained; prints seconds
timed() {
	local t0 t1 pid
	t0=$(now)
	"$PGQLUA" run "$WORK/$1.yaml" >> "$WORK/$1.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	until done_all "$2" "$1"; do sleep 0.02; done
	t1=$(now)
	kill -TERM "$pid"
	wait "$pid" || true
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

SECTIONS=${SECTIONS:-scaling cost failover resize}
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

if section scaling; then
echo "## scaling: pg_sleep(0.002) per event, 8 partitions, $E_SCALE events"
base=""
for m in 1 2 4; do
	config "sc$m" "q_sc$m" 8 "$m" 'function process_event(ev, db) db:exec("select pg_sleep(0.002)") end'
	fill "q_sc$m" "$E_SCALE" 500
	s=$(timed "sc$m" "q_sc$m")
	rate=$(awk -v e="$E_SCALE" -v s="$s" 'BEGIN { printf "%.0f", e / s }')
	[ -n "$base" ] || base=$rate
	echo "members=$m seconds=$s events_per_s=$rate ratio=$(awk -v r="$rate" -v b="$base" 'BEGIN { printf "%.2f", r / b }')"
done

fi

if section cost; then
echo "## cost of grouping: no-op script, $E_COST events"
for b in 1000 10000; do
	config "cu$b" "q_cu$b" 0 1 'function process_event() end'
	config "cg$b" "q_cg$b" 8 1 'function process_event() end'
	fill "q_cu$b" "$E_COST" "$b"
	fill "q_cg$b" "$E_COST" "$b"
	su=$(timed "cu$b" "q_cu$b")
	sg=$(timed "cg$b" "q_cg$b")
	ru=$(awk -v e="$E_COST" -v s="$su" 'BEGIN { printf "%.0f", e / s }')
	rg=$(awk -v e="$E_COST" -v s="$sg" 'BEGIN { printf "%.0f", e / s }')
	echo "batch=$b ungrouped_events_per_s=$ru grouped8_events_per_s=$rg ratio=$(awk -v a="$rg" -v b="$ru" 'BEGIN { printf "%.2f", a / b }')"
done

fi

if section failover; then
echo "## failover: 3 members, 8 partitions, 10 SIGKILLs"
config fo q_fo 8 1 'function process_event() end'
for m in 1 2 3; do sed "s#^pidfile: .*#pidfile: $WORK/fo$m.pid#" "$WORK/fo.yaml" > "$WORK/fo$m.yaml"; cp "$WORK/fo.lua" "$WORK/fo$m.lua"; sed -i "s#^script: .*#script: fo.lua#" "$WORK/fo$m.yaml"; done
owned() {
	sql "select count(*) from pg_locks where locktype = 'advisory' and granted and objsubid = 2
	     and classid::int8 = (hashtext('pgqlua/q_fo')::int8 & 4294967295)"
}
declare -A MP
for m in 1 2 3; do "$PGQLUA" run "$WORK/fo$m.yaml" >> "$WORK/fo$m.log" 2>&1 & MP[$m]=$!; PIDS+=("$!"); done
until [ "$(owned)" == 8 ]; do sleep 0.05; done
times=()
for k in $(seq 1 10); do
	sleep 1
	m=$(((k % 3) + 1))
	kill -9 "${MP[$m]}"
	t0=$(now)
	wait "${MP[$m]}" 2>/dev/null || true
	until [ "$(owned)" == 8 ]; do sleep 0.01; done
	t1=$(now)
	times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
	"$PGQLUA" run "$WORK/fo$m.yaml" >> "$WORK/fo$m.log" 2>&1 &
	MP[$m]=$!
	PIDS+=("$!")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "failover seconds: median=%.3f max=%.3f (n=%d)\n", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2), a[NR], NR }'
for m in 1 2 3; do kill -TERM "${MP[$m]}" 2>/dev/null || true; done
fi

if section resize; then
echo "## resize: 4 members, 8 <-> 12 partitions, no-op script, producer running"
config rs q_rs 8 4 'function process_event() end'
"$PGQLUA" run "$WORK/rs.yaml" >> "$WORK/rs.log" 2>&1 &
rp=$!
PIDS+=("$rp")
psql -X -q -c "do \$\$ begin loop
                 perform pgq.insert_event('q_rs', 'x', 'e' || g) from generate_series(1, 200) g; commit;
                 perform pg_sleep(0.01);
               end loop; end \$\$" > /dev/null 2>&1 &
pp=$!
PIDS+=("$pp")
paused=() walls=()
for k in 1 2 3 4 5 6; do
	sleep 2
	to=$((k % 2 ? 12 : 8))
	t0=$(now)
	out=$("$PGQLUA" resize "$WORK/rs.yaml" "$to" 2>&1)
	t1=$(now)
	paused+=("$(sed -n 's/.*ticks were paused for \([0-9.]*\)s.*/\1/p' <<< "$out")")
	walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
done
kill "$pp" 2>/dev/null || true
sql "select pg_cancel_backend(pid) from pg_stat_activity where query like 'do \$\$ begin loop%' and pid <> pg_backend_pid()" > /dev/null
stats() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { printf "median=%.3f max=%.3f (n=%d)", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2), a[NR], NR }'; }
echo "rate_events_per_s=$(sql "select round(count(*) / greatest(extract(epoch from max(ev_time) - min(ev_time)), 1)) from pgq.event_$(sql "select queue_id from pgq.queue where queue_name = 'q_rs'")")"
echo "ticks paused seconds: $(stats "${paused[@]}")"
echo "resize wall seconds: $(stats "${walls[@]}")"
kill -TERM "$rp"; wait "$rp" || true
fi
