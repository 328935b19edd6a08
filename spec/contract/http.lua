-- Contract fixture: pgq.http.request's responses and transport errors, as
-- the script sees them.  The mock answers from http.yaml's http_answers;
-- the runtime asks tests/tools/httpd.py (PGQLUA_TEST_HTTP), which answers
-- the same.  See http.yaml.
local BASE = os.getenv("PGQLUA_TEST_HTTP") or "http://HOST"

function process_event(ev)
  local res = pgq.http.request{ url = BASE .. ev.data, timeout = 0.2 }
  if res.status >= 500 then
    error("the server answered " .. res.status .. ": " .. res.body)
  elseif res.status >= 400 then
    return pgq.EVENT_FAILED, res.status .. " " .. res.body
  end
  if res.body ~= "ok" or res.headers["content-length"] ~= "2" then
    return pgq.EVENT_FAILED, "unexpected response"
  end
end
