#!/usr/bin/env bash
# pgq.http against the local test server (tests/tools/httpd.py): what a
# request sends (JSON body, Idempotency-Key) and gets back, each outcome
# end to end (200, a 500 retried, a 404 in `failed list`, a timeout, a
# reset, a body over http_max_body), URLs in errors without secrets,
# event_timeout and a stop at once ending a hanging request, connections
# reused across events and batches, and scripts/webhooks.lua posting order
# rows.
source "$(dirname "$0")/lib.sh"

/usr/bin/python3 "$ROOT/tests/tools/httpd.py" --port-file "$WORK/httpd.port" \
	--lifetime "$(scaled 300)" --parent-pid $$ &
CHILD_PIDS+=("$!")
wait_until 10 test -s "$WORK/httpd.port" || { fail "the test HTTP server did not start"; finish; }
BASE="http://127.0.0.1:$(cat "$WORK/httpd.port")"
stats() { /usr/bin/python3 -c "import json,sys,urllib.request; d=json.load(urllib.request.urlopen('$BASE/stats')); print(eval(sys.argv[1]))" "$1"; }

reset_queues q_http q_http_err q_http_reuse q_http_stop q_http_send q_http_many
sql "drop table if exists h_res cascade;
     create table h_res (ev_id bigint, data text, status int, body text, ctype text);"

# ---- outcomes: the script maps statuses to results; errors raise
new_consumer q_http c_http "
local BASE = '$BASE'
function process_event(ev, db)
  local res = pgq.http.request{ url = BASE .. ev.data, json = { id = ev.id, n = pgq.null }, timeout = 5 }
  if res.status >= 500 then return pgq.EVENT_RETRY, 0 end
  if res.status == 429 then return pgq.EVENT_RETRY, tonumber(res.headers['retry-after']) end
  if res.status >= 400 then return pgq.EVENT_FAILED, res.status .. ' ' .. res.body end
  db:exec('insert into h_res values (\$1, \$2, \$3, \$4, \$5)', ev.id, ev.data, res.status, res.body,
          res.headers['content-type'])
end" "max_retries: 3"
sql "select pgq.insert_event('q_http', 'x', d) from unnest(array['/echo', '/flaky/a', '/status/404',
                                                                  '/flaky/b?status=429&retry_after=2', '/slow?ms=300']) d" > /dev/null
drain q_http c_http || fail "q_http did not drain"
echo_id=$(sql "select ev_id from h_res where data = '/echo'")
expect_eq "a 200 comes back with status, lower-case headers and body" "200|application/json" \
	"$(sql "select status, ctype from h_res where data = '/echo'")"
expect_eq "json is sent as a POST with Content-Type application/json, pgq.null as null" \
	"POST|application/json|t" \
	"$(sql "select b->>'method', b->'headers'->>'content-type', (b->>'body')::jsonb = '{\"id\": $echo_id, \"n\": null}'
	        from (select body::json b from h_res where data = '/echo') x")"
expect_eq "each request carries Idempotency-Key: queue/consumer/event id" "q_http/c_http/$echo_id" \
	"$(sql "select body::json->'headers'->>'idempotency-key' from h_res where data = '/echo'")"
expect_eq "a 500 is retried and the event is applied once after the 200" "1|ok" \
	"$(sql "select count(*), max(body) from h_res where data = '/flaky/a'")"
expect_eq "the server saw the 500 and the retry" "2" "$(stats "d['paths']['/flaky/a']")"
expect_eq "a 429 is retried after its Retry-After, then applied once" "1|ok" \
	"$(sql "select count(*), max(body) from h_res where data like '/flaky/b%'")"
expect_match "the retry waited Retry-After's seconds" "retry 1 in 2s" "$(cat "$WORK/c_http.log")"
expect_eq "a slow answer within the timeout is a response" "slow" \
	"$(sql "select body from h_res where data = '/slow?ms=300'")"
failed=$("$PGQLUA" failed list "$WORK/c_http.yaml")
expect_match "a 404 is in failed list with its reason" "404 status 404" "$failed"

# ---- transport errors: the event is an error naming the URL without secrets
new_consumer q_http_err c_http_err "
local BASE = '$BASE'
function process_event(ev, db)
  local url = BASE:gsub('^http://', 'http://user:secret@') .. ev.data
  pgq.http.request{ url = url, timeout = tonumber(ev.type) }
end" "max_retries: 0
http_max_body: 1kB
event_timeout: 1"
sql "select pgq.insert_event('q_http_err', t, d) from (values ('0.3', '/hang?token=abc'), ('5', '/reset'),
                                                        ('5', '/big?bytes=5000'), ('30', '/hang')) v(t, d)" > /dev/null
drain q_http_err c_http_err || fail "q_http_err did not drain"
reason() { sql "select reason from pgqlua.failed_event where queue_name = 'q_http_err' and ev_data = '$1'"; }
r=$(reason '/hang?token=abc')
expect_match "a timeout fails with libcurl's reason and the URL" \
	"c_http_err.lua:5: pgq.http.request: GET http://127.0.0.1:[0-9]+/hang: Timeout was reached \(after 0.3 seconds\)$" "$r"
expect_match "the URL in the error has no user, password or query" "^[^@?]*$" "$r"
expect_match "a reset mid-body is an error" "pgq.http.request: GET http://127.0.0.1:[0-9]+/reset: " "$(reason /reset)"
expect_match "a body over http_max_body is an error" \
	"/big: the response body is larger than http_max_body \(1024 bytes\)" "$(reason '/big?bytes=5000')"
expect_match "event_timeout ends a request that hangs longer" \
	"event_timeout exceeded: the script ran for more than 1 seconds" "$(reason /hang)"

# ---- connections are reused across events and batches
before=$(stats "d['connections']")
keys_before=$(stats "d['keys']")
new_consumer q_http_reuse c_http_reuse "
local BASE = '$BASE'
function process_event(ev, db)
  local res = pgq.http.request{ url = BASE .. '/ok' }
  assert(res.status == 200)
end" "log_level: info"
"$PGQLUA" run "$WORK/c_http_reuse.yaml" >> "$WORK/c_http_reuse.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
for i in 1 2 3 4 5; do
	sql "select pgq.insert_event('q_http_reuse', 'x', g::text) from generate_series(1, 40) g" > /dev/null
	wait_drained q_http_reuse c_http_reuse 60 || fail "q_http_reuse did not drain ($i)"
done
kill -TERM "$pid"; wait "$pid" || true
conns=$(($(stats "d['connections']") - before))
reqs=$(stats "d['paths']['/ok']")
batches=$(sql "select count(*) > 1 from pgq.get_consumer_info('q_http_reuse', 'c_http_reuse')")
expect_eq "200 events were requested" "200" "$reqs"
expect_eq "with 200 distinct Idempotency-Keys" "200" "$(($(stats "d['keys']") - keys_before))"
if [ "$conns" -ge 1 ] && [ $((reqs / conns)) -ge 100 ]; then
	ok "connections are kept and reused across events and batches ($reqs requests on $conns connections)"
else
	fail "connections are not reused: $reqs requests on $conns connections"
fi

# ---- pgq.http.send: responses fold into the event's outcome
sql "drop table if exists h_send; create table h_send (ev_id bigint, data text, retry int)"
new_consumer q_http_send c_http_send "
local BASE = '$BASE'
function process_event(ev, db)
  if ev.type == 'write' then
    db:exec('insert into h_send values (\$1, \$2, \$3)', ev.id, ev.data, ev.retry)
  end
  if ev.type == 'decide' then
    pgq.http.send({ url = BASE .. ev.data, body = 'x' }, function(res)
      if res.status == 500 then return pgq.EVENT_FAILED, 'on_response: ' .. res.body end
    end)
  else
    pgq.http.send{ url = BASE .. ev.data, json = { id = ev.id } }
  end
end" "max_retries: 3
log_level: debug"
sql "select pgq.insert_event('q_http_send', t, d) from (values ('plain', '/ok'), ('plain', '/status/404'),
       ('plain', '/flaky/s?status=503&retry_after=1'), ('write', '/status/404'), ('write', '/ok'),
       ('decide', '/status/500')) v(t, d)" > /dev/null
drain q_http_send c_http_send || fail "q_http_send did not drain"
sreason() { sql "select reason from pgqlua.failed_event where queue_name = 'q_http_send' and ev_type = '$1' and ev_data = '$2'"; }
expect_match "a sent 404 fails the event with the status and the body" \
	"^pgq.http.send: POST http://127.0.0.1:[0-9]+/status/404: status 404: status 404$" "$(sreason plain /status/404)"
expect_eq "a sent 503 retries the event (Retry-After) until the 200" "2" "$(stats "d['paths']['/flaky/s']")"
expect_match "the retry took Retry-After's delay" "retry 1 in 1s: pgq.http.send: POST http://127.0.0.1:[0-9]+/flaky/s: status 503" \
	"$(cat "$WORK/c_http_send.log")"
expect_eq "an event whose send failed has its own writes undone; one whose send succeeded keeps them" "/ok" \
	"$(sql "select string_agg(data, ',') from h_send")"
expect_match "the failed write event is in the failed-event table too" "status 404" "$(sreason write /status/404)"
expect_eq "on_response decides instead of the status" "on_response: status 500" "$(sreason decide /status/500)"
expect_eq "no other event failed" "3" "$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_http_send'")"

# ---- many sends in flight at once, at most http_concurrency connections
before=$(stats "d['connections']")
slow_before=$(stats "d['paths'].get('/slow', 0)")
new_consumer q_http_many c_http_many "
local BASE = '$BASE'
function process_event(ev, db)
  pgq.http.send{ url = BASE .. '/slow?ms=20', json = { id = ev.id } }
end" "http_concurrency: 8
log_level: info"
sql "select pgq.insert_event('q_http_many', 'x', g::text) from generate_series(1, 400) g" > /dev/null
wait_until 30 ticked q_http_many || fail "q_http_many never ticked"
run_once c_http_many || fail "run --once failed"
drain q_http_many c_http_many || fail "q_http_many did not drain"
expect_eq "every event was sent once" "400" "$(($(stats "d['paths']['/slow']") - slow_before))"
conns=$(($(stats "d['connections']") - before))
# http_concurrency connections, give or take one the server or libcurl closed
if [ "$conns" -le 10 ]; then ok "about http_concurrency connections, reused ($conns for 400 requests)"; \
	else fail "$conns connections for 400 requests at http_concurrency 8"; fi
expect_eq "none failed" "0" "$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_http_many'")"

# ---- scripts/webhooks.lua: each order row change from pgq.jsontriga posted, a 500 retried
reset_queues q_http_wh
new_consumer q_http_wh c_http_wh "function process_event() end" "env_allow: [WEBHOOK_URL]
retry_delay: 0.2"
sed -i "s|^script: .*|script: $ROOT/scripts/webhooks.lua|" "$WORK/c_http_wh.yaml"
sql "drop table if exists orders cascade;
     create table orders (id int primary key, customer_id int, amount numeric);
     create trigger wh after insert or update or delete on orders
       for each row execute procedure pgq.jsontriga('q_http_wh');
     insert into orders values (1, 7, 12.50), (2, 8, 3);
     update orders set amount = 4 where id = 2;
     delete from orders where id = 1;" > /dev/null
keys_before=$(stats "d['keys']")
WEBHOOK_URL="$BASE/flaky/wh?fail=1" drain q_http_wh c_http_wh || fail "q_http_wh did not drain"
expect_eq "webhooks.lua posts every change, the one answered 500 again" "5" "$(stats "d['paths']['/flaky/wh']")"
expect_eq "each change under its own Idempotency-Key" "4" "$(($(stats "d['keys']") - keys_before))"
expect_eq "every change delivered, none failed" "0" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_http_wh'")"
expect_match "the retried post waited for its retry" "retry 1 in 0.2s: pgq.http.send: POST http://127.0.0.1:[0-9]+/flaky/wh: status 500" \
	"$(cat "$WORK/c_http_wh.log")"

# ---- TLS: a server whose certificate a test CA signed, trusted through http_ca_file
tls="$WORK/tls"
mkdir -p "$tls"
{
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 2 \
		-subj "/CN=pgqlua test CA"
	openssl req -newkey rsa:2048 -nodes -keyout "$tls/srv.key" -out "$tls/srv.csr" -subj "/CN=127.0.0.1"
	printf 'subjectAltName=IP:127.0.0.1\n' > "$tls/ext"
	openssl x509 -req -in "$tls/srv.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
		-out "$tls/srv.pem" -days 2 -extfile "$tls/ext"
} > "$tls/openssl.out" 2>&1 || fail "openssl could not make the test certificates: $(cat "$tls/openssl.out")"
/usr/bin/python3 "$ROOT/tests/tools/httpd.py" --port-file "$WORK/httpsd.port" --lifetime "$(scaled 300)" \
	--parent-pid $$ --tls-cert "$tls/srv.pem" --tls-key "$tls/srv.key" &
CHILD_PIDS+=("$!")
wait_until 10 test -s "$WORK/httpsd.port" || fail "the test HTTPS server did not start"
TLS_BASE="https://127.0.0.1:$(cat "$WORK/httpsd.port")"
for trust in ca none; do
	extra="max_retries: 0"
	[ "$trust" == ca ] && extra="$extra
http_ca_file: tls/ca.pem"
	reset_queues "q_http_tls_$trust"
	new_consumer "q_http_tls_$trust" "c_http_tls_$trust" "
function process_event(ev, db)
  local res = pgq.http.request{ url = '$TLS_BASE/ok', timeout = 10 }
  db:exec('insert into h_res values (\$1, \$2, \$3, \$4)', ev.id, '$trust', res.status, res.body)
end" "$extra"
	sql "select pgq.insert_event('q_http_tls_$trust', 'x', 'tls')" > /dev/null
	drain "q_http_tls_$trust" "c_http_tls_$trust" || fail "q_http_tls_$trust did not drain"
done
expect_eq "https with a certificate from the CA in http_ca_file works" "200|ok" \
	"$(sql "select status, body from h_res where data = 'ca'")"
expect_match "an untrusted certificate fails with a clear error" \
	"pgq.http.request: GET https://127.0.0.1:[0-9]+/ok: (SSL peer certificate|Peer certificate cannot be authenticated).*" \
	"$(sql "select reason from pgqlua.failed_event where queue_name = 'q_http_tls_none'")"

# ---- a stop at once (a second signal) ends a hanging request, well within kill_grace
new_consumer q_http_stop c_http_stop "
function process_event(ev, db)
  pgq.http.request{ url = '$BASE/hang', timeout = 600 }
end" "kill_grace: $(scaled 60)
log_level: info"
sql "select pgq.insert_event('q_http_stop', 'x', 'hang')" > /dev/null
hanging_before=$(stats "d['paths'].get('/hang', 0)")
"$PGQLUA" run "$WORK/c_http_stop.yaml" >> "$WORK/c_http_stop.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
hanging() { [ "$(stats "d['paths'].get('/hang', 0)")" -gt "$hanging_before" ]; }
wait_until 30 hanging || fail "the request never reached the server"
kill -TERM "$pid"
kill -INT "$pid"
gone() { ! kill -0 "$pid" 2>/dev/null; }
if wait_until 20 gone; then
	ok "a second stop signal ends a waiting request (not the parent's SIGKILL after kill_grace)"
else
	fail "the consumer is still waiting on its request"
fi
expect_match "the batch is rolled back and comes again" "batch rolled back \(immediate stop\); it will be delivered again" \
	"$(cat "$WORK/c_http_stop.log")"
expect_eq "the stopped event is not finished: it comes again" "0" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_http_stop'")"
finish
