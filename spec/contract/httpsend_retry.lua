-- Contract fixture: pgq.http.send's retries and undo.  A 503 with
-- Retry-After makes its event RETRY after that delay, and the next
-- request to the same path gets the 200 (OK); a 404 and a timeout end the
-- events that wrote (FAILED, RETRY) with their writes undone, the OK
-- event's kept.  The mock answers from httpsend_retry.yaml; the runtime
-- asks tests/tools/httpd.py (PGQLUA_TEST_HTTP).
local BASE = os.getenv("PGQLUA_TEST_HTTP") or "http://HOST"

function process_event(ev, db)
  if ev.type == "kept" then
    local rows = db:exec("select string_agg(v, ',' order by v) as v from ct_hsend")
    return pgq.EVENT_FAILED, "kept: " .. rows[1].v
  end
  db:exec("insert into ct_hsend values ($1)", ev.type)
  pgq.http.send{ url = BASE .. ev.data, json = { id = ev.id }, timeout = 0.5 }
end
