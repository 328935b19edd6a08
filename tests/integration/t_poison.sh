#!/usr/bin/env bash
# Poison input reaches the script and its decoders and gives a clear error,
# never a crash: invalid UTF-8 (urlencoded, as logutriga would carry bytes),
# control characters, a 10 MB payload, malformed logutriga and jsontriga
# payloads.  The consumer goes on with the next event.
source "$(dirname "$0")/lib.sh"
reset_queues q_poison
sql "drop table if exists r_poison; create table r_poison (ev_id bigint, kind text, info text)"
new_consumer q_poison c_poison '
function process_event(ev, db)
  local kind = ev.type
  local info
  if kind == "url" then
    local t = pgq.urldecode(ev.data)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    info = "keys=" .. n
    if t.text then db:exec("insert into r_poison values ($1, $2, $3)", ev.id, "text", t.text) end
  elseif kind == "json" then
    local v = pgq.json_decode(ev.data)
    info = type(v)
  elseif kind == "big" then
    info = "len=" .. #ev.data
  elseif kind == "ctl" then
    info = "len=" .. #ev.data .. " first=" .. ev.data:byte(1)
  end
  db:exec("insert into r_poison values ($1, $2, $3)", ev.id, kind, info)
end' "max_retries: 0
log_level: info"
sql "select pgq.insert_event('q_poison', 'url', d) from unnest(array[
       'text=%ff%fe%80', '%', '%zz=1&=&&&', 'a=%', '=', 'k%00ey=v%00al']) d;
     select pgq.insert_event('q_poison', 'json', d) from unnest(array[
       '{\"a\":', '[1,2', '\"\\\\ud800\"', '{\"a\":1} trailing', 'nul', '1e999999', '[[[[[[[[[[]]]]]]]]]]']) d;
     select pgq.insert_event('q_poison', 'big', repeat('x', 10 * 1024 * 1024));
     select pgq.insert_event('q_poison', 'ctl', E'\\x01\\x02\\x1f\\x7f\\t\\r\\n end');
     select pgq.insert_event('q_poison', 'json', '{\"after\": \"all of that\"}')" > /dev/null
drain q_poison c_poison 120 || fail "q_poison did not drain"
expect_eq "invalid UTF-8 from a logutriga payload is a clear SQL error when stored as text" \
	"t" "$(sql "select reason ~ 'invalid byte sequence for encoding \"UTF8\"' from pgqlua.failed_event where queue_name = 'q_poison' and ev_data = 'text=%ff%fe%80'")"
expect_eq "malformed urlencoded rows still decode (stray % kept, empty keys allowed)" \
	"5" "$(sql "select count(*) from r_poison where kind = 'url'")"
expect_eq "malformed JSON payloads fail with the decoder's message" "4" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_poison' and ev_type = 'json' and reason like '%pgq.json_decode: %'")"
expect_eq "a 10 MB payload reaches the script whole" "len=10485760" "$(sql "select info from r_poison where kind = 'big'")"
expect_eq "control characters reach the script unchanged" "len=11 first=1" "$(sql "select info from r_poison where kind = 'ctl'")"
expect_eq "the consumer went on to the event after them" "table" \
	"$(sql "select info from r_poison where ev_id = (select max(ev_id) from r_poison)")"
finish
