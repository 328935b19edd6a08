#!/usr/bin/env bash
# Prepared statements (prepared_statements: true, the default): the
# script's statements are parsed once per connection, and a statement that
# no longer fits its plan, or was deallocated behind our back, costs one
# retry of one event, never a stuck consumer.
source "$(dirname "$0")/lib.sh"
reset_queues q_prep q_unprep

sql "drop table if exists p_src, p_out cascade;
     create table p_src (id int primary key, v text);
     insert into p_src values (1, 'one');
     create table p_out (ev_id bigint, got text, retry int);
     drop table if exists p_seen; create table p_seen (consumer text, n int)"

SCRIPT='
function process_event(ev, db)
  local rows = db:exec("select * from p_src where id = $1", 1)
  local cols = 0
  for _ in pairs(rows[1]) do cols = cols + 1 end
  db:send("insert into p_out values ($1, $2, $3)", ev.id, rows[1].v .. "/" .. cols, ev.retry)
  if ev.data == "deallocate" and ev.retry == 0 then db:exec("deallocate all") end
  if ev.data == "count" then
    -- the consumer'"'"'s own session: its prepared statements
    local n = db:exec("select count(*) as n from pg_prepared_statements where name like $1", "pgqlua%")
    db:exec("insert into p_seen values ($1, $2)", os.getenv("PGQLUA_TEST_C"), n[1].n)
  end
end'
new_consumer q_prep c_prep "$SCRIPT" "max_retries: 3
log_level: info
env_allow: [PGQLUA_TEST_C]"
sql "select pgq.insert_event('q_prep', 'x', d) from unnest(array['a', 'count']) d" > /dev/null
wait_until 30 ticked q_prep || fail "q_prep was not ticked"
PGQLUA_TEST_C=on run_once c_prep || fail "first run failed"
expect_eq "both events read the table through the statement" "one/2,one/2" \
	"$(sql "select string_agg(got, ',' order by ev_id) from p_out")"
expect_eq "the statements are prepared in the consumer's session" "t" \
	"$(sql "select n >= 3 from p_seen where consumer = 'on'")"

# one long-running consumer: its statements stay prepared while the table
# changes under `select *` (its cached plan no longer fits) and while a
# script deallocates every prepared statement of the connection
PGQLUA_TEST_C=on "$PGQLUA" run "$WORK/c_prep.yaml" >> "$WORK/c_prep.log" 2>&1 &
pid=$!
sql "select pgq.insert_event('q_prep', 'x', 'c')" > /dev/null
wait_sql "the running consumer takes an event" "select count(*) from p_out" "3"
sql "alter table p_src add column w int default 7" > /dev/null
sql "select pgq.insert_event('q_prep', 'x', d) from unnest(array['d', 'deallocate', 'e']) d" > /dev/null
wait_sql "every event is applied once, retried ones too" \
	"select count(*), count(distinct ev_id) from p_out" "6|6" 60
kill -TERM "$pid"
wait "$pid" || fail "the consumer did not exit cleanly"
expect_eq "after the change, events see three columns" "3" \
	"$(sql "select count(*) from p_out where got = 'one/3'")"
expect_match "the changed plan cost one retry of one event" "event [0-9]+: script error: .*0A000 cached plan must not change result type" \
	"$(cat "$WORK/c_prep.log")"
expect_match "the deallocated statements cost one retry" "event [0-9]+: script error: .*26000 prepared statement" \
	"$(cat "$WORK/c_prep.log")"
expect_eq "nothing went to the failed table" "0" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_prep'")"

# prepared_statements: false sends every statement unnamed, same results
new_consumer q_unprep c_unprep "$SCRIPT" "prepared_statements: false
env_allow: [PGQLUA_TEST_C]"
sql "select pgq.insert_event('q_unprep', 'x', d) from unnest(array['f', 'count']) d" > /dev/null
PGQLUA_TEST_C=off drain q_unprep c_unprep || fail "q_unprep did not drain"
expect_eq "without prepared statements the same work is done" "8" "$(sql "select count(*) from p_out")"
expect_eq "and nothing is prepared" "0" "$(sql "select n from p_seen where consumer = 'off'")"

finish
