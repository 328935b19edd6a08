--- What a consumer script may use: the safe standard libraries only (no io,
-- no debug, no os.exit, no loadfile/dofile, text chunks only), and no C
-- module but those the config's lua_modules names, from the system's Lua
-- 5.4 folders.
-- The runtime applies it to the script's own state; the mock runner builds
-- an environment table from the same lists.
local M = {}

M.globals = {
  "assert", "collectgarbage", "error", "getmetatable", "ipairs", "next",
  "pairs", "pcall", "print", "rawequal", "rawget", "rawlen", "rawset",
  "require", "select", "setmetatable", "tonumber", "tostring", "type",
  "xpcall", "_VERSION", "load",
  "coroutine", "math", "string", "table", "utf8", "os", "package",
}

M.os = { "clock", "date", "difftime", "getenv", "time" }

local unsafe_modules = { "io", "debug", "ffi" }

--- Text-only load: binary chunks can crash the interpreter.
local function make_load(raw_load, default_env)
  return function(chunk, name, mode, env)
    if mode ~= nil and mode ~= "t" then
      error("load: only text chunks are allowed (mode \"t\")", 2)
    end
    return raw_load(chunk, name, "t", env or default_env)
  end
end

--- Module names a script may require: dot-separated words of letters,
-- digits, "_" and "-" (so never a path: no "/", no "..", no empty part).
function M.valid_module_name(name)
  if type(name) ~= "string" or name == "" then return false end
  for part in (name .. "."):gmatch("(.-)%.") do
    if not part:find("^[%w_%-]+$") then return false end
  end
  return true
end

--- A `require` searcher for Lua files that loads text chunks only (the
-- stock one also loads precompiled bytecode).  The host lends loadfile;
-- the mock runner passes its own host, the runtime none (then it is
-- `require "pgqlua.host"`).  Its messages name paths and line numbers but
-- never quote a byte of a file: a file that does not load as Lua text is
-- not echoed, whatever it holds.
function M.text_searcher(package, host)
  host = host or require "pgqlua.host"
  local searchpath = package.searchpath
  return function(name)
    if not M.valid_module_name(name) then
      return string.format("no module name '%s': names are words of letters, digits, _ and - joined by dots", name)
    end
    local path, err = searchpath(name, package.path)
    if not path then return err end
    local f, lerr = host.loadfile(path)
    if not f then
      local line = type(lerr) == "string" and lerr:match("^.-:(%d+): ")
      error(string.format("error loading module '%s' from file '%s':\n\t%s", name, path,
        lerr and lerr:find("attempt to load a binary chunk", 1, true) and "attempt to load a binary chunk"
        or line and ("not valid Lua text (line " .. line .. ")") or "cannot be read as Lua text"), 2)
    end
    return f, path
  end
end

--- Where C modules are looked for: the system's Lua 5.4 folders only.
M.CPATH = "/usr/local/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/lib/aarch64-linux-gnu/lua/5.4/?.so;"
  .. "/usr/lib/lua/5.4/?.so"

--- Whether lua_modules (a list of names) lets `name` load as a C module:
-- a name listed, or a submodule of one ("socket" lets "socket.core").
function M.c_module_allowed(name, allow)
  for _, a in ipairs(allow or {}) do
    if name == a or name:sub(1, #a + 1) == a .. "." then return true end
  end
  return false
end

--- A `require` searcher for the C modules lua_modules lists, from
-- M.CPATH; loadlib is package.loadlib, kept here only.  A C module found
-- there but not listed is refused with an error saying so.
function M.c_searcher(searchpath, loadlib, allow)
  return function(name)
    if not M.valid_module_name(name) then return nil end
    local path = searchpath(name, M.CPATH)
    if not path then return "no C module '" .. name .. "' in the system's Lua 5.4 folders" end
    if not M.c_module_allowed(name, allow) then
      error(string.format("module '%s' is a C module (%s): it loads only when lua_modules in the config lists it",
        name, path), 2)
    end
    local f, err = loadlib(path, "luaopen_" .. name:gsub("%.", "_"))
    if not f then
      error(string.format("error loading module '%s' from file '%s':\n\t%s", name, path, tostring(err)), 2)
    end
    return f, path
  end
end

--- os.getenv for a script: only the names in allow (a list) are read; any
-- other name is nil, as if unset.
function M.make_getenv(getenv, allow)
  local allowed = {}
  for _, name in ipairs(allow or {}) do allowed[name] = true end
  return function(name)
    if type(name) ~= "string" then
      error(string.format("bad argument #1 to 'getenv' (string expected, got %s)", type(name)), 2)
    end
    if allowed[name] then return getenv(name) end
    return nil
  end
end

--- Trim the global table G in place (the runtime's own lua_State).
-- opts.env_allow: the environment variables os.getenv may read;
-- opts.lua_modules: the C modules require may load.
-- The real package table stays the runtime's (require keeps it as an
-- upvalue): its path and searchers are fixed, the host module is taken
-- out of reach, and the script sees a read-only view of it.
function M.apply(G, opts)
  opts = opts or {}
  local keep = {}
  for _, name in ipairs(M.globals) do keep[name] = true end
  for name in pairs(G) do
    if not keep[name] and name ~= "_G" then G[name] = nil end
  end
  local os_lib = {}
  for _, name in ipairs(M.os) do os_lib[name] = G.os[name] end
  os_lib.getenv = M.make_getenv(G.os.getenv, opts.env_allow)
  G.os = os_lib
  G.load = make_load(G.load, G)
  local package = G.package
  local host = require "pgqlua.host"
  local loadlib = package.loadlib
  package.loadlib = nil
  package.cpath = ""
  package.searchers = { package.searchers[1], M.text_searcher(package, host),
                        M.c_searcher(package.searchpath, loadlib, opts.lua_modules) }
  package.preload["pgqlua.host"] = nil
  package.loaded["pgqlua.host"] = nil
  for _, name in ipairs(unsafe_modules) do package.loaded[name] = nil end
  package.loaded.os = os_lib
  local view = { path = package.path, cpath = "", config = package.config,
                 loaded = package.loaded, preload = package.preload }
  local fixed = setmetatable({}, {
    __index = view,
    __newindex = function(_, k)
      error(string.format("package.%s cannot be changed: where require looks is set by the runtime"
        .. " (lua_path in the config)", tostring(k)), 2)
    end,
    __pairs = function() return next, view, nil end,
    __metatable = "package",
  })
  package.loaded.package = fixed
  G.package = fixed
  return G
end

--- A `require` for an environment table, as Lua 5.4's own but over the
-- given package table (loaded, preload, searchers).  Messages are the
-- stock ones: "module 'x' not found:" and the searchers' lists.
function M.make_require(package)
  return function(name)
    if type(name) ~= "string" and type(name) ~= "number" then
      error(string.format("bad argument #1 to 'require' (string expected, got %s)",
        name == nil and "no value" or type(name)), 2)
    end
    name = tostring(name)
    local loaded = package.loaded[name]
    if loaded ~= nil then return loaded end
    local msg = {}
    for _, searcher in ipairs(package.searchers) do
      -- called through pcall, so that a searcher's error(..., 2) blames a
      -- C function (no position), as under the stock require
      local ok, loader, extra = pcall(searcher, name)
      if not ok then error(loader, 0) end
      if type(loader) == "function" then
        local value = loader(name, extra)
        if value ~= nil then
          package.loaded[name] = value
        elseif package.loaded[name] == nil then
          package.loaded[name] = true
        end
        return package.loaded[name], extra
      elseif type(loader) == "string" then
        msg[#msg + 1] = "\n\t" .. loader
      end
    end
    error(string.format("module '%s' not found:%s", name, table.concat(msg)), 2)
  end
end

--- A fresh global table for a script, built from the same lists as apply()
-- over the libraries of G (the mock runner's own state): the safe globals,
-- the trimmed os, a text-only load, and a package table of its own with
-- `path`, the preload and text-only searchers and a require over them.
-- `host` lends loadfile (it must load into this environment); the C
-- modules of lua_modules load with G.package.loadlib.
function M.new_env(G, path, host, lua_modules)
  local env = {}
  for _, name in ipairs(M.globals) do env[name] = G[name] end
  env._G = env
  local os_lib = {}
  for _, name in ipairs(M.os) do os_lib[name] = G.os[name] end
  env.os = os_lib
  env.load = make_load(G.load, env)
  local package = {
    path = path,
    cpath = "",
    config = G.package.config,
    searchpath = G.package.searchpath,
    preload = {},
    loaded = {},
  }
  for _, name in ipairs({ "coroutine", "math", "string", "table", "utf8" }) do
    package.loaded[name] = G[name]
  end
  package.loaded._G = env
  package.loaded.os = os_lib
  package.loaded.package = package
  local function preload_searcher(name)
    local loader = package.preload[name]
    if loader == nil then
      return string.format("no field package.preload['%s']", name)
    end
    return loader, ":preload:"
  end
  package.searchers = { preload_searcher, M.text_searcher(package, host),
                        M.c_searcher(G.package.searchpath, G.package.loadlib, lua_modules) }
  env.package = package
  env.require = M.make_require(package)
  return env
end

return M
