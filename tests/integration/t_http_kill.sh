#!/usr/bin/env bash
# SIGKILL while pgq.http.send requests are in flight: a consumer works
# through 5,000 events, each one posting to the local test server
# (tests/tools/httpd.py) and every other one writing a row (db:send), and
# is killed once it has posted a random part of each slice, at least ten
# times, restarted after each kill.  In the end every
# event's row is there exactly once (the batch's transaction), every event
# reached the server, and the server saw exactly one distinct
# Idempotency-Key per event however often a killed batch's requests were
# made again.  The queue is fed in slices, one per kill, and each kill
# waits for the consumer's posts, so the number of kills never depends on
# how fast the machine is.
source "$(dirname "$0")/lib.sh"
reset_queues q_hkill
KILLS=${PGQLUA_HTTP_KILLS:-10}
SLICE=${PGQLUA_HTTP_KILL_SLICE:-500}   # events fed before each kill (100 a transaction)
N=$((KILLS * SLICE))

/usr/bin/python3 "$ROOT/tests/tools/httpd.py" --port-file "$WORK/httpd.port" \
	--lifetime "$(scaled 600)" --parent-pid $$ --nodelay &
CHILD_PIDS+=("$!")
wait_until 10 test -s "$WORK/httpd.port" || { fail "the test HTTP server did not start"; finish; }
BASE="http://127.0.0.1:$(cat "$WORK/httpd.port")"
stats() { /usr/bin/python3 -c "import json,sys,urllib.request; d=json.load(urllib.request.urlopen('$BASE/stats')); print(eval(sys.argv[1]))" "$1"; }

sql "drop table if exists r_hkill; create table r_hkill (ev_id bigint)"
# one event in two writes (it waits for its own response at its end); the
# others' posts overlap, up to http_concurrency in flight
new_consumer q_hkill c_hkill "
local URL = '$BASE/slow?ms=2'
function process_event(ev, db)
  if ev.id % 2 == 0 then db:send('insert into r_hkill values (\$1)', ev.id) end
  pgq.http.send{ url = URL, json = { id = ev.id } }
end" "log_level: info
fetch_size: 100"
count() { sql "select count(*) from r_hkill"; }
posts() { stats "d['paths'].get('/slow', 0)"; }
# sending: the consumer has posted since the slice was fed
sending() { [ "$(posts)" -gt "$1" ]; }
kills=0 mid=0
for i in $(seq 1 "$KILLS"); do
	sql "do \$\$ begin for i in 1 .. $((SLICE / 100)) loop
	       perform pgq.insert_event('q_hkill', 'x', 'e' || g) from generate_series(1, 100) g; commit;
	     end loop; end \$\$" > /dev/null
	before=$(count) sent=$(posts)
	"$PGQLUA" run "$WORK/c_hkill.yaml" >> "$WORK/c_hkill.log" 2>&1 &
	pid=$!
	# kill once it has posted a random part of the slice
	wait_until 60 sending "$((sent + 20 + RANDOM % (SLICE - 100)))" || fail "kill $i: the consumer never posted"
	[ "$(count)" -lt "$((before + SLICE / 2))" ] && mid=$((mid + 1))
	kill -9 "$pid" && kills=$((kills + 1))
	wait "$pid" 2>/dev/null || true
done
drain q_hkill c_hkill 120 || fail "q_hkill did not drain after the kills"
requests=$(posts)
echo "# $N events, $kills kills ($mid before the consumer had applied half its slice), $requests requests"
expect_eq "every one of the $KILLS SIGKILLs hit a running consumer" "$KILLS" "$kills"
expect_eq "after $kills SIGKILLs every one of the $((N / 2)) writing events was applied exactly once" \
	"$((N / 2))|$((N / 2))" \
	"$(sql "select count(*), count(distinct ev_id) from r_hkill")"
expect_eq "the server saw one distinct Idempotency-Key per event" "$N" "$(stats "d['keys']")"
expect_eq "and every request it received carried one" "0" "$(stats "d['no_key']")"
if [ "$requests" -ge "$N" ]; then
	ok "every event was posted at least once ($((requests - N)) posts made again after a kill)"
else
	fail "only $requests posts for $N events"
fi
expect_eq "nothing went to the failed-event table" "0" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_hkill'")"
finish
