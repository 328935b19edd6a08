#!/usr/bin/env bash
# The pid file and the state file are never a way to write through someone
# else's file: a symbolic link, a file that is not a pgqlua pid file and a
# file of another user are refused (exit 73, one line) and left exactly as
# they were; the state file's temporary file is never followed; a stale
# pgqlua pid file is taken over; a new pid file has mode 0644.
source "$(dirname "$0")/lib.sh"
reset_queues q_pidf
new_consumer q_pidf c_pidf 'function process_event() end' "logfile: c_pidf.log"
Y="$WORK/c_pidf.yaml"
cp "$Y" "$WORK/base.yaml"

# with_pidfile NAME: the config with pidfile: NAME
with_pidfile() { { cat "$WORK/base.yaml"; echo "pidfile: $1"; } > "$Y"; }
# refused WHAT FILE PATTERN: run is refused with exit 73 and a one-line error
refused() {
	local out rc
	out=$("$PGQLUA" run --once "$Y" 2>&1) && rc=0 || rc=$?
	expect_eq "$1: refused with exit 73" "73" "$rc"
	expect_match "$1: one line naming the file and why" "^pgqlua: $WORK/$2: $3: refused, left as it is\$" "$out"
}

printf 'important data\nline two\n' > "$WORK/victim.txt"
with_pidfile victim.txt
refused "a file that is not a pid file" victim.txt "not a pgqlua pid file \(it should hold one line with a pid\)"
expect_eq "it is left untouched" "$(printf 'important data\nline two')" "$(cat "$WORK/victim.txt")"

printf 'keep me\n' > "$WORK/victim2.txt"
ln -s victim2.txt "$WORK/link.pid"
with_pidfile link.pid
refused "a symbolic link to a file" link.pid "pid file is a symbolic link"
expect_eq "its target is left untouched" "keep me" "$(cat "$WORK/victim2.txt")"
[ -L "$WORK/link.pid" ] && ok "the link is still there" || fail "the link was removed"

ln -s new-victim.txt "$WORK/dangling.pid"
with_pidfile dangling.pid
refused "a dangling symbolic link" dangling.pid "pid file is a symbolic link"
[ ! -e "$WORK/new-victim.txt" ] && ok "no file is created through it" || fail "a file was created through the link"

printf '12345\n' > "$WORK/twice.pid"
ln "$WORK/twice.pid" "$WORK/hardlink.pid"
with_pidfile twice.pid
refused "a pid file with another hard link" twice.pid "not a pgqlua pid file \(it has other hard links\)"
rm -f "$WORK/hardlink.pid"

if [ "$(id -u)" == 0 ] && id nobody > /dev/null 2>&1; then
	printf '4242\n' > "$WORK/foreign.pid"
	chown nobody "$WORK/foreign.pid"
	with_pidfile foreign.pid
	refused "a pid file of another user" foreign.pid "pid file belongs to uid [0-9]+, not to the running user \(uid 0\)"
	expect_eq "it is left untouched" "4242" "$(cat "$WORK/foreign.pid")"
else
	ok "# skip a pid file of another user: needs root and a user nobody"
fi

# the state file's temporary file is a planted link: never followed
printf 'keep me too\n' > "$WORK/victim3.txt"
with_pidfile c_pidf.pid
ln -s victim3.txt "$WORK/c_pidf.pid.state.tmp"
printf '99999999\n' > "$WORK/c_pidf.pid"      # stale: no process holds its lock
out=$("$PGQLUA" run --once "$Y" 2>&1) && rc=0 || rc=$?
expect_eq "a stale pgqlua pid file is taken over (run --once exits 0)" "0:" "$rc:$out"
expect_eq "the state file's planted link is not followed" "keep me too" "$(cat "$WORK/victim3.txt")"
[ ! -e "$WORK/c_pidf.pid" ] && ok "the pid file is removed at exit" || fail "the pid file is left behind"

"$PGQLUA" start "$Y" > /dev/null
CHILD_PIDS+=("$(cat "$WORK/c_pidf.pid")")
expect_eq "a new pid file has mode 0644 and holds the pid" "644 1" \
	"$(stat -c %a "$WORK/c_pidf.pid") $(grep -cxE '[0-9]+' "$WORK/c_pidf.pid")"
wait_until 30 test -f "$WORK/c_pidf.pid.state" || fail "no state file"
expect_eq "the state file is written (mode 0644, through a fresh temporary file)" "644 keep me too" \
	"$(stat -c %a "$WORK/c_pidf.pid.state") $(cat "$WORK/victim3.txt")"
"$PGQLUA" stop "$Y" > /dev/null
[ ! -e "$WORK/c_pidf.pid" ] && ok "stop removes the pid file" || fail "the pid file is left behind after stop"

# status only asks whether the pid file is locked: probing it without a
# pause while instances start one after another never makes one of them
# believe another instance runs
bash -c 'while :; do "$0" status "$1" > /dev/null 2>&1; done' "$PGQLUA" "$Y" &
PROBE_PID=$!
CHILD_PIDS+=("$PROBE_PID")
refusals=0
for _ in $(seq 1 20); do
	out=$("$PGQLUA" run --once "$Y" 2>&1) || true
	[[ $out == *"already running"* ]] && refusals=$((refusals + 1))
done
kill "$PROBE_PID" 2>/dev/null; wait "$PROBE_PID" 2>/dev/null || true
expect_eq "20 starts beside a status loop: none refused as already running" 0 "$refusals"
finish
