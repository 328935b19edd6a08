#!/usr/bin/env bash
# demo.sh - pgqlua end to end on one machine, in one command (Debian bookworm).
#
#   tests/tools/demo.sh
#
# 1. installs the packages it needs with apt-get (skipped when all are
#    installed, or with PGQLUA_SKIP_APT=1),
# 2. builds pgqlua into build/,
# 3. starts a throwaway PostgreSQL 15 + pgq + pgqd (tests/tools/pgtmp.sh),
# 4. creates demo_customer with pgq's logutriga trigger feeding queue
#    demo_events, the audit table demo_audit, and installs the consumer of
#    conf/demo.yaml (script scripts/audit_rows.lua),
# 5. changes some rows and adds a few plain events, one of them "poison",
# 6. runs `pgqlua run --once conf/demo.yaml` until the consumer has caught up,
# 7. prints the audit table, the failed events and a summary line,
# 8. stops the cluster (PGQLUA_DEMO_KEEP=1 keeps it and says how to connect).
#
# Environment:
#   PGQLUA_SKIP_APT=1     do not run apt-get (CI images with the packages baked in)
#   PGQLUA_DEMO_DIR=DIR   where the throwaway cluster lives (default /tmp/pgqlua-demo)
#   PGQLUA_DEMO_KEEP=1    leave the cluster running at the end
#   PGQLUA_BIN=PATH       use this pgqlua program instead of building build/
#
# Re-runs are safe: the demo tables, the queue and its failed events are
# dropped and created afresh every time. Exit status 0 when every event
# ended up where it should (audited, or failed for the poison one).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

DEMO_DIR=${PGQLUA_DEMO_DIR:-/tmp/pgqlua-demo}
KEEP=${PGQLUA_DEMO_KEEP:-0}
PGBIN=/usr/lib/postgresql/15/bin
PGTMP=$ROOT/tests/tools/pgtmp.sh
PGQLUA=${PGQLUA_BIN:-$ROOT/build/pgqlua}
CONF=conf/demo.yaml
QUEUE=demo_events
CONSUMER=demo_audit
DEADLINE_S=30          # for the queue to tick and the consumer to catch up
POLL_S=0.1

PACKAGES=(cmake pkg-config gcc libc6-dev make libpq-dev liblua5.4-dev lua5.4 libyaml-dev libmicrohttpd-dev libcurl4-openssl-dev
          lua-busted lua-check lua-dkjson postgresql-15 postgresql-client-15
          postgresql-15-pgq3 pgqd lua-yaml)

START_MS=$(date +%s%3N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgqlua-demo-work.XXXXXX")   # logs of this run
CLUSTER_STARTED=0

say() { printf '\n==> %s\n' "$*"; }
indent() { sed 's/^/    /'; }
die() {
    echo "demo.sh: ERROR: $1" >&2
    shift
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "---- $f ----" >&2
        tail -n 40 "$f" >&2
    done
    exit 1
}
elapsed() { local ms=$(( $(date +%s%3N) - START_MS )); printf '%d.%01d s' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }

on_exit() {
    local rc=$?
    set +e
    if (( CLUSTER_STARTED )); then
        if (( rc != 0 )); then
            echo "demo.sh: failed (exit $rc); the cluster's logs:" >&2
            "$PGTMP" logs "$DEMO_DIR" 2>&1 | tail -n 60 >&2
        fi
        if [[ $KEEP == 1 ]]; then
            cat <<EOF

The cluster is still running (PGQLUA_DEMO_KEEP=1). Connect with:
    source $DEMO_DIR/env; export PGDATABASE=pgqlua_demo
    psql -c 'table demo_audit'
    $PGQLUA failed list $ROOT/$CONF
Stop it with:
    $PGTMP stop $DEMO_DIR
EOF
        else
            "$PGTMP" stop "$DEMO_DIR" || echo "demo.sh: could not stop the cluster in $DEMO_DIR" >&2
        fi
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap on_exit EXIT

# ------------------------------------------------------------ (a) packages

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "not root and no sudo: install these packages as root: ${PACKAGES[*]}"
    fi
}

missing_packages() {
    local p st
    for p in "${PACKAGES[@]}"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) || st=
        [[ $st == installed ]] || echo "$p"
    done
}

if [[ ${PGQLUA_SKIP_APT:-0} == 1 ]]; then
    say "packages: skipped (PGQLUA_SKIP_APT=1)"
else
    mapfile -t missing < <(missing_packages)
    if (( ${#missing[@]} == 0 )); then
        say "packages: all ${#PACKAGES[@]} installed"
    else
        say "packages: installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q \
            >"$WORK/apt.log" 2>&1 || die "apt-get update failed" "$WORK/apt.log"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${PACKAGES[@]}" >>"$WORK/apt.log" 2>&1 || die "apt-get install failed" "$WORK/apt.log"
    fi
fi

# ------------------------------------------------------------ (b) build

if [[ -z ${PGQLUA_BIN:-} ]]; then
    say "build: cmake into build/"
    { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j2; } \
        >"$WORK/build.log" 2>&1 || die "the build failed" "$WORK/build.log"
fi
[[ -x $PGQLUA ]] || die "the build produced no $PGQLUA" "$WORK/build.log"
echo "    $("$PGQLUA" --version)"

# ------------------------------------------------------------ (c) cluster

# Only the demo cluster's settings may reach psql and pgqlua: drop the
# caller's libpq variables (PGPASSWORD, PGSERVICE, PGOPTIONS, ...).
for _v in $(compgen -e); do
    case $_v in PGQLUA_* | PGTMP_*) ;; PG*) unset "$_v" ;; esac
done
unset _v
# conf/demo.yaml reads PGQLUA_DEMO_DB; unset, it falls back to dbname=pgqlua_demo.
unset PGQLUA_DEMO_DB

say "cluster: PostgreSQL 15 + pgq + pgqd in $DEMO_DIR"
CLUSTER_STARTED=1
ENV_FILE=$("$PGTMP" start "$DEMO_DIR" 2>"$WORK/pgtmp.log") || die "pgtmp.sh start failed" "$WORK/pgtmp.log"
# shellcheck disable=SC1090
source "$ENV_FILE"
export PGDATABASE=pgqlua_demo
echo "    $PGHOST:$PGPORT, database $PGDATABASE"

psql_q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }   # quiet, stops at the first error
sql1() { psql_q -At -c "$1"; }                               # one value, unaligned

# ------------------------------------------------------------ (d) setup

say "setup: tables, trigger, queue $QUEUE, consumer $CONSUMER"
psql_q >"$WORK/setup.log" 2>&1 <<SQL || die "setting up the demo schema failed" "$WORK/setup.log"
set client_min_messages = warning;

-- Fresh state on every run: a queue left by an earlier run is dropped with
-- its consumers (pgq.drop_queue(q, force)), and so are its failed events.
drop table if exists demo_customer;
drop table if exists demo_audit;
select pgq.drop_queue(queue_name, true) from pgq.queue where queue_name = '$QUEUE';
do \$\$ begin
    if to_regclass('pgqlua.failed_event') is not null then
        delete from pgqlua.failed_event where queue_name = '$QUEUE';
    end if;
end \$\$;

-- The application's table. pgq.logutriga turns every row change into an
-- event on queue $QUEUE, in the same transaction as the change.
create table demo_customer (id int primary key, name text, email text);
create trigger demo_customer_to_queue
    after insert or update or delete on demo_customer
    for each row execute procedure pgq.logutriga('$QUEUE');

-- What scripts/audit_rows.lua writes: one row per event.
create table demo_audit (
    ev_id      bigint primary key,
    op         text,
    table_name text,
    row_id     text,
    payload    jsonb,
    audited_at timestamptz not null default now()
);
SQL

# Creates the queue, registers the consumer, creates schema pgqlua (failed events).
"$PGQLUA" install "$CONF" >"$WORK/install.log" 2>&1 || die "pgqlua install failed" "$WORK/install.log"
indent <"$WORK/install.log"
# A queue ticks after ticker_max_lag (default 3 s) when few events arrive: make it 0.1 s.
sql1 "select pgq.set_queue_config('$QUEUE', 'ticker_max_lag', '0.1')" >/dev/null

# ------------------------------------------------------------ (e) events

say "events: row changes on demo_customer and plain events"
# psql runs each statement in its own transaction (autocommit).
psql_q -e >"$WORK/events.log" 2>&1 <<SQL || die "producing the events failed" "$WORK/events.log"
insert into demo_customer values (1, 'Alice', 'alice@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Zoë "Z" & Co', null);
update demo_customer set email = 'bob@example.org' where id = 2;
select pgq.insert_event('$QUEUE', 'note', 'price list updated');
delete from demo_customer where id = 1;
insert into demo_customer values (4, 'Dave', 'dave+demo@example.com');
select pgq.insert_event('$QUEUE', 'note', 'poison');
update demo_customer set name = 'Zoe' where id = 3;
select pgq.insert_event('$QUEUE', 'note', 'end of the demo input');
SQL
# The echoed statements; pgq.insert_event's result (the new event's id) as "-> event N".
sed -n -e '/^[a-z]/p' -e 's/^ *\([0-9][0-9]*\)$/      -> event \1/p' "$WORK/events.log" | indent
# A transaction that commits after all of the above: a tick whose snapshot
# sees it as committed has all the events in a batch before it.
LAST_TXID=$(sql1 "select txid_current()")
[[ $LAST_TXID =~ ^[0-9]+$ ]] || die "unexpected txid_current(): $LAST_TXID"
PFX=$(sql1 "select queue_data_pfx from pgq.queue where queue_name = '$QUEUE'")
EXPECTED=$(sql1 "select count(*) from $PFX")
EXPECTED_FAILED=$(sql1 "select count(*) from $PFX where ev_data = 'poison'")
echo "    $EXPECTED events in queue $QUEUE ($EXPECTED_FAILED poison)"

# ------------------------------------------------------------ (f) consume

DEADLINE_MS=$(( $(date +%s%3N) + DEADLINE_S * 1000 ))
before_deadline() { (( $(date +%s%3N) < DEADLINE_MS )); }

say "waiting for pgqd to tick past the events"
WAIT_MS=$(date +%s%3N)
queue_ticked() {
    [[ $(sql1 "select exists (select 1 from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
                where q.queue_name = '$QUEUE' and txid_visible_in_snapshot($LAST_TXID, t.tick_snapshot))") == t ]]
}
until queue_ticked; do
    before_deadline || die "queue $QUEUE did not tick within ${DEADLINE_S}s: is pgqd running?" "$DEMO_DIR/pgqd.log"
    sleep "$POLL_S"
done
echo "    ticked after $(( $(date +%s%3N) - WAIT_MS )) ms"

say "consuming: $PGQLUA run --once $CONF (until the consumer has caught up)"
consumer_done() {  # the consumer's last finished batch ends at a tick past the events
    [[ $(sql1 "select coalesce(bool_or(txid_visible_in_snapshot($LAST_TXID, t.tick_snapshot)), false)
               from pgq.get_consumer_info('$QUEUE', '$CONSUMER') ci
               join pgq.queue q on q.queue_name = ci.queue_name
               join pgq.tick t on t.tick_queue = q.queue_id and t.tick_id = ci.last_tick") == t ]]
}
runs=0
until consumer_done; do
    before_deadline || die "the consumer did not catch up within ${DEADLINE_S}s" "$WORK/consumer.log"
    if (( runs > 0 )); then sleep "$POLL_S"; fi
    runs=$(( runs + 1 ))
    rc=0
    "$PGQLUA" run --once "$CONF" >>"$WORK/consumer.log" 2>&1 || rc=$?
    case $rc in
        0) ;;
        75) echo "    run $runs: a batch was rolled back; running again" ;;   # EXIT_TEMPFAIL
        *) die "pgqlua run --once exited with $rc" "$WORK/consumer.log" ;;
    esac
done
echo "    caught up after $runs run(s), $(elapsed) since the start; pgqlua's log:"
indent <"$WORK/consumer.log"

# ------------------------------------------------------------ (g) results

say "the audit table (demo_audit)"
psql_q -P pager=off -c "select ev_id, op, table_name, row_id, payload from demo_audit order by ev_id" \
    | sed '/^$/d' | indent

say "failed events: $PGQLUA failed list $CONF"
"$PGQLUA" failed list "$CONF" 2>&1 | indent

AUDITED=$(sql1 "select count(*) from demo_audit")
FAILED=$(sql1 "select count(*) from pgqlua.failed_event where queue_name = '$QUEUE' and consumer_name = '$CONSUMER'")
PENDING=$(sql1 "select pending_events from pgq.get_consumer_info('$QUEUE', '$CONSUMER')")
# Events the script raised an error for (or returned pgq.EVENT_RETRY) wait in
# PgQ's retry queue: they come back after retry_delay, up to max_retries times.
RETRYING=$(sql1 "select count(*) from pgq.retry_queue r
                 join pgq.subscription s on s.sub_id = r.ev_owner
                 join pgq.consumer c on c.co_id = s.sub_consumer
                 join pgq.queue q on q.queue_id = s.sub_queue
                 where q.queue_name = '$QUEUE' and c.co_name = '$CONSUMER'")
LAG=$(sql1 "select round(extract(epoch from lag)::numeric, 1) from pgq.get_consumer_info('$QUEUE', '$CONSUMER')")
echo
if (( AUDITED + FAILED == EXPECTED && FAILED == EXPECTED_FAILED )); then
    echo "demo OK: $EXPECTED events -> $AUDITED audited, $FAILED failed (pending_events $PENDING, lag ${LAG}s) in $(elapsed)"
else
    echo "demo FAILED: expected $EXPECTED events ($(( EXPECTED - EXPECTED_FAILED )) audited, $EXPECTED_FAILED failed)," \
         "got $AUDITED audited, $FAILED failed, $RETRYING waiting for a retry (pending_events $PENDING) in $(elapsed)"
    exit 1
fi
