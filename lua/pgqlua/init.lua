--- The `pgq` table scripts see (also `require "pgqlua"`): result codes,
-- pgq.null, logging into the runtime's log, and payload decoders.
-- The runtime and the mock batch runner load this same module; each lends
-- it a `pgqlua.host` module with log(level, message) and loadfile(path),
-- the latter loading text chunks only.
local host = require "pgqlua.host"
local payload = require "pgqlua.payload"
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

return pgq
