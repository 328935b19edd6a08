#!/usr/bin/env bash
# Out of memory is exit 70 and an endless config is not read until memory
# runs out; config errors name the key and the ${VAR} written, never the
# value it expanded to (it may be a secret put in the wrong key).
source "$(dirname "$0")/lib.sh"

set +e
out=$("$PGQLUA" run /dev/zero 2>&1); rc=$?
set -e
expect_eq "pgqlua run /dev/zero: exit 78" "78" "$rc"
expect_eq "with one clear line" "pgqlua: /dev/zero: config file is larger than 1024 kB: refused" "$out"

cat > "$WORK/ok.lua" <<< 'function process_event() end'
for key in fetch_size log_level loop_delay wakeup remote_mode lua_memory_limit; do
	cat > "$WORK/secret.yaml" <<EOF
queue_name: q
consumer_name: c
db: "dbname=x"
script: ok.lua
$key: "\${PGQLUA_TEST_SECRET}"
EOF
	set +e
	out=$(PGQLUA_TEST_SECRET='hunter2 p@ss' "$PGQLUA" run --once "$WORK/secret.yaml" 2>&1); rc=$?
	set -e
	expect_match "$key from \${VAR} with a wrong value: exit 78, the key and the \${VAR} named" \
		"^78:pgqlua: $WORK/secret.yaml:5:[0-9]+: $key must be .*; \"\\\$\{PGQLUA_TEST_SECRET\}\" expands to something else \(value not shown\)\$" "$rc:$out"
	if [[ "$out" == *hunter2* ]]; then fail "$key: the expanded value is shown"; else ok "$key: the expanded value is not shown"; fi
done

# a script that needs more memory than the process may have: exit 70
cat > "$WORK/hog.lua" <<< 'local s = "x" while true do s = s .. s end
function process_event() end'
cat > "$WORK/hog.yaml" <<EOF
queue_name: q
consumer_name: c
db: "dbname=x"
script: hog.lua
EOF
# the whole of ldd's output first: grep -q quitting early would make ldd
# die of SIGPIPE, and pipefail would turn a match into a miss
libs=$(ldd "$PGQLUA" 2>/dev/null || true)
if [[ $libs == *libasan* || $libs == *libubsan* ]]; then
	ok "# skip out of memory under ulimit -v: a sanitizer build reserves more address space than that"
else
	set +e
	out=$(ulimit -v 400000; "$PGQLUA" run --once "$WORK/hog.yaml" 2>&1); rc=$?
	set -e
	expect_eq "out of memory while loading the script: exit 70" "70" "$rc"
	expect_eq "with one line saying so" "pgqlua: out of memory loading the script $WORK/hog.lua" "$out"
fi
finish
