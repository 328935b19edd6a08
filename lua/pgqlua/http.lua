--- pgqlua.http - what pgq.http.request does around the transport, shared
-- by the runtime (whose transport is runtime/lhttp.c on libcurl) and the
-- mock runner (whose transport answers from consumer:answer_http): the
-- request's defaults and checks, the JSON body, the Idempotency-Key
-- header, the URL as errors show it and the texts of transport errors.
--
-- Like pgqlua.rules it runs inside a script's state and uses only library
-- functions captured when it loads.
local json = require "dkjson"
local payload = require "pgqlua.payload"
local rules = require "pgqlua.rules"

local format, find, lower, upper, match, gsub = string.format, string.find, string.lower, string.upper,
  string.match, string.gsub
local type, pairs, tostring, rawequal, mtype = type, pairs, tostring, rawequal, math.type
local setmetatable, getmetatable, pcall, ipairs, tonumber, error = setmetatable, getmetatable, pcall, ipairs,
  tonumber, error
local os = { time = os.time, date = os.date }
local sort, concat = table.sort, table.concat

local M = {}

--- The largest timeout in seconds a request may give.
local TIMEOUT_MAX = 3.2e9

--- What a testing.http_error(kind) stands for: libcurl's reason for it.
M.ERRORS = {
  timeout = "Timeout was reached",
  connect = "Couldn't connect to server",
  resolve = "Couldn't resolve host name",
  reset = "Failure when receiving data from the peer",
  tls = "SSL peer certificate or SSH remote key was not OK",
  body_limit = "the response body is larger than http_max_body",
}

--- libcurl's reason for a transport error of `kind` (a key of ERRORS; any
-- other text is the reason itself), as runtime/lhttp.c words it.
function M.reason(kind, prep, max_body)
  if kind == "timeout" then
    return format("%s (after %.3g seconds)", M.ERRORS.timeout, prep and prep.timeout or 30)
  elseif kind == "body_limit" then
    return format("%s (%d bytes)", M.ERRORS.body_limit, mtype(max_body) == "integer" and max_body or 10485760)
  end
  return M.ERRORS[kind] or tostring(kind)
end

--- The URL as messages show it: no user name or password, no query, no
-- fragment (they may hold secrets).
function M.safe_url(url)
  if type(url) ~= "string" then return tostring(url) end
  local scheme, rest = match(url, "^([%a][%w+.-]*)://(.*)$")
  if not scheme then
    return (gsub(url, "[?#].*$", ""))
  end
  local authority, path = match(rest, "^([^/?#]*)(.*)$")
  authority = gsub(authority, "^.*@", "")
  path = gsub(path, "[?#].*$", "")
  return scheme .. "://" .. authority .. path
end

-- pgq.null inside a json value becomes JSON null
local function json_value(v, null, depth)
  if rawequal(v, null) then return json.null end
  if type(v) ~= "table" or depth > 1000 then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = json_value(x, null, depth + 1) end
  return setmetatable(t, getmetatable(v))
end

local function header_token(name)
  return type(name) == "string" and find(name, "^[!#$%%&'*+.^_`|~%w-]+$") ~= nil
end

--- req (the script's table) to the request the transport sends, or nil
-- and the error.  ctx: key (the event's Idempotency-Key, nil outside an
-- event or when http_idempotency_key is off) and timeout (http_timeout).
-- The result: url, method, headers (name -> value as sent), header_lines
-- ("Name: value", sorted), body (or nil), timeout (seconds), follow.
function M.prepare(req, ctx)
  local who = "pgq.http.request"
  if type(req) ~= "table" then
    return nil, format("%s: expected a table {url = ...}, got %s", who, type(req))
  end
  local url = req.url
  if type(url) ~= "string" or url == "" then
    return nil, format("%s: url must be a string, not %s", who, type(url))
  end
  if not find(lower(url), "^https?://[^/?#]") then
    return nil, format("%s: url must start with http:// or https://: %s", who, M.safe_url(url))
  end
  local out = { url = url, headers = {}, follow = req.follow == true }
  local have = {}
  if req.headers ~= nil then
    if type(req.headers) ~= "table" then
      return nil, format("%s: headers must be a table, not %s", who, type(req.headers))
    end
    for name, value in pairs(req.headers) do
      if not header_token(name) then
        return nil, format("%s: bad header name %s", who, tostring(name))
      end
      if type(value) == "number" then value = tostring(value) end
      if type(value) ~= "string" or find(value, "[\r\n%z]") then
        return nil, format("%s: header %s must be a string without line breaks", who, name)
      end
      out.headers[name] = value
      have[lower(name)] = true
    end
  end
  if req.json ~= nil and req.body ~= nil then
    return nil, format("%s: give body or json, not both", who)
  end
  if req.json ~= nil then
    local ok, text = pcall(json.encode, json_value(req.json, payload.null, 0))
    if not ok or type(text) ~= "string" then
      return nil, format("%s: json cannot be encoded: %s", who, tostring(text))
    end
    out.body = text
    if not have["content-type"] then out.headers["Content-Type"] = "application/json" end
  elseif req.body ~= nil then
    if type(req.body) ~= "string" then
      return nil, format("%s: body must be a string, not %s", who, type(req.body))
    end
    out.body = req.body
  end
  local method = req.method
  if method == nil then
    method = out.body and "POST" or "GET"
  elseif type(method) ~= "string" or not find(method, "^%a+$") then
    return nil, format("%s: bad method %s", who, tostring(method))
  end
  out.method = upper(method)
  local timeout = req.timeout
  if timeout == nil then timeout = ctx and ctx.timeout or 30 end
  if type(timeout) ~= "number" or not (timeout > 0 and timeout <= TIMEOUT_MAX) then
    return nil, format("%s: timeout must be seconds above 0, not %s", who, tostring(timeout))
  end
  out.timeout = timeout + 0.0
  if ctx and ctx.key and not have["idempotency-key"] then
    out.headers["Idempotency-Key"] = ctx.key
  end
  local lines = {}
  for name, value in pairs(out.headers) do lines[#lines + 1] = name .. ": " .. value end
  sort(lines)
  out.header_lines = lines
  return out
end

--- The error a transport failure raises (after the script's file:line).
function M.transport_error(prep, reason)
  return format("pgq.http.request: %s %s: %s", prep.method, M.safe_url(prep.url), tostring(reason))
end

--- Seconds a Retry-After header asks for (seconds, or an HTTP date), or nil.
function M.retry_after(v, now)
  if type(v) ~= "string" then return nil end
  local n = tonumber(v)
  if n and n >= 0 and n <= TIMEOUT_MAX then return n + 0.0 end
  local d, mon, y, hh, mm, ss = match(v, "^%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT$")
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                   Nov = 11, Dec = 12 }
  if not d or not months[mon] then return nil end
  -- both sides read as local time: their difference is right
  local t = os.time({ year = tonumber(y), month = months[mon], day = tonumber(d), hour = tonumber(hh),
                      min = tonumber(mm), sec = tonumber(ss) })
  local utc_now = os.time(os.date("!*t", now or os.time()))
  local s = t - utc_now
  return s > 0 and s + 0.0 or 0.0
end

local BODY_SHOWN = 200

--- What one send's response makes of its event: "OK", "RETRY" (delay or
-- nil, why) or "FAILED" (nil, reason).
function M.classify(prep, res, err)
  local head = format("pgq.http.send: %s %s: ", prep.method, M.safe_url(prep.url))
  if not res then return "RETRY", nil, head .. tostring(err) end
  local st = res.status
  if st >= 200 and st < 300 then return "OK" end
  if st == 408 or st == 429 or st >= 500 then
    return "RETRY", M.retry_after(res.headers and res.headers["retry-after"]), head .. "status " .. st
  end
  local body = res.body or ""
  if #body > BODY_SHOWN then body = body:sub(1, BODY_SHOWN) .. "..." end
  return "FAILED", nil, head .. "status " .. st .. (body ~= "" and (": " .. body) or "")
end

local RANK = { OK = 0, RETRY = 1, FAILED = 2 }

--- An event's result once its sends have ended: sends is a list of
-- {prep, on_response, res, err}.  An event not OK keeps its result; else
-- each send is classified (or on_response(res) decides, returning a
-- result as process_event does), the worst wins (FAILED over RETRY over
-- OK; the longest retry delay).
function M.settle(outcome, delay, reason, sends)
  if outcome ~= "OK" then return outcome, delay, reason end
  local out, d, why = "OK", nil, nil
  for _, s in ipairs(sends) do
    local prep, on_response, res, err = s[1], s[2], s[3], s[4]
    local o, sd, sr
    if on_response then
      local code, detail = on_response(res or { status = 0, headers = {}, body = "",
                                                error = M.transport_error(prep, err) })
      if code ~= nil then
        o, sd, sr = rules.map_result(function() return "on_response" end, code, detail)
        if o == "ABORT_BATCH" then
          error("on_response returned pgq.ABORT_BATCH, which only process_event may return", 0)
        end
        if o == "RETRY" and not sr then sr = "retried by on_response" end
      end
    end
    if not o then o, sd, sr = M.classify(prep, res, err) end
    if RANK[o] > RANK[out] then
      out, d, why = o, sd, sr
    elseif o == "RETRY" and out == "RETRY" and sd and (not d or sd > d) then
      d = sd
    end
  end
  return out, d, why
end

--- A response as scripts see it: status (integer), headers (lower-case
-- names), body (string).
function M.response(status, headers, body)
  local h = {}
  if type(headers) == "table" then
    for k, v in pairs(headers) do h[lower(tostring(k))] = tostring(v) end
  end
  return { status = mtype(status) == "integer" and status or 200, headers = h, body = body or "" }
end

--- The headers as one sorted text ("a: 1, b: 2"), for reports.
function M.header_text(headers)
  local lines = {}
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  sort(lines)
  return concat(lines, ", ")
end

return M
