#!/usr/bin/env bash
# db:send: writes queued without waiting (pipelined), with an event's
# failed send found later making that event, and only that one, an error:
# its writes undone, the other events' writes kept exactly once.
source "$(dirname "$0")/lib.sh"
reset_queues q_send q_send_fail q_send_mix q_send_big q_send_tx q_send_hook

sql "drop table if exists s_ok, s_fail, s_mix, s_mix_err, s_big, s_tx, s_hook cascade;
     create table s_ok (ev_id bigint primary key, data text);
     create table s_fail (ev_id bigint, part int, data text);
     create unique index s_fail_u on s_fail (data) where data like 'dup%';
     create table s_mix (ev_id bigint, how text);
     create table s_mix_err (ev_id bigint, msg text);
     create table s_big (ev_id bigint, n int);
     create table s_tx (ev_id bigint primary key);
     create table s_hook (batch_id bigint, n int check (n > 0));"

# ---- every event's sends are committed exactly once, over several chunks
new_consumer q_send c_send '
function process_event(ev, db)
  db:send("insert into s_ok values ($1, $2)", ev.id, ev.data)
end' "fetch_size: 50"
sql "select pgq.insert_event('q_send', 'x', 'd' || i) from generate_series(1, 1234) i" > /dev/null
drain q_send c_send || fail "q_send did not drain"
expect_eq "1234 events, each send committed once" "1234|1234" \
	"$(sql "select count(*), count(distinct data) from s_ok")"

# ---- a send that fails: that event's writes are undone (also the send
# before it that succeeded) and it is retried, then failed; every other
# event's writes stay, once, before and after it in the same pipeline
new_consumer q_send_fail c_send_fail '
function process_event(ev, db)
  db:send("insert into s_fail values ($1, 1, $2)", ev.id, "first " .. ev.data)
  if ev.data == "bad" then
    -- s_fail_u refuses the second one: a failure found only after the event ended
    db:send("insert into s_fail values ($1, 2, $2)", ev.id, "dup")
    db:send("insert into s_fail values ($1, 3, $2)", ev.id, "dup")
  end
  db:send("insert into s_fail values ($1, 4, $2)", ev.id, "last " .. ev.data)
end' "max_retries: 2
fetch_size: 100"
sql "select pgq.insert_event('q_send_fail', 'x', case when i in (40, 41, 150) then 'bad' else 'ok' || i end)
     from generate_series(1, 300) i" > /dev/null
drain q_send_fail c_send_fail || fail "q_send_fail did not drain"
expect_eq "the good events' writes are all there, once" "594|297" \
	"$(sql "select count(*), count(distinct ev_id) from s_fail where data not like '%bad'")"
expect_eq "no write of a failing event survives" "0" \
	"$(sql "select count(*) from s_fail where data like '%bad' or data = 'dup'")"
expect_eq "the failing events are in the failed table after max_retries, with the SQL error" \
	"3|3" "$(sql "select count(*), count(*) filter (where reason like '%db:send: 23505%') from pgqlua.failed_event where queue_name = 'q_send_fail'")"
expect_match "the error is logged for the event" "event [0-9]+: script error: db:send: 23505" \
	"$(cat "$WORK/c_send_fail.log")"

# ---- db:exec after sends waits for them; a failed send of the same event
# is raised there (pcall sees it); the event is then an error
new_consumer q_send_mix c_send_mix '
function process_event(ev, db)
  db:send("insert into s_mix values ($1, $2)", ev.id, "sent")
  if ev.data == "bad" then
    db:send("select 1/0")
  end
  local ok, err = pcall(db.exec, db, "select count(*) as n from s_mix where ev_id = $1", ev.id)
  if not ok then
    pgq.log.warn("caught: " .. err)
    return pgq.EVENT_FAILED, "caught: " .. err
  end
  db:exec("insert into s_mix values ($1, $2)", ev.id, "seen")
end' "max_retries: 0"
sql "select pgq.insert_event('q_send_mix', 'x', d) from unnest(array['a', 'bad', 'c']) d" > /dev/null
drain q_send_mix c_send_mix || fail "q_send_mix did not drain"
expect_eq "db:exec sees the event's own sends; good events are whole" "4|2" \
	"$(sql "select count(*), count(distinct ev_id) from s_mix")"
expect_eq "the send's error reached db:exec inside the event" "1" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_send_mix' and reason like 'caught: %22012%'")"

# ---- one event that sends more statements than the replay log keeps, and
# then fails: all of it undone; the events around it kept
new_consumer q_send_big c_send_big '
function process_event(ev, db)
  local n = tonumber(ev.data)
  for i = 1, n do
    db:send("insert into s_big values ($1, $2)", ev.id, i)
  end
  if n > 100 then db:send("insert into s_big values ($1, 1 / 0)", ev.id) end
end' "max_retries: 0"
sql "select pgq.insert_event('q_send_big', 'x', d) from unnest(array['5', '12000', '7']) d" > /dev/null
drain q_send_big c_send_big 120 || fail "q_send_big did not drain"
expect_eq "the 12000-send event is undone whole, the others kept" "12" "$(sql "select count(*) from s_big")"
expect_eq "and it is failed" "1" "$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_send_big'")"

# ---- transaction control is refused before it reaches the server: the
# event is an error (retried), the batch's other writes are not committed
# early, and every event ends applied once
new_consumer q_send_tx c_send_tx '
function process_event(ev, db)
  db:send("insert into s_tx values ($1)", ev.id)
  if ev.data == "commit" and ev.retry == 0 then
    db:send("  /* sneaky */ -- really\n COMMIT")
  end
end'
sql "select pgq.insert_event('q_send_tx', 'x', d) from unnest(array['a', 'commit', 'b']) d" > /dev/null
drain q_send_tx c_send_tx || fail "q_send_tx did not drain"
expect_eq "every event once" "3|3" "$(sql "select count(*), count(distinct ev_id) from s_tx")"
expect_match "the refusal is one clear line for the event" \
	"event [0-9]+: script error: .*db:send: transaction control \(COMMIT, ROLLBACK, ...\) is not allowed" \
	"$(cat "$WORK/c_send_tx.log")"

# ---- a failed send of a batch hook aborts the batch
new_consumer q_send_hook c_send_hook '
local n = 0
function on_batch_start(batch, db)
  db:send("insert into s_hook values ($1, $2)", batch.id, n)
  n = n + 1
end
function process_event() end'
sql "select pgq.insert_event('q_send_hook', 'x', 'y')" > /dev/null
wait_until 30 ticked q_send_hook || fail "q_send_hook was not ticked"
set +e; run_once c_send_hook; set -e
expect_match "the hook's failed send rolls the batch back" "on_batch_start: db:send: 23514" \
	"$(cat "$WORK/c_send_hook.log")"
expect_eq "so the batch is still open" "1" \
	"$(sql "select count(*) from pgq.get_consumer_info('q_send_hook', 'c_send_hook') where current_batch is not null")"

finish
