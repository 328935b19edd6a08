#!/usr/bin/env bash
# The embedding example (tests/embed/embed_example.c) links libpgqlua and
# drains a queue through the public API.
source "$(dirname "$0")/lib.sh"
reset_queues q_embed
[ -n "$EMBED" ] || { fail "no embedding example binary given"; finish; }
sql "drop table if exists r_embed; create table r_embed (ev_id bigint primary key, data text)"
new_consumer q_embed c_embed '
function process_event(ev, db)
  db:exec("insert into r_embed values ($1, $2)", ev.id, ev.data)
end'
sql "select pgq.insert_event('q_embed', 'x', d) from unnest(array['a','b']) d" > /dev/null
wait_until 30 ticked q_embed || fail "q_embed never ticked"
set +e
out=$("$EMBED" "$WORK/c_embed.yaml" 2>"$WORK/c_embed.log")
rc=$?
set -e
expect_eq "the embedding example exits 0" "0" "$rc"
expect_match "it reports the batches it ran" "^embed_example: [1-9][0-9]* batches, last status: no batch ready$" "$out"
expect_eq "the events were processed through the library" "a,b" "$(sql "select string_agg(data, ',' order by ev_id) from r_embed")"
set +e
"$EMBED" "$WORK/none.yaml" 2> "$WORK/none.err"
rc=$?
set -e
expect_eq "a bad config makes pgqlua_open fail" "1" "$rc"
expect_match "with a one-line reason" "^embed_example: .*none.yaml: cannot read config" "$(cat "$WORK/none.err")"
finish
