#!/usr/bin/env bash
# run-fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS [libFuzzer options...]
#
# Runs one libFuzzer target for a bounded time on a copy of the corpus in
# the build tree: WORK_DIR/corpus starts as a copy of SEED_DIR (the repo's
# corpus, never written) and receives what the run finds; a crashing input
# goes to WORK_DIR/artifacts/.  Exit status: the fuzzer's (0: no finding).
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3 secs=$4
shift 4

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp -R "$seeds/." "$work/corpus/"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
"$fuzzer" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$work/artifacts/" -print_final_stats=1 "$@" "$work/corpus" \
	> "$work/fuzz.log" 2>&1 || status=$?

# the last status line (coverage, features, corpus, exec/s) and the stats
grep -E '^#[0-9]+' "$work/fuzz.log" | tail -n 1 || true
grep -E '^stat::' "$work/fuzz.log" || true
if ((status != 0)); then
	tail -n 80 "$work/fuzz.log"
	for a in "$work"/artifacts/*; do
		[[ -e $a ]] || continue
		echo "finding: $a (replay: $fuzzer $a)"
	done
	exit "$status"
fi
echo "$(basename "$fuzzer"): no finding in ${secs}s; new corpus in $work/corpus, log in $work/fuzz.log"
