#!/usr/bin/env bash
# Every result path of process_event, with its database effects checked in SQL:
# OK, RETRY, FAILED (and `failed retry|delete|list`), ABORT_BATCH, a Lua error,
# max_retries, and the shape of the event table.
source "$(dirname "$0")/lib.sh"
reset_queues q_ok q_retry q_failed q_abort q_abort2 q_err q_maxr q_badret

sql "drop table if exists r_ok, r_retry, r_failed, r_other, r_abort, r_abort2, r_err cascade;
     create table r_abort2 (ev_id bigint);
     create table r_ok (ev_id bigint primary key, data text, id_type text, txid_type text,
                        retry int, extra2_null bool, type text, time_ok bool);
     create table r_retry (ev_id bigint primary key, retry int);
     create table r_failed (ev_id bigint primary key, data text);
     create table r_other (ev_id bigint, data text);
     create table r_abort (ev_id bigint primary key, batch_id bigint, aborted_batch bigint);
     create table r_err (ev_id bigint primary key, data text);"

# ---- OK: rows committed, the event table's shape
new_consumer q_ok c_ok '
function process_event(ev, db)
  db:exec("insert into r_ok values ($1, $2, $3, $4, $5, $6, $7, $8)",
          ev.id, ev.data, math.type(ev.id), math.type(ev.txid), ev.retry,
          ev.extra2 == pgq.null, ev.type, type(ev.time) == "string")
  return pgq.EVENT_OK
end'
sql "select pgq.insert_event('q_ok', 'greeting', d, 'e1', null, null, null) from unnest(array['a','b','c']) d" > /dev/null
drain q_ok c_ok || fail "q_ok did not drain"
expect_eq "OK events are committed once each" "a,b,c" "$(sql "select string_agg(data, ',' order by ev_id) from r_ok")"
expect_eq "ev.id and ev.txid are Lua integers, ev.retry is 0, NULL is pgq.null" \
	"integer|integer|0|t|greeting|t" \
	"$(sql "select distinct id_type, txid_type, retry, extra2_null, type, time_ok from r_ok")"

# ---- RETRY: comes back with ev.retry incremented; writes of retried runs roll back
new_consumer q_retry c_retry '
function process_event(ev, db)
  db:exec("insert into r_retry values ($1, $2)", ev.id, ev.retry)
  if ev.retry < 2 then return pgq.EVENT_RETRY, 0 end
end'
sql "select pgq.insert_event('q_retry', 'x', 'again')" > /dev/null
drain q_retry c_retry || fail "q_retry did not drain"
expect_eq "a retried event comes back with ev.retry + 1 until OK; only the OK run's write stays" \
	"2" "$(sql "select string_agg(retry::text, ',') from r_retry")"

# ---- FAILED: to the failed table; `failed retry` brings it back to this consumer only
new_consumer q_failed c_failed '
function process_event(ev, db)
  if ev.data == "bad" then
    db:exec("insert into r_failed values ($1, $2)", ev.id, "written before failing")
    return pgq.EVENT_FAILED, "bad payload"
  end
  db:exec("insert into r_failed values ($1, $2)", ev.id, ev.data)
end'
new_consumer q_failed c_other '
function process_event(ev, db)
  db:exec("insert into r_other values ($1, $2)", ev.id, ev.data)
end'
sql "select pgq.insert_event('q_failed', 'x', d) from unnest(array['good','bad','bad']) d" > /dev/null
drain q_failed c_failed || fail "q_failed did not drain"
drain q_failed c_other || fail "q_failed did not drain for c_other"
expect_eq "FAILED events are in pgqlua.failed_event with the reason" \
	"bad|bad payload|2" \
	"$(sql "select distinct ev_data, reason, count(*) over () from pgqlua.failed_event where consumer_name = 'c_failed'")"
expect_eq "a FAILED event's own writes are rolled back" "good" "$(sql "select string_agg(data, ',') from r_failed")"
bad_ids=($(sql "select ev_id from pgqlua.failed_event where consumer_name = 'c_failed' order by ev_id"))
list_out=$("$PGQLUA" failed list "$WORK/c_failed.yaml")
expect_match "failed list shows id, type, reason and data" \
	"${bad_ids[0]}	type=x	retries=0	failed_at=[^	]+	reason=bad payload	data=bad" "$list_out"
expect_match "failed list ends with a count" "2 failed events$" "$list_out"

cat > "$WORK/c_failed.lua" <<'EOF'
function process_event(ev, db)
  db:exec("insert into r_failed values ($1, $2)", ev.id, ev.data .. " fixed")
end
EOF
retry_out=$("$PGQLUA" failed retry "$WORK/c_failed.yaml" "${bad_ids[0]}")
expect_match "failed retry reports what it did" "event ${bad_ids[0]}: put back into the queue for consumer c_failed" "$retry_out"
drain q_failed c_failed || fail "q_failed did not drain after failed retry"
drain q_failed c_other || fail "q_failed did not drain for c_other after failed retry"
expect_eq "the retried failed event is processed again by its consumer" "bad fixed" \
	"$(sql "select data from r_failed where ev_id = ${bad_ids[0]}")"
expect_eq "the other consumer on the queue saw each event exactly once" "3|3" \
	"$(sql "select count(*), count(distinct ev_id) from r_other")"
expect_eq "the retried event left the failed table; the other stays" "${bad_ids[1]}" \
	"$(sql "select string_agg(ev_id::text, ',') from pgqlua.failed_event where consumer_name = 'c_failed'")"
set +e
del_out=$("$PGQLUA" failed delete "$WORK/c_failed.yaml" "${bad_ids[1]}" 999999999)
rc=$?
set -e
expect_eq "failed delete with an unknown id exits 1" "1" "$rc"
expect_match "failed delete reports deleted and unknown ids" \
	"event ${bad_ids[1]}: deleted.*event 999999999: not in the failed-event table.*1 event deleted" "$(echo $del_out)"
expect_eq "the deleted event is gone" "0" "$(sql "select count(*) from pgqlua.failed_event where consumer_name = 'c_failed'")"

# ---- ABORT_BATCH: the whole batch rolls back and the same batch comes again
new_consumer q_abort c_abort '
local batch_id, aborted_batch
function on_batch_start(batch) batch_id = batch.id end
function process_event(ev, db)
  db:exec("insert into r_abort values ($1, $2, $3)", ev.id, batch_id, aborted_batch)
  if ev.data == "abort" and not aborted_batch then
    aborted_batch = batch_id
    return pgq.ABORT_BATCH
  end
end'
sql "begin; select pgq.insert_event('q_abort', 'x', d) from unnest(array['one','abort','three']) d; commit" > /dev/null
wait_until 30 ticked q_abort || fail "q_abort never ticked"
"$PGQLUA" run "$WORK/c_abort.yaml" >> "$WORK/c_abort.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
wait_sql "after ABORT_BATCH every event is committed exactly once" "select count(*) from r_abort" "3"
expect_eq "the redelivered batch is the aborted one" "1|t" \
	"$(sql "select count(distinct batch_id), bool_and(batch_id = aborted_batch) from r_abort")"
kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
expect_eq "SIGTERM stops run with exit 0" "0" "$rc"
expect_match "the log says the batch was rolled back" \
	"batch rolled back \(the script returned pgq.ABORT_BATCH at event [0-9]+\); it will be delivered again" \
	"$(cat "$WORK/c_abort.log")"

new_consumer q_abort2 c_abort2 '
function process_event(ev, db)
  db:exec("insert into r_abort2 values ($1)", ev.id)
  return pgq.ABORT_BATCH
end'
sql "select pgq.insert_event('q_abort2', 'x', 'y')" > /dev/null
wait_until 30 ticked q_abort2 || fail "q_abort2 never ticked"
set +e
run_once c_abort2
rc=$?
set -e
expect_eq "run --once exits 75 when the batch was rolled back" "75" "$rc"
expect_eq "nothing of an aborted batch is committed" "0" "$(sql "select count(*) from r_abort2")"

# ---- Lua error: only that event's writes roll back; max_retries sends it to failed
new_consumer q_err c_err '
function process_event(ev, db)
  db:exec("insert into r_err values ($1, $2)", ev.id, ev.data)
  if ev.data == "err" then error("boom") end
end' "max_retries: 1"
sql "select pgq.insert_event('q_err', 'x', d) from unnest(array['x','err','y']) d" > /dev/null
drain q_err c_err || fail "q_err did not drain"
expect_eq "a Lua error rolls back only that event's writes" "x,y" \
	"$(sql "select string_agg(data, ',' order by ev_id) from r_err")"
expect_match "after max_retries the erroring event is in the failed table with the error and file:line" \
	"^1\|max_retries \(1\) reached: .*c_err.lua:4: boom$" \
	"$(sql "select ev_retry || '|' || reason from pgqlua.failed_event where consumer_name = 'c_err'")"
expect_match "the error is logged as one line with file:line" "WARN consumer=c_err batch=[0-9]+ event [0-9]+: script error: .*c_err.lua:4: boom" \
	"$(cat "$WORK/c_err.log")"

new_consumer q_maxr c_maxr '
function process_event() return pgq.EVENT_RETRY end' "max_retries: 2"
sql "select pgq.insert_event('q_maxr', 'x', 'forever')" > /dev/null
drain q_maxr c_maxr || fail "q_maxr did not drain"
expect_eq "an event retried max_retries times goes to the failed table" \
	"2|max_retries (2) reached: retried by the script" \
	"$(sql "select ev_retry || '|' || reason from pgqlua.failed_event where consumer_name = 'c_maxr'")"

# ---- bad return values are script errors naming process_event's file:line
new_consumer q_badret c_badret '
function process_event(ev)
  return "yes"
end' "max_retries: 0"
sql "select pgq.insert_event('q_badret', 'x', 'y')" > /dev/null
drain q_badret c_badret || fail "q_badret did not drain"
expect_match "a return value that is not a result is an error with file:line" \
	'c_badret.lua:2: process_event returned yes, which is not a result' \
	"$(sql "select reason from pgqlua.failed_event where consumer_name = 'c_badret'")"

finish
