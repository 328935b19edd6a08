#!/usr/bin/env bash
# pgtmp.sh - a throwaway PostgreSQL 15 cluster with the pgq extension and the
# pgqd ticker, for pgqlua tests.
#
#   pgtmp.sh start DIR       create (or reuse) the cluster in DIR; prints DIR/env
#   pgtmp.sh stop DIR        stop pgqd and the server, remove DIR
#   pgtmp.sh restart-pg DIR  restart the PostgreSQL server (same port, same data);
#                            pgqd is restarted too unless PGTMP_KEEP_PGQD=1, because
#                            pgqd itself waits 60 s before reconnecting
#   pgtmp.sh logs DIR        tails of postgres.log and pgqd.log
#
# DIR/env is sourceable:
#   export PGHOST=127.0.0.1 PGPORT=... PGUSER=postgres PGDATABASE=pgqlua_test PGQLUA_PGTMP=DIR
#
# Databases: pgqlua_test, pgqlua_demo, pgqlua_target, each with CREATE EXTENSION pgq;
# pgqd ticks all three (ticker_period 0.1 s, retry_period 0.2 s).
# The script only prints the env file path on stdout; everything else goes to
# stderr. It never touches the machine's default cluster or port 5432.
set -euo pipefail

PROG=pgtmp.sh
PGBIN=${PGTMP_PGBIN:-/usr/lib/postgresql/15/bin}
PGQD=${PGTMP_PGQD:-/usr/bin/pgqd}
DATABASES=(pgqlua_test pgqlua_demo pgqlua_target)
MARKER=.pgtmp          # marks DIR as ours; we never rm -rf a directory without it
# seconds, scaled by PGQLUA_TEST_TIME_SCALE (default 1) like every deadline
# of the tests
START_TIMEOUT=$(awk -v k="${PGQLUA_TEST_TIME_SCALE:-1}" 'BEGIN { v = 30 * k; print (v == int(v)) ? v : int(v) + 1 }')   # server start / stop
PGQD_TIMEOUT=$(awk -v k="${PGQLUA_TEST_TIME_SCALE:-1}" 'BEGIN { v = 10 * k; print (v == int(v)) ? v : int(v) + 1 }')    # pgqd start / stop
PORT_MIN=20000
PORT_RANGE=10000

# Never let the caller's libpq environment (e.g. another pgtmp env) leak into our commands.
for _v in $(compgen -e); do
    case $_v in PG*) [[ $_v == PGTMP_* ]] || unset "$_v" ;; esac
done
unset _v

usage() {
    echo "usage: $PROG {start|stop|restart-pg|logs} DIR" >&2
    exit 2
}

# die MESSAGE [LOGFILE...]: one clear line on stderr, then the tail of the logs.
die() {
    local msg=$1; shift
    echo "$PROG: ERROR: $msg" >&2
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            echo "---- last 30 lines of $f ----" >&2
            tail -n 30 "$f" >&2 || true
            echo "---- end of $f ----" >&2
        fi
    done
    exit 1
}

# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; echo "$PROG: ERROR: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR
set -E

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the server user (postgres when we are root), from cwd /.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

now_ms() { date +%s%3N; }

# pid_alive PID: true if the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || { kill -0 "$pid" 2>/dev/null; return; }
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# wait_gone PID TIMEOUT_S: wait until the process has exited. A zombie counts
# as exited: it has released its ports, files and shared memory, and here PID 1
# takes 1-2 s to reap one (kill -0 and pg_ctl status still call it alive).
# Returns 0 when exited, 1 when still running at the deadline.
wait_gone() {
    local pid=$1 deadline=$(( $(now_ms) + $2 * 1000 ))
    while pid_alive "$pid"; do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.02
    done
    return 0
}

read_pidfile() {  # prints the first line of a pid file, if it is a number
    local f=$1 pid
    [[ -r $f ]] || return 1
    pid=$(head -n 1 "$f" 2>/dev/null | tr -d '[:space:]') || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

port_in_use() {
    local p=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]] && return 0
    fi
    # Something answers a TCP connect on 127.0.0.1:p?
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 0
    return 1
}

pick_port() {
    local start=$(( PORT_MIN + (RANDOM * 32768 + RANDOM) % PORT_RANGE )) i p
    for (( i = 0; i < PORT_RANGE; i++ )); do
        p=$(( PORT_MIN + (start - PORT_MIN + i) % PORT_RANGE ))
        (( p == 5432 )) && continue
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    return 1
}

# ---------------------------------------------------------------- state checks

env_port() {  # PGPORT from DIR/env
    local port
    port=$(sed -n 's/.*PGPORT=\([0-9][0-9]*\).*/\1/p' "$DIR/env" 2>/dev/null | head -n 1)
    [[ -n $port ]] || return 1
    echo "$port"
}

pg_ready_sock() {  # our own server answers on its private socket directory
    local port=$1
    "$PGBIN/pg_isready" -q -h "$DIR/sock" -p "$port" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

pgqd_alive() {
    local pid
    pid=$(read_pidfile "$DIR/pgqd.pid") || return 1
    pid_alive "$pid"
}

# ---------------------------------------------------------------- stopping

# pgqd processes running with our ini (covers a pgqd that never wrote its pidfile).
our_pgqd_pids() {
    local d pid cmd
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ -r $d/cmdline ]] || continue
        cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
        [[ $cmd == *pgqd* && $cmd == *" $DIR/pgqd.ini"* ]] && echo "$pid"
    done
    return 0
}

stop_pgqd() {
    local pids=() pid
    if pid=$(read_pidfile "$DIR/pgqd.pid"); then
        # Only signal it if it still is a pgqd (pids get recycled).
        if pid_alive "$pid" && grep -q pgqd "/proc/$pid/cmdline" 2>/dev/null; then
            pids+=("$pid")
        fi
    fi
    while read -r pid; do
        [[ -n $pid ]] || continue
        [[ " ${pids[*]-} " == *" $pid "* ]] || pids+=("$pid")
    done < <(our_pgqd_pids)
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        if ! wait_gone "$pid" "$PGQD_TIMEOUT"; then
            echo "$PROG: pgqd $pid ignored SIGINT for ${PGQD_TIMEOUT}s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "pgqd $pid survives SIGKILL" "$DIR/pgqd.log"
        fi
    done
    rm -f "$DIR/pgqd.pid"
}

stop_pg() {
    local data=$DIR/data pid out
    [[ -f $data/postmaster.pid ]] || return 0
    pid=$(read_pidfile "$data/postmaster.pid") || pid=
    if [[ -n $pid ]] && pid_alive "$pid"; then
        if ! out=$(as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t "$START_TIMEOUT" stop 2>&1); then
            echo "$PROG: fast stop failed ($out), trying immediate stop" >&2
            as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        fi
        # pg_ctl returns once postmaster.pid is gone; wait for the process itself.
        if ! wait_gone "$pid" "$START_TIMEOUT"; then
            echo "$PROG: postmaster $pid still running, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "postmaster $pid in $data does not stop" "$DIR/postgres.log"
        fi
    fi
    rm -f "$data/postmaster.pid"
}

check_ours() {  # refuse to delete a directory that pgtmp.sh did not create
    [[ -d $DIR ]] || return 0
    [[ -e $DIR/$MARKER ]] && return 0
    [[ -z $(ls -A "$DIR" 2>/dev/null) ]] && return 0
    die "$DIR exists, is not empty and was not created by $PROG (no $MARKER); refusing to touch it"
}

cleanup_dir() {  # stop everything in DIR and empty it (keep DIR itself)
    check_ours
    [[ -d $DIR ]] || return 0
    stop_pgqd
    stop_pg
    find "$DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

# ---------------------------------------------------------------- starting

make_dir() {
    mkdir -p "$DIR"
    touch "$DIR/$MARKER"
    chmod 755 "$DIR"
    if is_root; then
        chown postgres:postgres "$DIR" "$DIR/$MARKER"
        # Every ancestor must be searchable by postgres.
        if ! runuser -u postgres -- test -x "$DIR" 2>/dev/null; then
            local a=$DIR
            local parents=()
            while [[ $a != / ]]; do a=$(dirname "$a"); parents=("$a" "${parents[@]}"); done
            for a in "${parents[@]}"; do
                if ! runuser -u postgres -- test -x "$a" 2>/dev/null; then
                    echo "$PROG: note: chmod a+x $a so that postgres can reach $DIR" >&2
                    chmod a+x "$a"
                fi
            done
            runuser -u postgres -- test -x "$DIR" || die "user postgres cannot reach $DIR"
        fi
    fi
}

write_conf() {  # write_conf PORT
    local port=$1
    as_pg tee "$DIR/data/pgtmp.conf" >/dev/null <<EOF
# written by $PROG
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
logging_collector = off
EOF
}

wait_ready() {  # wait_ready PORT TIMEOUT_S
    local port=$1 deadline=$(( $(now_ms) + $2 * 1000 ))
    until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 >/dev/null 2>&1; do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.02
    done
}

psql_run() {  # psql_run PORT DB SQL
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3" >/dev/null
}

start_pg() {  # start_pg -> prints the port
    local port attempt out log=$DIR/postgres.log
    for (( attempt = 1; attempt <= 5; attempt++ )); do
        port=$(pick_port) || die "no free TCP port in $PORT_MIN-$(( PORT_MIN + PORT_RANGE - 1 ))"
        write_conf "$port"
        if out=$(as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$log" -w -t "$START_TIMEOUT" start 2>&1 </dev/null); then
            wait_ready "$port" "$START_TIMEOUT" \
                || die "server started but pg_isready on 127.0.0.1:$port failed for ${START_TIMEOUT}s" "$log"
            echo "$port"
            return 0
        fi
        # Lost a race for the port with someone else? Pick another one.
        if tail -n 20 "$log" 2>/dev/null | grep -q -e 'Address already in use' -e 'could not create any TCP/IP sockets'; then
            echo "$PROG: port $port was taken meanwhile, retrying with another port" >&2
            as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
            continue
        fi
        echo "$out" >&2
        die "pg_ctl start failed in $DIR/data" "$log"
    done
    die "could not find a usable port after 5 attempts" "$log"
}

start_pgqd() {  # start_pgqd PORT
    local port=$1 ini=$DIR/pgqd.ini pid deadline
    as_pg tee "$ini" >/dev/null <<EOF
[pgqd]
base_connstr = host=127.0.0.1 port=$port user=postgres
initial_database = pgqlua_test
database_list = $(IFS=,; dbs="${DATABASES[*]}"; echo "${dbs//,/, }")
logfile = $DIR/pgqd.log
pidfile = $DIR/pgqd.pid
syslog = 0
ticker_period = ${PGTMP_TICKER_PERIOD:-0.1}
retry_period = 0.2
maint_period = 5
EOF
    rm -f "$DIR/pgqd.pid"
    # pgqd's own stdout/stderr (start-up errors) go to pgqd.out; its log to pgqd.log.
    # Not captured with $(...): the daemon would inherit the pipe and keep it open.
    if ! as_pg "$PGQD" -d "$ini" </dev/null >>"$DIR/pgqd.out" 2>&1; then
        die "pgqd -d $ini failed" "$DIR/pgqd.out" "$DIR/pgqd.log"
    fi
    deadline=$(( $(now_ms) + PGQD_TIMEOUT * 1000 ))
    while :; do
        if pid=$(read_pidfile "$DIR/pgqd.pid") && pid_alive "$pid"; then
            return 0
        fi
        (( $(now_ms) < deadline )) || die "pgqd did not come up within ${PGQD_TIMEOUT}s (no live pid in $DIR/pgqd.pid)" "$DIR/pgqd.log" "$DIR/pgqd.out"
        sleep 0.02
    done
}

cmd_start() {
    local port
    if [[ -f $DIR/env ]] && port=$(env_port) && pg_ready_sock "$port" && pgqd_alive; then
        echo "$DIR/env"
        return 0
    fi
    cleanup_dir
    make_dir
    rm -f "$DIR/env"

    local initlog=$DIR/initdb.log
    as_pg mkdir -m 755 "$DIR/sock"
    if ! as_pg "$PGBIN/initdb" -D "$DIR/data" -A trust -E UTF8 --locale=C --no-sync -U postgres \
            >"$initlog" 2>&1 </dev/null; then
        die "initdb failed in $DIR/data" "$initlog"
    fi
    echo "include 'pgtmp.conf'" | as_pg tee -a "$DIR/data/postgresql.conf" >/dev/null

    port=$(start_pg) || exit 1

    local db
    for db in "${DATABASES[@]}"; do
        psql_run "$port" postgres "CREATE DATABASE $db" 2>>"$DIR/setup.log" \
            || die "CREATE DATABASE $db failed" "$DIR/setup.log" "$DIR/postgres.log"
        psql_run "$port" "$db" "CREATE EXTENSION pgq" 2>>"$DIR/setup.log" \
            || die "CREATE EXTENSION pgq in $db failed" "$DIR/setup.log" "$DIR/postgres.log"
    done

    start_pgqd "$port"

    local tmp=$DIR/env.tmp
    printf 'export PGHOST=127.0.0.1 PGPORT=%s PGUSER=postgres PGDATABASE=pgqlua_test PGQLUA_PGTMP=%q\n' \
        "$port" "$DIR" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$DIR/env"
    echo "$DIR/env"
}

cmd_stop() {
    [[ -d $DIR ]] || return 0
    check_ours
    stop_pgqd
    stop_pg
    rm -rf "$DIR"
}

cmd_restart_pg() {
    [[ -f $DIR/env ]] || die "no $DIR/env: run '$PROG start $DIR' first"
    local port out log=$DIR/postgres.log
    port=$(env_port) || die "cannot read PGPORT from $DIR/env"
    if ! out=$(as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$log" -m fast -w -t "$START_TIMEOUT" restart 2>&1 </dev/null); then
        echo "$out" >&2
        die "pg_ctl restart failed in $DIR/data" "$log"
    fi
    wait_ready "$port" "$START_TIMEOUT" \
        || die "server restarted but pg_isready on 127.0.0.1:$port failed for ${START_TIMEOUT}s" "$log"
    # pgqd waits a hard-coded 60 s before reconnecting after it loses a
    # connection, so without this no ticks (hence no batches, no retried
    # events) for a minute. PGTMP_KEEP_PGQD=1 keeps the old pgqd instead.
    if [[ ${PGTMP_KEEP_PGQD:-0} != 1 ]]; then
        stop_pgqd
        start_pgqd "$port"
    fi
}

cmd_logs() {
    local f
    for f in "$DIR/postgres.log" "$DIR/pgqd.log" "$DIR/pgqd.out"; do
        [[ $f == *pgqd.out && ! -s $f ]] && continue
        echo "==== last 50 lines of $f ===="
        if [[ -f $f ]]; then tail -n 50 "$f" || true; else echo "(missing)"; fi
    done
}

# ---------------------------------------------------------------- main

[[ $# -eq 2 ]] || usage
CMD=$1
[[ -n $2 ]] || usage
DIR=$(realpath -m -- "$2")
case $DIR in
    / | /tmp | /var | /usr | /etc | /root | /home | "$HOME") die "refusing to use $DIR as a pgtmp directory" ;;
esac
# Unix socket path: DIR/sock/.s.PGSQL.NNNNN must fit in sun_path (107 bytes).
(( ${#DIR} + 5 + 14 <= 107 )) || die "directory path too long for a Unix socket path: $DIR"
cd /

[[ -x $PGBIN/pg_ctl ]] || die "PostgreSQL binaries not found in $PGBIN"
case $CMD in
    start)
        [[ -x $PGQD ]] || die "pgqd not found at $PGQD"
        cmd_start ;;
    stop) cmd_stop ;;
    restart-pg) cmd_restart_pg ;;
    logs) cmd_logs ;;
    *) usage ;;
esac
