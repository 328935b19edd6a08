#!/usr/bin/env bash
# Bad input gets one clear line on stderr and a documented exit code: command
# line, config, script, an unreachable database.  Passwords never show.
source "$(dirname "$0")/lib.sh"
reset_queues q_bad

# expect_fail WHAT CODE REGEX CMD...: exit code, exactly one stderr line matching REGEX
expect_fail() {
	local what=$1 code=$2 re=$3 rc out lines
	shift 3
	set +e
	out=$(timeout "$(scaled 60)" "$@" 2>&1 >/dev/null)
	rc=$?
	set -e
	lines=$(printf '%s\n' "$out" | grep -c . || true)
	if [ "$rc" == "$code" ] && [ "$lines" == 1 ] && [[ "$out" =~ $re ]]; then
		ok "$what (exit $code)"
	else
		fail "$what: expected exit $code and one line matching /$re/, got exit $rc: $out"
	fi
}

DB="host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test"
printf 'function process_event() end\n' > "$WORK/ok.lua"
good="$WORK/good.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s"\nscript: ok.lua\n' "$DB" > "$good"

# ---- command line
expect_fail "no command" 64 '^pgqlua: no command given' "$PGQLUA"
expect_fail "unknown command" 64 '^pgqlua: unknown command "frobnicate"' "$PGQLUA" frobnicate "$good"
expect_fail "unknown option" 64 '^pgqlua: unknown option "--fast"' "$PGQLUA" run --fast "$good"
expect_fail "run without CONFIG" 64 '^pgqlua: run: no CONFIG file given' "$PGQLUA" run --once
expect_fail "failed without an action" 64 '^pgqlua: failed: give an action' "$PGQLUA" failed
expect_fail "failed with a bad action" 64 '^pgqlua: failed: unknown action "redo"' "$PGQLUA" failed redo "$good"
expect_fail "failed retry with a bad id" 64 '^pgqlua: failed: "x1" is not an event id' "$PGQLUA" failed retry "$good" x1
expect_fail "failed delete without ids" 64 '^pgqlua: failed delete: give event ids or "all"' "$PGQLUA" failed delete "$good"
expect_fail "an extra argument to run" 64 '^pgqlua: run: unexpected argument "extra"' "$PGQLUA" run "$good" extra
expect_match "--help lists the commands" "pgqlua run \[--once\] CONFIG.*pgqlua failed list\|retry\|delete" \
	"$("$PGQLUA" --help | tr '\n' ' ')"
expect_match "--version prints the version" "^pgqlua [0-9]+\.[0-9]+\.[0-9]+$" "$("$PGQLUA" --version)"

# ---- config
expect_fail "a missing config file" 66 "^pgqlua: $WORK/none.yaml: cannot read config: No such file or directory$" \
	"$PGQLUA" run "$WORK/none.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s"\nscript: ok.lua\nloop_dely: 1\n' "$DB" > "$WORK/typo.yaml"
expect_fail "an unknown key names file:line:column" 78 "^pgqlua: $WORK/typo.yaml:5:1: unknown key \"loop_dely\"$" \
	"$PGQLUA" run --once "$WORK/typo.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s"\nscript: ok.lua\nmax_retries: many\n' "$DB" > "$WORK/type.yaml"
expect_fail "a wrong type names file:line:column" 78 "^pgqlua: $WORK/type.yaml:5:14: max_retries must be a non-negative integer, not \"many\"$" \
	"$PGQLUA" install "$WORK/type.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\nscript: ok.lua\n' > "$WORK/nodb.yaml"
expect_fail "a missing required key" 78 "^pgqlua: $WORK/nodb.yaml:1:1: missing required key \"db\"$" \
	"$PGQLUA" run "$WORK/nodb.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "${PGQLUA_TEST_UNSET_VAR}"\nscript: ok.lua\n' > "$WORK/env.yaml"
expect_fail "an unset \${VAR}" 78 "^pgqlua: $WORK/env.yaml:3:5: environment variable PGQLUA_TEST_UNSET_VAR is not set$" \
	"$PGQLUA" run "$WORK/env.yaml"
printf 'queue_name: q_bad\n  consumer_name: c_bad\n' > "$WORK/syntax.yaml"
expect_fail "a YAML syntax error" 78 "^pgqlua: $WORK/syntax.yaml:2:16: YAML syntax error" "$PGQLUA" run "$WORK/syntax.yaml"

# ---- script
script_case() {   # NAME CODE REGEX LUA
	printf '%s\n' "$4" > "$WORK/$1.lua"
	printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s"\nscript: %s.lua\n' "$DB" "$1" > "$WORK/$1.yaml"
	expect_fail "$1" "$2" "$3" "$PGQLUA" run --once "$WORK/$1.yaml"
}
script_case syntax_error 65 "^pgqlua: $WORK/syntax_error.lua:2: .*near" $'function process_event(ev)\n  return = 1\nend'
script_case no_process_event 65 "^pgqlua: $WORK/no_process_event.lua: process_event is not defined" 'function process(ev) end'
script_case process_event_not_function 65 "process_event must be a function, not a number" 'process_event = 5'
script_case load_error 65 "^pgqlua: $WORK/load_error.lua:2: attempt to index a nil value" $'local x = nil\nlocal y = x.field\nfunction process_event() end'
script_case init_error 65 "^pgqlua: $WORK/init_error.lua:1: init says no$" $'function init(cfg) error("init says no") end\nfunction process_event() end'
script_case no_io 65 "^pgqlua: $WORK/no_io.lua:1: attempt to index a nil value \(global 'io'\)" $'io.write("x")\nfunction process_event() end'
script_case no_os_exit 65 "attempt to call a nil value \(field 'exit'\)" $'os.exit(3)\nfunction process_event() end'
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s"\nscript: gone.lua\n' "$DB" > "$WORK/gone.yaml"
expect_fail "a script file that does not exist" 65 "^pgqlua: cannot open $WORK/gone.lua" "$PGQLUA" run "$WORK/gone.yaml"

# ---- database: unreachable, refused, and secrets never printed
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "host=127.0.0.1 port=1 user=u password=S3cretPw dbname=x"\nscript: ok.lua\n' > "$WORK/down.yaml"
for cmd in "run --once" "run" "install" "register" "failed list"; do
	# shellcheck disable=SC2086
	expect_fail "unreachable database: $cmd" 69 "^pgqlua: cannot connect to host=127.0.0.1 port=1 dbname=x user=u: .*refused" \
		"$PGQLUA" $cmd "$WORK/down.yaml"
done
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "postgresql://u:S3cretPw@127.0.0.1:1/x"\nscript: ok.lua\n' > "$WORK/uri.yaml"
expect_fail "unreachable database given as a URI" 69 "^pgqlua: cannot connect to host=127.0.0.1 port=1 dbname=x user=u: " \
	"$PGQLUA" run "$WORK/uri.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "host=127.0.0.1 password=S3cretPw oops"\nscript: ok.lua\n' > "$WORK/badci.yaml"
expect_fail "a malformed conninfo" 78 "^pgqlua: $WORK/badci.yaml: db is not a valid libpq conninfo string or URI$" \
	"$PGQLUA" run "$WORK/badci.yaml"
printf 'queue_name: q_bad\nconsumer_name: c_bad\ndb: "%s password=S3cretPw"\nscript: ok.lua\n' "$DB" > "$WORK/pw.yaml"
expect_fail "a queue that does not exist" 69 "^pgqlua: queue q_bad does not exist" "$PGQLUA" run --once "$WORK/pw.yaml"
sql "select pgq.create_queue('q_bad')" > /dev/null
expect_fail "a consumer that is not registered" 69 "^pgqlua: consumer c_bad is not registered on queue q_bad \(run \`pgqlua install CONFIG\` or \`pgqlua register CONFIG\`\)$" \
	"$PGQLUA" run --once "$WORK/pw.yaml"
all_out=$( { for f in down uri badci pw; do "$PGQLUA" run --once "$WORK/$f.yaml"; "$PGQLUA" install "$WORK/$f.yaml"; done; } 2>&1 || true)
if grep -q S3cretPw <<< "$all_out"; then fail "a password appeared in output: $all_out"; else ok "no password in any output"; fi

# options may stand after CONFIG
"$PGQLUA" install "$good" > /dev/null
set +e
"$PGQLUA" run "$good" --once 2> "$WORK/after.log"
rc=$?
set -e
expect_eq "run CONFIG --once works with the option after CONFIG" "0" "$rc"
finish
