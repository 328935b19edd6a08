#!/usr/bin/env bash
# The contract between the mock runner (lua/pgqlua/testing.lua) and the real
# runtime: every fixture in spec/contract/ runs through `pgqlua run --once`
# at log_level trace, and the statements, outcomes, retries, failed events
# and rolled-back batches in its log must be exactly the lines the fixture's
# expectations give -- the lines spec/contract_spec.lua checks the mock
# runner against.  A change to either side that breaks the contract fails
# here or there.
source "$(dirname "$0")/lib.sh"
DIR="$ROOT/spec/contract"
contract() {
	LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$DIR/?.lua;;" lua5.4 "$DIR/contract.lua" "$@"
}
# the local HTTP test server answers the fixtures' pgq.http requests
/usr/bin/python3 "$ROOT/tests/tools/httpd.py" --port-file "$WORK/httpd.port" \
	--lifetime "$(scaled 600)" --parent-pid $$ &
CHILD_PIDS+=("$!")
wait_until 10 test -s "$WORK/httpd.port" || fail "the test HTTP server did not start"
export PGQLUA_TEST_HTTP="http://127.0.0.1:$(cat "$WORK/httpd.port")"
# and the local SMTP test server their pgq.mail.send mails
/usr/bin/python3 "$ROOT/tests/tools/smtpd.py" --port-file "$WORK/smtpd.port" --spool "$WORK/smtpd.spool" \
	--lifetime "$(scaled 600)" --parent-pid $$ &
CHILD_PIDS+=("$!")
wait_until 10 test -s "$WORK/smtpd.port" || fail "the test SMTP server did not start"
export PGQLUA_TEST_SMTP="smtp://127.0.0.1:$(cat "$WORK/smtpd.port")"
names=$(contract list "$DIR")
[ -n "$names" ] || fail "no contract fixtures in $DIR"
for name in $names; do
	q="q_ct_$name" c="c_ct_$name"
	reset_queues "$q"
	if [ -f "$DIR/$name.sql" ]; then
		psql -X -q -v ON_ERROR_STOP=1 -f "$DIR/$name.sql" > /dev/null
	fi
	{
		echo "queue_name: $q"
		echo "consumer_name: $c"
		echo "db: \"host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test\""
		echo "script: $DIR/$name.lua"
		echo "loop_delay: 0.05"
		contract config "$DIR" "$name"
	} > "$WORK/$c.yaml"
	"$PGQLUA" install "$WORK/$c.yaml" > "$WORK/$c.install.out"
	sql "select pgq.set_queue_config('$q', 'ticker_max_lag', '0.05'),
	            pgq.set_queue_config('$q', 'ticker_idle_period', '0.2')" > /dev/null
	contract events "$DIR" "$name" "$q" | psql -X -q -v ON_ERROR_STOP=1 > /dev/null
	wait_until 30 ticked "$q" || fail "$name: the queue never ticked"
	run_once "$c" || true
	if diff=$(contract check "$DIR" "$name" "$WORK/$c.log" 2>&1); then
		ok "contract $name: the runtime logs what the fixture (and the mock runner) says"
	else
		fail "contract $name: $diff"
	fi
done
finish
