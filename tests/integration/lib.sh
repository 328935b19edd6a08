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

# PGQLUA_TEST_TIME_SCALE (default 1) multiplies every deadline of the tests:
# the sanitizer and valgrind passes set it higher, and so may a busy machine.
TIME_SCALE=${PGQLUA_TEST_TIME_SCALE:-1}
if [ "${PGQLUA_VALGRIND:-0}" == 1 ]; then   # memcheck runs the consumer ~20x slower
	TIME_SCALE=$(awk -v k="$TIME_SCALE" 'BEGIN { print k * 4 }')
fi
# scaled SECONDS: SECONDS times the time scale, rounded up to whole seconds
scaled() { awk -v s="$1" -v k="$TIME_SCALE" 'BEGIN { v = s * k; printf "%d", (v == int(v)) ? v : int(v) + 1 }'; }
# scaledf SECONDS: the same, not rounded (for limits a test gives the runtime)
scaledf() { awk -v s="$1" -v k="$TIME_SCALE" 'BEGIN { print s * k }'; }

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
	local deadline=$((SECONDS + $(scaled "${4:-30}"))) got=""
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
	local deadline=$((SECONDS + $(scaled "$1")))
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

# tick_target QUEUE: prints the id of the queue's last tick once that tick
# covers every event inserted so far; fails (prints nothing) until then.
# A fixed target: ticks taken later do not move it.
tick_target() {
	local t
	t=$(sql "select last_tick_id from pgq.get_queue_info('$1') where public.pgqlua_test_ticked('$1')")
	[ -n "$t" ] && echo "$t"
}

# consumer_state QUEUE CONSUMER TARGET: "done" when CONSUMER has finished tick
# TARGET (or a later one), holds no open batch and has nothing of its own
# waiting: neither in the retry queue nor moved back into the queue beyond
# its last tick; "retry" when such a retried event waits (it comes back only
# through pgqd and a later tick, so the target has to be taken again);
# "behind" otherwise.
consumer_state() {
	sql "select case
	        when exists (select 1 from pgq.retry_queue r join pgq.subscription s on s.sub_id = r.ev_owner
	                     join pgq.consumer co on co.co_id = s.sub_consumer
	                     join pgq.queue qu on qu.queue_id = s.sub_queue
	                     where co.co_name = '$2' and qu.queue_name = '$1')
	             or public.pgqlua_test_owned_pending('$1', '$2') then 'retry'
	        when c.last_tick >= $3 and c.current_batch is null then 'done'
	        else 'behind' end
	     from pgq.get_consumer_info('$1', '$2') c"
}

# drained QUEUE CONSUMER TARGET: CONSUMER has passed tick TARGET with nothing
# of its own left waiting.
drained() {
	[ "$(consumer_state "$1" "$2" "$3")" == done ]
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

# await_drained QUEUE CONSUMER SECONDS [STEP...]: until CONSUMER has consumed
# every event inserted before the call (and every event it retried since),
# run STEP (if any) and poll.  The target is the first tick that covers the
# last insert; a retried event waiting for pgqd takes a new target once it
# is back in the queue and ticked.  Never "equal to the latest tick", which
# moves on while pgqd keeps ticking.
await_drained() {
	local q=$1 c=$2 deadline=$((SECONDS + $(scaled "$3"))) target=""
	shift 3
	while [ $SECONDS -lt "$deadline" ]; do
		[ -n "$target" ] || target=$(tick_target "$q") || target=""
		if [ -n "$target" ]; then
			if (($#)); then "$@" || true; fi
			case $(consumer_state "$q" "$c" "$target") in
			done) return 0 ;;
			retry) target="" ;;
			esac
		fi
		sleep 0.05
	done
	return 1
}

# drain QUEUE CONSUMER [SECONDS]: run --once until every event inserted so
# far (retries too) is consumed.
drain() {
	await_drained "$1" "$2" "${3:-60}" run_once "$2"
}

# wait_drained QUEUE CONSUMER [SECONDS]: the same for a consumer that runs as
# a daemon.
wait_drained() {
	await_drained "$1" "$2" "${3:-60}"
}
