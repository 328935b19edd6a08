--- Decoders for the payloads of pgq's own triggers: pgq.logutriga
-- (urlencoded rows) and pgq.jsontriga (JSON rows), and the SQL NULL value.
local json = require "dkjson"

local M = {}

M.null = setmetatable({}, {
  __name = "pgq.null",
  __tostring = function() return "pgq.null" end,
  __newindex = function() error("pgq.null is read-only", 2) end,
  __metatable = "pgq.null",
})

local function unescape(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Decode "a=1&b=x%20y&c" into {a="1", b="x y", c=pgq.null}.
-- A key without "=" is SQL NULL.  Raises an error on a non-string.
function M.urldecode(s)
  if type(s) ~= "string" then
    error(string.format("pgq.urldecode: expected a string, got %s", s == M.null and "pgq.null" or type(s)), 2)
  end
  local t = {}
  for part in s:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    if k then
      t[unescape(k)] = unescape(v)
    else
      t[unescape(part)] = M.null
    end
  end
  return t
end

--- Decode JSON; integers stay Lua integers, JSON null is pgq.null.
-- Raises "pgq.json_decode: <reason>" on malformed input or trailing text.
function M.json_decode(s)
  if type(s) ~= "string" then
    error(string.format("pgq.json_decode: expected a string, got %s", s == M.null and "pgq.null" or type(s)), 2)
  end
  -- dkjson recurses once per nesting level: some 66,000 levels overflow
  -- the Lua stack, an error without our prefix
  local ok, value, pos, err = pcall(json.decode, s, 1, M.null)
  if not ok then
    if type(value) == "string" and value:find("stack overflow", 1, true) then
      error("pgq.json_decode: nested too deeply", 2)
    end
    error(value, 0)
  end
  if err then
    error("pgq.json_decode: " .. err, 2)
  end
  local junk = s:find("[^ \t\r\n]", pos)
  if junk then
    error(string.format("pgq.json_decode: unexpected text after the JSON value at position %d", junk), 2)
  end
  return value
end

return M
