#!/usr/bin/env bash
# A runaway script is stopped by event_timeout (even if it wraps the loop in
# pcall) and one that allocates without bound by lua_memory_limit; each
# counts as an error for that event and the consumer goes on.
source "$(dirname "$0")/lib.sh"
reset_queues q_limits

sql "drop table if exists r_limits; create table r_limits (ev_id bigint, data text)"
new_consumer q_limits c_limits '
function process_event(ev, db)
  if ev.data == "loop" then while true do end end
  if ev.data == "sneaky" then
    for _ = 1, 100 do pcall(function() while true do end end) end
  end
  if ev.data == "hog" then
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 1000000) .. i end
  end
  db:exec("insert into r_limits values ($1, $2)", ev.id, ev.data)
end' "event_timeout: 0.3
kill_grace: $(scaledf 2)
lua_memory_limit: 32MB
max_retries: 0"
sql "select pgq.insert_event('q_limits', 'x', d) from unnest(array['a','loop','sneaky','hog','b']) d" > /dev/null
drain q_limits c_limits || fail "q_limits did not drain"
expect_eq "the events around the runaway ones are processed" "a,b" \
	"$(sql "select string_agg(data, ',' order by ev_id) from r_limits")"
expect_eq "an endless loop hits event_timeout, even inside pcall" \
	"loop:true|sneaky:true" \
	"$(sql "select string_agg(ev_data || ':' || (reason like '%event_timeout exceeded%')::text, '|' order by ev_id)
	        from pgqlua.failed_event where queue_name = 'q_limits' and ev_data in ('loop', 'sneaky')")"
expect_match "unbounded allocation hits lua_memory_limit" "not enough memory" \
	"$(sql "select reason from pgqlua.failed_event where queue_name = 'q_limits' and ev_data = 'hog'")"
finish
