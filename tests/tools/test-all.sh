#!/usr/bin/env bash
# test-all.sh - every test of pgqlua, from a fresh Debian bookworm machine:
# installs the packages (apt-get, skipped when present), builds with
# warnings as errors, runs ctest (C unit tests, busted specs, luacheck, the
# embedding example and the integration tests against a throwaway PostgreSQL
# with pgq and pgqd that ctest starts and stops), then builds again with
# AddressSanitizer and UndefinedBehaviorSanitizer and runs the suite again.
#
#   tests/tools/test-all.sh            # what CI runs (.ci/run)
#   PGQLUA_SKIP_APT=1 ...              # do not touch packages
#   PGQLUA_SKIP_SANITIZE=1 ...         # one build only
#   PGQLUA_SKIP_FUZZ=1 ...             # no libFuzzer step (tests/fuzz/README.md)
#   PGQLUA_TEST_TIME_SCALE=2 ...       # every deadline of the tests times 2
#                                      # (default 1; the sanitizer pass triples it)
#   PGQLUA_TEST_BUSY=2 ...             # that many CPU-bound busy loops run beside
#                                      # the suite: it must not need an idle machine
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PACKAGES=(cmake pkg-config gcc libc6-dev make libpq-dev liblua5.4-dev lua5.4 libyaml-dev libmicrohttpd-dev libcurl4-openssl-dev
          lua-busted lua-check lua-dkjson lua-lpeg postgresql-15 postgresql-client-15
          postgresql-15-pgq3 pgqd valgrind procps lua-yaml
          mandoc lintian dpkg-dev file binutils   # t_install: the man page, the package
          prometheus curl                        # t_metrics: promtool, scrapes
          clang libclang-rt-14-dev)   # the fuzz step: clang-14 and its libclang_rt.fuzzer

if [[ ${PGQLUA_SKIP_APT:-0} != 1 ]]; then
	missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		echo "==> installing: ${missing[*]}"
		sudo_cmd=()
		[[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
		"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
		"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
fi

jobs=$(nproc 2>/dev/null || echo 2)

TIME_SCALE=${PGQLUA_TEST_TIME_SCALE:-1}
export PGQLUA_TEST_TIME_SCALE=$TIME_SCALE

busy_pids=()
fuzz_pid=
stop_busy() {
	[[ -n $fuzz_pid ]] && kill -- -"$fuzz_pid" 2>/dev/null
	((${#busy_pids[@]})) && kill "${busy_pids[@]}" 2>/dev/null
	busy_pids=()
	return 0
}
trap stop_busy EXIT
if [[ ${PGQLUA_TEST_BUSY:-0} -gt 0 ]]; then
	echo "==> $PGQLUA_TEST_BUSY busy loops beside the suite"
	for ((i = 0; i < PGQLUA_TEST_BUSY; i++)); do
		bash -c 'while :; do :; done' &
		busy_pids+=($!)
	done
fi

run_suite() {   # BUILD_DIR CMAKE_ARGS...
	local dir=$1
	shift
	echo "==> build $dir"
	cmake -S . -B "$dir" -DPGQLUA_WERROR=ON -DPGQLUA_FAULT_INJECTION=ON "$@" > "$dir.cmake.log" 2>&1 || { cat "$dir.cmake.log"; return 1; }
	cmake --build "$dir" -j"$jobs"
	echo "==> ctest in $dir"
	# shellcheck disable=SC2086
	(cd "$dir" && ctest --output-on-failure --timeout 1800 ${CTEST_ARGS:-})
}

mkdir -p build-ci
if [[ ${PGQLUA_SKIP_SANITIZE:-0} != 1 ]]; then
	mkdir -p build-asan
	# leaks are checked by valgrind (the valgrind_* tests); ASan checks access
	# the 1M-event memory test measures RSS: meaningless under ASan
	PGQLUA_TEST_TIME_SCALE=$(awk -v k="$TIME_SCALE" 'BEGIN { print k * 3 }') \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	CTEST_ARGS="-E bigbatch" run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DPGQLUA_SANITIZE=ON
fi
if [[ ${PGQLUA_SKIP_FUZZ:-0} != 1 ]]; then
	# libFuzzer on the config parser and the payload decoders, clang only,
	# PGQLUA_FUZZ_SECONDS (30) each in parallel on a copy of tests/fuzz/corpus;
	# beside the plain pass (mostly waiting on PostgreSQL), in its own
	# process group so that an early exit stops it
	echo "==> fuzz in build-fuzz, beside the plain pass (output: build-fuzz.log)"
	set -m
	(
		CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGQLUA_FUZZ=ON \
			&& cmake --build build-fuzz -j"$jobs" --target fuzz_config fuzz_payload \
			&& cd build-fuzz && ctest -R '^fuzz_' -j2 --output-on-failure
	) > build-fuzz.log 2>&1 &
	fuzz_pid=$!
	set +m
fi
run_suite build-ci -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ -n $fuzz_pid ]]; then
	echo "==> fuzz in build-fuzz"
	fuzz_rc=0
	wait "$fuzz_pid" || fuzz_rc=$?
	fuzz_pid=
	tail -n 25 build-fuzz.log
	((fuzz_rc == 0)) || { echo "==> fuzz failed (exit $fuzz_rc): build-fuzz.log"; cat build-fuzz.log; exit 1; }
fi
