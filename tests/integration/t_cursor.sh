#!/usr/bin/env bash
# The batch cursor is the runtime's: a script that closes, moves or reads it
# (directly, or through a PL/pgSQL refcursor) or hides COMMIT behind nested
# comments or after a `;` never makes events be skipped: the statement is
# refused (the event is an error and comes again) or the batch is rolled
# back with an error naming the events.  Every event is processed exactly
# once in the end.
source "$(dirname "$0")/lib.sh"

declare -A TRICK=(
	[move_direct]="move forward 3 in pgqlua_batch"
	[close_quoted]='close "pgqlua_batch"'
	[close_all]="/* tidy up */ CLOSE ALL"
	[fetch_direct]="fetch 2 from pgqlua_batch"
	[nested_commit]="/* /* */ */ commit"
	[after_semicolon]="select 1; commit"
	[plpgsql_move]="do \$\$ declare c refcursor := 'pgqlua' || '_batch'; begin move forward 4 in c; end \$\$"
	[plpgsql_fetch]="do \$\$ declare c refcursor := 'pgqlua_batch'; r record; begin fetch c into r; end \$\$"
	[plpgsql_move_all]="do \$\$ declare c refcursor := 'pgqlua_batch'; begin move forward all in c; end \$\$"
	[plpgsql_close]="do \$\$ declare c refcursor := 'pgqlua_batch'; begin close c; end \$\$"
)
# what each trick ends in: refused by db:exec, or the batch rolled back
declare -A EXPECT=(
	[move_direct]="CLOSE, MOVE and FETCH on it are not allowed"
	[close_quoted]="CLOSE, MOVE and FETCH on it are not allowed"
	[close_all]="CLOSE, MOVE and FETCH on it are not allowed"
	[fetch_direct]="CLOSE, MOVE and FETCH on it are not allowed"
	[nested_commit]="transaction control \(COMMIT, ROLLBACK, \.\.\.\) is not allowed"
	[after_semicolon]="transaction control \(COMMIT, ROLLBACK, \.\.\.\) is not allowed"
	[plpgsql_move]="the batch cursor pgqlua_batch was moved or closed by SQL the script ran \(during events FIRST to [0-9]+\): the events after row 6 of the batch would have been skipped; the batch is rolled back"
	[plpgsql_fetch]="the batch cursor pgqlua_batch was moved or closed by SQL the script ran \(during events FIRST to [0-9]+\)"
	[plpgsql_move_all]="the batch cursor pgqlua_batch was moved or closed by SQL the script ran \(during events FIRST to [0-9]+\)"
	[plpgsql_close]="the batch cursor pgqlua_batch was closed by SQL the script ran \(during events FIRST to [0-9]+\); the batch is rolled back"
)

sql "drop table if exists r_cursor; create table r_cursor (q text, ev_id bigint)" > /dev/null
for t in "${!TRICK[@]}"; do
	q=q_cur_$t c=c_cur_$t
	reset_queues "$q"
	sql "drop sequence if exists s_cur_$t; create sequence s_cur_$t" > /dev/null
	# the trick runs once (a sequence does not roll back), at the batch's
	# first event; 3 events per fetch, 10 events in one batch
	new_consumer "$q" "$c" "
local TRICK = [==[${TRICK[$t]}]==]
function process_event(ev, db)
  if ev.type == 'trick' and db:exec('select nextval(\\'s_cur_$t\\') as n')[1].n == 1 then
    db:exec(TRICK)
  end
  db:exec('insert into r_cursor values (\$1, \$2)', '$q', ev.id)
end" "fetch_size: 3
max_retries: 1"
	sql "select pgq.insert_event('$q', case when g = 1 then 'trick' else 'plain' end, g::text)
	     from generate_series(1, 10) g" > /dev/null
done
for t in "${!TRICK[@]}"; do
	q=q_cur_$t c=c_cur_$t
	drain "$q" "$c" 60 || fail "$t: $q did not drain"
	expect_eq "$t: every event processed exactly once" "10 10 0" \
		"$(sql "select count(distinct ev_id) || ' ' || count(*) || ' ' ||
		        (select count(*) from pgqlua.failed_event where queue_name = '$q')
		        from r_cursor where q = '$q'")"
	first=$(sql "select min(ev_id) from r_cursor where q = '$q'")
	expect_match "$t: refused or rolled back with a clear error" "${EXPECT[$t]//FIRST/$first}" \
		"$(grep -E 'not allowed|batch cursor' "$WORK/$c.log" | head -1)"
done

# what only looks like transaction control or the cursor runs as usual
reset_queues q_cur_legit
new_consumer q_cur_legit c_cur_legit "$(cat <<'LUA'
local LEGIT = {
  "select 'a;commit' as x",
  "select $q$ ; rollback; close pgqlua_batch $q$ as x",
  [[select E'\'; commit' as x]],
  "/* /* nested */ still a comment; commit */ select 1 as x",
  "select 1 as x -- ; commit",
  [[select 1 as "end; commit"]],
  "select 'move 1 in pgqlua_batch' as x",
}
function process_event(ev, db)
  for _, s in ipairs(LEGIT) do db:exec(s) end
  db:exec('insert into r_cursor values ($1, $2)', 'q_cur_legit', ev.id)
end
LUA
)" "max_retries: 0"
sql "select pgq.insert_event('q_cur_legit', 'plain', 'x')" > /dev/null
drain q_cur_legit c_cur_legit 60 || fail "q_cur_legit did not drain"
expect_eq "strings, dollar quotes, nested comments and quoted names that only look like COMMIT or the cursor are allowed" \
	"1 0" "$(sql "select count(*) || ' ' || (select count(*) from pgqlua.failed_event where queue_name = 'q_cur_legit')
	             from r_cursor where q = 'q_cur_legit'")"
finish
