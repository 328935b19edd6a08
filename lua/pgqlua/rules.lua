--- pgqlua.rules - the rules the runtime and the mock batch runner share:
-- result codes and how process_event's results become outcomes, the
-- transaction-control refusal, parameter text, the max_retries rule and
-- the config defaults, each with its exact texts.
--
-- The runtime loads this module into every script's lua_State before the
-- script (lbridge.c) and keeps its functions in registry refs; its C code
-- keeps only the fast paths that need no rule (no result, nil or EVENT_OK
-- is OK; a string without NUL, an integer, nil or pgq.null is sent as it
-- is) and calls these functions for everything else, so nothing here runs
-- per event.  pgqlua.testing (the mock runner) calls the same functions.
--
-- The functions run inside a script's state: they use library functions
-- captured when this module loads and never a method of a string, so a
-- script that replaces string.format or the string metatable changes
-- nothing here.
local format, find = string.format, string.find
local mtype, floor, abs = math.type, math.floor, math.abs
local tostring, type, rawequal = tostring, type, rawequal

local M = {}

--- Result codes (pgq.EVENT_OK ...).
local EVENT_OK, EVENT_FAILED, EVENT_RETRY, ABORT_BATCH = 1, 2, 3, 4
M.EVENT_OK, M.EVENT_FAILED, M.EVENT_RETRY, M.ABORT_BATCH = EVENT_OK, EVENT_FAILED, EVENT_RETRY, ABORT_BATCH

--- The largest retry delay in seconds (about 100 years: more overflows
-- PostgreSQL intervals and poll()).
local DELAY_MAX = 3.2e9
M.DELAY_MAX = DELAY_MAX

--- What db:exec and db:send say to a statement that starts COPY (the
-- runtime's is PGCONN_COPY_REFUSED in runtime/pgconn.h: keep them equal).
M.COPY_REFUSED = "COPY is not supported"

--- Seconds the top level of a script and init() may take without an
-- event_timeout.
M.LOAD_TIMEOUT = 30

--- Seconds the top level and init() may take: event_timeout when it is
-- set (the supervising parent kills past it), else LOAD_TIMEOUT.
function M.load_timeout(config)
  local t = config and config.event_timeout or 0
  if t > 0 then return t end
  return M.LOAD_TIMEOUT
end

--- Config defaults the rules use, as the mock runner applies them (the
-- runtime's come from runtime/config.c's key table and must match).
M.DEFAULTS = {
  retry_delay = 60,
  max_retries = 5,
  fetch_size = 300,
  loop_delay = 1,
  event_timeout = 0,
}

--- What db:exec and db:send say to transaction control, after "db:exec: ".
M.TXN_REFUSED = "transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the batch's transaction"

local FAILED_DEFAULT = "failed by the script"
local RETRIED_DEFAULT = "retried by the script"

--- process_event's first two results to an outcome: "OK", "RETRY" (and
-- the delay or nil), "FAILED" (nil and the reason) or "ABORT_BATCH".
-- Raises the script error for what is not a result; where() gives
-- process_event's "file:line".
function M.map_result(where, first, second)
  local code
  if first == nil then
    code = EVENT_OK
  elseif mtype(first) == "integer" then
    code = first
  end
  if code == EVENT_OK then
    return "OK"
  elseif code == ABORT_BATCH then
    return "ABORT_BATCH"
  elseif code == EVENT_RETRY then
    if second == nil then return "RETRY" end
    if type(second) ~= "number" or not (second >= 0 and second <= DELAY_MAX) then
      error(format("%s: process_event returned pgq.EVENT_RETRY with a bad delay: %s (expected seconds"
        .. " from 0 to 3.2e9)", where(), tostring(second)), 0)
    end
    return "RETRY", second + 0.0
  elseif code == EVENT_FAILED then
    if second == nil then return "FAILED", nil, FAILED_DEFAULT end
    if type(second) ~= "string" then
      error(format("%s: process_event returned pgq.EVENT_FAILED with a %s reason (expected a string)",
        where(), type(second)), 0)
    end
    return "FAILED", nil, second
  end
  error(format("%s: process_event returned %s, which is not a result (return pgq.EVENT_OK,"
    .. " pgq.EVENT_RETRY, pgq.EVENT_FAILED or pgq.ABORT_BATCH)", where(), tostring(first)), 0)
end

--- A RETRY or an error of an event delivered `retry` times before: nil
-- (it goes back through PgQ), or the reason it goes to the failed-event
-- table instead.  msg: the error, or "" / nil for a RETRY.
function M.retries_used_up(retry, max_retries, msg)
  if retry < max_retries then return nil end
  if msg == nil or msg == "" then msg = RETRIED_DEFAULT end
  return format("max_retries (%d) reached: ", max_retries) .. msg
end

--- The text a statement's parameter n is sent as (nil: SQL NULL), or
-- false and the error db:<verb> raises for a value it refuses.  null is
-- the script's pgq.null.
function M.param_text(v, n, verb, null)
  local t = type(v)
  if v == nil or rawequal(v, null) then
    return nil
  elseif t == "string" then
    if find(v, "\0", 1, true) then
      return false, format("db:%s: parameter %d contains a NUL byte", verb, n)
    end
    return v
  elseif t == "number" then
    if mtype(v) == "integer" then return format("%d", v) end
    if v == floor(v) and abs(v) < 9.0e15 then return format("%.0f", v) end
    return format("%.17g", v)
  elseif t == "boolean" then
    return v and "true" or "false"
  end
  return false, format("db:%s: parameter %d is a %s (expected a string, number, boolean, nil or pgq.null)",
    verb, n, t)
end

return M
