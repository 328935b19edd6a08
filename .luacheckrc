-- luacheck configuration: `luacheck lua spec scripts` from the repo root.
std = "lua54"
max_line_length = 120

exclude_files = {
  "build/",
  "build-*/",
  "tmp/",
  ".git/",
}

-- Consumer scripts: the runtime provides `pgq` and calls the hooks a script
-- defines as globals.
files["scripts/"] = {
  read_globals = { "pgq" },
  globals = { "process_event", "init", "on_batch_start", "on_batch_end" },
}

files["spec/"] = { std = "+busted" }
