#!/usr/bin/env bash
# Session settings the runtime owns: a role whose database settings are
# DateStyle 'SQL, DMY' with a zone PostgreSQL prints as an ambiguous ("IST")
# or unreadable ("CAT") abbreviation, plus PGDATESTYLE/PGTZ in the consumer's
# environment.  RETRY, FAILED and `pgqlua failed retry` still work, the
# failed-event table keeps the queue's ev_time to the microsecond, and
# ev.time has one format: ISO 8601 with the offset of the config's timezone.
source "$(dirname "$0")/lib.sh"

ROLE=pgqlua_datestyle
sql "do \$\$ begin
       if not exists (select 1 from pg_roles where rolname = '$ROLE') then
         create role $ROLE login superuser;
       end if;
     end \$\$;
     alter role $ROLE set datestyle = 'SQL, DMY'" > /dev/null

# (RETRY and FAILED undo the event's writes: only its last, OK delivery
# leaves a row in r_datestyle_N.)
# one_zone N ZONE CONFIG_TZ OFFSET_RE: a consumer whose role lives in ZONE;
# the config asks for CONFIG_TZ ("" : the default, UTC).
one_zone() {
	local n=$1 zone=$2 cfg_tz=$3 offset_re=$4
	local q=q_datestyle_$n c=c_datestyle_$n
	reset_queues "$q"
	sql "alter role $ROLE set timezone = '$zone';
	     drop table if exists r_datestyle_$n, o_datestyle_$n, a_datestyle_$n;
	     create table r_datestyle_$n (ev_id bigint, retry int, ev_time text);
	     create table a_datestyle_$n (ok bool)" > /dev/null
	# installed by the usual role, run by the one with the odd settings
	new_consumer "$q" "$c" "
function process_event(ev, db)
  local allowed = db:exec('select 1 from a_datestyle_$n')
  db:exec('insert into r_datestyle_$n values (\$1, \$2, \$3)', ev.id, ev.retry, ev.time)
  if ev.type == 'retry' and ev.retry < 2 then return pgq.EVENT_RETRY, 0 end
  if ev.type == 'fail' and #allowed == 0 then return pgq.EVENT_FAILED, 'failed once on purpose' end
  return pgq.EVENT_OK
end" "${cfg_tz:+timezone: $cfg_tz}"
	sed -i "s/ user=$PGUSER / user=$ROLE /" "$WORK/$c.yaml"
	sql "select pgq.insert_event('$q', t, 'x') from unnest(array['ok', 'retry', 'fail']) t;
	     create table o_datestyle_$n as
	       select ev_id, ev_type, ev_time from pgq.event_template where false;
	     do \$\$ begin execute format('insert into o_datestyle_$n select ev_id, ev_type, ev_time from %s',
	       (select queue_data_pfx from pgq.queue where queue_name = '$q')); end \$\$" > /dev/null

	export PGDATESTYLE='SQL, DMY' PGTZ=$zone
	drain "$q" "$c" 60 || fail "$zone: $q did not drain"
	expect_eq "$zone: the retried event came back twice, then ended OK" "2" \
		"$(sql "select string_agg(retry::text, ' ' order by retry) from r_datestyle_$n r
		        join o_datestyle_$n o using (ev_id) where o.ev_type = 'retry'")"
	expect_eq "$zone: failed_event.ev_time is the queue's ev_time to the microsecond" "t" \
		"$(sql "select f.ev_time = o.ev_time from pgqlua.failed_event f join o_datestyle_$n o using (ev_id)
		        where f.queue_name = '$q'")"
	sql "insert into a_datestyle_$n values (true)" > /dev/null
	"$PGQLUA" failed retry "$WORK/$c.yaml" all > "$WORK/$c.failed.out" 2>&1 ||
		fail "$zone: pgqlua failed retry: $(cat "$WORK/$c.failed.out")"
	drain "$q" "$c" 60 || fail "$zone: the event put back by failed retry was not consumed"
	unset PGDATESTYLE PGTZ
	expect_eq "$zone: failed retry brought the event back and it ended OK" "1 0" \
		"$(sql "select count(*) || ' ' || (select count(*) from pgqlua.failed_event where queue_name = '$q')
		        from r_datestyle_$n r join o_datestyle_$n o using (ev_id) where o.ev_type = 'fail'")"
	expect_eq "$zone: every delivery showed the queue's ev_time, exactly" "0" \
		"$(sql "select count(*) from r_datestyle_$n r join o_datestyle_$n o using (ev_id)
		        where r.ev_time::timestamptz is distinct from o.ev_time")"
	expect_eq "$zone: ev.time is ISO 8601 with the offset of the config's timezone" "0" \
		"$(sql "select count(*) from r_datestyle_$n
		        where ev_time !~ '^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$offset_re\$'")"
}

one_zone 1 Africa/Harare "" '\+00'
one_zone 2 Asia/Kolkata Asia/Kolkata '\+05:30'

# a timezone the server does not know: a clear error naming it
sed -i 's/^timezone: .*/timezone: Mars\/Olympus/' "$WORK/c_datestyle_2.yaml"
out=$("$PGQLUA" run --once "$WORK/c_datestyle_2.yaml" 2>&1) && rc=0 || rc=$?
expect_eq "an unknown timezone stops run with exit 69" "69" "$rc"
expect_match "and the error names the key, not its value" \
	'^pgqlua: cannot set the session.s settings on .*\(config key timezone\): 22023 invalid value for parameter "TimeZone"$' \
	"$(grep '^pgqlua:' <<< "$out")"
if [[ "$out" == *Olympus* ]]; then fail "the error shows the timezone's value"; else ok "the value is not shown"; fi

sql "alter role $ROLE reset all" > /dev/null
finish
