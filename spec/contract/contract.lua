--- The contract between the mock runner and the real runtime.
--
-- Each fixture NAME in spec/contract/ is NAME.lua (a consumer script),
-- NAME.yaml (events with complete expectations, in `pgqlua test` format)
-- and optionally NAME.sql (tables the real database needs).  From the
-- expectations this module renders the exact lines the runtime logs at
-- log_level trace (db:exec and db:send statements, each event's outcome, what happens
-- next, a rolled-back batch); spec/contract_spec.lua renders the same lines
-- from a mock run, and tests/integration/t_contract.sh reads them from the
-- real runtime's log.  Both must equal the expected lines.
--
-- As a program (for t_contract.sh), with lua/ and spec/contract/ on
-- package.path:
--   lua5.4 contract.lua list DIR                   fixture names
--   lua5.4 contract.lua config DIR NAME            config lines for the runtime
--   lua5.4 contract.lua events DIR NAME QUEUE      SQL inserting the events in one transaction
--   lua5.4 contract.lua check DIR NAME LOGFILE     compare the log; exit 1 on a difference
local testing = require "pgqlua.testing"
local cli_test = require "pgqlua.cli_test"

local M = {}

function M.list(dir)
  local names = {}
  local p = assert(io.popen('ls "' .. dir .. '"'))
  for f in p:lines() do
    local name = f:match("^(.+)%.yaml$")
    if name then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

--- The fixture: the parsed events file plus script (and setup) paths.
function M.load(dir, name)
  local path = dir .. "/" .. name .. ".yaml"
  local f = assert(io.open(path))
  local doc = assert(cli_test.decode(f:read("a")))
  f:close()
  local spec = assert(cli_test.parse(doc, path))
  spec.name = name
  spec.script = dir .. "/" .. name .. ".lua"
  return spec
end

-- the local HTTP and SMTP test servers' URLs read http://HOST and
-- smtp://HOST (their ports vary)
local function norm(line)
  return (testing.strip_dirs(line):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    :gsub("http://127%.0%.0%.1:%d+", "http://HOST"):gsub("smtp://127%.0%.0%.1:%d+", "smtp://HOST"))
end

-- a statement given as { sql =, params =, send = true } was a db:send
local function sql_lines(lines, list)
  list = list or {}
  for i, t in ipairs(testing.expected_sql_texts(list)) do
    local s = list[i]
    lines[#lines + 1] = (type(s) == "table" and s.send and "db:send " or "db:exec ") .. t
  end
end

local function verb(s)
  return s.sent and "db:send " or "db:exec "
end

local function need(cond, spec, i, what)
  if not cond then
    error(string.format("%s.yaml: event %d: a contract expectation needs %s", spec.name, i, what), 0)
  end
end

--- The lines the runtime must log for the fixture, event ids as #1, #2...
function M.expected_lines(spec)
  local lines = {}
  local xb = spec.expect_batch or {}
  sql_lines(lines, xb.on_batch_start)
  for i in ipairs(spec.events) do
    local x = spec.expects[i]
    need(x and x.outcome, spec, i, "an outcome")
    if x.outcome == "SKIPPED" then goto continue end
    need(x.sql, spec, i, "sql (the list of statements, [] for none)")
    sql_lines(lines, x.sql)
    local r = { outcome = x.outcome, delay = x.delay, reason = x.reason, error = x.error }
    need(x.outcome ~= "FAILED" or x.reason, spec, i, "the reason")
    need(x.outcome ~= "ERROR" or x.error, spec, i, "the error")
    lines[#lines + 1] = string.format("event #%d: outcome %s", i, testing.outcome_text(r))
    if x.outcome == "ABORT_BATCH" then
      lines[#lines + 1] = string.format("batch rolled back (the script returned pgq.ABORT_BATCH at event #%d);"
        .. " it will be delivered again", i)
      break
    elseif x.outcome == "FAILED" or x.failed then
      lines[#lines + 1] = string.format("event #%d: moved to the failed-event table: %s", i, x.failed or x.reason)
    elseif x.outcome ~= "OK" then
      need(x.retry_in, spec, i, "retry_in or failed")
      local why = x.outcome == "ERROR" and x.error or x.reason
      lines[#lines + 1] = string.format("event #%d: retry 1 in %.3gs%s", i, x.retry_in, why and ": " .. why or "")
    end
    ::continue::
  end
  sql_lines(lines, xb.on_batch_end)
  for k, l in ipairs(lines) do lines[k] = norm(l) end
  return lines
end

--- The same lines from a mock run.
function M.mock_lines(run)
  local lines = {}
  for _, s in ipairs(run.on_batch_start and run.on_batch_start.sql or {}) do
    lines[#lines + 1] = verb(s) .. testing.trace_text(s.sql, s.params, s.n)
  end
  for i, r in ipairs(run.events) do
    if r.outcome then
      for _, s in ipairs(r.sql) do lines[#lines + 1] = verb(s) .. testing.trace_text(s.sql, s.params, s.n) end
      lines[#lines + 1] = string.format("event #%d: outcome %s", i, testing.outcome_text(r))
      if r.action == "abort" then
        lines[#lines + 1] = "batch rolled back (" .. run.aborted:gsub("event %d+$", "event #" .. i)
          .. "); it will be delivered again"
      elseif r.action == "failed" then
        lines[#lines + 1] = string.format("event #%d: moved to the failed-event table: %s", i, r.failed)
      elseif r.action == "retry" then
        local why = r.outcome == "ERROR" and r.error or r.reason
        lines[#lines + 1] = string.format("event #%d: retry %d in %.3gs%s", i, r.ev.retry + 1, r.retry_in,
          why and ": " .. why or "")
      end
    end
  end
  for _, s in ipairs(run.on_batch_end and run.on_batch_end.sql or {}) do
    lines[#lines + 1] = verb(s) .. testing.trace_text(s.sql, s.params, s.n)
  end
  for k, l in ipairs(lines) do lines[k] = norm(l) end
  return lines
end

--- The same lines from the runtime's log: the first batch in which an
-- event has an outcome, event ids replaced by #1, #2... in order.
function M.real_lines(log)
  local entries, batch = {}, nil
  for line in log:gmatch("[^\n]+") do
    local b, msg = line:match("^%S+ %S+ UTC %[%d+%] %u+ consumer=%S+ batch=(%d+) (.*)$")
    if b then
      entries[#entries + 1] = { batch = b, msg = msg }
      if not batch and msg:match("^event %d+: outcome ") then batch = b end
    end
  end
  local ids, n, lines = {}, 0, {}
  for _, e in ipairs(entries) do
    if e.batch == batch then
      local msg = e.msg
      local id = msg:match("^event (%d+): outcome ")
      if id and not ids[id] then
        n = n + 1
        ids[id] = n
      end
      local keep = msg:match("^db:exec ") or msg:match("^db:send ") or msg:match("^event %d+: outcome ")
        or msg:match("^event %d+: moved to the failed%-event table: ") or msg:match("^event %d+: retry %d+ in ")
        or msg:match("^batch rolled back ") or msg:match("^on_batch_%a+: ")
      if keep then
        msg = msg:gsub("^event (%d+):", function(x) return "event #" .. (ids[x] or x) .. ":" end)
        msg = msg:gsub("ABORT_BATCH at event (%d+)", function(x) return "ABORT_BATCH at event #" .. (ids[x] or x) end)
        lines[#lines + 1] = norm(msg)
      end
    end
  end
  return lines, batch
end

--- Compare line lists: true, or false and a description of the first difference.
function M.compare(want, have)
  for i = 1, math.max(#want, #have) do
    if want[i] ~= have[i] then
      return false, string.format("line %d differs:\n  expected: %s\n  got:      %s", i,
        tostring(want[i]), tostring(have[i]))
    end
  end
  return true
end

local function quote(v)
  if v == nil or v == testing.null then return "null" end
  return "'" .. tostring(v):gsub("'", "''") .. "'"
end

function M.events_sql(spec, queue)
  local parts = { "begin;" }
  for i, ev in ipairs(spec.events) do
    need(ev.retry == 0, spec, i, "events with retry 0 (the runtime's first delivery)")
    parts[#parts + 1] = string.format("select pgq.insert_event(%s, %s, %s, %s, %s, %s, %s);", quote(queue),
      quote(ev.type), quote(ev.data), quote(ev.extra1), quote(ev.extra2), quote(ev.extra3), quote(ev.extra4))
  end
  parts[#parts + 1] = "commit;"
  return table.concat(parts, "\n")
end

function M.config_lines(spec)
  local c = spec.config or {}
  local lines = {
    "retry_delay: " .. tostring(c.retry_delay or testing.DEFAULT_CONFIG.retry_delay),
    "max_retries: " .. tostring(c.max_retries or testing.DEFAULT_CONFIG.max_retries),
    "event_timeout: " .. tostring(c.event_timeout or testing.DEFAULT_CONFIG.event_timeout),
    "log_level: trace",
  }
  if c.env_allow then lines[#lines + 1] = "env_allow: [" .. table.concat(c.env_allow, ", ") .. "]" end
  -- the runtime's mails go to the local test server (PGQLUA_TEST_SMTP)
  if c.smtp_url then lines[#lines + 1] = 'smtp_url: "' .. (os.getenv("PGQLUA_TEST_SMTP") or c.smtp_url) .. '"' end
  return table.concat(lines, "\n")
end

function M.main(args)
  local cmd, dir, name = args[1], args[2], args[3]
  if cmd == "list" then
    print(table.concat(M.list(dir), "\n"))
  elseif cmd == "config" then
    print(M.config_lines(M.load(dir, name)))
  elseif cmd == "events" then
    print(M.events_sql(M.load(dir, name), args[4]))
  elseif cmd == "check" then
    local spec = M.load(dir, name)
    local f = assert(io.open(args[4]))
    local have = M.real_lines(f:read("a"))
    f:close()
    local ok, diff = M.compare(M.expected_lines(spec), have)
    if not ok then
      io.stderr:write(diff, "\n")
      return 1
    end
  else
    io.stderr:write("usage: contract.lua list|config|events|check DIR [NAME [QUEUE|LOGFILE]]\n")
    return 64
  end
  return 0
end

if arg and arg[0] and arg[0]:match("contract%.lua$") then
  os.exit(M.main(arg))
end

return M
