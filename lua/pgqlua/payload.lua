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

-- JSON text with each integer that does not fit a Lua integer (int64)
-- turned into a JSON string of its digits, or nil when there is none.
-- Only called when the text has a run of 19 digits, the shortest such
-- integer; digits inside JSON strings are left alone.
local function quote_big_integers(s)
  local out, last, i, changed = {}, 1, 1, false
  while true do
    i = s:find('[-"%d]', i)
    if not i then break end
    if s:byte(i) == 34 then            -- a string: skip to its closing quote
      local j = i + 1
      i = nil
      while true do
        local q = s:find('["\\]', j)
        if not q then break end
        if s:byte(q) == 92 then j = q + 2 else i = q + 1; break end
      end
      if not i then break end
    else
      local a, b = s:find("^%-?%d+", i)
      if not a then
        i = i + 1
      else
        local after = s:sub(b + 1, b + 1)
        if after ~= "." and after ~= "e" and after ~= "E" and math.type(tonumber(s:sub(a, b))) ~= "integer" then
          out[#out + 1] = s:sub(last, a - 1)
          out[#out + 1] = '"' .. s:sub(a, b) .. '"'
          last, changed = b + 1, true
        end
        i = b + 1
      end
    end
  end
  if not changed then return nil end
  out[#out + 1] = s:sub(last)
  return table.concat(out)
end

-- value, or nil, the error text and the level to raise it at
local function decode(s)
  -- dkjson recurses once per nesting level: some 66,000 levels overflow
  -- the Lua stack, an error without our prefix
  local ok, value, pos, err = pcall(json.decode, s, 1, M.null)
  if not ok then
    if type(value) == "string" and value:find("stack overflow", 1, true) then
      return nil, "pgq.json_decode: nested too deeply", 2
    end
    return nil, value, 0
  end
  if err then
    return nil, "pgq.json_decode: " .. err, 2
  end
  local junk = s:find("[^ \t\r\n]", pos)
  if junk then
    return nil, string.format("pgq.json_decode: unexpected text after the JSON value at position %d", junk), 2
  end
  return value
end

--- Decode JSON; integers stay Lua integers, JSON null is pgq.null.
-- An integer beyond int64 (-2^63 .. 2^63-1) comes as a string of its exact
-- digits, never as a rounded float.
-- Raises "pgq.json_decode: <reason>" on malformed input or trailing text.
function M.json_decode(s)
  if type(s) ~= "string" then
    error(string.format("pgq.json_decode: expected a string, got %s", s == M.null and "pgq.null" or type(s)), 2)
  end
  if s:find("%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d") then
    local quoted = quote_big_integers(s)
    local value = quoted and decode(quoted)
    if value ~= nil then return value end
    -- malformed: the error is reported on the text as given
  end
  local value, err, level = decode(s)
  if value == nil then error(err, level) end
  return value
end

return M
