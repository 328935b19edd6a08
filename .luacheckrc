-- luacheck configuration: `luacheck lua spec scripts` from the repo root.
std = "lua54"
max_line_length = 120

exclude_files = {
  "build/",
  "build-*/",
  "tmp/",
  ".git/",
  "lua/meta/",   -- LuaLS definitions (---@meta): declarations, never run
}

-- Consumer scripts: the runtime provides `pgq` and calls the hooks a script
-- defines as globals (process_event, init, on_batch_start, on_batch_end).
-- Scripts run in the runtime's sandbox: no io, no debug, no os.exit,
-- no loadfile/dofile (see lua/pgqlua/sandbox.lua).
local consumer_script = {
  std = "none",
  read_globals = {
    pgq = { fields = { "EVENT_OK", "EVENT_FAILED", "EVENT_RETRY", "ABORT_BATCH", "null", "log", "urldecode",
                       "json_decode", http = { fields = { "request", "send" } }, mail = { fields = { "send" } } } },
    "_VERSION", "assert", "collectgarbage", "error", "getmetatable", "ipairs", "load", "next",
    "pairs", "pcall", "print", "rawequal", "rawget", "rawlen", "rawset", "require", "select",
    "setmetatable", "tonumber", "tostring", "type", "xpcall", "coroutine", "math", "string", "table",
    "utf8", "package",
    os = { fields = { "clock", "date", "difftime", "getenv", "time" } },
  },
  globals = { "process_event", "init", "on_batch_start", "on_batch_end" },
}

files["scripts/"] = consumer_script
files["spec/contract/"] = consumer_script

files["spec/"] = { std = "+busted" }
-- the busted helpers the kit registers (pgqlua.testing)
files["spec/"].read_globals = {
  assert = { fields = { "outcome", "executed", "sql", "requested", "mailed" }, other_fields = true },
}
files["spec/contract/contract.lua"] = { std = "lua54" }
files["spec/contract/ct_lib/"] = consumer_script
