#!/usr/bin/env bash
# The README's demo runs end to end with this build: events from the
# logutriga trigger and plain events flow through scripts/audit_rows.lua.
source "$(dirname "$0")/lib.sh"
set +e
out=$(PGQLUA_SKIP_APT=1 PGQLUA_BIN="$PGQLUA" PGQLUA_DEMO_DIR="$WORK/demo" "$ROOT/tests/tools/demo.sh" 2>&1)
rc=$?
set -e
expect_eq "the demo exits 0" "0" "$rc"
expect_match "the demo reports every event audited or failed" \
	"demo OK: 10 events -> 9 audited, 1 failed" "$out"
[ "$rc" == 0 ] || echo "$out" | tail -n 60
finish
