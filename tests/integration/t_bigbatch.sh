#!/usr/bin/env bash
# A batch of 1,000,000 small events runs in bounded memory: the batch cursor
# is fetched fetch_size rows at a time.  The consumer reports its peak RSS.
source "$(dirname "$0")/lib.sh"
reset_queues q_big

N=${PGQLUA_BIG_EVENTS:-1000000}
LIMIT_KB=$((100 * 1024))

sql "drop table if exists r_big; create table r_big (batch_id bigint, events bigint, id_sum numeric)"
new_consumer q_big c_big '
local batch, n, sum
function on_batch_start(b) batch, n, sum = b.id, 0, 0 end
function process_event(ev)
  n = n + 1
  sum = sum + ev.id
end
function on_batch_end(_, db)
  if n > 0 then db:exec("insert into r_big values ($1, $2, $3)", batch, n, sum) end
end' "log_level: info"

# one transaction: PgQ never splits it, so it is one batch
sql "select count(pgq.insert_event('q_big', 'x', i::text)) from generate_series(1, $N) i" > /dev/null
drain q_big c_big 300 || fail "q_big did not drain"
expect_eq "all $N events arrive in one batch, each once" "1|$N|$(( N * (N + 1) / 2 ))" \
	"$(sql "select count(*), sum(events), sum(id_sum) from r_big")"
rss=$(grep -o 'peak RSS [0-9]* kB' "$WORK/c_big.log" | awk '{print $3}' | sort -n | tail -1)
echo "# peak RSS of the consumer over $N events: ${rss} kB"
if [ -n "$rss" ] && [ "$rss" -lt "$LIMIT_KB" ]; then
	ok "peak RSS ${rss} kB is under ${LIMIT_KB} kB"
else
	fail "peak RSS ${rss:-unknown} kB is not under ${LIMIT_KB} kB"
fi
finish
