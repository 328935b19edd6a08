-- Contract fixture: pgq.mail.send.  A mail the server accepts keeps its
-- event OK; a refused recipient raises with libcurl's reason and the
-- server's reply, so the event is an error and its write is undone.  The
-- mock answers from mail.yaml; the runtime sends to tests/tools/smtpd.py
-- (PGQLUA_TEST_SMTP), which refuses recipients named nobody*.
function process_event(ev, db)
  if ev.type == "kept" then
    local rows = db:exec("select string_agg(v, ',' order by v) as v from ct_mail")
    return pgq.EVENT_FAILED, "kept: " .. rows[1].v
  end
  db:exec("insert into ct_mail values ($1)", ev.data)
  pgq.mail.send{ from = "Shop <shop@example.com>", to = ev.data, subject = "order " .. ev.id, text = "thanks" }
end
