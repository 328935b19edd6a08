#!/usr/bin/env bash
# What became of a batch's COMMIT is known before it is counted: a batch
# that pgq.finish_batch does not find open (another instance of the
# consumer finished it) is rolled back, never committed; a connection cut
# on the way to the COMMIT leaves the outcome unknown, and the batch is
# taken as not committed.  Either way every event is applied exactly once.
source "$(dirname "$0")/lib.sh"
reset_queues q_fin q_cut

# (batch_min_count 40: all 50 events in one batch, no empty batches before it)

# ---- pgq.finish_batch returns 0: the batch's work is rolled back
sql "drop table if exists r_fin; create table r_fin (ev_id bigint);
     drop sequence if exists s_fin; create sequence s_fin"
new_consumer q_fin c_fin '
function on_batch_start(batch, db)
  -- the first time only (a sequence is not rolled back): finish the batch
  -- behind the runtime, as a second instance of this consumer would
  if db:exec("select nextval($1) as n", "s_fin")[1].n == 1 then
    db:exec("select pgq.finish_batch($1)", batch.id)
  end
end
function process_event(ev, db) db:exec("insert into r_fin values ($1)", ev.id) end' "batch_min_count: 40"
sql "select pgq.insert_event('q_fin', 'x', i::text) from generate_series(1, 50) i" > /dev/null
wait_until 30 ticked q_fin || fail "q_fin never ticked"
set +e; run_once c_fin; rc=$?; set -e
expect_eq "run --once reports the batch that could not be finished (exit 69)" "69" "$rc"
expect_match "the log says the batch was not open and was rolled back" \
	"finishing the batch: pgq.finish_batch: batch [0-9]+ is not open: another instance of this consumer finished it; rolled back" \
	"$(cat "$WORK/c_fin.log")"
expect_eq "nothing of that batch was committed" "0" "$(sql "select count(*) from r_fin")"
expect_match "the batch is not counted" "totals: events=50 batches=0 " "$(cat "$WORK/c_fin.log")"
# (the batch stays open, so drain's "past the last tick" never comes with
# batch_min_count: run until the batch's events are there)
applied() { run_once "$1"; [ "$(sql "select count(*) from $2")" -ge 50 ]; }
wait_until 60 applied c_fin r_fin || fail "the batch of q_fin was never committed"
expect_eq "the next run applies every event exactly once" "50|50" "$(sql "select count(*), count(distinct ev_id) from r_fin")"
expect_match "and counts the batch once" "totals: events=50 batches=1 " "$(grep 'totals:' "$WORK/c_fin.log" | sed -n 2p)"

# ---- the connection is cut on the way to the COMMIT: outcome unknown
if [ "${PGQLUA_FAULT_BUILD:-0}" == 1 ]; then
	sql "drop table if exists r_cut; create table r_cut (ev_id bigint)"
	new_consumer q_cut c_cut '
function process_event(ev, db) db:send("insert into r_cut values ($1)", ev.id) end' "batch_min_count: 40"
	sql "select pgq.insert_event('q_cut', 'x', i::text) from generate_series(1, 50) i" > /dev/null
	wait_until 30 ticked q_cut || fail "q_cut never ticked"
	set +e; PGQLUA_FAULT=cut_before_commit run_once c_cut; rc=$?; set -e
	expect_eq "run --once reports the lost connection (exit 69)" "69" "$rc"
	expect_match "the log says the commit's outcome is unknown and taken as not committed" \
		"finishing the batch \(connection lost during the commit: taken as not committed\)" "$(cat "$WORK/c_cut.log")"
	expect_match "the batch is not counted as done" "totals: events=50 batches=0 " "$(cat "$WORK/c_cut.log")"
	wait_until 60 applied c_cut r_cut || fail "the batch of q_cut was never committed"
	expect_eq "the batch came again and every event was applied exactly once" "50|50" \
		"$(sql "select count(*), count(distinct ev_id) from r_cut")"
	expect_match "and counted once" "totals: events=50 batches=1 " "$(grep 'totals:' "$WORK/c_cut.log" | sed -n 2p)"
fi
finish
