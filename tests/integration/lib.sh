# lib.sh - helpers for pgqlua's integration tests, sourced by each t_*.sh.
# A test runs as: bash t_NAME.sh PGQLUA_BIN PGTMP_DIR EMBED_BIN
# against the throwaway cluster that the ctest fixture started in PGTMP_DIR.
# Every wait polls with a deadline; a failure prints the consumer's log and
# the server logs.
set -euo pipefail

PGQLUA=${1:?usage: t_NAME.sh PGQLUA_BIN PGTMP_DIR [EMBED_BIN]}
PGTMP=${2:?usage: t_NAME.sh PGQLUA_BIN PGTMP_DIR [EMBED_BIN]}
EMBED=${3:-}
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$TESTS_DIR/../.." && pwd)
# shellcheck disable=SC1091
source "$PGTMP/env"
export PGDATABASE=pgqlua_test
export PGOPTIONS="-c client_min_messages=warning"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgqlua-test.XXXXXX")
TEST_NAME=$(basename "$0" .sh)
N_OK=0
N_FAIL=0
CHILD_PIDS=()

cleanup() {
	for p in "${CHILD_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

show_logs() {
	echo "---- consumer logs ($WORK/*.log)"
	for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }; done
	echo "---- server logs"
	"$ROOT/tests/tools/pgtmp.sh" logs "$PGTMP" || true
}

ok() { N_OK=$((N_OK + 1)); echo "ok - $*"; }
fail() {
	N_FAIL=$((N_FAIL + 1))
	echo "not ok - $*"
	show_logs
}

# Finish: the plain closing line, exit 1 on any failure.
finish() {
	if [ "${PGQLUA_VALGRIND:-0}" == 1 ]; then
		local reports
		reports=$(find "$WORK" -name 'valgrind.*.txt' -size +0 | wc -l)
		runs=$(find "$WORK" -name 'valgrind.*.txt' | wc -l)
		if [ "$reports" == 0 ] && [ "$runs" -gt 0 ]; then
			ok "valgrind memcheck: $runs runs, no errors, no definite leaks"
		else
			fail "valgrind memcheck: $reports of $runs runs reported problems"
			find "$WORK" -name 'valgrind.*.txt' -size +0 -exec cat {} +
		fi
	fi
	echo "$TEST_NAME: $N_OK passed, $N_FAIL failed"
	[ "$N_FAIL" -eq 0 ]
}

sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
	if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected [$2], got [$3]"; fi
}

# expect_match WHAT REGEX TEXT
expect_match() {
	if [[ "$3" =~ $2 ]]; then ok "$1"; else fail "$1: [$3] does not match /$2/"; fi
}

# wait_sql WHAT SQL EXPECTED [SECONDS]: poll until SQL returns EXPECTED.
wait_sql() {
	local deadline=$((SECONDS + ${4:-30})) got=""
	while [ $SECONDS -lt "$deadline" ]; do
		got=$(sql "$2" 2>&1) || true
		if [ "$got" == "$3" ]; then ok "$1"; return 0; fi
		sleep 0.05
	done
	fail "$1: waited for [$3], last got [$got]"
	return 1
}

# wait_until SECONDS CMD...: poll a command until it succeeds; 1 on timeout.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt "$deadline" ]; do
		if "$@"; then return 0; fi
		sleep 0.05
	done
	return 1
}

# new_consumer QUEUE CONSUMER SCRIPT_BODY [EXTRA_YAML]: write WORK/CONSUMER.yaml
# and WORK/CONSUMER.lua, create the queue with fast ticks, install.
new_consumer() {
	local q=$1 c=$2 body=$3 extra=${4:-}
	cat > "$WORK/$c.lua" <<< "$body"
	{
		echo "queue_name: $q"
		echo "consumer_name: $c"
		echo "db: \"host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test\""
		echo "script: $c.lua"
		local kv
		for kv in "loop_delay: 0.05" "retry_delay: 0" "log_level: debug"; do
			grep -q "^${kv%%:*}:" <<< "$extra" || echo "$kv"
		done
		echo "$extra"
	} > "$WORK/$c.yaml"
	"$PGQLUA" install "$WORK/$c.yaml" > "$WORK/$c.install.out"
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '0.05'),
	            pgq.set_queue_config('$q', 'ticker_idle_period', '0.2')" > /dev/null
}

# reset_queues QUEUE...: drop queues (and their failed events) left by an
# earlier run against the same cluster.
reset_queues() {
	local q
	for q in "$@"; do
		sql "select pgq.unregister_consumer(queue_name, consumer_name) from pgq.get_consumer_info('$q');
		     select pgq.drop_queue(queue_name) from pgq.queue where queue_name = '$q';
		     delete from pgqlua.failed_event where queue_name = '$q'" > /dev/null 2>&1 || true
	done
}

# ticked QUEUE: the queue's last tick covers every event inserted so far
# (its snapshot sees the newest event's transaction as committed).
sql "create or replace function public.pgqlua_test_ticked(q text) returns bool language plpgsql as \$\$
declare
	r record;
	ok bool;
begin
	select queue_id, queue_data_pfx into r from pgq.queue where queue_name = q;
	execute format('select coalesce(txid_visible_in_snapshot(max(ev_txid),
	                  (select tick_snapshot from pgq.tick where tick_queue = %s order by tick_id desc limit 1)), true)
	                from %s', r.queue_id, r.queue_data_pfx) into ok;
	return ok and (select ev_new <= 0 from pgq.get_queue_info(q));
end \$\$" > /dev/null
ticked() {
	[ "$(sql "select public.pgqlua_test_ticked('$1')")" == "t" ]
}

# pgqlua_test_owned_pending(q, c): a retried event that pgqd has moved back
# into the queue for consumer c (ev_owner) and that c has not reached yet.
sql "create or replace function public.pgqlua_test_owned_pending(q text, c text) returns bool language plpgsql as \$\$
declare
	r record;
	found bool;
begin
	select qu.queue_id, qu.queue_data_pfx, s.sub_id, s.sub_last_tick into r
	  from pgq.queue qu join pgq.subscription s on s.sub_queue = qu.queue_id
	  join pgq.consumer co on co.co_id = s.sub_consumer
	 where qu.queue_name = q and co.co_name = c;
	execute format('select exists (select 1 from %s e, pgq.tick t where e.ev_owner = %s
	                  and t.tick_queue = %s and t.tick_id = %s
	                  and not txid_visible_in_snapshot(e.ev_txid, t.tick_snapshot))',
	               r.queue_data_pfx, r.sub_id, r.queue_id, r.sub_last_tick) into found;
	return found;
end \$\$" > /dev/null

# drained QUEUE CONSUMER: prints the queue's last tick id when CONSUMER has
# finished that tick and has nothing waiting in the retry queue, nor a
# retried event moved back into the queue beyond its last tick; fails if not.
drained() {
	local out
	out=$(sql "select q.last_tick_id from pgq.get_consumer_info('$1', '$2') c, pgq.get_queue_info('$1') q
	           where c.last_tick = q.last_tick_id and c.current_batch is null
	             and not exists (select 1 from pgq.retry_queue r join pgq.subscription s on s.sub_id = r.ev_owner
	                             join pgq.consumer co on co.co_id = s.sub_consumer where co.co_name = '$2')
	             and not public.pgqlua_test_owned_pending('$1', '$2')")
	[ -n "$out" ] && echo "$out"
}

# run_once CONSUMER: one `pgqlua run --once`; its log appends to WORK/CONSUMER.log.
# With PGQLUA_VALGRIND=1 it runs under valgrind memcheck; finish() fails the
# test if valgrind reported anything.
run_once() {
	if [ "${PGQLUA_VALGRIND:-0}" == 1 ]; then
		valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
			--show-leak-kinds=definite --log-file="$WORK/valgrind.%p.txt" \
			"$PGQLUA" run --once "$WORK/$1.yaml" >> "$WORK/$1.log" 2>&1
	else
		"$PGQLUA" run --once "$WORK/$1.yaml" >> "$WORK/$1.log" 2>&1
	fi
}

# drain QUEUE CONSUMER [SECONDS]: run --once until every event (retries too)
# is consumed.  A retried event re-enters the queue without a new sequence
# value, so "drained" must hold across one more tick to be sure.
drain() {
	local q=$1 c=$2 deadline=$((SECONDS + ${3:-60})) settle=""
	while [ $SECONDS -lt "$deadline" ]; do
		if ticked "$q"; then
			run_once "$c" || true
			local last
			if last=$(drained "$q" "$c"); then
				if [ -z "$settle" ]; then
					settle=$last
				elif [ "$last" -gt "$settle" ]; then
					return 0
				fi
			else
				settle=""
			fi
		fi
		sleep 0.05
	done
	return 1
}
