-- Contract fixture: a send that retries its event at max_retries sends it
-- to the failed-event table with the send's reason.  See httpsend_max.yaml.
local BASE = os.getenv("PGQLUA_TEST_HTTP") or "http://HOST"

function process_event(ev)
  pgq.http.send{ url = BASE .. ev.data, body = "x" }
end
