--- What a consumer script may use: the safe standard libraries only (no io,
-- no debug, no os.exit, no loadfile/dofile, no C modules, text chunks only).
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

--- A `require` searcher for Lua files that loads text chunks only (the
-- stock one also loads precompiled bytecode).  The host lends loadfile.
function M.text_searcher(package)
  local host = require "pgqlua.host"
  return function(name)
    local path, err = package.searchpath(name, package.path)
    if not path then return err end
    local f, lerr = host.loadfile(path)
    if not f then
      error(string.format("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 2)
    end
    return f, path
  end
end

--- Trim the global table G in place (the runtime's own lua_State).
function M.apply(G)
  local keep = {}
  for _, name in ipairs(M.globals) do keep[name] = true end
  for name in pairs(G) do
    if not keep[name] and name ~= "_G" then G[name] = nil end
  end
  local os_lib = {}
  for _, name in ipairs(M.os) do os_lib[name] = G.os[name] end
  G.os = os_lib
  G.load = make_load(G.load, G)
  local package = G.package
  package.loadlib = nil
  package.cpath = ""
  package.searchers = { package.searchers[1], M.text_searcher(package) }
  for _, name in ipairs(unsafe_modules) do package.loaded[name] = nil end
  package.loaded.os = os_lib
  return G
end

return M
