#!/usr/bin/env bash
# pgq.mail.send against the local test SMTP server (tests/tools/smtpd.py):
# the mails of a run arrive with their envelope, headers and parts; a
# refused recipient fails the event with the server's reason and undoes
# its writes; event_timeout ends a wait on a server that does not answer;
# a login from the URL or from smtp_user/smtp_password, a refused one
# named without the secrets.
source "$(dirname "$0")/lib.sh"

start_smtpd() { # NAME [ARGS...]: a server whose port goes to $WORK/NAME.port
	local name=$1
	shift
	/usr/bin/python3 "$ROOT/tests/tools/smtpd.py" --port-file "$WORK/$name.port" --spool "$WORK/$name.spool" \
		--lifetime "$(scaled 300)" --parent-pid $$ "$@" &
	CHILD_PIDS+=("$!")
	wait_until 10 test -s "$WORK/$name.port" || { fail "the test SMTP server $name did not start"; finish; }
}
start_smtpd smtp
start_smtpd smtp_auth --user mailer --password 's3cret'
SMTP="smtp://127.0.0.1:$(cat "$WORK/smtp.port")"
AUTH_PORT=$(cat "$WORK/smtp_auth.port")
# mail FIELD [WHERE]: FIELD of each mail received (python expression over m), one per line
mails() {
	/usr/bin/python3 - "$WORK/${2:-smtp}.spool" "$1" <<'EOF'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.json"), key=lambda p: int(p.rsplit("/", 1)[1][:-5])):
    m = json.load(open(f))
    print(eval(sys.argv[2]))
EOF
}

reset_queues q_mail q_mail_auth q_mail_badauth
sql "drop table if exists m_sent; create table m_sent (ev_id bigint, who text)" > /dev/null

# ---- the mails of a run, and a refused recipient
new_consumer q_mail c_mail "
function process_event(ev, db)
  local order = pgq.json_decode(ev.data)
  db:exec('insert into m_sent values (\$1, \$2)', ev.id, order.id)
  pgq.mail.send{
    from = 'Shop <shop@example.com>',
    to = order.to, cc = order.cc,
    subject = 'Order ' .. order.id .. ' – confirmed',
    text = 'Thank you for order ' .. order.id .. '.\n.\nA line starting with a dot.',
    html = order.html and '<p>Thank you for order <b>' .. order.id .. '</b></p>' or nil,
    headers = { ['Reply-To'] = 'help@example.com' },
  }
end" "max_retries: 0
smtp_url: \"$SMTP\""
sql "select pgq.insert_event('q_mail', 'order', d) from unnest(array[
       '{\"id\": 1, \"to\": \"ann@example.com\"}',
       '{\"id\": 2, \"to\": [\"bo@example.com\", \"cy@example.com\"], \"cc\": \"boss@example.com\", \"html\": true}',
       '{\"id\": 3, \"to\": \"nobody@example.com\"}',
       '{\"id\": 4, \"to\": \"di@example.com\"}']) d" > /dev/null
drain q_mail c_mail || fail "q_mail did not drain"
expect_eq "every accepted mail arrived, with its envelope" \
	"shop@example.com ann@example.com
shop@example.com bo@example.com,cy@example.com,boss@example.com
shop@example.com di@example.com" "$(mails 'm["from"] + " " + ",".join(m["rcpt"])')"
expect_eq "the connection is kept: the second mail goes on the first one's" "1 1" \
	"$(mails 'm["connection"]' | sed -n 1,2p | tr '\n' ' ' | sed 's/ $//')"
first=$(mails 'm["data"]' | sed -n '1,20p')
expect_match "the headers: From, To, Subject (encoded), the script's Reply-To, MIME" \
	"From: Shop <shop@example.com>.*To: ann@example.com.*Subject: =\?UTF-8\?B\?T3JkZXIgMSDigJMgY29uZmlybWVk\?=.*Reply-To: help@example.com.*MIME-Version: 1.0.*Content-Type: text/plain; charset=utf-8" \
	"$(echo $first)"
expect_eq "a line that is a dot arrives as it was written" "True" \
	"$(mails '"order 1.\r\n.\r\nA line starting with a dot." in m["data"]' | sed -n 1p)"
expect_eq "text and html go as multipart/alternative" "1" \
	"$(mails '"multipart/alternative" in m["data"] and "<b>2</b>" in m["data"].replace("=\r\n", "")' | grep -c True)"
failed=$("$PGQLUA" failed list "$WORK/c_mail.yaml")
expect_match "a refused recipient fails the event with the server's reason" \
	"c_mail.lua:5: pgq.mail.send: smtp://127.0.0.1:[0-9]+/: Failed sending data to the peer \(RCPT failed: 550\); the server said: 550 5.1.1 <nobody@example.com>: no such user here" \
	"$failed"
expect_eq "the refused event's writes are undone, the others kept" "1,2,4" \
	"$(sql "select string_agg(who, ',' order by ev_id) from m_sent")"

# ---- event_timeout ends a wait on a server that does not answer
reset_queues q_mail_hang
new_consumer q_mail_hang c_mail_hang "
function process_event(ev, db)
  pgq.mail.send{ from = 'shop@example.com', to = ev.data, text = 'hello' }
end" "max_retries: 0
event_timeout: 1
smtp_url: \"$SMTP\""
sql "select pgq.insert_event('q_mail_hang', 'x', 'hang@example.com')" > /dev/null
drain q_mail_hang c_mail_hang || fail "q_mail_hang did not drain"
expect_eq "event_timeout ends the wait for a server that does not answer" \
	"max_retries (0) reached: event_timeout exceeded: the script ran for more than 1 seconds" \
	"$(sql "select reason from pgqlua.failed_event where queue_name = 'q_mail_hang'")"

# ---- a login: from the URL, or from smtp_user / smtp_password
new_consumer q_mail_auth c_mail_auth "
function process_event(ev, db)
  pgq.mail.send{ from = 'shop@example.com', to = ev.data, subject = 'hi', text = 'hello' }
end" "max_retries: 0
smtp_url: \"smtp://mailer:s3cret@127.0.0.1:$AUTH_PORT\""
export SMTP_PASSWORD=wr0ng-pw
new_consumer q_mail_badauth c_mail_badauth "
function process_event(ev, db)
  pgq.mail.send{ from = 'shop@example.com', to = ev.data, subject = 'hi', text = 'hello' }
end" "max_retries: 0
smtp_url: \"smtp://127.0.0.1:$AUTH_PORT/?token=hush\"
smtp_user: mailer
smtp_password: \"\${SMTP_PASSWORD}\""
sql "select pgq.insert_event('q_mail_auth', 'x', 'eve@example.com');
     select pgq.insert_event('q_mail_badauth', 'x', 'fay@example.com')" > /dev/null
drain q_mail_auth c_mail_auth || fail "q_mail_auth did not drain"
drain q_mail_badauth c_mail_badauth || fail "q_mail_badauth did not drain"
expect_eq "the URL's login is used" "mailer eve@example.com" \
	"$(mails 'm["user"] + " " + ",".join(m["rcpt"])' smtp_auth)"
r=$(sql "select reason from pgqlua.failed_event where queue_name = 'q_mail_badauth'")
expect_match "a refused login fails with the server's reason" \
	"pgq.mail.send: smtp://127.0.0.1:$AUTH_PORT/: .*the server said: 535 5.7.8 authentication credentials invalid" "$r"
if { cat "$WORK"/c_mail*.log; echo "$r"; } | grep -q "s3cret\|wr0ng-pw\|hush"; then
	fail "a password or the URL's query shows in a log or a reason"
else
	ok "no password or query in the logs or the reasons"
fi
finish
