#!/usr/bin/env bash
# Every config key the program knows is documented in README.md, and every
# exit code the program can return is in README's table.
source "$(dirname "$0")/lib.sh"
keys=$("$PGQLUA" sample-config | sed -n 's/^#\([a-z_]*\):.*/\1/p')
[ -n "$keys" ] || fail "sample-config printed no keys"
for k in $keys; do
	if grep -q "^| \`$k\` |" "$ROOT/README.md"; then ok "config key $k is documented"; else fail "config key $k is missing from README.md"; fi
done
codes=$(sed -n 's/.*EXIT_[A-Z_]* = \([0-9]*\).*/\1/p' "$ROOT/runtime/cli.h")
for c in $codes; do
	if grep -q "^| $c |" "$ROOT/README.md"; then ok "exit code $c is documented"; else fail "exit code $c is missing from README.md"; fi
done
# the example configs parse and their scripts load: with no database
# reachable the only complaint left is the connection (exit 69)
for f in "$ROOT"/conf/*.yaml; do
	set +e
	out=$(PGHOST=127.0.0.1 PGPORT=1 PGQLUA_DEMO_DB="dbname=x" "$PGQLUA" run --once "$f" 2>&1)
	rc=$?
	set -e
	expect_eq "$(basename "$f") loads (config and script); only the database is missing: $out" "69" "$rc"
done
finish
