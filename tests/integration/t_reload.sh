#!/usr/bin/env bash
# SIGHUP reloads the config and the script between batches: a new Lua state
# is built beside the old one and swapped in only if it loads; a broken
# script leaves the old one running.
source "$(dirname "$0")/lib.sh"
reset_queues q_reload

sql "drop table if exists r_reload; create table r_reload (ev_id bigint, version text)"
new_consumer q_reload c_reload '
function process_event(ev, db)
  db:exec("insert into r_reload values ($1, $2)", ev.id, "v1")
end'
"$PGQLUA" run "$WORK/c_reload.yaml" >> "$WORK/c_reload.log" 2>&1 &
pid=$!
CHILD_PIDS+=("$pid")

sql "select pgq.insert_event('q_reload', 'x', 'a')" > /dev/null
wait_sql "the first script processes events" "select string_agg(version, ',') from r_reload" "v1"

cat > "$WORK/c_reload.lua" <<'LUA'
function process_event(ev, db)
  db:exec("insert into r_reload values ($1, $2)", ev.id, "v2")
end
LUA
kill -HUP "$pid"
wait_until 30 grep -q "reloaded: script" "$WORK/c_reload.log" || fail "no reload in the log"
sql "select pgq.insert_event('q_reload', 'x', 'b')" > /dev/null
wait_sql "after SIGHUP new events see the new script" "select string_agg(version, ',' order by ev_id) from r_reload" "v1,v2"

for broken in 'function process_event(ev) return = 1 end' 'error("no good")' 'local x = 1'; do
	printf '%s\n' "$broken" > "$WORK/c_reload.lua"
	before=$(grep -c "reload failed" "$WORK/c_reload.log" || true)
	kill -HUP "$pid"
	wait_until 30 bash -c "[ \$(grep -c 'reload failed' '$WORK/c_reload.log') -gt $before ]" \
		&& ok "a broken script ($broken) is refused with a log line" \
		|| fail "no 'reload failed' line for: $broken"
done
expect_match "the failed reload names the script's file:line" \
	"reload failed, keeping the old configuration and script: .*c_reload.lua:1: " "$(cat "$WORK/c_reload.log")"
sql "select pgq.insert_event('q_reload', 'x', 'c')" > /dev/null
wait_sql "after failed reloads the previous script keeps consuming" \
	"select string_agg(version, ',' order by ev_id) from r_reload" "v1,v2,v2"
kill -0 "$pid" && ok "the consumer survived the failed reloads" || fail "the consumer died"

# events keep flowing across reloads: each is processed exactly once, by
# the script that was loaded when its batch began
sql "truncate r_reload"
for v in v3 v4 v5; do
	sql "select pgq.insert_event('q_reload', 'x', i::text) from generate_series(1, 100) i" > /dev/null
	printf 'function process_event(ev, db)\n  db:exec("insert into r_reload values ($1, $2)", ev.id, "%s")\nend\n' "$v" > "$WORK/c_reload.lua"
	kill -HUP "$pid"
done
wait_sql "300 events inserted across three reloads are all processed" "select count(*) from r_reload" "300" 60
expect_eq "no event was processed twice" "300" "$(sql "select count(distinct ev_id) from r_reload")"
sql "select pgq.insert_event('q_reload', 'x', 'last')" > /dev/null
wait_sql "the newest script handles events after the last reload" \
	"select version from r_reload where ev_id = (select max(ev_id) from r_reload)" "v5" 60
kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
expect_eq "then SIGTERM exits 0" "0" "$rc"
finish
