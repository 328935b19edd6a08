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
finish
