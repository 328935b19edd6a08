--- The `pgq` table scripts see (also `require "pgqlua"`): result codes,
-- pgq.null, logging into the runtime's log, and payload decoders.
-- The runtime and the mock batch runner load this same module; each lends
-- it a `pgqlua.host` module with log(level, message), loadfile(path) (text
-- chunks only), http_context(), http_request(prepared request),
-- http_send(prepared request, on_response), mail_context() and
-- mail_send(prepared message).
local host = require "pgqlua.host"
local payload = require "pgqlua.payload"
local http = require "pgqlua.http"
local mail = require "pgqlua.mail"
local rules = require "pgqlua.rules"

local pgq = {}

pgq.EVENT_OK = rules.EVENT_OK
pgq.EVENT_FAILED = rules.EVENT_FAILED
pgq.EVENT_RETRY = rules.EVENT_RETRY
pgq.ABORT_BATCH = rules.ABORT_BATCH

--- SQL NULL: distinct from nil so that ev.extra1 == pgq.null is a present key.
pgq.null = payload.null

local LEVEL = { error = 0, warn = 1, info = 2, debug = 3 }

pgq.log = {}
for name, level in pairs(LEVEL) do
  pgq.log[name] = function(fmt, ...)
    local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
    host.log(level, msg)
  end
end

pgq.urldecode = payload.urldecode
pgq.json_decode = payload.json_decode

-- pgq.http: the request is checked and completed here (pgqlua.http), sent
-- by the host (libcurl in the runtime, the answers in the mock runner)
local http_context, http_request, http_send = host.http_context, host.http_request, host.http_send
pgq.http = {}

--- One HTTP(S) request, waited for: {status =, headers =, body =}.  A
-- transport failure raises "pgq.http.request: METHOD URL: reason".
function pgq.http.request(req)
  local prep, err = http.prepare(req, http_context())
  if not prep then error(err, 2) end
  local res, reason = http_request(prep)
  if not res then error(http.transport_error(prep, reason), 2) end
  return res
end

--- The same request without waiting: the event's result waits for its
-- response (2xx keeps it; 408, 429, 5xx and transport errors make it
-- RETRY, Retry-After giving the delay; other statuses FAILED), unless
-- on_response(res) returns a result to decide instead.
function pgq.http.send(req, on_response)
  local prep, err = http.prepare(req, http_context())
  if not prep then error((err:gsub("^pgq%.http%.request", "pgq.http.send")), 2) end
  if on_response ~= nil and type(on_response) ~= "function" then
    error("pgq.http.send: on_response must be a function", 2)
  end
  http_send(prep, on_response)
end

-- pgq.mail: the message is checked and written here (pgqlua.mail), sent by
-- the host (libcurl's SMTP in the runtime, the answers in the mock runner)
local mail_context, mail_send = host.mail_context, host.mail_send
pgq.mail = {}

--- One mail through smtp_url, waited for.  A refused recipient or a
-- transport failure raises "pgq.mail.send: URL: reason".
function pgq.mail.send(msg)
  local ctx = mail_context()
  local prep, err = mail.prepare(msg, ctx)
  if not prep then error(err, 2) end
  local ok, reason = mail_send(prep)
  if not ok then error(mail.transport_error(ctx, reason), 2) end
  return true
end

return pgq
