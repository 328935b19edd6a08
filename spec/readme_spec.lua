-- README's "Writing and testing a consumer script" works as printed: its
-- greet.lua, greet.events.yaml (through `pgqlua test`) and its busted spec
-- run here.
local cli_test = require "pgqlua.cli_test"

local function readme_blocks()
  local f = assert(io.open("README.md"))
  local text = f:read("a")
  f:close()
  local found = {}
  for body in text:gmatch("```%w+\n(.-)```") do
    local first = body:match("^[^\n]*")
    if first == "-- greet.lua" then found.script = body end
    if first:match("^# greet%.events%.yaml") then found.events = body end
    if first == "-- spec/greet_spec.lua" then found.spec = body end
  end
  return found
end

local found = readme_blocks()
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
for name, body in pairs({ ["greet.lua"] = found.script, ["greet.events.yaml"] = found.events }) do
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(body or "")
  f:close()
end

describe("README's consumer script walk-through", function()
  teardown(function() os.execute("rm -rf " .. dir) end)

  -- the README's own spec, with the script's path pointing at the copy above
  if found.spec then
    local body = found.spec:gsub('"greet%.lua"', '"' .. dir .. '/greet.lua"')
    assert(load(body, "=README.md (spec/greet_spec.lua)", "t", _ENV))()
  end

  it("has the script, the events file and the spec", function()
    assert.is_string(found.script)
    assert.is_string(found.events)
    assert.is_string(found.spec)
  end)

  it("passes `pgqlua test greet.lua greet.events.yaml`", function()
    local real, out = io.stdout, {}
    -- luacheck: push ignore 122
    io.stdout = { write = function(_, ...) for _, s in ipairs({ ... }) do out[#out + 1] = s end end }
    local ok, rc = pcall(cli_test.main, { dir .. "/greet.lua", dir .. "/greet.events.yaml" })
    io.stdout = real
    -- luacheck: pop
    assert(ok, rc)
    assert.are.equal(0, rc, table.concat(out))
  end)
end)

