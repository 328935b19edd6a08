#!/usr/bin/env bash
# `pgqlua install` refuses (exit 69, one clear line) a schema pgqlua, or a
# function or table in it, that belongs to another role than the
# installing one: that role's code would run on every tick (the wake-up
# trigger) or failed event.  In a database of its own.
source "$(dirname "$0")/lib.sh"
DB=pgqlua_owner_test
OTHER=pgqlua_other_owner
sql "drop database if exists $DB" > /dev/null
sql "create database $DB" > /dev/null
sql "do \$\$ begin
       if not exists (select 1 from pg_roles where rolname = '$OTHER') then create role $OTHER nologin; end if;
     end \$\$" > /dev/null
osql() { PGDATABASE=$DB sql "$1"; }
me=$(sql "select current_user")

cat > "$WORK/owner.lua" <<< 'function process_event() end'
cat > "$WORK/owner.yaml" <<EOF
queue_name: q_owner
consumer_name: c_owner
db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB"
script: owner.lua
EOF
install() { "$PGQLUA" install "$WORK/owner.yaml" 2>&1 > /dev/null; }

# refused WHAT PATTERN
refused() {
	local out rc
	out=$(install) && rc=0 || rc=$?
	expect_eq "$1: install exits 69" "69" "$rc"
	expect_match "$1: one line saying whose it is" "^pgqlua: creating schema pgqlua: 42501 $2, not to the installing role $me: refused \(give schema pgqlua and everything in it to that role, or drop them\)\$" "$out"
}

osql "create extension pgq; create schema pgqlua authorization $OTHER" > /dev/null
refused "a schema pgqlua of another role" "schema pgqlua belongs to role $OTHER"
expect_eq "and nothing was created in it" "0" \
	"$(osql "select count(*) from pg_class where relnamespace = 'pgqlua'::regnamespace")"

osql "alter schema pgqlua owner to $me;
      create function pgqlua.notify_tick() returns trigger language plpgsql as \$\$ begin return null; end \$\$;
      alter function pgqlua.notify_tick() owner to $OTHER" > /dev/null
refused "a function in it of another role" "function pgqlua.notify_tick\(\) belongs to role $OTHER"
expect_eq "its function keeps its owner and no trigger calls it" "$OTHER 0" \
	"$(osql "select proowner::regrole || ' ' || (select count(*) from pg_trigger where tgname = 'pgqlua_notify_tick')
	         from pg_proc where proname = 'notify_tick'")"

osql "drop function pgqlua.notify_tick(); create table pgqlua.failed_event (x int); alter table pgqlua.failed_event owner to $OTHER" > /dev/null
refused "a table in it of another role" "table pgqlua.failed_event belongs to role $OTHER"

osql "drop table pgqlua.failed_event" > /dev/null
out=$(install) && rc=0 || rc=$?
expect_eq "once everything in it is the installing role's, install succeeds" "0:" "$rc:$out"
expect_eq "and its objects are the installing role's" "0" \
	"$(osql "select count(*) from pg_proc where pronamespace = 'pgqlua'::regnamespace and proowner::regrole::text <> '$me'")"

# a remote consumer's target database is checked the same way
osql "alter table pgqlua.failed_event owner to $OTHER" > /dev/null
reset_queues q_owner_remote
cat > "$WORK/remote.yaml" <<EOF
queue_name: q_owner_remote
consumer_name: c_owner_remote
db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test"
target_db: "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB"
script: owner.lua
EOF
out=$("$PGQLUA" install "$WORK/remote.yaml" 2>&1 > /dev/null) && rc=0 || rc=$?
expect_eq "a target whose schema pgqlua holds another role's table: exit 69" "69" "$rc"
expect_match "with the same reason" "^pgqlua: creating schema pgqlua in the target: 42501 table pgqlua.failed_event belongs to role $OTHER" "$out"
reset_queues q_owner_remote

sql "drop database $DB" > /dev/null
sql "drop role $OTHER" > /dev/null
finish
