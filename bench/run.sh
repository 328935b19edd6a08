#!/usr/bin/env bash
# run.sh - pgqlua against the PgQ protocol floor and the Skytools Python
# consumer: the same N events (default 200000) in batches of 100, 1000 and
# 10000, on a cluster with fsync off and on a durable one, median of 3
# interleaved runs, peak RSS, and callgrind instructions per event.
# Prints a table and writes bench/results/latest.json.  See README
# "Benchmarks".
#
#   bench/run.sh [N]
#
# Needs (installs nothing itself): the packages of tests/tools/demo.sh plus
#   apt-get install python3-pgq python3-skytools python3-psycopg2 valgrind time
# Environment:
#   PGQLUA=path      the pgqlua binary (default: build it into build-bench/)
#   BENCH_SIZES=...  batch sizes, comma separated (100,1000,10000)
#   BENCH_RUNNERS=... a subset of the runners, comma separated (all)
#   BENCH_REPS=3     repetitions per runner
#   BENCH_FETCH=1000 pgqlua fetch_size and Python pgq_lazy_fetch
#   BENCH_CG_N=50000 events for the callgrind runs (0: skip callgrind)
#   BENCH_CLUSTERS="fast durable"   which clusters to use
#   BENCH_OUT=path   results file (bench/results/latest.json)
#   BENCH_BASE=path  another pgqlua binary (an older build) run as base_noop,
#                    interleaved with the others: pgqlua_noop / base_noop
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-200000}
PGTMP=$ROOT/tests/tools/pgtmp.sh
WORK=${BENCH_WORK:-/tmp/pgqlua-bench}
OUT=${BENCH_OUT:-$ROOT/bench/results/latest.json}
CLUSTERS=${BENCH_CLUSTERS:-fast durable}

for mod in pgq skytools psycopg2; do
	/usr/bin/python3 -c "import $mod" 2> /dev/null \
		|| { echo "run.sh: /usr/bin/python3 cannot import $mod: apt-get install python3-pgq python3-skytools python3-psycopg2" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "run.sh: /usr/bin/time missing: apt-get install time" >&2; exit 1; }
if [[ ${BENCH_CG_N:-50000} != 0 ]] && ! command -v valgrind > /dev/null; then
	echo "run.sh: valgrind missing: apt-get install valgrind (or BENCH_CG_N=0)" >&2
	exit 1
fi

if [[ -z ${PGQLUA:-} ]]; then
	cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	cmake --build "$ROOT/build-bench" -j"$(nproc)" > /dev/null
	PGQLUA=$ROOT/build-bench/pgqlua
fi
mkdir -p "$WORK"
cc -O2 -Wall -o "$WORK/floor" "$ROOT/bench/floor.c" $(pkg-config --cflags --libs libpq)

started=()
cleanup() {
	local d
	for d in "${started[@]}"; do "$PGTMP" stop "$d" > /dev/null 2>&1 || true; done
}
trap cleanup EXIT

args=()
for name in $CLUSTERS; do
	dir=/tmp/bench-pg-$name
	"$PGTMP" stop "$dir" > /dev/null 2>&1 || true
	"$PGTMP" start "$dir" > /dev/null
	started+=("$dir")
	# shellcheck disable=SC1091
	source "$dir/env"
	case $name in
	fast) settings="fsync=off synchronous_commit=off full_page_writes=off" ;;
	durable)
		settings="fsync=on synchronous_commit=on full_page_writes=on"
		# postgresql.auto.conf is read after pgtmp.conf: it wins
		psql -X -q -v ON_ERROR_STOP=1 -d postgres \
			-c "alter system set fsync = on" \
			-c "alter system set synchronous_commit = on" \
			-c "alter system set full_page_writes = on"
		"$PGTMP" restart-pg "$dir" > /dev/null
		[[ $(psql -X -A -t -d postgres -c "show fsync") == on ]] || { echo "run.sh: fsync is not on in $dir" >&2; exit 1; }
		;;
	*) echo "run.sh: unknown cluster $name (fast, durable)" >&2; exit 64 ;;
	esac
	args+=(--cluster "$name=$dir/env=$settings")
done

/usr/bin/python3 "$ROOT/bench/bench.py" "${args[@]}" --n "$N" \
	--sizes "${BENCH_SIZES:-100,1000,10000}" --reps "${BENCH_REPS:-3}" \
	--fetch "${BENCH_FETCH:-1000}" --cg-n "${BENCH_CG_N:-50000}" \
	${BENCH_RUNNERS:+--runners "$BENCH_RUNNERS"} ${BENCH_BASE:+--base "$BENCH_BASE"} \
	--pgqlua "$PGQLUA" --floor "$WORK/floor" --work "$WORK" --out "$OUT"
