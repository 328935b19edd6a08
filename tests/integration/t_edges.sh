#!/usr/bin/env bash
# Edge cases of the batch transaction: SQL errors caught by the script in
# batch hooks, COPY, transaction control from the script, a bad retry delay,
# a reload that fails after changing restart-only settings, and an immediate
# stop in the middle of a long statement.
source "$(dirname "$0")/lib.sh"
reset_queues q_hook q_copy q_txn q_delay q_rl q_stop

sql "drop table if exists r_hook, r_agg, r_copy, r_txn, r_stop cascade;
     create table r_hook (id int primary key);
     create table r_agg (batch_id bigint, n int);
     create table r_copy (ev_id bigint, data text);
     create table r_txn (ev_id bigint);
     create table r_stop (ev_id bigint);
     insert into r_hook values (1);"

# ---- an SQL error caught by the last event does not poison on_batch_end
new_consumer q_hook c_hook '
local n
function on_batch_start() n = 0 end
function process_event(ev, db)
  local ok = pcall(db.exec, db, "insert into r_hook values (1)")
  n = n + 1
  if not ok then return pgq.EVENT_FAILED, "duplicate" end
end
function on_batch_end(batch, db)
  if n > 0 then db:exec("insert into r_agg values ($1, $2)", batch.id, n) end
end'
sql "select pgq.insert_event('q_hook', 'x', d) from unnest(array['a','b']) d" > /dev/null
drain q_hook c_hook 30 || fail "q_hook did not drain"
expect_eq "on_batch_end writes after an event's caught SQL error" "2" "$(sql "select coalesce(sum(n), 0) from r_agg")"
expect_eq "both events went to the failed table" "2" "$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_hook'")"

# ---- a hook that swallows an SQL error rolls the batch back
cat > "$WORK/c_hook.lua" <<'LUA'
function process_event() end
function on_batch_end(batch, db)
  db:exec("insert into r_agg values ($1, -1)", batch.id)
  pcall(db.exec, db, "select 1/0")
end
LUA
sql "select pgq.insert_event('q_hook', 'x', 'c')" > /dev/null
wait_until 30 ticked q_hook || fail "q_hook never ticked"
set +e; run_once c_hook; rc=$?; set -e
expect_eq "a hook that went on after an SQL error rolls the batch back (run --once exits 75)" "75" "$rc"
expect_eq "none of that hook's writes were committed" "0" "$(sql "select count(*) from r_agg where n = -1")"
expect_match "the log says why" "on_batch_end: the hook went on after an SQL error: 22012 division by zero" "$(cat "$WORK/c_hook.log")"

# ---- COPY is refused cleanly, the consumer goes on
new_consumer q_copy c_copy '
function process_event(ev, db)
  if ev.data == "copy" then db:exec("copy r_copy from stdin") end
  if ev.data == "copyout" then db:exec("copy r_copy to stdout") end
  db:exec("insert into r_copy values ($1, $2)", ev.id, ev.data)
end' "max_retries: 0"
sql "select pgq.insert_event('q_copy', 'x', d) from unnest(array['copy','copyout','ok']) d" > /dev/null
drain q_copy c_copy 30 || fail "q_copy did not drain"
expect_eq "events after a refused COPY are processed" "ok" "$(sql "select string_agg(data, ',') from r_copy")"
expect_eq "COPY is a clear error" "2" \
	"$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_copy' and reason like '%db:exec: COPY is not supported%'")"

# ---- COMMIT from the script is refused; the batch comes again
new_consumer q_txn c_txn '
function process_event(ev, db)
  db:exec("insert into r_txn values ($1)", ev.id)
  if ev.retry == 0 and ev.data == "commit" then
    local ok, err = pcall(db.exec, db, "commit")
    pgq.log.info("commit: %s", err)
  end
end'
sql "select pgq.insert_event('q_txn', 'x', d) from unnest(array['commit']) d" > /dev/null
wait_until 30 ticked q_txn || fail "q_txn never ticked"
set +e; run_once c_txn; set -e
expect_match "transaction control from the script is an error" \
	"db:exec: transaction control \(COMMIT, ROLLBACK, ...\) is not allowed" "$(cat "$WORK/c_txn.log")"

# ---- an out-of-range retry delay is a script error, not a stuck batch
new_consumer q_delay c_delay '
function process_event(ev) return pgq.EVENT_RETRY, math.huge end' "max_retries: 0"
sql "select pgq.insert_event('q_delay', 'x', 'y')" > /dev/null
drain q_delay c_delay 30 || fail "q_delay did not drain"
expect_match "math.huge as a retry delay is refused with file:line" \
	"c_delay.lua:2: process_event returned pgq.EVENT_RETRY with a bad delay: inf" \
	"$(sql "select reason from pgqlua.failed_event where queue_name = 'q_delay'")"

# ---- a failed reload keeps queue, consumer and pid file as they were
new_consumer q_rl c_rl 'function process_event() end' "pidfile: c_rl.pid"
"$PGQLUA" run "$WORK/c_rl.yaml" >> "$WORK/c_rl.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
wait_until 30 test -f "$WORK/c_rl.pid" || fail "no pid file"
# the worker has loaded the first script before the files change
wait_until 30 grep -q "consumer c_rl on queue q_rl started" "$WORK/c_rl.log" || fail "c_rl did not start"
sed -i 's/^consumer_name: c_rl$/consumer_name: someone_else/; s/^pidfile: .*/pidfile: other.pid/' "$WORK/c_rl.yaml"
echo 'syntax error here' > "$WORK/c_rl.lua"
kill -HUP "$pid"
wait_until 30 grep -q "reload failed" "$WORK/c_rl.log" || fail "no failed reload logged"
sql "select pgq.insert_event('q_rl', 'x', 'y')" > /dev/null
wait_drained q_rl c_rl 30 && ok "after a failed reload the consumer still consumes as c_rl" || fail "c_rl stopped consuming"
if grep -q "Not subscriber" "$WORK/c_rl.log"; then fail "the failed reload switched the consumer name"; else ok "the consumer name did not change"; fi
kill -TERM "$pid"; wait "$pid" || true
[ ! -e "$WORK/c_rl.pid" ] && ok "the original pid file is removed at exit" || fail "the pid file was left behind"

# ---- a second SIGTERM stops at once, even inside a long statement
new_consumer q_stop c_stop '
function process_event(ev, db)
  db:exec("insert into r_stop values ($1)", ev.id)
  db:exec("select pg_sleep(60)")
end'
sql "select pgq.insert_event('q_stop', 'x', 'sleepy')" > /dev/null
"$PGQLUA" run "$WORK/c_stop.yaml" >> "$WORK/c_stop.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")
wait_until 30 bash -c "psql -XAtqc \"select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' and application_name = 'pgqlua'\" | grep -q 1" \
	|| fail "the event never started"
kill -TERM "$pid"; kill -INT "$pid"   # two signals of one kind may merge into one
gone() { ! kill -0 "$pid" 2>/dev/null; }
wait_until 20 gone && ok "a second stop signal stops the consumer inside a 60 s statement" || fail "the consumer did not stop at once"
set +e; wait "$pid"; rc=$?; set -e
expect_eq "it exits 0" "0" "$rc"
expect_eq "nothing of the interrupted batch was committed" "0" "$(sql "select count(*) from r_stop")"
finish
