#!/usr/bin/env bash
# pgqlua resize on the real PgQ and pgqd: a group of 4 partitions run by 2
# workers is resized to 6 and then to 3 while a producer keeps changing
# 150 rows (pgq.logutriga) and the members keep running.  Every event is
# applied exactly once, the events of each key that were not retried are
# processed in ev_id order, the members take up each new layout without a
# restart, a retried event waiting in an old partition's retry queue (and
# one already back in the queue after the paused tick) comes back through
# its new partition, a failed event recorded under an old partition is put
# back into its new one by `failed retry`, a resize left half-done (ticker
# paused) is completed by the next run, and the ticker runs again afterwards.
source "$(dirname "$0")/lib.sh"
reset_queues q_rsz
ROWS=150

sql "drop table if exists rsz_src, r_rsz, rsz_cured; drop sequence if exists rsz_seq;
     create sequence rsz_seq;
     create table r_rsz (ev_id bigint, k text, retry int, seq bigint);
     create table rsz_cured (x int);
     create table rsz_src (id int primary key, v int)"
new_consumer q_rsz c_rsz '
function process_event(ev, db)
  if ev.data == "slow" and ev.retry == 0 then return pgq.EVENT_RETRY, 3600 end
  if ev.data == "stall" then db:exec("select pg_advisory_xact_lock(4343)") end
  if ev.data == "poison" and #db:exec("select 1 from rsz_cured") == 0 then return pgq.EVENT_FAILED, "poisoned" end
  local k = ev.data
  if ev.extra1 ~= pgq.null then k = pgq.urldecode(ev.data).id end
  db:exec("insert into r_rsz values ($1, $2, $3, nextval($4))", ev.id, k, ev.retry, "rsz_seq")
end' "partitions: 4
workers: 2
log_level: info
metrics_file: $WORK/c_rsz.prom
stats_period: 0.2"
sql "create trigger rsz_src_q after insert or update on rsz_src for each row execute procedure pgq.logutriga('q_rsz')"
sql "insert into rsz_src select g, 0 from generate_series(1, $ROWS) g" > /dev/null
expect_eq "install records the group's layout" "4" \
	"$(sql "select partitions from pgqlua.group_layout where queue_name = 'q_rsz' and consumer_name = 'c_rsz'")"

"$PGQLUA" run "$WORK/c_rsz.yaml" >> "$WORK/c_rsz.log" 2>&1 &
runner=$!
CHILD_PIDS+=("$runner")
# the producer: rounds of changes of every row, until told to stop
(
	while [ ! -f "$WORK/stop" ]; do
		psql -X -q -c "do \$\$ begin for j in 0 .. 4 loop
		                 update rsz_src set v = v + 1 where id % 5 = j; commit;
		               end loop; end \$\$" || exit 1
	done
) &
producer=$!
CHILD_PIDS+=("$producer")
applied() { sql "select count(*) from r_rsz"; }
grows() { local n; n=$(applied); wait_until 60 bash -c "[ \$(psql -XAtqc 'select count(*) from r_rsz') -gt $n ]"; }

# a retried event waiting in its partition's retry queue, a failed event
slow=$(sql "select pgq.insert_event('q_rsz', 'x', 'slow')")
poison=$(sql "select pgq.insert_event('q_rsz', 'x', 'poison')")
wait_sql "the slow event waits in the retry queue of its partition, the poison one failed" \
	"select (select count(*) from pgq.retry_queue where ev_id = $slow)
	        || '|' || (select pgq_consumer from pgqlua.failed_event where ev_id = $poison)" \
	"1|c_rsz.p$(sql "select mod(hashtext('$poison')::int8 + 2147483648, 4)")of4" 60
grows || fail "the members applied nothing"

# ---- to 6
set +e
out=$("$PGQLUA" resize "$WORK/c_rsz.yaml" 6 --timeout "$(scaled 60)" 2>&1)
rc=$?
set -e
expect_eq "resize 4 -> 6 while producing and consuming exits 0: $(tr '\n' ' ' <<< "$out")" "0" "$rc"
expect_match "resize says how long ticks were paused" "ticks were paused for [0-9]+\.[0-9]{3}s" "$out"
expect_match "resize moved the waiting retried event" "6 partitions c_rsz\.p0of6 \.\. c_rsz\.p5of6 registered at tick [0-9]+; 1 retried and 1 failed events moved" "$out"
expect_eq "the group has 6 partitions and the ticker runs again" "6|f|f|6" \
	"$(sql "select l.partitions, l.paused_by_resize, q.queue_ticker_paused,
	               (select count(*) from pgq.get_consumer_info('q_rsz'))
	          from pgqlua.group_layout l, pgq.queue q where l.queue_name = 'q_rsz' and q.queue_name = 'q_rsz'")"
expect_eq "the retried event now waits for the partition of its key among 6" \
	"c_rsz.p$(sql "select mod(hashtext('$slow')::int8 + 2147483648, 6)")of6" \
	"$(sql "select co.co_name from pgq.retry_queue r join pgq.subscription s on s.sub_id = r.ev_owner
	          join pgq.consumer co on co.co_id = s.sub_consumer where r.ev_id = $slow")"
wait_until 30 grep -q "resized from 4 to 6 partitions" "$WORK/c_rsz.log" \
	&& ok "the members take up the new layout without a restart" || fail "the members did not take up 6 partitions"
grows || fail "nothing applied after the resize to 6"
# the parent's metrics (its config still says 4) follow the layout
six() { grep -q 'pgqlua_batches_total{queue="q_rsz",consumer="c_rsz",partition="5"}' "$WORK/c_rsz.prom" 2> /dev/null; }
wait_until 30 six && ok "metrics_file shows partition 5 of the 6" || fail "metrics_file: no partition 5"
peeked=$("$PGQLUA" peek "$WORK/c_rsz.yaml" --limit 1)
expect_eq "peek shows the 6 partitions of the layout" "6" "$(grep -c '^partition [0-9]' <<< "$peeked")"
# beside the running members, which finish batches peek may have just seen
peeks=0
for i in $(seq 1 15); do
	"$PGQLUA" peek "$WORK/c_rsz.yaml" --limit 1 > /dev/null 2>> "$WORK/peek.err" && peeks=$((peeks + 1))
done
expect_eq "peek beside the running members succeeds every time$(tail -n 1 "$WORK/peek.err" | sed 's/^/: /')" "15" "$peeks"

# ---- to 3, with the ticker paused by someone else and the retried event
# back in the queue (after the paused tick) for its old partition
sql "select pgq.set_queue_config('q_rsz', 'ticker_paused', 'true');
     update pgq.retry_queue set ev_retry_after = now() where ev_id = $slow" > /dev/null
wait_sql "pgqd moved the retried event back into the queue" "select count(*) from pgq.retry_queue where ev_id = $slow" "0"
set +e
out=$("$PGQLUA" resize "$WORK/c_rsz.yaml" 3 --timeout "$(scaled 60)" 2>&1)
rc=$?
set -e
expect_eq "resize 6 -> 3 exits 0: $(tr '\n' ' ' <<< "$out")" "0" "$rc"
expect_match "the event back in the queue for an old partition goes to its new one" "1 retried and 1 failed events moved" "$out"
expect_match "a ticker paused before the resize stays paused" "it was paused before the resize: it stays paused" "$out"
expect_eq "so it is" "t" "$(sql "select queue_ticker_paused from pgq.queue where queue_name = 'q_rsz'")"
sql "select pgq.set_queue_config('q_rsz', 'ticker_paused', 'false')" > /dev/null
wait_until 30 grep -q "resized from 6 to 3 partitions" "$WORK/c_rsz.log" \
	&& ok "the members take up 3 partitions" || fail "the members did not take up 3 partitions"
grows || fail "nothing applied after the resize to 3"
owned3() { st=$("$PGQLUA" status "$WORK/c_rsz.yaml" || true); [[ "$st" == *"group: 3 partitions, 0 without an owner"* ]]; }
wait_until 30 owned3 && ok "status shows the group's 3 partitions, all owned (the config still says 4)" \
	|| fail "status does not show 3 owned partitions: $st"
# a worker started anew (its config still says 4) takes up the group's 3
victim=$(pgrep -P "$runner" | head -1)
kill -9 "$victim"
restarted() { st=$("$PGQLUA" status "$WORK/c_rsz.yaml" || true)
              [[ "$st" == *"workers: 2 of 2 running"* && "$st" == *"group: 3 partitions, 0 without an owner; 2 members"* && "$st" != *"pid $victim "* ]]; }
wait_until 60 restarted && ok "a restarted worker reads the group's layout, not the config's count" \
	|| fail "the restarted worker did not join the 3 partitions: $st"
expect_match "resize to the current count changes nothing" "has 3 partitions" "$("$PGQLUA" resize "$WORK/c_rsz.yaml" 3)"
# a resize killed after its change, before it resumed the ticker: run again, it resumes it
sql "update pgqlua.group_layout set resizing_to = 3, paused_by_resize = true where queue_name = 'q_rsz';
     select pgq.set_queue_config('q_rsz', 'ticker_paused', 'true')" > /dev/null
expect_match "status says a resize was left half-done with the ticker paused" \
	"a resize to 3 partitions is under way or was interrupted; it paused the queue's ticker" \
	"$("$PGQLUA" status "$WORK/c_rsz.yaml" || true)"
expect_match "resize run again resumes the ticker the killed one paused" "resumed \(an earlier resize had paused it\)" \
	"$("$PGQLUA" resize "$WORK/c_rsz.yaml" 3)"
expect_eq "so the ticker runs" "f|f" "$(sql "select q.queue_ticker_paused, l.paused_by_resize from pgq.queue q, pgqlua.group_layout l
                                          where q.queue_name = 'q_rsz' and l.queue_name = 'q_rsz'")"

touch "$WORK/stop"
wait "$producer" || fail "the producer failed"
for p in 0 1 2; do wait_drained q_rsz "c_rsz.p${p}of3" 120 || fail "partition $p did not drain"; done
pp=$(sql "select pgq_consumer from pgqlua.failed_event where ev_id = $poison")
expect_eq "the failed event now belongs to the partition of its key among 3" \
	"c_rsz.p$(sql "select mod(hashtext('$poison')::int8 + 2147483648, 3)")of3" "$pp"
sql "insert into rsz_cured values (1)" > /dev/null
expect_match "failed retry puts it back into that partition" "put back into the queue for consumer $pp" \
	"$("$PGQLUA" failed retry "$WORK/c_rsz.yaml" all)"
for p in 0 1 2; do wait_drained q_rsz "c_rsz.p${p}of3" 60 || fail "partition $p did not drain after the retry"; done
total=$(sql "select $ROWS + sum(v) + 2 from rsz_src")
expect_eq "every one of the $total events was applied exactly once" "$total|$total" \
	"$(sql "select count(*), count(distinct ev_id) from r_rsz")"
expect_eq "the retried and the failed event came back through their new partitions" "1|1" \
	"$(sql "select count(*) filter (where ev_id = $slow and retry = 1), count(*) filter (where ev_id = $poison) from r_rsz")"
expect_eq "the events of every key that were not retried were processed in ev_id order" "0" \
	"$(sql "select count(*) from (select ev_id, lag(ev_id) over (partition by k order by seq) prev
	                               from r_rsz where retry = 0) x where prev > ev_id")"
expect_eq "only the 3 partitions are registered" "c_rsz.p0of3 c_rsz.p1of3 c_rsz.p2of3" \
	"$(sql "select string_agg(consumer_name, ' ' order by consumer_name) from pgq.get_consumer_info('q_rsz')")"
kill -TERM "$runner"
wait "$runner" || fail "the members did not stop cleanly"

# ---- no member running: the partitions never catch up; resize gives up, changing nothing
sql "select pgq.insert_event('q_rsz', 'x', 'late')" > /dev/null
wait_until 30 ticked q_rsz || fail "q_rsz never ticked"
set +e
out=$("$PGQLUA" resize "$WORK/c_rsz.yaml" 5 --timeout 1 2>&1)
rc=$?
set -e
expect_eq "resize with no member running times out with exit 75" "75" "$rc"
expect_match "it names the partitions that are behind" "timed out: partitions not at tick [0-9]+ after 1s: c_rsz\.p0of3, c_rsz\.p1of3, c_rsz\.p2of3 .*nothing was changed" "$(tr '\n' ' ' <<< "$out")"
expect_eq "the group keeps its 3 partitions and the ticker runs" "3|f|3" \
	"$(sql "select l.partitions, q.queue_ticker_paused, (select count(*) from pgq.get_consumer_info('q_rsz'))
	          from pgqlua.group_layout l, pgq.queue q where l.queue_name = 'q_rsz' and q.queue_name = 'q_rsz'")"
# ---- a stop signal while the ticker is paused: the ticker is resumed, nothing changed.
# Ticks only for new events; a member stuck in the batch of the last one
# (it waits for a lock the test holds) keeps the resize waiting, paused.
sql "select pgq.set_queue_config('q_rsz', 'ticker_max_count', '1'), pgq.set_queue_config('q_rsz', 'ticker_max_lag', '3600'),
            pgq.set_queue_config('q_rsz', 'ticker_idle_period', '3600')" > /dev/null
sed -i 's/^workers: 2/workers: 3/' "$WORK/c_rsz.yaml"   # a partition each: the stuck one holds up only its own
"$PGQLUA" run "$WORK/c_rsz.yaml" >> "$WORK/c_rsz.log" 2>&1 &
runner=$!
CHILD_PIDS+=("$runner")
one_each() { [ "$("$PGQLUA" status "$WORK/c_rsz.yaml" | grep -o 'p[0-2]of3: owner [^,]*' | sed 's/.*owner //' | sort -u | wc -l)" == 3 ]; }
wait_until 60 one_each || fail "the 3 workers did not take a partition each"
for p in 0 1 2; do wait_drained q_rsz "c_rsz.p${p}of3" 60 || fail "partition $p did not drain"; done
psql -X -q -c "select pg_advisory_lock(4343)" -c "select pg_sleep(600)" > /dev/null 2>&1 &
holder=$!
CHILD_PIDS+=("$holder")
wait_sql "the test holds the lock" "select count(*) from pg_locks where locktype = 'advisory' and objid = 4343 and granted" "1"
sql "select pgq.insert_event('q_rsz', 'x', 'stall')" > /dev/null
wait_sql "a member is stuck in the batch of the last tick" \
	"select count(*) from pg_locks where locktype = 'advisory' and objid = 4343 and not granted" "1"
"$PGQLUA" resize "$WORK/c_rsz.yaml" 2 > "$WORK/resize.out" 2>&1 &
rz=$!
CHILD_PIDS+=("$rz")
wait_sql "resize paused the ticker and waits" "select queue_ticker_paused from pgq.queue where queue_name = 'q_rsz'" "t"
kill -INT "$rz"
set +e
wait "$rz"
rc=$?
set -e
out=$(tr '\n' ' ' < "$WORK/resize.out")
expect_eq "resize stopped by SIGINT exits 75: $out" "75" "$rc"
expect_match "it says why and resumes the ticker" "paused at tick [0-9]+.*stopped while waiting for the partitions to reach tick [0-9]+ with no batch open.*nothing was changed.*ticks were paused for [0-9.]+s" "$out"
expect_eq "the ticker runs and the group keeps its 3 partitions" "f|3|3" \
	"$(sql "select q.queue_ticker_paused, l.partitions, (select count(*) from pgq.get_consumer_info('q_rsz'))
	          from pgq.queue q, pgqlua.group_layout l where q.queue_name = 'q_rsz' and l.queue_name = 'q_rsz'")"
sql "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and objid = 4343 and granted" > /dev/null
wait "$holder" 2>/dev/null || true
for p in 0 1 2; do wait_drained q_rsz "c_rsz.p${p}of3" 60 || fail "partition $p did not drain after the lock was released"; done
kill -TERM "$runner"
wait "$runner" || fail "the members did not stop cleanly"
finish
