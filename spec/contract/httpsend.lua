-- Contract fixture: pgq.http.send's responses decide the event's outcome
-- (a 2xx keeps it, a 404 fails it with the status and the body,
-- on_response decides instead).  The mock answers from httpsend.yaml; the
-- runtime asks tests/tools/httpd.py (PGQLUA_TEST_HTTP).  See httpsend.yaml.
local BASE = os.getenv("PGQLUA_TEST_HTTP") or "http://HOST"

function process_event(ev)
  if ev.type == "decide" then
    pgq.http.send({ url = BASE .. ev.data }, function(res)
      if res.status == 500 then return pgq.EVENT_FAILED, "on_response saw " .. res.body end
    end)
  else
    pgq.http.send{ url = BASE .. ev.data, json = { id = ev.id } }
  end
end
