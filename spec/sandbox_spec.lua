local sandbox = require "pgqlua.sandbox"

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

--- A fresh global-like table: every standard global copied from _G (library
-- tables copied too, so apply() cannot touch the real ones) plus a fake
-- package table shaped like the real one.
local function fresh_globals()
  local G = {}
  for k, v in pairs(_G) do G[k] = v end
  -- Make sure the unsafe globals are there whatever the test runner removed.
  G.io, G.debug, G.dofile, G.loadfile, G.load = io, debug, dofile, loadfile, load
  for _, lib in ipairs({ "os", "string", "table", "math", "coroutine", "utf8" }) do
    local copy = {}
    for k, v in pairs(_G[lib]) do copy[k] = v end
    G[lib] = copy
  end
  G._G = G
  G.package = {
    loaded = {
      _G = G, io = G.io, debug = G.debug, os = G.os, string = G.string,
      table = G.table, math = G.math, coroutine = G.coroutine, utf8 = G.utf8,
    },
    preload = {},
    searchers = { function() end, function() end, function() end, function() end },
    loadlib = function() end,
    cpath = "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;./?.so",
    path = "/usr/share/lua/5.4/?.lua;./?.lua",
    config = package.config,
    searchpath = package.searchpath,
  }
  G.package.loaded.package = G.package
  G.an_extra_global = true
  return G
end

describe("pgqlua.sandbox", function()
  local G, original, original_searchers, real_package

  before_each(function()
    G = fresh_globals()
    original = {}
    for k, v in pairs(G) do original[k] = v end
    original_searchers = G.package.searchers
    real_package = G.package
    real_package.preload["pgqlua.host"] = package.preload["pgqlua.host"]
    real_package.loaded["pgqlua.host"] = require "pgqlua.host"
    assert.is_not_nil(G.io)
    assert.are.equal(4, #G.package.searchers)
    assert.is_function(G.os.exit)
    assert.are.equal(G, sandbox.apply(G, { env_allow = { "HOME", "PGQLUA_SPEC_ALLOWED" } }))
  end)

  describe("apply()", function()
    it("removes io, debug, dofile and loadfile", function()
      assert.is_nil(G.io)
      assert.is_nil(G.debug)
      assert.is_nil(G.dofile)
      assert.is_nil(G.loadfile)
    end)

    it("removes globals that are not on the allow-list", function()
      assert.is_nil(G.an_extra_global)
    end)

    it("leaves exactly the allow-listed globals and _G", function()
      local expected = { "_G" }
      for _, name in ipairs(sandbox.globals) do expected[#expected + 1] = name end
      table.sort(expected)
      assert.are.same(expected, sorted_keys(G))
    end)

    it("keeps _G pointing at the trimmed table", function()
      assert.are.equal(G, G._G)
    end)

    it("keeps the safe libraries untouched", function()
      for _, lib in ipairs({ "string", "table", "math", "coroutine", "utf8" }) do
        assert.are.equal(original[lib], G[lib], lib)
      end
      assert.are.equal(string.format, G.string.format)
      assert.are.equal(math.type, G.math.type)
    end)

    it("keeps the safe base functions", function()
      for _, name in ipairs({ "assert", "error", "pairs", "ipairs", "pcall", "xpcall", "select",
                              "tostring", "tonumber", "type", "setmetatable", "getmetatable",
                              "rawget", "rawset", "rawequal", "rawlen", "next", "print",
                              "collectgarbage", "require" }) do
        assert.are.equal(_G[name], G[name], name)
      end
      assert.are.equal(_VERSION, G._VERSION)
    end)

    it("leaves os with exactly clock, date, difftime, getenv and time", function()
      assert.are.same({ "clock", "date", "difftime", "getenv", "time" }, sorted_keys(G.os))
      assert.are_not.equal(os.getenv, G.os.getenv)
      assert.are.equal(os.time, G.os.time)
      assert.are.equal(os.clock, G.os.clock)
    end)

    it("removes os.exit, os.execute and os.remove", function()
      assert.is_nil(G.os.exit)
      assert.is_nil(G.os.execute)
      assert.is_nil(G.os.remove)
      assert.is_nil(G.os.rename)
      assert.is_nil(G.os.tmpname)
    end)

    it("does not modify the os table it replaces", function()
      assert.is_function(original.os.exit)
      assert.are_not.equal(original.os, G.os)
    end)

    it("registers the trimmed os as package.loaded.os", function()
      assert.are.equal(G.os, G.package.loaded.os)
    end)

    it("removes package.loadlib and empties package.cpath", function()
      assert.is_nil(G.package.loadlib)
      assert.are.equal("", G.package.cpath)
    end)

    it("keeps package.path", function()
      assert.are.equal("/usr/share/lua/5.4/?.lua;./?.lua", G.package.path)
    end)

    it("keeps the preload searcher, a text-only Lua searcher and lua_modules' C searcher, out of the script's reach",
      function()
      assert.are.equal(3, #real_package.searchers)
      assert.are.equal(original_searchers[1], real_package.searchers[1])
      assert.are_not.equal(original_searchers[2], real_package.searchers[2])
      assert.is_nil(G.package.searchers)
      assert.is_nil(G.package.searchpath)
      assert.are.equal(G.package, G.package.loaded.package)
    end)

    it("refuses changes to package.path and the searchers", function()
      assert.has_error(function() G.package.path = "/etc/?" end,
        "package.path cannot be changed: where require looks is set by the runtime (lua_path in the config)")
      assert.has_error(function() G.package.searchers = {} end,
        "package.searchers cannot be changed: where require looks is set by the runtime (lua_path in the config)")
      assert.are.equal("/usr/share/lua/5.4/?.lua;./?.lua", real_package.path)
    end)

    it("takes the host module out of package.preload and package.loaded", function()
      assert.is_nil(G.package.preload["pgqlua.host"])
      assert.is_nil(G.package.loaded["pgqlua.host"])
    end)

    it("lets os.getenv read only the variables in env_allow", function()
      assert.is_not_nil(os.getenv("PATH"))
      assert.is_nil(G.os.getenv("PATH"))
      assert.is_nil(G.os.getenv("PGPASSWORD"))
      assert.are.equal(os.getenv("HOME"), G.os.getenv("HOME"))
      assert.is_nil(G.os.getenv("PGQLUA_SPEC_ALLOWED"))
      assert.has_error(function() G.os.getenv() end, "bad argument #1 to 'getenv' (string expected, got nil)")
    end)

    it("drops io and debug from package.loaded", function()
      assert.is_nil(G.package.loaded.io)
      assert.is_nil(G.package.loaded.debug)
      assert.are.equal(G.string, G.package.loaded.string)
    end)
  end)

  describe("text_searcher", function()
    local dir, searcher
    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
      local f = assert(io.open(dir .. "/textmod.lua", "w"))
      f:write("return { answer = 42 }\n")
      f:close()
      f = assert(io.open(dir .. "/binmod.lua", "wb"))
      f:write(string.dump(function() return 1 end))
      f:close()
      searcher = sandbox.text_searcher({ path = dir .. "/?.lua", searchpath = package.searchpath })
    end)
    after_each(function()
      os.execute("rm -rf " .. dir)
    end)

    it("loads a Lua module from the path", function()
      local loader, path = searcher("textmod")
      assert.are.equal(dir .. "/textmod.lua", path)
      assert.are.same({ answer = 42 }, loader())
    end)

    it("refuses a precompiled module", function()
      assert.has_error(function() searcher("binmod") end)
      local ok, err = pcall(searcher, "binmod")
      assert.is_false(ok)
      assert.matches("error loading module 'binmod' from file '.*binmod.lua':\n\tattempt to load a binary chunk$", err)
    end)

    it("returns the places it looked when the module is missing", function()
      assert.matches("no file '.*/nope.lua'", searcher("nope"))
    end)

    it("refuses a module name that is a path", function()
      for _, name in ipairs({ "../../etc/passwd", "/etc/shadow", "a..b", ".a", "a.", "a/b", "" }) do
        assert.are.equal(string.format(
          "no module name '%s': names are words of letters, digits, _ and - joined by dots", name), searcher(name))
      end
    end)

    it("never quotes a byte of a file that is not Lua text", function()
      local f = assert(io.open(dir .. "/secret.lua", "w"))
      f:write("db: host=x password=s3cr3t\nroot:$6$hash:19000:0:99999:7:::\n")
      f:close()
      local ok, err = pcall(searcher, "secret")
      assert.is_false(ok)
      assert.are.equal(string.format(
        "error loading module 'secret' from file '%s/secret.lua':\n\tnot valid Lua text (line 1)", dir), err)
    end)
  end)

  describe("load", function()
    it("refuses mode \"b\"", function()
      assert.has_error(function() G.load("return 1", "chunk", "b") end,
        'load: only text chunks are allowed (mode "t")')
    end)

    it("refuses mode \"bt\"", function()
      assert.has_error(function() G.load("return 1", "chunk", "bt") end,
        'load: only text chunks are allowed (mode "t")')
    end)

    it("returns nil and a message for a binary chunk without a mode", function()
      local f, err = G.load(string.dump(function() return 1 end))
      assert.is_nil(f)
      assert.matches("attempt to load a binary chunk", err, 1, true)
    end)

    it("still loads text chunks", function()
      local f = assert(G.load("return 1 + 1"))
      assert.are.equal(2, f())
      f = assert(G.load("return 3", "=chunk", "t"))
      assert.are.equal(3, f())
    end)

    it("loads text chunks from a reader function", function()
      local parts = { "return ", "40 + 2" }
      local i = 0
      local f = assert(G.load(function() i = i + 1; return parts[i] end))
      assert.are.equal(42, f())
    end)

    it("returns nil and a message for a syntax error", function()
      local f, err = G.load("return +", "=chunk")
      assert.is_nil(f)
      assert.matches("^chunk:1: ", err)
    end)

    it("runs text chunks in the sandboxed globals by default", function()
      local f = assert(G.load("return io, os.exit, string"))
      local io_, exit_, string_ = f()
      assert.is_nil(io_)
      assert.is_nil(exit_)
      assert.are.equal(G.string, string_)
    end)

    it("uses the environment it is given", function()
      local f = assert(G.load("return answer", "=chunk", "t", { answer = 42 }))
      assert.are.equal(42, f())
    end)
  end)

  describe("lua_modules", function()
    local dir, script
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir '" .. dir .. "'"))
      script = dir .. "/cmod.lua"
      local f = assert(io.open(script, "w"))
      f:write([[
function process_event(ev, db)
  local m = require(ev.data)
  return pgq.EVENT_FAILED, type(m)
end
]])
      f:close()
    end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
    local testing = require "pgqlua.testing"

    it("lets a listed C module and its submodules load, and no other", function()
      assert.is_true(sandbox.c_module_allowed("lpeg", { "lpeg" }))
      assert.is_true(sandbox.c_module_allowed("socket.core", { "cjson", "socket" }))
      assert.is_false(sandbox.c_module_allowed("socketx", { "socket" }))
      assert.is_false(sandbox.c_module_allowed("lpeg", nil))
    end)

    it("loads lpeg (Debian's lua-lpeg) when lua_modules lists it", function()
      local c = testing.load(script, { config = { lua_modules = { "lpeg" } } })
      assert.outcome(c:event({ data = "lpeg" }), "FAILED", "table")
    end)

    it("refuses a C module lua_modules does not list, saying so", function()
      local c = testing.load(script, { config = { lua_modules = { "cjson" } } })
      assert.outcome(c:event({ data = "lpeg" }), {
        outcome = "ERROR",
        error_match = "^module 'lpeg' is a C module %(/usr/lib/[%w_/.-]*lpeg%.so%): it loads only"
          .. " when lua_modules in the config lists it$" })
    end)

    it("finds no module that is in neither folder", function()
      local c = testing.load(script)
      local r = c:event({ data = "no_such_module_x" })
      assert.truthy(r.error:find("module 'no_such_module_x' not found:", 1, true))
      assert.truthy(r.error:find("no C module 'no_such_module_x' in the system's Lua 5.4 folders", 1, true))
    end)
  end)
end)
